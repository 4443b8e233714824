"""Tests for thinghub.security.device_tokens: stable, derived Ioto device tokens."""

from __future__ import annotations

import pytest

from thinghub.security.device_tokens import (
    DeviceTokenError,
    DeviceTokenIssuer,
    DeviceTokenSubject,
)

ISSUER = DeviceTokenIssuer(b"k" * 32)
SUBJECT = DeviceTokenSubject("JT08FFQXWQ", "acc-1", 3)


def test_the_same_claim_gets_the_same_token() -> None:
    token = ISSUER.token(SUBJECT)
    assert token == ISSUER.token(SUBJECT)
    assert token.startswith("thio1.")
    assert ISSUER.open(token) == SUBJECT


def test_another_generation_or_account_is_another_token() -> None:
    token = ISSUER.token(SUBJECT)
    assert ISSUER.token(DeviceTokenSubject("JT08FFQXWQ", "acc-1", 4)) != token
    assert ISSUER.token(DeviceTokenSubject("JT08FFQXWQ", "acc-2", 3)) != token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.replace("thio1.", "thio2."),
        lambda t: t.rsplit(".", 1)[0],
        lambda t: "bearer " + t,
        lambda t: "",
        lambda t: t + "." + t,
        lambda t: DeviceTokenIssuer(b"x" * 32).token(SUBJECT),
        lambda t: "thio1." + "A" * 2000,
        lambda t: "thio1.!!.AAAA",
    ],
)
def test_forged_tokens_are_refused(mangle: object) -> None:
    with pytest.raises(DeviceTokenError):
        ISSUER.open(mangle(ISSUER.token(SUBJECT)))  # type: ignore[operator]


def test_short_master_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        DeviceTokenIssuer(b"short")
