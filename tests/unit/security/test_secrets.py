"""Tests for thinghub.security.secrets: API token format and secret hashing."""

from __future__ import annotations

import hashlib
import re

import pytest

from thinghub.security.secrets import (
    hash_secret,
    new_api_token,
    parse_api_token,
    verify_secret,
)


def test_new_token_shape() -> None:
    token_id, token, secret_hash = new_api_token()
    assert re.fullmatch(r"[a-z0-9]{12}", token_id)
    assert token.startswith(f"thk_{token_id}_")
    secret = token[len(f"thk_{token_id}_") :]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in secret_hash


def test_new_token_is_a_named_triple() -> None:
    minted = new_api_token()
    assert isinstance(minted, tuple)
    assert len(minted) == 3
    assert minted.token_id == minted[0]
    assert minted.token == minted[1]
    assert minted.secret_hash == minted[2]


def test_tokens_are_unique() -> None:
    minted = [new_api_token() for _ in range(200)]
    assert len({m.token_id for m in minted}) == 200
    assert len({m.token for m in minted}) == 200


def test_parse_round_trip_and_verify() -> None:
    for _ in range(200):  # many, so secrets containing '_' and '-' are exercised
        token_id, token, secret_hash = new_api_token()
        parsed = parse_api_token(token)
        assert parsed is not None
        assert parsed[0] == token_id
        assert verify_secret(parsed[1], secret_hash)


def test_secret_with_underscores_splits_on_the_first_two() -> None:
    secret = "_a_" + "b" * 38 + "_-"
    assert len(secret) == 43
    assert parse_api_token(f"thk_abcdefghij12_{secret}") == ("abcdefghij12", secret)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "thk_",
        "thk__",
        "garbage",
        "thk_abcdefghij12",
        "thk_abcdefghij12_",
        "THK_abcdefghij12_" + "a" * 43,
        "tok_abcdefghij12_" + "a" * 43,
        "thk_abcdefghij1_" + "a" * 44,  # id too short
        "thk_abcdefghij123_" + "a" * 42,  # id too long
        "thk_ABCDEFGHIJ12_" + "a" * 43,  # id is lowercase only
        "thk_abcdef_hij12_" + "a" * 43,  # '_' inside the id
        "thk_abcdefghij12_" + "a" * 42,  # secret too short
        "thk_abcdefghij12_" + "a" * 44,  # secret too long
        "thk_abcdefghij12_" + "a" * 42 + "=",  # padding
        "thk_abcdefghij12_" + "a" * 42 + "+",  # not URL-safe
        " thk_abcdefghij12_" + "a" * 43,
        "thk_abcdefghij12_" + "a" * 43 + "\n",
        "Bearer thk_abcdefghij12_" + "a" * 43,
    ],
)
def test_parse_rejects(token: str) -> None:
    assert parse_api_token(token) is None


def test_hash_secret_is_sha256_hex() -> None:
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_secret_failures() -> None:
    _, token, secret_hash = new_api_token()
    parsed = parse_api_token(token)
    assert parsed is not None
    secret = parsed[1]
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret_hash)
    assert not verify_secret("", secret_hash)
    assert not verify_secret(secret, secret_hash.upper())
    assert not verify_secret(secret, "")
    assert not verify_secret(secret, "zz")
    assert not verify_secret(secret, "é" * 64)  # non-ASCII stored value: False, not TypeError
    assert not verify_secret(secret, hash_secret(secret + "x"))
