"""The JSON depth check against orjson.loads on the same documents (not a test).

`python -m bench.json_depth` prints one row per document: its size, the time of
thinghub.domain.json_depth.exceeds_depth at the default limit, and orjson.loads's time for
the same bytes (the parse the check runs before). Best of several repeats, one core.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

import orjson

from bench._table import text_table
from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH, exceeds_depth

__all__ = ["documents", "main"]

SIZE = 256 * 1024  # the largest telemetry body (max_payload_bytes)


def _grow(make: Callable[[int], object]) -> bytes:
    """The largest JSON text of make(n) items that fits in SIZE."""
    low, high = 1, SIZE
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(make(middle))) <= SIZE:
            low = middle
        else:
            high = middle - 1
    return json.dumps(make(low)).encode()


def documents() -> dict[str, bytes]:
    chain = b"[" * 63 + b"]" * 63  # in an array: 64 levels, the default limit
    return {
        "typical telemetry object": json.dumps(
            {"temperature": 21.53, "humidity": 40.1, "pressure": 1013.2, "ts": "2025-08-13"}
        ).encode(),
        "flat object, no brackets in strings": _grow(
            lambda n: {f"key{i}": (i * 1.5 if i % 2 else f"value {i}") for i in range(n)}
        ),
        "flat object, brackets in strings": _grow(
            lambda n: {f"key{i}": (i * 1.5 if i % 2 else f"v[{i}]") for i in range(n)}
        ),
        "array of small objects": _grow(
            lambda n: [{"t": i, "v": 20.5, "tags": ["a", "b"]} for i in range(n)]
        ),
        "[ x 131072 + ] x 131072 (crash input)": b"[" * 131072 + b"]" * 131072,
        "array of chains, 64 deep (worst found)": b"["
        + b",".join([chain] * (SIZE // (len(chain) + 1)))
        + b"]",
    }


def _best(run: Callable[[], object], seconds: float = 0.2) -> float:
    number = 1
    while timeit.timeit(run, number=number) < seconds / 10:
        number *= 2
    return min(timeit.repeat(run, number=number, repeat=5)) / number


def _parse(data: bytes) -> Callable[[], object]:
    def run() -> object:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None

    return run


def _show(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def main() -> None:
    limit = DEFAULT_MAX_JSON_DEPTH
    rows = []
    for name, data in documents().items():
        check = _best(lambda data=data: exceeds_depth(data, limit))  # type: ignore[misc]
        parse = _best(_parse(data))
        verdict = "too deep" if exceeds_depth(data, limit) else "ok"
        parsed = "refused" if verdict == "too deep" else _show(parse)
        rows.append([name, f"{len(data):,} B", verdict, _show(check), parsed])
    print(text_table(["document", "size", "depth", "check", "orjson.loads"], rows))


if __name__ == "__main__":
    main()
