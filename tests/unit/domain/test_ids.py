"""Tests for thinghub.domain.ids: the id character set, entity keys and generated ids."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from thinghub.domain.errors import Invalid
from thinghub.domain.ids import (
    MAX_ID_CHARS,
    entity_id,
    new_id_scope,
    new_uuid,
    parse_id,
    split_entity_id,
)


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "c8dc6706-a327-4f99-ab21-80010f667860",
        "example_project",
        "sensor.1",
        "urn:dev:7",
        "A-Z_a-z.0:9",
        "x" * MAX_ID_CHARS,
    ],
)
def test_parse_id_accepts_the_safe_set(value: str) -> None:
    assert parse_id(value, "deviceId") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * (MAX_ID_CHARS + 1),
        "gw/module",
        "a b",
        "a\n",
        "\na",
        "caf\u00e9",
        "a#b",
        "a?b",
        "a%2F",
        "a+b",
        "$edgeAgent",
        "dev\x00",
    ],
)
def test_parse_id_rejects_outside_the_set(value: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_id(value, "deviceId")
    assert info.value.field == "deviceId"
    assert repr(value) in info.value.message


@pytest.mark.parametrize("value", [None, 1, 1.5, b"dev", ["dev"], {"id": "dev"}])
def test_parse_id_rejects_non_strings(value: Any) -> None:
    with pytest.raises(Invalid) as info:
        parse_id(value)
    assert info.value.field == "id"


def test_entity_id_of_devices_and_modules() -> None:
    assert entity_id("gw-1") == "gw-1"
    assert entity_id("gw-1", "filter") == "gw-1/filter"
    assert split_entity_id("gw-1/filter") == ("gw-1", "filter")
    assert split_entity_id("gw-1") == ("gw-1", None)


@pytest.mark.parametrize(("device", "module"), [("d", None), ("gw.1", "m:2"), ("a-b", "c_d")])
def test_entity_id_round_trips(device: str, module: str | None) -> None:
    assert split_entity_id(entity_id(device, module)) == (device, module)


def test_new_uuid_is_a_fresh_uuid4() -> None:
    made = {new_uuid() for _ in range(100)}
    assert len(made) == 100
    for value in made:
        assert uuid.UUID(value).version == 4
        assert parse_id(value) == value


def test_new_id_scope_looks_like_azure() -> None:
    # The ST API's example idScope is 0ne00D47E07: "0ne" and eight upper-case hex digits.
    scopes = {new_id_scope() for _ in range(50)}
    assert len(scopes) == 50
    for scope in scopes:
        assert re.fullmatch(r"0ne[0-9A-F]{8}", scope), scope
