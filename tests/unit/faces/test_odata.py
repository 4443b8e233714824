"""The OData $filter subset of the IoT Central face (faces/central/odata.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.faces.central.odata import (
    MAX_DEPTH,
    MAX_FILTER_CHARS,
    MAX_ORDERBY_KEYS,
    FieldType,
    FilterError,
    parse_filter,
    parse_orderby,
)

FIELDS: dict[str, FieldType] = {
    "id": "string",
    "displayName": "string",
    "template": "string",
    "simulated": "boolean",
    "provisioned": "boolean",
    "enabled": "boolean",
    "count": "number",
}

DEVICES: list[dict[str, Any]] = [
    {
        "id": "device001",
        "displayName": "Sensor Alpha",
        "template": "dtmi:t:sensor;1",
        "simulated": False,
        "provisioned": True,
        "enabled": True,
        "count": 3,
    },
    {
        "id": "device002",
        "displayName": "Actuator Beta",
        "template": "dtmi:t:actuator;1",
        "simulated": True,
        "provisioned": True,
        "enabled": True,
        "count": 10,
    },
    {
        "id": "pump-7",
        "displayName": "It's a pump",
        "template": None,
        "simulated": False,
        "provisioned": False,
        "enabled": False,
        "count": -2.5,
    },
]


def ids(text: str) -> list[str]:
    matcher = parse_filter(text, FIELDS)
    return [d["id"] for d in DEVICES if matcher.matches(d)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("simulated eq true", ["device002"]),
        ("simulated eq false", ["device001", "pump-7"]),
        ("simulated ne true", ["device001", "pump-7"]),
        ("id eq 'device001'", ["device001"]),
        ("'device001' eq id", ["device001"]),
        ("displayName eq 'It''s a pump'", ["pump-7"]),
        ("id gt 'device001'", ["device002", "pump-7"]),
        ("id ge 'device002'", ["device002", "pump-7"]),
        ("id lt 'device002'", ["device001"]),
        ("id le 'device002'", ["device001", "device002"]),
        ("count gt 3", ["device002"]),
        ("count ge 3", ["device001", "device002"]),
        ("count lt 0", ["pump-7"]),
        ("count le -2.5", ["pump-7"]),
        ("count eq 1e1", ["device002"]),
        ("template eq null", ["pump-7"]),
        ("template ne null", ["device001", "device002"]),
        ("null eq template", ["pump-7"]),
        ("template gt 'dtmi:t:b'", ["device001"]),
        ("startswith(id, 'device')", ["device001", "device002"]),
        ("startswith(template, 'dtmi')", ["device001", "device002"]),
        ("endswith(displayName, 'Beta')", ["device002"]),
        ("contains(displayName, 'pump')", ["pump-7"]),
        ("startswith(id,'device') eq false", ["pump-7"]),
        ("enabled", ["device001", "device002"]),
        ("not enabled", ["pump-7"]),
        ("not not enabled", ["device001", "device002"]),
        ("enabled and simulated", ["device002"]),
        ("enabled and not simulated", ["device001"]),
        ("simulated or not provisioned", ["device002", "pump-7"]),
        ("simulated eq true or id eq 'pump-7' and enabled eq true", ["device002"]),
        ("(simulated eq true or id eq 'pump-7') and enabled eq false", ["pump-7"]),
        ("not (simulated eq true or id eq 'pump-7')", ["device001"]),
        ("((((id eq 'device001'))))", ["device001"]),
        ("true", ["device001", "device002", "pump-7"]),
        ("false", []),
        ("  simulated   EQ   TRUE  ", ["device002"]),
        ("simulated eq true AND enabled eq true", ["device002"]),
        ("StartsWith(id, 'pump')", ["pump-7"]),
        ("id eq ''", []),
        ("id eq 'ünïcødé'", []),
    ],
)
def test_filters_match(text: str, expected: list[str]) -> None:
    assert ids(text) == expected


def test_and_binds_tighter_than_or() -> None:
    # a or (b and c), not (a or b) and c
    assert ids("id eq 'pump-7' or simulated eq true and enabled eq false") == ["pump-7"]


def test_missing_fields_in_a_record_are_null() -> None:
    matcher = parse_filter("template eq null and not enabled", FIELDS)
    assert matcher.matches({})
    assert not parse_filter("id gt 'a'", FIELDS).matches({})
    assert not parse_filter("startswith(id, 'a')", FIELDS).matches({})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("simulated eq", "expected a value"),
        ("eq true", "expected a value"),
        ("simulated eq true and", "expected a value"),
        ("simulated eq true or", "expected a value"),
        ("not", "expected a value"),
        ("(simulated eq true", "expected ')'"),
        ("simulated eq true)", "unexpected ')'"),
        ("()", "expected a value"),
        ("simulated == true", "unexpected character '='"),
        ("simulated eq true;", "unexpected character ';'"),
        ("id eq 'abc", "unterminated string"),
        ('id eq "abc"', "unexpected character"),
        ("colour eq 'red'", "unknown field 'colour'"),
        ("Id eq 'x'", "unknown field 'Id'"),
        ("substringof('a', id)", "unknown function"),
        ("startswith(id)", "takes 2 arguments"),
        ("startswith(id, 'a', 'b')", "takes 2 arguments"),
        ("startswith(id, 1)", "takes (string, string)"),
        ("startswith(enabled, 'a')", "takes (string, string)"),
        ("startswith(id, 'a'", "expected ')'"),
        ("simulated eq 'true'", "compares a boolean with a string"),
        ("id eq 1", "compares a number with a string"),
        ("count eq 'x'", "compares a number with a string"),
        ("enabled gt false", "not booleans"),
        ("template gt null", "cannot compare with null"),
        ("id", "must be a condition"),
        ("'x'", "must be a condition"),
        ("1", "must be a condition"),
        ("null", "must be a condition"),
        ("not id", "'not' needs a condition"),
        ("id and enabled", "joins conditions"),
        ("enabled or 'x'", "joins conditions"),
        ("id eq 'a' eq 'b'", "unexpected 'eq'"),
        ("enabled enabled", "unexpected 'enabled'"),
        ("1e999 eq count", "out of range"),
        ("count eq 12abc", "unexpected character '1'"),
        ("and", "expected a value, got 'and'"),
        ("id eq eq", "expected a value, got 'eq'"),
        ("id eq 'a',", "unexpected ','"),
    ],
)
def test_malformed_filters_are_errors(text: str, needle: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text, FIELDS)
    assert needle in info.value.message
    assert info.value.message.startswith("$filter: ")
    assert isinstance(info.value, Invalid)  # so every face answers 400
    assert info.value.field == "$filter"


def test_positions_are_one_based() -> None:
    with pytest.raises(FilterError, match="at position 4"):
        parse_filter("id ! 'x'", FIELDS)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep = "(" * (MAX_DEPTH + 1) + "enabled" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(FilterError, match="nests deeper"):
        parse_filter(deep, FIELDS)
    nots = "not " * (MAX_DEPTH + 1) + "enabled"
    with pytest.raises(FilterError, match="nests deeper"):
        parse_filter(nots, FIELDS)
    ok = "(" * MAX_DEPTH + "enabled" + ")" * MAX_DEPTH
    assert parse_filter(ok, FIELDS).matches({"enabled": True})


def test_long_chains_do_not_recurse() -> None:
    text = " or ".join(["id eq 'x'"] * 300)
    assert not parse_filter(text, FIELDS).matches({"id": "y"})
    assert parse_filter(text + " or enabled", FIELDS).matches({"enabled": True})


def test_too_long_is_refused() -> None:
    with pytest.raises(FilterError, match="longer than"):
        parse_filter("id eq '" + "x" * MAX_FILTER_CHARS + "'", FIELDS)


def test_huge_numbers_are_fine() -> None:
    assert not parse_filter("count gt " + "9" * 3000, FIELDS).matches({"count": 5})


_ALPHABET = st.sampled_from(
    [
        "id",
        "enabled",
        "simulated",
        "template",
        "count",
        "eq",
        "ne",
        "gt",
        "and",
        "or",
        "not",
        "(",
        ")",
        ",",
        "'a'",
        "'",
        "''",
        "true",
        "false",
        "null",
        "1",
        "-2.5",
        "startswith",
        "contains",
        " ",
        "  ",
        "x",
        "==",
        "$",
        "é",
        "\t",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_ALPHABET, max_size=25).map(" ".join))
def test_token_soup_never_crashes(text: str) -> None:
    try:
        matcher = parse_filter(text, FIELDS)
    except FilterError:
        return
    for device in DEVICES:
        assert matcher.matches(device) in (True, False)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_never_crashes(text: str) -> None:
    try:
        matcher = parse_filter(text, FIELDS)
    except FilterError:
        return
    for device in DEVICES:
        matcher.matches(device)


# -- OData string functions and $orderby --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tolower(displayName) eq 'sensor alpha'", ["device001"]),
        ("toupper(id) eq 'PUMP-7'", ["pump-7"]),
        ("length(id) eq 6", ["pump-7"]),
        ("indexof(displayName, 'Beta') gt 0", ["device002"]),
        ("substring(id, 7) eq '01'", ["device001"]),
        ("substring(id, 0, 4) eq 'pump'", ["pump-7"]),
        ("concat(id, '!') eq 'pump-7!'", ["pump-7"]),
        ("trim(concat(' ', id)) eq 'device002'", ["device002"]),
        ("contains(tolower(displayName), 'a')", ["device001", "device002", "pump-7"]),
        # A function of a null field is null: equal to null, never true as a condition.
        ("tolower(template) eq null", ["pump-7"]),
        ("startswith(template, 'dtmi')", ["device001", "device002"]),
    ],
)
def test_string_functions(text: str, expected: list[str]) -> None:
    flt = parse_filter(text, FIELDS)
    assert [d["id"] for d in DEVICES if flt.matches(d)] == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("length(id)", "must be a condition"),
        ("substring(id)", "takes 2 or 3 arguments"),
        ("tolower(enabled) eq 'x'", "takes (string)"),
        ("length(id) eq 'x'", "compares a number with a string"),
        ("substring(id, 'a') eq 'x'", "takes (string, number)"),
    ],
)
def test_function_misuse_is_an_error(text: str, needle: str) -> None:
    with pytest.raises(FilterError, match=re.escape(needle)):
        parse_filter(text, FIELDS)


def test_orderby_sorts_by_keys_with_nulls_first() -> None:
    order = parse_orderby("template desc, id", FIELDS)
    assert [d["id"] for d in order.sort(DEVICES)] == ["device001", "device002", "pump-7"]
    order = parse_orderby("template", FIELDS)
    assert [d["id"] for d in order.sort(DEVICES)] == ["pump-7", "device002", "device001"]
    order = parse_orderby("enabled asc,count DESC", FIELDS)
    assert [d["id"] for d in order.sort(DEVICES)] == ["pump-7", "device002", "device001"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("colour", "unknown field 'colour'"),
        ("id sideways", "is not field [asc|desc]"),
        ("id asc extra", "is not field [asc|desc]"),
        ("id,", "an empty key"),
        (",".join(["id"] * (MAX_ORDERBY_KEYS + 1)), f"at most {MAX_ORDERBY_KEYS} keys"),
    ],
)
def test_bad_orderby_is_invalid(text: str, needle: str) -> None:
    with pytest.raises(Invalid, match=re.escape(needle)) as caught:
        parse_orderby(text, FIELDS)
    assert caught.value.field == "$orderby"
