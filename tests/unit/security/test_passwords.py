"""Tests for thinghub.security.passwords: argon2id password hashes."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from thinghub.security.passwords import hash_password, needs_rehash, verify_password


def test_round_trip() -> None:
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery staple")
    assert not needs_rehash(stored)


def test_wrong_password() -> None:
    stored = hash_password("s3cret")
    assert not verify_password(stored, "s3cret ")
    assert not verify_password(stored, "S3cret")
    assert not verify_password(stored, "")


def test_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_unicode_and_empty_passwords() -> None:
    stored = hash_password("pässwörd ✓")
    assert verify_password(stored, "pässwörd ✓")
    assert not verify_password(stored, "passwort ✓")
    empty = hash_password("")
    assert verify_password(empty, "")
    assert not verify_password(empty, " ")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$",
        "$2b$12$KIXQJZ7n7p1t0YzF6oGqUeQ5n7S8dVb6H1Qn3bq0lqv0p1yZt9G7K",  # bcrypt
        "5f4dcc3b5aa765d61d8327deb882cf99",  # md5
    ],
)
def test_invalid_stored_hash_is_false_not_an_error(stored: str) -> None:
    assert verify_password(stored, "password") is False
    assert needs_rehash(stored) is True


def test_hash_of_another_password_does_not_verify() -> None:
    assert not verify_password(hash_password("a"), "b")


def test_weaker_parameters_need_rehash_but_still_verify() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(weak, "pw")
    assert needs_rehash(weak)
