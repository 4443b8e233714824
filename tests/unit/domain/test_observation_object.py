"""observation_object (an observation set's values) is exactly observation_values as a dict,
whichever way it takes: the short one for a plain JSON object parsed from its own text, the
careful one for everything else."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.telemetry import (
    METRIC_NAME_MAX_CHARS,
    TelemetryMessage,
    observation_object,
    observation_values,
)


def message(body: Any, raw: bytes | None, component: str | None = None) -> TelemetryMessage:
    return TelemetryMessage(
        account_id="acc",
        device_id="dev",
        enqueued_at=1.0,
        body=body,
        raw=raw or b"",
        body_json=raw,
        component=component,
    )


def same(m: TelemetryMessage) -> None:
    got = observation_object(m)
    assert got == dict(observation_values(m))
    assert all(type(v) is float for v in got.values())
    assert list(got) == [k for k, _ in observation_values(m)]  # the body's order


ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson reads and writes
values = st.one_of(
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(ints, max_size=2),
    st.dictionaries(st.text(max_size=3), ints, max_size=2),
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=12), values, max_size=8))
def test_any_json_object_parsed_from_its_text(body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    parsed = orjson.loads(raw)
    same(message(parsed, raw))
    same(message(parsed, raw, component="comp"))
    same(message(parsed, None))


@pytest.mark.parametrize(
    "body",
    [
        {"t": 21.5, "n": 3, "flag": True, "s": "x", "none": None, "nested": {"a": 1}},
        {"big": 10**400, "t": 1.0},  # an integer past the float range (not from orjson)
        {"inf": math.inf, "nan": math.nan, "t": 2.0},  # built in code, not parsed
        {"nul\x00key": 1.0, "t": 2.0},
        {"k" * (METRIC_NAME_MAX_CHARS + 1): 1.0, "t": 2.0},
    ],
)
def test_bodies_the_short_way_must_not_take(body: dict[str, Any]) -> None:
    same(message(body, None))
    try:
        raw = orjson.dumps(body)  # its own text, where orjson can write it (inf: null)
    except orjson.JSONEncodeError:
        return
    same(message(body, raw))


def test_not_an_object() -> None:
    for body in ([1, 2], 3.5, "text", None):
        assert observation_object(message(body, orjson.dumps(body))) == {}
