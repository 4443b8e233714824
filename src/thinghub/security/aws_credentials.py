"""Temporary AWS-style credentials for devices: issued from a grant, opened again, nothing stored.

A device asks for credentials (Ioto ``getCreds``) or for a signed URL (``getSignedUrl``); both
are an access key id, a secret access key and a session token, usable by an unmodified AWS
SDK signer against thinghub's S3-compatible endpoint.

How nothing secret is stored
----------------------------
SigV4 needs the raw secret at verification time (the server recomputes the HMAC), so a
one-way hash of the secret cannot be kept, as it is for API tokens. Instead the secret is
*derived* from a server master key and the grant, and the grant travels in the session
token, which every SigV4 request carries (``x-amz-security-token`` or
``X-Amz-Security-Token``):

    payload = base64url(JSON grant: access key id, account, device, region, issued, expires,
                        actions, and for a signed URL the one key, size and type)
    token   = "thst1." + payload + "." + base64url(HMAC-SHA256(K_token, "thst1." + payload))
    secret  = base64(HMAC-SHA256(K_secret, payload))[:40]
    K_token = HMAC-SHA256(master, "thinghub/aws-session-token/v1")
    K_secret= HMAC-SHA256(master, "thinghub/aws-secret-access-key/v1")

To verify a request: open the token (check its MAC in constant time, that it names the
request's access key id, and that it has not expired), derive the secret, check the
signature. The grant cannot be altered (the MAC covers it) and the secret cannot be computed
without the master key. The token is not encrypted: it tells the device its own account and
device ids, which it knows anyway.

Revocation: credentials live at most MAX_TTL_S. The grant carries ``issued_at``, so the
caller can refuse credentials issued before a device was released or re-claimed (see
``domain.claims``). Changing the master key revokes every credential at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from thinghub.domain.device_files import FileAction, FileGrant

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "CredentialError",
    "CredentialIssuer",
    "OpenedCredentials",
    "TemporaryCredentials",
]

TOKEN_PREFIX = "thst1."
# The Ioto agent renews its keys 20 minutes before they expire (provision.c ioGetKeys), and
# immediately when fewer than 20 minutes are left; anything shorter makes it ask for new keys
# every time it uses them. MIN_TTL_S is the shortest lifetime that suits the agent (the
# setting's documented floor); the issuer itself takes 1 s and up, for tests of expiry. One
# hour is AWS STS's default; 12 hours its usual maximum.
MIN_TTL_S = 25 * 60
DEFAULT_TTL_S = 60 * 60
MAX_TTL_S = 12 * 60 * 60
MIN_MASTER_KEY_BYTES = 32
MAX_TOKEN_CHARS = 4096
SECRET_CHARS = 40  # as AWS secret access keys
ACCESS_KEY_CHARS = 16  # after the "ASIA" prefix AWS uses for temporary keys

INVALID_ACCESS_KEY = "InvalidAccessKeyId"
INVALID_TOKEN = "InvalidToken"
EXPIRED_TOKEN = "ExpiredToken"

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")


class CredentialError(ValueError):
    """Credentials that do not open; ``code`` is the S3 error code to answer with."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TemporaryCredentials:
    """What getCreds answers (and what a signed URL is signed with)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float
    region: str


@dataclass(frozen=True, slots=True)
class OpenedCredentials:
    """A session token that checked out: its grant, and the secret to verify SigV4 with."""

    access_key_id: str
    grant: FileGrant
    region: str
    issued_at: float
    secret_access_key: str = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CredentialIssuer:
    """Issues and opens temporary credentials with one server master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) < MIN_MASTER_KEY_BYTES:
            raise ValueError(f"the master key must have at least {MIN_MASTER_KEY_BYTES} bytes")
        self._token_key = hmac.new(
            master_key, b"thinghub/aws-session-token/v1", hashlib.sha256
        ).digest()
        self._secret_key = hmac.new(
            master_key, b"thinghub/aws-secret-access-key/v1", hashlib.sha256
        ).digest()

    def issue(self, grant: FileGrant, *, region: str, now: float) -> TemporaryCredentials:
        """Issue credentials for a grant; they expire at ``grant.expires_at``.

        Raises:
            ValueError: the grant's lifetime is not 1..MAX_TTL_S seconds.
        """
        ttl = grant.expires_at - now
        if not 1 <= ttl <= MAX_TTL_S:
            raise ValueError(f"credential lifetime must be 1..{MAX_TTL_S} s, got {ttl}")
        access_key = "ASIA" + "".join(secrets.choice(_B32) for _ in range(ACCESS_KEY_CHARS))
        body: dict[str, Any] = {
            "k": access_key,
            "a": grant.account_id,
            "d": grant.device_id,
            "r": region,
            "i": int(now),
            "e": int(grant.expires_at),
            "x": sorted(action.value for action in grant.actions),
        }
        if grant.key is not None:
            body["o"] = grant.key
        if grant.size is not None:
            body["s"] = grant.size
        if grant.content_type is not None:
            body["t"] = grant.content_type
        payload = _b64url(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        signed = TOKEN_PREFIX + payload
        token = f"{signed}.{_b64url(self._mac(signed))}"
        return TemporaryCredentials(
            access_key_id=access_key,
            secret_access_key=self._secret(payload),
            session_token=token,
            expires_at=float(int(grant.expires_at)),
            region=region,
        )

    def open(
        self, access_key_id: str, session_token: str | None, *, now: float
    ) -> OpenedCredentials:
        """Check a session token against the request's access key id and the time.

        Raises:
            CredentialError: ``InvalidAccessKeyId`` (no token, or a token for another key),
                ``InvalidToken`` (malformed or forged), ``ExpiredToken``.
        """
        if session_token is None:
            raise CredentialError(
                INVALID_ACCESS_KEY, "the access key id does not exist (no session token)"
            )
        if len(session_token) > MAX_TOKEN_CHARS or not session_token.startswith(TOKEN_PREFIX):
            raise CredentialError(INVALID_TOKEN, "the session token is malformed")
        signed, dot, mac_text = session_token.rpartition(".")
        payload = signed.removeprefix(TOKEN_PREFIX)
        try:
            mac = _unb64url(mac_text)
        except (binascii.Error, ValueError) as exc:
            raise CredentialError(INVALID_TOKEN, "the session token is malformed") from exc
        if not dot or not hmac.compare_digest(mac, self._mac(signed)):
            raise CredentialError(INVALID_TOKEN, "the session token is invalid")
        body = self._body(payload)
        if body["k"] != access_key_id:
            raise CredentialError(
                INVALID_ACCESS_KEY, "the access key id does not match the session token"
            )
        if now > body["e"]:
            raise CredentialError(EXPIRED_TOKEN, "the session token has expired")
        grant = FileGrant(
            account_id=body["a"],
            device_id=body["d"],
            actions=frozenset(FileAction(a) for a in body["x"]),
            expires_at=float(body["e"]),
            key=body.get("o"),
            size=body.get("s"),
            content_type=body.get("t"),
        )
        return OpenedCredentials(
            access_key_id=access_key_id,
            grant=grant,
            region=body["r"],
            issued_at=float(body["i"]),
            secret_access_key=self._secret(payload),
        )

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._token_key, signed.encode("ascii"), hashlib.sha256).digest()

    def _secret(self, payload: str) -> str:
        digest = hmac.new(self._secret_key, payload.encode("ascii"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")[:SECRET_CHARS]

    @staticmethod
    def _body(payload: str) -> dict[str, Any]:
        # The MAC already matched, so the payload is ours; still check its shape, since a
        # token minted by an older version could differ.
        try:
            body = json.loads(_unb64url(payload))
            ok = (
                isinstance(body, dict)
                and all(isinstance(body.get(k), str) for k in ("k", "a", "d", "r"))
                and all(isinstance(body.get(k), int) for k in ("i", "e"))
                and isinstance(body.get("x"), list)
                and all(a in FileAction._value2member_map_ for a in body["x"])
            )
        except (binascii.Error, ValueError) as exc:
            raise CredentialError(INVALID_TOKEN, "the session token is malformed") from exc
        if not ok:
            raise CredentialError(INVALID_TOKEN, "the session token is malformed")
        return dict(body)
