"""Tests for thinghub.security.jwt: HS256 access tokens checked against an explicit `now`."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest

from thinghub.security.jwt import Claims, JwtError, JwtIssuer

SECRET = b"k" * 64  # long enough for the HS512 token in test_other_algorithms_are_refused
NOW = 1_000_000_000.0  # 2001: far from the wall clock, so PyJWT's own clock would get it wrong


@pytest.fixture
def issuer() -> JwtIssuer:
    return JwtIssuer(SECRET, ttl_s=600)


def raw_token(payload: dict[str, Any], key: bytes = SECRET, algorithm: str = "HS256") -> str:
    return pyjwt.encode(payload, key, algorithm=algorithm)


def b64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def good_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "iss": "thinghub",
        "sub": "user-1",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "j1",
        "account_id": "acc-1",
        "role": "admin",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def reason_of(issuer: JwtIssuer, token: str, now: float = NOW) -> str:
    with pytest.raises(JwtError) as info:
        issuer.verify(token, now=now)
    return info.value.reason


def test_round_trip(issuer: JwtIssuer) -> None:
    token, expires_in = issuer.issue(
        "client-7", "acc-1", "operator", scope="things:read things:write", now=NOW
    )
    assert expires_in == 600
    claims = issuer.verify(token, now=NOW + 1)
    assert claims == Claims(
        subject="client-7",
        account_id="acc-1",
        role="operator",
        scope="things:read things:write",
        expires_at=int(NOW) + 600,
        jti=claims.jti,
        extra={},
    )
    assert len(claims.jti) >= 20


def test_claims_on_the_wire(issuer: JwtIssuer) -> None:
    token, _ = issuer.issue("u", "a", "viewer", now=NOW + 0.9)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    payload = pyjwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload["iss"] == "thinghub"
    assert payload["sub"] == "u"
    assert payload["iat"] == int(NOW)
    assert payload["exp"] == int(NOW) + 600
    assert "scope" not in payload
    assert issuer.verify(token, now=NOW).scope is None


def test_extra_claims_round_trip(issuer: JwtIssuer) -> None:
    extra = {"grants": ["dev-1", "dev-2"], "n": 3}
    token, _ = issuer.issue("u", "a", "viewer", extra=extra, now=NOW)
    assert issuer.verify(token, now=NOW).extra == extra


def test_extra_may_not_override_reserved_claims(issuer: JwtIssuer) -> None:
    for name in ("exp", "sub", "role", "account_id", "iss"):
        with pytest.raises(ValueError, match=name):
            issuer.issue("u", "a", "viewer", extra={name: "x"}, now=NOW)


def test_jti_is_unique(issuer: JwtIssuer) -> None:
    jtis = {issuer.verify(issuer.issue("u", "a", "r", now=NOW)[0], now=NOW).jti for _ in range(50)}
    assert len(jtis) == 50


def test_now_is_respected_not_the_wall_clock(issuer: JwtIssuer) -> None:
    # Issued in 2001 and checked in 2001: valid, though long expired by the wall clock.
    token, _ = issuer.issue("u", "a", "r", now=NOW)
    assert issuer.verify(token, now=NOW + 599.999).subject == "u"
    # Issued in 2096: PyJWT's own iat check would call it "not yet valid".
    future = 4_000_000_000.0
    token, _ = issuer.issue("u", "a", "r", now=future)
    assert issuer.verify(token, now=future).subject == "u"


def test_expired(issuer: JwtIssuer) -> None:
    token, _ = issuer.issue("u", "a", "r", now=NOW)
    for now in (NOW + 600, NOW + 601, NOW + 10**6):
        assert reason_of(issuer, token, now) == "expired"


def test_wrong_secret(issuer: JwtIssuer) -> None:
    token, _ = JwtIssuer(b"x" * 32).issue("u", "a", "r", now=NOW)
    assert reason_of(issuer, token) == "bad signature"


def test_tampered_payload(issuer: JwtIssuer) -> None:
    token, _ = issuer.issue("u", "a", "viewer", now=NOW)
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["role"] = "admin"
    assert reason_of(issuer, f"{head}.{b64url(payload)}.{sig}") == "bad signature"


def test_tampered_signature(issuer: JwtIssuer) -> None:
    token, _ = issuer.issue("u", "a", "viewer", now=NOW)
    flipped = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert reason_of(issuer, flipped) == "bad signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "é.é.é", "eyJ.eyJ.x"])
def test_malformed(issuer: JwtIssuer, token: str) -> None:
    assert reason_of(issuer, token) == "malformed"


def test_other_algorithms_are_refused(issuer: JwtIssuer) -> None:
    assert reason_of(issuer, raw_token(good_payload(), algorithm="HS512")) == (
        "algorithm not allowed"
    )
    unsigned = ".".join([b64url({"alg": "none", "typ": "JWT"}), b64url(good_payload()), ""])
    assert reason_of(issuer, unsigned) == "algorithm not allowed"


def test_wrong_issuer(issuer: JwtIssuer) -> None:
    token, _ = JwtIssuer(SECRET, issuer="someone-else").issue("u", "a", "r", now=NOW)
    assert reason_of(issuer, token) == "wrong issuer"


def test_hand_made_token_with_our_secret_verifies(issuer: JwtIssuer) -> None:
    assert issuer.verify(raw_token(good_payload()), now=NOW).account_id == "acc-1"


@pytest.mark.parametrize("claim", ["iss", "sub", "iat", "exp", "jti", "account_id", "role"])
def test_missing_claim(issuer: JwtIssuer, claim: str) -> None:
    token = raw_token(good_payload(**{claim: None}))
    assert reason_of(issuer, token) == f"missing claim {claim!r}"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 5),
        ("jti", 5),
        ("account_id", 1),
        ("role", ["admin"]),
        ("exp", "soon"),
        ("exp", 1e12),
        ("exp", True),
        ("scope", ["a", "b"]),
    ],
)
def test_claim_of_the_wrong_type(issuer: JwtIssuer, claim: str, value: Any) -> None:
    token = raw_token(good_payload(**{claim: value}))
    assert reason_of(issuer, token) == f"claim {claim!r} has the wrong type"


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtIssuer(b"short")
    with pytest.raises(ValueError, match="ttl_s"):
        JwtIssuer(SECRET, ttl_s=0)


def test_repr_does_not_show_the_secret(issuer: JwtIssuer) -> None:
    assert "kkkk" not in repr(issuer)


def test_jwt_error_is_a_value_error() -> None:
    error = JwtError("expired")
    assert isinstance(error, ValueError)
    assert error.reason == "expired"
