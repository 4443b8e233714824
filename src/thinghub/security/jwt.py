"""Short-lived access tokens: HS256 JWTs issued and checked by the hub itself.

Time is an argument. PyJWT would compare exp/iat/nbf with the wall clock, so those checks
are switched off in PyJWT and exp is checked here against the ``now`` the caller passes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

__all__ = ["ALGORITHM", "MIN_SECRET_BYTES", "Claims", "JwtError", "JwtIssuer"]

ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (32 bytes).
MIN_SECRET_BYTES = 32
# jti: 128 random bits, so ids never collide and a revocation list can key on them.
JTI_BYTES = 16

# Claims this module writes itself; ``extra`` may not override them.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "account_id", "role", "scope"}
)

_DECODE_OPTIONS: Options = {
    "verify_signature": True,
    "verify_exp": False,  # checked against `now` in verify
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
    "verify_iss": True,
    "verify_sub": True,  # a string
    "verify_jti": True,  # a string
    "require": ["iss", "sub", "iat", "exp", "jti"],
    "enforce_minimum_key_length": True,
}


class JwtError(ValueError):
    """A token is malformed, forged, expired or not ours; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    subject: str
    account_id: str
    role: str
    scope: str | None
    expires_at: int
    jti: str
    extra: dict[str, Any] = field(default_factory=dict)


class JwtIssuer:
    """Issues and verifies access tokens signed with one shared secret."""

    def __init__(self, secret: bytes, issuer: str = "thinghub", ttl_s: int = 3600) -> None:
        """Args:
            secret: at least MIN_SECRET_BYTES random bytes, e.g. ``secrets.token_bytes(32)``.
            issuer: the ``iss`` claim written and required.
            ttl_s: lifetime of issued tokens in seconds.

        Raises:
            ValueError: secret too short or ttl_s < 1.
        """
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"JWT secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}"
            )
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        self._secret = secret
        self._issuer = issuer
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"JwtIssuer(issuer={self._issuer!r}, ttl_s={self._ttl_s})"

    def issue(
        self,
        subject: str,
        account_id: str,
        role: str,
        *,
        scope: str | None = None,
        extra: dict[str, Any] | None = None,
        now: float,
    ) -> tuple[str, int]:
        """Issue a token.

        Args:
            subject: the principal (user id, OAuth2 client id, ...).
            account_id: the account the token acts in.
            role: the principal's role in that account.
            scope: OAuth2 scopes, space separated, or None.
            extra: more JSON claims; they must not use a reserved claim name.
            now: epoch seconds.

        Returns:
            (token, expires_in seconds), as an OAuth2 token response wants them.

        Raises:
            ValueError: extra uses a reserved claim name.
        """
        clashes = sorted(RESERVED_CLAIMS.intersection(extra or {}))
        if clashes:
            raise ValueError(f"extra claims may not override {', '.join(clashes)}")
        issued_at = int(now)
        payload: dict[str, Any] = {
            **(extra or {}),
            "iss": self._issuer,
            "sub": subject,
            "iat": issued_at,
            "exp": issued_at + self._ttl_s,
            "jti": secrets.token_urlsafe(JTI_BYTES),
            "account_id": account_id,
            "role": role,
        }
        if scope is not None:
            payload["scope"] = scope
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), self._ttl_s

    def verify(self, token: str, *, now: float) -> Claims:
        """Check a token's signature, issuer and expiry, and return its claims.

        Raises:
            JwtError: "malformed", "bad signature", "algorithm not allowed", "wrong issuer",
                "missing claim ...", "claim ... has the wrong type", or "expired". The
                signature is checked before anything the payload says is trusted.
        """
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                options=_DECODE_OPTIONS,
            )
        except jwt.InvalidSignatureError as exc:
            raise JwtError("bad signature") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise JwtError("algorithm not allowed") from exc
        except jwt.DecodeError as exc:
            raise JwtError("malformed") from exc
        except jwt.InvalidIssuerError as exc:
            raise JwtError("wrong issuer") from exc
        except InvalidSubjectError as exc:
            raise JwtError("claim 'sub' has the wrong type") from exc
        except InvalidJTIError as exc:
            raise JwtError("claim 'jti' has the wrong type") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise JwtError(f"missing claim {exc.claim!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise JwtError(f"invalid token ({type(exc).__name__})") from exc

        for name in ("sub", "jti", "account_id", "role"):
            if name not in payload:
                raise JwtError(f"missing claim {name!r}")
            if not isinstance(payload[name], str):
                raise JwtError(f"claim {name!r} has the wrong type")
        expires_at = payload["exp"]
        if not isinstance(expires_at, int) or isinstance(expires_at, bool):
            raise JwtError("claim 'exp' has the wrong type")
        scope = payload.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise JwtError("claim 'scope' has the wrong type")
        if not now < expires_at:
            raise JwtError("expired")
        return Claims(
            subject=payload["sub"],
            account_id=payload["account_id"],
            role=payload["role"],
            scope=scope,
            expires_at=expires_at,
            jti=payload["jti"],
            extra={k: v for k, v in payload.items() if k not in RESERVED_CLAIMS},
        )
