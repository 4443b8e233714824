"""Ioto device API tokens: the ``token`` a claimed device gets from register, derived, not stored.

A claimed device calls ``{api}/tok/...`` with ``Authorization: bearer <token>``. The agent
registers again until it has saved ``api`` + ``token``; if an answer is lost it asks again,
so the token must be the same each time (minting a new one would orphan the first). It is
therefore derived from a server master key and the claim:

    payload = base64url(JSON [device id, account id, claim generation])
    token   = "thio1." + payload + "." + base64url(HMAC-SHA256(K, "thio1." + payload))
    K       = HMAC-SHA256(master, "thinghub/ioto-device-token/v1")

Nothing per device is stored. The claim generation (``domain.claims``) changes on every
claim and release, so a released device's token stops working and a re-claim issues a new
one. Checking a token is a MAC comparison in constant time, then a look-up of the device to
see that its current generation is the token's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

__all__ = ["DeviceTokenError", "DeviceTokenIssuer", "DeviceTokenSubject"]

TOKEN_PREFIX = "thio1."
MAX_TOKEN_CHARS = 1024
MIN_MASTER_KEY_BYTES = 32
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


class DeviceTokenError(ValueError):
    """A device token that is malformed or forged (answer 401 "Authentication failed")."""


@dataclass(frozen=True, slots=True)
class DeviceTokenSubject:
    device_id: str
    account_id: str
    generation: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DeviceTokenIssuer:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) < MIN_MASTER_KEY_BYTES:
            raise ValueError(f"the master key must have at least {MIN_MASTER_KEY_BYTES} bytes")
        self._key = hmac.new(master_key, b"thinghub/ioto-device-token/v1", hashlib.sha256).digest()

    def token(self, subject: DeviceTokenSubject) -> str:
        """The device's token for this claim (the same every time it is asked for)."""
        body = [subject.device_id, subject.account_id, subject.generation]
        signed = TOKEN_PREFIX + _b64url(json.dumps(body, separators=(",", ":")).encode())
        return f"{signed}.{_b64url(self._mac(signed))}"

    def open(self, token: str) -> DeviceTokenSubject:
        """Check a token's MAC and return whom it names; the caller checks the generation.

        Raises:
            DeviceTokenError: malformed or forged.
        """
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX):
            raise DeviceTokenError("not a device token")
        signed, dot, mac_text = token.rpartition(".")
        payload = signed.removeprefix(TOKEN_PREFIX)
        if not dot or not _B64URL_RE.fullmatch(mac_text) or not _B64URL_RE.fullmatch(payload):
            raise DeviceTokenError("not a device token")
        mac = base64.urlsafe_b64decode(mac_text + "=" * (-len(mac_text) % 4))
        if not hmac.compare_digest(mac, self._mac(signed)):
            raise DeviceTokenError("device token signature mismatch")
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError) as exc:
            raise DeviceTokenError("not a device token") from exc
        if not (
            isinstance(body, list)
            and len(body) == 3
            and isinstance(body[0], str)
            and isinstance(body[1], str)
            and isinstance(body[2], int)
            and not isinstance(body[2], bool)
        ):
            raise DeviceTokenError("not a device token")
        return DeviceTokenSubject(body[0], body[1], body[2])

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest()
