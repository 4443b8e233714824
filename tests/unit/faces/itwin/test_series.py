"""Tests for thinghub.faces.itwin.series: points into converted `{ISO: value}` chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from thinghub.faces.itwin.series import (
    MAX_CHUNK_POINTS,
    chunk_json,
    chunk_points,
    data_chunks,
    stream_chunks,
)
from thinghub.faces.itwin.timestamps import format_us
from thinghub.services.units import conversion

T0 = 1_481_845_087_000_000  # 2016-12-15T23:38:07.000Z, in microseconds as stored


def test_chunk_points_keys_and_conversion() -> None:
    assert chunk_points([(T0, 25.0), (T0 + 500_000, 30.0)], conversion("C", "F")) == {
        "2016-12-15T23:38:07.000Z": 77.0,
        "2016-12-15T23:38:07.500Z": 86.0,
    }
    assert chunk_points([(T0, 25.0)]) == {"2016-12-15T23:38:07.000Z": 25.0}


def test_keys_round_half_up_on_the_integer_microseconds() -> None:
    """ms = (us + 500) // 1000: 0.5 ms goes up, also for an even millisecond (no banker's
    rounding) and before 1970; the same keys as format_us gives one time alone."""
    rows = [(T0 + 499, 1.0), (T0 + 1500, 2.0), (T0 + 2500, 3.0), (-1500, 4.0), (-1501, 5.0)]
    assert list(chunk_points(rows)) == [
        "2016-12-15T23:38:07.000Z",
        "2016-12-15T23:38:07.002Z",
        "2016-12-15T23:38:07.003Z",
        "1969-12-31T23:59:59.999Z",
        "1969-12-31T23:59:59.998Z",
    ]
    assert list(chunk_points(rows)) == [format_us(us) for us, _ in rows]


def test_a_minute_boundary_and_equal_milliseconds() -> None:
    """Keys across a minute (the cached prefix changes), and two rows in one millisecond:
    the later one wins, as in the client's own merge."""
    rows = [(T0 + 52_999_000, 1.0), (T0 + 53_000_000, 2.0), (T0 + 53_000_400, 3.0)]
    assert chunk_points(rows) == {
        "2016-12-15T23:38:59.999Z": 1.0,
        "2016-12-15T23:39:00.000Z": 3.0,
    }


def test_chunk_json_is_the_chunk_as_json() -> None:
    rows = [(T0 + i * 1_000_000, 20.0 + i / 10) for i in range(100)]
    fragment = chunk_json(rows, conversion("C", "F"))
    message = orjson.loads(orjson.dumps({"result": {"data": fragment}}))
    assert message["result"]["data"] == chunk_points(rows, conversion("C", "F"))
    assert message["result"]["data"]["2016-12-15T23:38:07.000Z"] == 68.0


def test_chunks_are_bounded_and_in_order() -> None:
    points = [(T0 + i * 1_000_000, float(i)) for i in range(2 * MAX_CHUNK_POINTS + 3)]
    chunks = list(data_chunks(points))
    assert [len(c) for c in chunks] == [MAX_CHUNK_POINTS, MAX_CHUNK_POINTS, 3]
    assert [v for c in chunks for v in c.values()] == [float(i) for i in range(len(points))]
    assert list(data_chunks([])) == []


def test_chunks_pull_lazily() -> None:
    pulled = 0

    def source() -> Iterator[tuple[int, float]]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield (T0 + i * 1_000_000, 1.0)

    first = next(data_chunks(source(), max_points=10))
    assert len(first) == 10 and pulled == 10


async def test_stream_chunks_over_an_async_source() -> None:
    async def source() -> AsyncIterator[tuple[int, float]]:
        for i in range(5):
            yield (T0 + i * 1_000_000, float(i))

    chunks = [c async for c in stream_chunks(source(), conversion("m", "mm"), max_points=2)]
    assert [list(c.values()) for c in chunks] == [[0.0, 1000.0], [2000.0, 3000.0], [4000.0]]


def test_max_points_must_be_positive() -> None:
    with pytest.raises(ValueError):
        list(data_chunks([(T0, 1.0)], max_points=0))
