"""stream_observations with `affine`: every backend converts each value to exactly the double
the face's Python Conversion gives (same operations, same order), for random values and the
catalog's conversions, and keeps the rows, their order and their batching."""

from __future__ import annotations

import math
import random
import struct

import pytest

from thinghub.domain.telemetry import Observation
from thinghub.ports import Stores
from thinghub.services.units import Conversion, conversion

ACC = "acc-1"
BASE_US = 1_700_000_000_000_000

CONVERSIONS = [
    conversion("C", "F"),
    conversion("C", "K"),
    conversion("F", "C"),
    conversion("psi", "kPa"),
    conversion("ft", "m"),
    conversion("mm", "in"),
    conversion("deg", "rad"),
    conversion("inHg", "hPa"),
]


def _value(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.4:
        return rng.uniform(-1000, 1000)
    if kind < 0.6:
        return round(rng.uniform(-100, 100), rng.randint(0, 3))
    if kind < 0.8:
        return rng.uniform(1, 10) * 10.0 ** rng.randint(-300, 300) * rng.choice((1, -1))
    if kind < 0.95:  # any finite double
        while True:
            bits = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if math.isfinite(bits) and abs(bits) < 1e300:
                return float(bits)
    return rng.choice((0.0, 1.0, -1.0, 5e-324, 32.0, 100.0))


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("seed", [1, 2])
async def test_converted_stream_is_the_python_conversion(stores: Stores, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    at = BASE_US
    for _ in range(600):
        rows.append(Observation(ACC, "dev-1", "t", at / 1e6, _value(rng)))
        at += rng.choice((0, 1, 500, 1000, rng.randint(1, 10**7)))
    await stores.telemetry.append([], rows)
    await stores.telemetry.append([], [Observation(ACC, "dev-1", "other", 1.0, 5.0)])
    raw = [b async for b in stores.telemetry.stream_observations(ACC, "dev-1", "t", None, None, 50)]
    for conv in CONVERSIONS:
        affine = (conv.scale, conv.shift, conv.divisor)
        converted = [
            b
            async for b in stores.telemetry.stream_observations(
                ACC, "dev-1", "t", None, None, 50, affine
            )
        ]
        # The same batches, the same times, in the same order; each value converted.
        assert [[ts for ts, _ in b] for b in converted] == [[ts for ts, _ in b] for b in raw]
        for batch_raw, batch_converted in zip(raw, converted, strict=True):
            for (_, value), (_, got) in zip(batch_raw, batch_converted, strict=True):
                assert _same(got, conv(value)), (conv, value, got, conv(value))
                assert type(got) is float


async def test_converted_stream_follows_the_range(stores: Stores) -> None:
    await stores.telemetry.append(
        [],
        [Observation(ACC, "dev-1", "t", (BASE_US + i * 1000) / 1e6, float(i)) for i in range(10)],
    )
    conv: Conversion = conversion("C", "F")
    got = [
        p
        async for b in stores.telemetry.stream_observations(
            ACC, "dev-1", "t", (BASE_US + 2000) / 1e6, (BASE_US + 4000) / 1e6, 2,
            (conv.scale, conv.shift, conv.divisor),
        )
        for p in b
    ]  # fmt: skip
    assert got == [(BASE_US + i * 1000, conv(float(i))) for i in (2, 3, 4)]
    assert conv(0.0) == 32.0 and conv(100.0) == 212.0
