"""Tests for thinghub.domain.telemetry: decoding bodies and deriving observations."""

from __future__ import annotations

import math
from typing import Any

import pytest

from thinghub.domain.telemetry import Observation, TelemetryMessage, decode_body, observations_of

NOW = 1_755_090_749.676


def message(body: Any, component: str | None = None, device: str = "dev-1") -> TelemetryMessage:
    return TelemetryMessage(
        account_id="acct",
        device_id=device,
        enqueued_at=NOW,
        body=body,
        raw=b"",
        component=component,
    )


# -- decode_body -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"temperature": 35}', {"temperature": 35}),
        (b'  {"a": [1, 2]}\r\n', {"a": [1, 2]}),
        (b"[1, 2]", [1, 2]),
        (b'"text"', "text"),
        (b"42", 42),
        (b"-1.5", -1.5),
        (b"true", True),
        (b"false", False),
        ('{"name": "caf\u00e9"}'.encode(), {"name": "caf\u00e9"}),
    ],
)
def test_decode_body_json(raw: bytes, expected: Any) -> None:
    assert decode_body(raw) == expected


def test_decode_body_json_null_is_none() -> None:
    assert decode_body(b"null") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b"temperature=35",
        b"{not json",
        b"[1, 2",
        b"123abc",
        b"",
        b"  spaced  ",
        "\u00e9t\u00e9".encode(),
    ],
)
def test_decode_body_text_is_kept_as_sent(raw: bytes) -> None:
    assert decode_body(raw) == raw.decode()


def test_decode_body_json_content_type_tries_json_first() -> None:
    assert decode_body(b"1e3", "application/json") == 1000.0
    assert decode_body(b"plain words", "application/json") == "plain words"


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", b"\x80", bytes(range(256))])
def test_decode_body_binary_is_none(raw: bytes) -> None:
    assert decode_body(raw) is None
    assert decode_body(raw, "application/json") is None


# -- observations_of ---------------------------------------------------------------------------


def test_every_number_becomes_an_observation() -> None:
    found = observations_of(message({"temperature": 35, "humidity": 40.5}))
    assert found == [
        Observation("acct", "dev-1", "temperature", NOW, 35.0),
        Observation("acct", "dev-1", "humidity", NOW, 40.5),
    ]
    assert all(isinstance(o.value, float) for o in found)


def test_only_numbers_count() -> None:
    body = {
        "n": 1,
        "ok": True,
        "off": False,
        "s": "2",
        "none": None,
        "list": [1, 2],
        "obj": {"inner": 3},
    }
    assert [o.metric for o in observations_of(message(body))] == ["n"]


def test_non_finite_numbers_are_excluded() -> None:
    body = decode_body(b'{"nan": NaN, "inf": Infinity, "ninf": -Infinity, "ok": -0.5}')
    assert math.isnan(body["nan"])
    assert [(o.metric, o.value) for o in observations_of(message(body))] == [("ok", -0.5)]


def test_a_component_prefixes_the_metric() -> None:
    found = observations_of(message({"temperature": 21}, component="thermostat1"))
    assert [o.metric for o in found] == ["thermostat1.temperature"]


def test_a_module_is_its_own_entity() -> None:
    found = observations_of(message({"t": 1}, device="gw-1/filter"))
    assert found[0].entity_id == "gw-1/filter"


@pytest.mark.parametrize("body", [None, "35", 35, [{"t": 1}], True, {}])
def test_bodies_that_are_not_objects_have_no_observations(body: Any) -> None:
    assert observations_of(message(body)) == []


def test_integers_too_large_for_a_float_are_skipped() -> None:
    body = decode_body(b'{"big": 1' + b"0" * 400 + b', "ok": 1}')
    assert [o.metric for o in observations_of(message(body))] == ["ok"]


def test_fields_whose_names_the_store_cannot_keep_are_no_observations() -> None:
    """Names over METRIC_NAME_MAX_CHARS or holding NUL failed the whole message's write on
    PostgreSQL (found by the e2e abuse fuzz); the message is still stored, only without them."""
    body = {"x" * 256: 1, "y" * 257: 2, "a\x00b": 3, "ok": 4}
    assert [o.metric for o in observations_of(message(body))] == ["x" * 256, "ok"]
    component = "c" * 100
    found = observations_of(message({"x" * 155: 1, "y" * 156: 2}, component=component))
    assert [o.metric for o in found] == [f"{component}.{'x' * 155}"]


def test_decode_body_never_parses_text_deeper_than_max_depth() -> None:
    """json.loads recurses: a body deeper than the limit stays text (no RecursionError)."""
    deep = b"[" * 5000 + b"]" * 5000
    assert decode_body(deep) == deep.decode()
    assert decode_body(b'{"a": [1]}', max_depth=2) == {"a": [1]}
    assert decode_body(b'{"a": [1]}', max_depth=1) == '{"a": [1]}'
    assert decode_body(b"\xff" + deep) is None
