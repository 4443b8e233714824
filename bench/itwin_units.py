"""`python -m bench.itwin_units`: what converting and printing one getData value costs.

A micro-benchmark (no server): pint per value (the reference, what a naive face would do)
against the cached Conversion that services/units.py builds once per unit pair, called per
value and in batch; then the whole per-point cost of a getData chunk (time key, conversion,
JSON) with and without the TCP encoder's brace check. Prints ns per value; the ratios are
what matter (docs/faces/itwin.md, "How it works", quotes the result).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
import pint

from bench._table import text_table
from thinghub.faces.itwin.framing import encode_frame
from thinghub.faces.itwin.jsonrpc import data_chunk
from thinghub.faces.itwin.series import chunk_points
from thinghub.services.units import conversion

__all__ = ["main"]


def _ns_per_value(run: Callable[[], Any], values: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / values * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.values, args.repeat
    values = [20.0 + (i % 1000) / 100 for i in range(n)]
    points = [(1_600_000_000_000_000 + i * 1_000_000, v) for i, v in enumerate(values)]  # µs
    registry: pint.UnitRegistry[Any] = pint.UnitRegistry()
    celsius, fahrenheit = registry.degC, registry.degF
    to_f = conversion("C", "F")
    to_psi = conversion("bar", "psi")
    pint_n = max(n // 20, 1000)  # pint is slow: a smaller sample

    rows = [
        (
            "pint Quantity(v, degC).to(degF), per value",
            _ns_per_value(
                lambda: [
                    registry.Quantity(v, celsius).to(fahrenheit).magnitude for v in values[:pint_n]
                ],
                pint_n,
                repeat,
            ),
        ),
        (
            "cached Conversion C->F, called per value",
            _ns_per_value(lambda: [to_f(v) for v in values], n, repeat),
        ),
        ("cached Conversion C->F, many()", _ns_per_value(lambda: to_f.many(values), n, repeat)),
        (
            "cached Conversion bar->psi, many()",
            _ns_per_value(lambda: to_psi.many(values), n, repeat),
        ),
        ("first conversion of a pair (pint, uncached)", 0.0),
        (
            "getData point: ISO key + C->F (chunk_points)",
            _ns_per_value(lambda: chunk_points(points, to_f), n, repeat),
        ),
        (
            "getData point: chunk + orjson (WebSocket)",
            _ns_per_value(lambda: _encode_chunks(points, to_f, orjson.dumps), n, repeat),
        ),
        (
            "getData point: chunk + encode_frame (TCP)",
            _ns_per_value(lambda: _encode_chunks(points, to_f, encode_frame), n, repeat),
        ),
    ]
    # The one-time cost of asking pint for a pair (registry already loaded).
    from thinghub.services import units

    units._cached.cache_clear()
    start = time.perf_counter()
    units._cached("psi", "kPa", False)
    rows[4] = (rows[4][0], (time.perf_counter() - start) * 1e9)
    print(text_table(["what", "ns per value"], [(name, f"{ns:,.0f}") for name, ns in rows]))


def _encode_chunks(
    points: list[tuple[int, float]], conv: Any, encode: Callable[[Any], bytes]
) -> None:
    for i in range(0, len(points), 1000):
        encode(data_chunk(1, chunk_points(points[i : i + 1000], conv)))


if __name__ == "__main__":
    main()
