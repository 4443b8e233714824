"""Data series on the wire: (time, value) points into `{"<ISO ms Z>": value}` chunks.

getData, getObservations and subscribeData send observations as objects keyed by time
(seed, "Working with Observations"). A stream sends them in chunks of at most
MAX_CHUNK_POINTS, each converted to the requested unit with a cached Conversion (three
float operations a value) and its time printed once (format_time, about 1 µs). Points are
pulled from the source as chunks fill, so a million-point query never holds more than one
chunk here; backpressure comes from the consumer awaiting each chunk's send.

Two observations in the same millisecond share a key: within one chunk the later one wins,
as it would in the client's own `series.data[date] = ...` merge.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Final

from thinghub.faces.itwin.timestamps import format_times
from thinghub.services.units import IDENTITY, Conversion

__all__ = ["MAX_CHUNK_POINTS", "Point", "chunk_points", "data_chunks", "stream_chunks"]

Point = tuple[float, float]  # (epoch seconds, value)

# About 40 KB of JSON a chunk: large enough to amortise a send, small enough to interleave.
MAX_CHUNK_POINTS: Final = 1000


def chunk_points(points: Iterable[Point], conversion: Conversion = IDENTITY) -> dict[str, float]:
    """One `{ISO: value}` object of `points`, converted."""
    listed = points if isinstance(points, list) else list(points)
    keys = format_times([ts for ts, _ in listed])
    if conversion.is_identity:
        return dict(zip(keys, [value for _, value in listed], strict=True))
    scale, shift, divisor = conversion.scale, conversion.shift, conversion.divisor
    values = [(value * scale + shift) / divisor for _, value in listed]
    return dict(zip(keys, values, strict=True))


def data_chunks(
    points: Iterable[Point],
    conversion: Conversion = IDENTITY,
    max_points: int = MAX_CHUNK_POINTS,
) -> Iterator[dict[str, float]]:
    """Chunks of at most `max_points` points, in order; nothing for an empty series."""
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    batch: list[Point] = []
    for point in points:
        batch.append(point)
        if len(batch) >= max_points:
            yield chunk_points(batch, conversion)
            batch = []
    if batch:
        yield chunk_points(batch, conversion)


async def stream_chunks(
    points: AsyncIterable[Point],
    conversion: Conversion = IDENTITY,
    max_points: int = MAX_CHUNK_POINTS,
) -> AsyncIterator[dict[str, float]]:
    """data_chunks over an async source (a database cursor)."""
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    batch: list[Point] = []
    async for point in points:
        batch.append(point)
        if len(batch) >= max_points:
            yield chunk_points(batch, conversion)
            batch = []
    if batch:
        yield chunk_points(batch, conversion)
