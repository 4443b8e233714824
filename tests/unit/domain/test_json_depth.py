"""Tests for thinghub.domain.json_depth: the nesting-depth check that runs before any parser."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.domain.json_depth import (
    DEFAULT_MAX_JSON_DEPTH,
    JSON_DEPTH_CEILING,
    check_depth,
    exceeds_depth,
)


def depth_of(value: Any) -> int:
    """Reference: the nesting depth of a parsed JSON value, by recursion (small values only)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def parser_depth(data: bytes) -> int:
    """Reference for any bytes: the deepest a JSON parser could recurse before it fails.

    Walks byte by byte as a JSON tokenizer does: strings end at an unescaped quote (or never);
    parsing stops at a backslash outside a string and at the first close that has nothing to
    close (real parsers stop at more errors, so they get no deeper than this).
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "\\":
            break
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
            if depth < 0:
                break
    return deepest


def nest(levels: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * levels + leaf + b"}" * levels


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"a"', 0),
        ("[]", 1),
        ("{}", 1),
        ('{"a": [1]}', 2),
        ("[[], [[]], []]", 3),
        ('{"a": {"b": {"c": []}}, "d": [1, 2, {"e": null}]}', 4),
        ('["[[[[[[", "]]]]", "{{{{"]', 1),  # brackets in strings do not count
        ('["\\"[[[[", "\\\\", "[[["]', 1),  # nor after escaped quotes and backslashes
        ('{"a\\\\": ["\\\\\\"[[[["]}', 2),
        ('["\\u005b\\u005b", [["x\\n"]]]', 3),
    ],
)
def test_depth_of_examples(text: str, depth: int) -> None:
    assert not exceeds_depth(text, depth)
    assert not exceeds_depth(text.encode(), depth)
    if depth > 0:
        assert exceeds_depth(text, depth - 1)
        assert exceeds_depth(text.encode(), depth - 1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\ \n\u00e9'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='k[{"\\', max_size=3), children, max_size=4)
    ),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=12))
def test_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert exceeds_depth(text, limit) == (depth_of(value) > limit)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=300))
def test_deep_chains_and_combs(levels: int, limit: int) -> None:
    chain = b"[" * levels + b"]" * levels
    comb = b"[1," * levels + b"]" * levels
    wide = b"[" + b",".join([nest(min(levels, 5))] * 50) + b"]"
    assert exceeds_depth(chain, limit) == (levels > limit)
    assert exceeds_depth(comb, limit) == (levels > limit)
    assert exceeds_depth(nest(levels), limit) == (levels > limit)
    assert exceeds_depth(wide, limit) == (min(levels, 5) + 1 > limit)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\a,', max_size=200).map(str.encode))
def test_never_passes_what_a_parser_would_recurse_into(data: bytes) -> None:
    """On any bytes (JSON or not), False means no parser could get deeper than the limit."""
    depth = parser_depth(data)
    for limit in range(0, depth):
        assert exceeds_depth(data, limit), (data, limit, depth)


def test_the_reported_attacks_are_caught() -> None:
    assert exceeds_depth(b"[" * 131072 + b"]" * 131072, DEFAULT_MAX_JSON_DEPTH)
    assert exceeds_depth(b'{"":' * 52428, DEFAULT_MAX_JSON_DEPTH)
    assert exceeds_depth(b'{"x":' + b'{"a":' * 300 + b"1}" + b"}" * 300, DEFAULT_MAX_JSON_DEPTH)
    assert exceeds_depth(b"[[]," * 1000 + b"]" * 1000, DEFAULT_MAX_JSON_DEPTH)  # no long runs


def test_unbalanced_text_is_judged_by_its_unclosed_opens() -> None:
    assert not exceeds_depth(b"]" * 500 + b"[" * 3, 3)  # a parser stops at the first ]
    assert exceeds_depth(b"[" * 5, 4)
    assert not exceeds_depth(b"[" * 5, 5)
    assert not exceeds_depth(b"[[[1]]" + b",[]" * 200, 3)  # truncated wide text


def test_inputs_of_every_type() -> None:
    doc = b"[[[]]]"
    for form in (doc, bytearray(doc), memoryview(doc), doc.decode()):
        assert exceeds_depth(form, 2)
        assert not exceeds_depth(form, 3)
    assert not exceeds_depth("[\ud800]", 1)  # lone surrogates (stored text) are fine


def test_limit_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        exceeds_depth(b"[]", -1)


def test_check_depth_names_the_field_and_the_limit() -> None:
    check_depth(nest(3), 3, "properties")
    with pytest.raises(Invalid) as caught:
        check_depth(nest(4), 3, "properties")
    assert caught.value.field == "properties"
    assert "deeper than 3 levels" in caught.value.message
    assert "max_json_depth" in caught.value.message


def test_the_ceiling_leaves_room_for_orjson() -> None:
    """orjson writes at most 254 nested levels; rendering wraps a stored body in a few more."""
    deepest = json.loads("[" * JSON_DEPTH_CEILING + "]" * JSON_DEPTH_CEILING)
    page = [{"body": {"event": {"body": deepest}}}]
    assert len(orjson.dumps(page)) == 2 * JSON_DEPTH_CEILING + len('[{"body":{"event":{"body":}}}]')
    assert DEFAULT_MAX_JSON_DEPTH <= JSON_DEPTH_CEILING
