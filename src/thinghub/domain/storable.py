"""Storable JSON: the one check that a parsed JSON value can be stored and sent on as it is.

Request bodies are parsed with Python's json module, which takes more than JSON and more than
storage writes back. Storage (and every answer) serializes with orjson, which refuses integers
beyond 64 bits, strings that are not valid Unicode (a lone surrogate, which `"\\ud800"` in a
body parses to), keys that are not strings and nesting past 254 levels, and which writes NaN
and Infinity as null. Unchecked, the first four fail later as a 500 and the last silently
changes the data. Every place that takes a JSON value for storing (twin patches, command and
method payloads, cloud-to-device bodies, device templates, telemetry sent through a face)
calls check_storable first, so each answers 400 naming the field instead.

The check walks the value without recursion; values reaching it have already been bounded in
size and nesting where they entered (domain/json_depth.py).
"""

from __future__ import annotations

import math
from typing import Any

from thinghub.domain.errors import Invalid

__all__ = ["MAX_STORABLE_DEPTH", "MAX_STORABLE_INT", "MIN_STORABLE_INT", "check_storable"]

#: The integer range storage writes: a signed or unsigned 64-bit integer (orjson's range).
MIN_STORABLE_INT = -(2**63)
MAX_STORABLE_INT = 2**64 - 1
#: The most arrays and objects storage writes inside one another (orjson's recursion limit).
MAX_STORABLE_DEPTH = 254


def check_storable(value: Any, field: str) -> None:
    """Check that `value`, a parsed JSON value, can be stored and answered as it is.

    Args:
        value: What json.loads (or a framework on it) produced: dicts, lists, str, int,
            float, bool and None (a tuple is taken as a list).
        field: The input it came from, named in the error.

    Raises:
        Invalid: `value` holds NaN or ±Infinity (not JSON numbers), an integer beyond 64 bits,
            a string or key that is not valid Unicode, a key that is not a string, or nests
            deeper than MAX_STORABLE_DEPTH.
        TypeError: `value` holds something no JSON parser produces (a bug in the caller).
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item, field)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not MIN_STORABLE_INT <= item <= MAX_STORABLE_INT:
                raise Invalid(
                    f"{field} holds an integer of {item.bit_length()} bits; integers beyond 64 "
                    "bits cannot be stored",
                    field=field,
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Invalid(f"{field} holds {item!r}, which is not a JSON number", field=field)
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_STORABLE_DEPTH:
                raise Invalid(
                    f"{field} nests deeper than {MAX_STORABLE_DEPTH} levels, which cannot be "
                    "stored",
                    field=field,
                )
            if isinstance(item, dict):
                for key, inner in item.items():
                    if not isinstance(key, str):
                        raise Invalid(f"{field} has a key that is not a string", field=field)
                    _check_text(key, field)
                    pending.append((inner, depth + 1))
            else:
                pending.extend((inner, depth + 1) for inner in item)
        else:
            raise TypeError(f"{field} holds a {type(item).__name__}, which is not a JSON value")


def _check_text(text: str, field: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(
            f"{field} holds a string that is not valid Unicode (a lone surrogate), which "
            "cannot be stored",
            field=field,
        ) from None
