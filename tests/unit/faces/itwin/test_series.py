"""Tests for thinghub.faces.itwin.series: points into converted `{ISO: value}` chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from thinghub.faces.itwin.series import MAX_CHUNK_POINTS, chunk_points, data_chunks, stream_chunks
from thinghub.services.units import conversion

T0 = 1_481_845_087.0  # 2016-12-15T23:38:07.000Z


def test_chunk_points_keys_and_conversion() -> None:
    assert chunk_points([(T0, 25.0), (T0 + 0.5, 30.0)], conversion("C", "F")) == {
        "2016-12-15T23:38:07.000Z": 77.0,
        "2016-12-15T23:38:07.500Z": 86.0,
    }
    assert chunk_points([(T0, 25.0)]) == {"2016-12-15T23:38:07.000Z": 25.0}


def test_chunks_are_bounded_and_in_order() -> None:
    points = [(T0 + i, float(i)) for i in range(2 * MAX_CHUNK_POINTS + 3)]
    chunks = list(data_chunks(points))
    assert [len(c) for c in chunks] == [MAX_CHUNK_POINTS, MAX_CHUNK_POINTS, 3]
    assert [v for c in chunks for v in c.values()] == [float(i) for i in range(len(points))]
    assert list(data_chunks([])) == []


def test_chunks_pull_lazily() -> None:
    pulled = 0

    def source() -> Iterator[tuple[float, float]]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield (T0 + i, 1.0)

    first = next(data_chunks(source(), max_points=10))
    assert len(first) == 10 and pulled == 10


async def test_stream_chunks_over_an_async_source() -> None:
    async def source() -> AsyncIterator[tuple[float, float]]:
        for i in range(5):
            yield (T0 + i, float(i))

    chunks = [c async for c in stream_chunks(source(), conversion("m", "mm"), max_points=2)]
    assert [list(c.values()) for c in chunks] == [[0.0, 1000.0], [2000.0, 3000.0], [4000.0]]


def test_max_points_must_be_positive() -> None:
    with pytest.raises(ValueError):
        list(data_chunks([(T0, 1.0)], max_points=0))
