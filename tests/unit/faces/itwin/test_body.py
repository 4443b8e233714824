"""Tests for thinghub.faces.itwin.body: bounded bodies, and the seed's trailing commas."""

from __future__ import annotations

import pytest

from tests.unit.faces.itwin.seed import SEED_UPLOAD_CURL, SEED_UPLOAD_ONE_LINE
from thinghub.faces.itwin.body import BodyError, read_json_body

EXPECTED = {
    "observations": [
        {
            "sensorId": "/api/B08851/node/dynamic/AB10E2/device/D76619/sensor",
            "timestamp": "2024-02-20T04:35:23.653Z",
            "values": {"Alignment_Left_SD": 0.23, "Alignment_Right_SD": 0.84},
        }
    ]
}


@pytest.mark.parametrize("body", [SEED_UPLOAD_CURL, SEED_UPLOAD_ONE_LINE])
def test_seed_upload_bodies_read_as_printed(body: bytes) -> None:
    assert read_json_body(body) == EXPECTED


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a":[1,2,]}', {"a": [1, 2]}),
        (b'{"a":1,}', {"a": 1}),
        (b'{"a":{"b":true,},}', {"a": {"b": True}}),
        (b"[null,\n\t ]", [None]),
        (b'["x",]', ["x"]),
        (b"[[],{},]", [[], {}]),
        (b'{"a":",]","b":",}",}', {"a": ",]", "b": ",}"}),  # commas inside strings stay
        (b'{"a":"\\",]",}', {"a": '",]'}),
        (b'{"a":1}', {"a": 1}),  # plain JSON takes the fast path
    ],
)
def test_trailing_commas_after_a_value_are_tolerated(body: bytes, value: object) -> None:
    assert read_json_body(body) == value


@pytest.mark.parametrize(
    "body",
    [
        b"[,]",
        b"{,}",
        b"[1,,2]",
        b"[1,,]",
        b'{"a":,}',
        b'{"a":1,,}',
        b"{'a':1}",
        b'{"a":1} // comment',
        b'{"a":1}{"b":2}',
        b"[1,2",
        b"42",
    ],
)
def test_nothing_else_is_tolerated(body: bytes) -> None:
    with pytest.raises(BodyError) as caught:
        read_json_body(body)
    assert not caught.value.is_too_large


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(BodyError, match="empty"):
        read_json_body(body)


def test_limits_are_checked_before_parsing() -> None:
    with pytest.raises(BodyError) as caught:
        read_json_body(b'{"a":"' + b"x" * 200 + b'"}', max_bytes=100)
    assert caught.value.is_too_large
    with pytest.raises(BodyError) as caught:
        read_json_body(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.is_too_large
    with pytest.raises(BodyError) as caught:
        read_json_body(b"[" * 100 + b"1," + b"]" * 100)  # deep, with a trailing comma
    assert caught.value.is_too_large
