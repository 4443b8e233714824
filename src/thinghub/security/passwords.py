"""Password hashing for human users, with argon2id (argon2-cffi's recommended parameters)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "needs_rehash", "verify_password"]

# One hasher for the process; its parameters are argon2-cffi's RFC 9106 "low memory" profile.
# Hashing takes tens of milliseconds on purpose: async callers run it in an executor.
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """Hash a password; the result (``$argon2id$...``) embeds its salt and parameters."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Say whether password matches password_hash.

    Never raises on a mismatch or on a stored hash that is not a valid argon2 hash; both
    simply answer False.
    """
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Say whether a hash was made with other parameters than today's, after a successful
    verify_password; then store hash_password(password) instead. True for an invalid hash.
    """
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
