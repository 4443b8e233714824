"""TelemetryStore.stream_observation_json: the chunks a store prints, made JSON by the face
(series.printed_json), parse to exactly what the face's Python path (series.chunk_points over stream_observations) makes,
for random times (half milliseconds, equal milliseconds, equal times), values and units."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from thinghub.domain.telemetry import Observation
from thinghub.faces.itwin.series import chunk_points, printed_json
from thinghub.ports import PrintedChunk, Stores
from thinghub.services.units import IDENTITY, Conversion, conversion

ACC = "acc-1"
BASE_US = 1_700_000_000_000_000

CONVERSIONS = [
    IDENTITY,
    conversion("C", "F"),
    conversion("C", "K"),
    conversion("psi", "kPa"),
    conversion("ft", "m"),
    conversion("mm", "in"),
    conversion("deg", "rad"),
]


def _value(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.5:
        return rng.uniform(-1000, 1000)
    if kind < 0.7:
        return round(rng.uniform(-100, 100), rng.randint(0, 3))
    if kind < 0.97:
        return rng.uniform(1, 10) * 10.0 ** rng.randint(-25, 25) * rng.choice((1, -1))
    return rng.choice((0.0, -0.0, 1e200, -3e150, 5e-324, 1e-300, 2.5e29))


def _times(rng: random.Random, n: int) -> list[int]:
    out, at = [], BASE_US + rng.randint(0, 10**9)
    for _ in range(n):
        out.append(at)
        at += rng.choice((0, 1, 499, 500, 501, 1000, 1500, 59_999_500, rng.randint(1, 10**7)))
    return out


async def _fast(stores: Stores, conv: Conversion, chunk_rows: int, *span: Any) -> list[Any]:
    affine = None if conv.is_identity else (conv.scale, conv.shift, conv.divisor)
    stream = stores.telemetry.stream_observation_json(ACC, "dev-1", "t", *span, chunk_rows, affine)
    return [item async for item in stream]


def _parsed(item: PrintedChunk | list[tuple[int, float]], conv: Conversion) -> dict[str, Any]:
    if isinstance(item, PrintedChunk):
        merged: dict[str, Any] = {}
        for fragment in printed_json(item, 3):  # chunks of at most 3 keys
            text = bytes(orjson.dumps({"data": fragment}))[8:-1]
            by_orjson = orjson.loads(text)
            assert len(by_orjson) <= 3
            assert json.loads(text) == by_orjson  # a repeated key: the later one, both readers
            merged.update(by_orjson)
        return merged
    return dict(orjson.loads(orjson.dumps(chunk_points(item, conv))))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_json_chunks_parse_as_the_python_path(stores: Stores, seed: int) -> None:
    rng = random.Random(seed)
    times = _times(rng, 3000)
    values = [_value(rng) for _ in times]
    await stores.telemetry.append(
        [],
        [Observation(ACC, "dev-1", "t", us / 1e6, v) for us, v in zip(times, values, strict=True)],
    )
    # The rows as stored (their float time may round to a neighbouring microsecond).
    rows = [
        p
        async for b in stores.telemetry.stream_observations(ACC, "dev-1", "t", None, None, 10**6)
        for p in b
    ]
    assert len(rows) == len(times)
    texts = 0
    for conv in CONVERSIONS:
        chunk_rows = rng.choice((1, 7, 500, 1000))
        items = await _fast(stores, conv, chunk_rows, None, None)
        texts += sum(isinstance(i, PrintedChunk) for i in items)
        merged: dict[str, Any] = {}
        for item in items:
            merged.update(_parsed(item, conv))
        # The client merges chunks into one series: the same keys, order and doubles.
        expected = dict(orjson.loads(orjson.dumps(chunk_points(rows, conv))))
        assert list(merged) == list(expected), conv
        for key, value in expected.items():
            got = merged[key]
            assert got == value or (got is None and value is None), (conv, key, got, value)
            if isinstance(value, float) and value == 0:
                assert str(got) == str(value), (conv, key)  # the sign of a zero
        # Chunks are of about chunk_rows rows: never fewer unless the last, and a time's
        # rows never split (checked on the Python path's rows by the stream contract).
        assert len(items) >= len(rows) // max(chunk_rows, 1) // 2, conv
    if getattr(getattr(stores.telemetry, "db", None), "dialect", None) == "sqlite":
        assert texts > 0  # SQLite made some chunks itself


async def test_json_chunks_follow_the_range(stores: Stores) -> None:
    times = [BASE_US + i * 250 for i in range(40)]
    await stores.telemetry.append(
        [], [Observation(ACC, "dev-1", "t", us / 1e6, float(i)) for i, us in enumerate(times)]
    )
    conv = conversion("C", "F")
    items = await _fast(stores, conv, 3, (BASE_US + 1000) / 1e6, (BASE_US + 2500) / 1e6)
    merged: dict[str, Any] = {}
    for item in items:
        merged.update(_parsed(item, conv))
    assert list(merged.values()) == [conv(v) for v in (5.0, 9.0, 10.0)]  # .001Z, .002Z, .003Z
    assert list(merged)[0].endswith(".001Z")
    assert await _fast(stores, conv, 3, (BASE_US + 10**7) / 1e6, None) == []
    with pytest.raises(ValueError, match="chunk_rows"):
        await _fast(stores, conv, 0, None, None)
