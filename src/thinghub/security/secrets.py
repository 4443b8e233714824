"""API token secrets: minting ``thk_<id>_<secret>`` tokens, parsing them, hashing the secret.

Format: ``thk_`` + token id + ``_`` + secret.

- The token id is 12 characters of ``[a-z0-9]`` (about 62 bits). It is not secret: it is the
  key under which the token row is looked up, and it may appear in logs and listings.
- The secret is 32 random bytes as URL-safe base64 without padding (43 characters of
  ``[A-Za-z0-9_-]``). It may itself contain ``_``; that is unambiguous because the id never
  does, so a token splits deterministically on its first two underscores.

Only the SHA-256 of the secret is stored. The full token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import NamedTuple

__all__ = [
    "API_TOKEN_PREFIX",
    "NewApiToken",
    "hash_secret",
    "new_api_token",
    "parse_api_token",
    "verify_secret",
]

API_TOKEN_PREFIX = "thk_"
TOKEN_ID_CHARS = 12
SECRET_BYTES = 32

_ID_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_RE = re.compile(rf"thk_(?P<id>[a-z0-9]{{{TOKEN_ID_CHARS}}})_(?P<secret>[A-Za-z0-9_-]{{43}})")


class NewApiToken(NamedTuple):
    """A freshly minted token: store token_id and secret_hash, show token once."""

    token_id: str
    token: str
    secret_hash: str


def new_api_token() -> NewApiToken:
    """Mint a token; returns (token_id, full token string, secret hash)."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(TOKEN_ID_CHARS))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewApiToken(token_id, f"{API_TOKEN_PREFIX}{token_id}_{secret}", hash_secret(secret))


def parse_api_token(token: str) -> tuple[str, str] | None:
    """Split a token into (token_id, secret), or None if it is not shaped like one of ours."""
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return match["id"], match["secret"]


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a token secret.

    A fast hash is right here, unlike for passwords: the secret is 256 random bits, so there
    is nothing to brute-force and no need for salt or argon2's cost, which would only slow
    down every API request. Human passwords use passwords.hash_password.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Compare a presented secret with a stored hash in constant time."""
    return hmac.compare_digest(hash_secret(secret).encode("ascii"), secret_hash.encode("utf-8"))
