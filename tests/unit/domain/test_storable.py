"""check_storable (domain/storable.py): exactly what storage (orjson) writes back, no more."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.domain.storable import (
    MAX_STORABLE_DEPTH,
    MAX_STORABLE_INT,
    MIN_STORABLE_INT,
    check_storable,
)


def nested(levels: int) -> Any:
    node: Any = 0
    for _ in range(levels):
        node = [node]
    return node


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        MIN_STORABLE_INT,
        MAX_STORABLE_INT,
        1.5e308,
        "",
        "é€😀",
        {"a": [1, {"b": None}], "ü": "x"},
        (1, 2),
        nested(MAX_STORABLE_DEPTH),
    ],
)
def test_storable_values_pass(value: Any) -> None:
    check_storable(value, "body")
    orjson.dumps(value)  # and storage writes them indeed


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (MAX_STORABLE_INT + 1, "beyond 64 bits cannot be stored"),
        (MIN_STORABLE_INT - 1, "beyond 64 bits cannot be stored"),
        ({"a": [1, 2**70]}, "integer of 71 bits"),
        (math.nan, "not a JSON number"),
        ([math.inf], "not a JSON number"),
        ({"x": -math.inf}, "not a JSON number"),
        ("\ud800", "not valid Unicode"),
        ({"k\udfff": 1}, "not valid Unicode"),
        ({1: "x"}, "key that is not a string"),
        (nested(MAX_STORABLE_DEPTH + 1), f"deeper than {MAX_STORABLE_DEPTH} levels"),
    ],
)
def test_unstorable_values_are_invalid_naming_the_field(value: Any, needle: str) -> None:
    with pytest.raises(Invalid) as info:
        check_storable(value, "properties")
    assert needle in info.value.message
    assert info.value.message.startswith("properties ")
    assert info.value.field == "properties"


def test_a_value_no_json_parser_makes_is_a_bug() -> None:
    with pytest.raises(TypeError, match="set"):
        check_storable({"a": {1, 2}}, "body")


def test_the_walk_does_not_recurse() -> None:
    """Far deeper than Python's recursion limit: refused, not a RecursionError."""
    with pytest.raises(Invalid, match="deeper than"):
        check_storable(nested(50_000), "body")


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates, as json.loads makes them
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.just("\udc00"), inner, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_agrees_with_what_storage_writes(value: Any) -> None:
    """check_storable passes exactly when orjson can write the value (NaN and Infinity aside,
    which orjson would write as null and which are refused on purpose)."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        with pytest.raises(Invalid):
            check_storable(value, "v")
    else:
        check_storable(value, "v")
