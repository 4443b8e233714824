"""Azure shared access signatures (SAS): device keys, token signing and token checking.

The token shape and the signing rules are those of the azure-iot-device SDK, for IoT Hub CONNECT
and for DPS with its group key derivation (docs/faces/device-mqtt.md, "Wire details"):

    SharedAccessSignature sr=<quote(uri, safe='')>&sig=<quote(b64 hmac, safe='')>&se=<expiry>

The string that is signed is the *URL-encoded* resource URI, a newline and the expiry, so the
server recomputes the HMAC over ``sr`` exactly as received rather than over a re-encoding of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

__all__ = [
    "KEY_BYTES",
    "MAX_TOKEN_CHARS",
    "TOKEN_PREFIX",
    "SasError",
    "SasToken",
    "derive_group_key",
    "generate_key",
    "parse",
    "sign",
    "verify",
]

TOKEN_PREFIX = "SharedAccessSignature "

# IoT Hub generates 64-byte symmetric keys (88 base64 characters); we do the same.
KEY_BYTES = 64

# The SDK's tokens are about 150 to 300 characters; 4 KiB leaves room for long ids and a key
# name while keeping the parsing of garbage (an MQTT password can be 64 KiB) cheap.
MAX_TOKEN_CHARS = 4096

# Only these fields are allowed (the SDK's sastoken.py, VALID_SASTOKEN_FIELDS).
_ALLOWED_FIELDS = frozenset({"sr", "sig", "se", "skn"})
_REQUIRED_FIELDS = ("sr", "sig", "se")

# Whole epoch seconds, canonical form only: the HMAC covers se as sent, and a zero-padded se
# would otherwise fail as a puzzling "signature mismatch". 20 digits bound int() on garbage.
_EXPIRY_RE = re.compile(r"0|[1-9][0-9]{0,19}")


class SasError(ValueError):
    """A SAS token or key is malformed or does not authenticate; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed SAS token.

    Attributes:
        resource_raw: ``sr`` exactly as received, still URL-encoded; this is what was signed.
        resource: ``sr`` URL-decoded, e.g. ``hub.example/devices/dev-1``.
        signature: ``sig`` URL-decoded, i.e. the base64 text of the HMAC. Kept out of repr
            because a valid token is a bearer credential until it expires.
        expiry: ``se``, whole epoch seconds.
        key_name: ``skn`` URL-decoded, or None when absent (the Python SDK never sends it).
    """

    resource_raw: str
    resource: str
    signature: str = field(repr=False)
    expiry: int
    key_name: str | None = None


def generate_key() -> str:
    """Return a new random symmetric key, base64 text of KEY_BYTES bytes (like IoT Hub's)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def derive_group_key(group_key_b64: str, registration_id: str) -> str:
    """Derive a device key from a DPS group enrollment key (spec §7).

    Returns:
        base64(HMAC-SHA256(key=b64decode(group key), msg=registration id as UTF-8)).

    Raises:
        SasError: the group key is not valid base64.
    """
    mac = hmac.new(_decode_key(group_key_b64), registration_id.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def sign(key_b64: str, resource_uri: str, expiry: int) -> str:
    """Build a full SAS token the way the Azure SDK does (spec §2).

    Args:
        key_b64: the base64 device (or derived) key.
        resource_uri: the unencoded URI, e.g. ``hub.example/devices/dev-1``.
        expiry: whole epoch seconds after which the token is refused.

    Returns:
        ``SharedAccessSignature sr=...&sig=...&se=...`` (no ``skn``, like the SDK).

    Raises:
        SasError: the key is not valid base64.
        ValueError: the expiry is negative.
    """
    if expiry < 0:
        raise ValueError(f"expiry must be >= 0, got {expiry}")
    encoded_uri = quote(resource_uri, safe="")
    signature = _signature(_decode_key(key_b64), encoded_uri, str(expiry))
    return (
        f"{TOKEN_PREFIX}sr={encoded_uri}"
        f"&sig={quote(base64.b64encode(signature).decode('ascii'), safe='')}"
        f"&se={expiry}"
    )


def parse(token: str) -> SasToken:
    """Parse a SAS token without checking it; see verify.

    Raises:
        SasError: the token is malformed; the reason names the field at fault (never its
            value, which could be the signature).
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise SasError(f"token longer than {MAX_TOKEN_CHARS} characters")
    if not token.startswith(TOKEN_PREFIX):
        raise SasError(f"token does not start with {TOKEN_PREFIX!r}")
    fields: dict[str, str] = {}
    for part in token[len(TOKEN_PREFIX) :].split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise SasError(f"field {name[:16]!r} has no '='")
        if name not in _ALLOWED_FIELDS:
            raise SasError(f"unknown field {name[:16]!r}")
        if name in fields:
            raise SasError(f"duplicate field {name!r}")
        if not value:
            raise SasError(f"empty field {name!r}")
        fields[name] = value
    for name in _REQUIRED_FIELDS:
        if name not in fields:
            raise SasError(f"missing field {name!r}")
    if not _EXPIRY_RE.fullmatch(fields["se"]):
        raise SasError("se is not a whole number of epoch seconds")
    skn = fields.get("skn")
    return SasToken(
        resource_raw=fields["sr"],
        resource=_unquote_field("sr", fields["sr"]),
        signature=_unquote_field("sig", fields["sig"]),
        expiry=int(fields["se"]),
        key_name=None if skn is None else _unquote_field("skn", skn),
    )


def verify(token: SasToken, *, key_b64: str, expected_resource: str, now: float) -> None:
    """Check a parsed token against a key, the resource it must name, and the time.

    The host part of the resource (everything before the first ``/``) is compared
    case-insensitively, the rest exactly. The HMAC is recomputed over ``sr`` as received plus
    ``"\\n"`` plus ``se``, and compared in constant time as bytes, so padding and ``+``/``%2B``
    spellings of the same signature are all accepted (spec §2).

    Args:
        token: from parse.
        key_b64: the device key (for a DPS group enrollment, the derived key).
        expected_resource: unencoded, e.g. ``hub.example/devices/dev-1`` or
            ``0ne00000001/registrations/dev-1``.
        now: epoch seconds; the token is valid while ``expiry > now``.

    Raises:
        SasError: "wrong resource ...", "signature mismatch", "expired", or a bad key.
    """
    if _normalise_resource(token.resource) != _normalise_resource(expected_resource):
        raise SasError(f"wrong resource {token.resource!r}, expected {expected_resource!r}")
    expected = _signature(_decode_key(key_b64), token.resource_raw, str(token.expiry))
    received = _decode_signature(token.signature)
    if received is None or not hmac.compare_digest(expected, received):
        raise SasError("signature mismatch")
    if not token.expiry > now:
        raise SasError(f"expired at {token.expiry}")


def _signature(key: bytes, encoded_uri: str, expiry: str) -> bytes:
    message = f"{encoded_uri}\n{expiry}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def _decode_key(key_b64: str) -> bytes:
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SasError("key is not valid base64") from exc
    if not key:
        raise SasError("key is empty")
    return key


def _decode_signature(signature: str) -> bytes | None:
    """Decode base64 leniently (padding optional, URL-safe alphabet allowed); None if invalid."""
    text = signature.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _unquote_field(name: str, value: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise SasError(f"field {name!r} is not valid UTF-8 once decoded") from exc


def _normalise_resource(resource: str) -> str:
    host, sep, rest = resource.partition("/")
    return host.lower() + sep + rest
