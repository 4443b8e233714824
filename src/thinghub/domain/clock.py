"""Time on the wire: epoch seconds inside, ISO-8601 UTC strings at the edges."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from thinghub.domain.errors import Invalid

__all__ = [
    "MAX_EPOCH_S",
    "MIN_EPOCH_S",
    "format_ts",
    "format_ts_ms",
    "format_ts_short",
    "parse_ts",
]

# The times ISO-8601 (and so every face) can name: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
MIN_EPOCH_S = -62_135_596_800
MAX_EPOCH_S = 253_402_300_799


def format_ts(ts: float) -> str:
    """Azure's seven-digit form: 2025-08-13T13:12:29.6760000Z (as in the ST AIoT Craft IoT API)."""
    # isoformat is done in C and much faster than strftime; its offset is always +00:00.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "0Z"


def format_ts_ms(ts: float) -> str:
    """Millisecond form, e.g. 2025-10-09T08:53:20.000Z: the Embedthis Ioto agent's own dates,
    which it compares as strings, so every date it is given must have exactly this form."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_ts_short(ts: float) -> str:
    """Second-precision form, e.g. 2023-10-26T15:00:00Z (the IoT Central API)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: str, field: str) -> float:
    """Parse an ISO-8601 time (a trailing Z, up to 7 fraction digits) or epoch seconds.

    Raises:
        Invalid: naming the field, also for a time outside years 1..9999 (nan, inf, 1e999).
    """
    text = value.strip()
    if len(text) >= 20 and text[4] == "-" and text[-1] in "Zz":
        # The common form (2024-02-20T04:35:23.653Z): Python reads it whole, Z included,
        # at a tenth of the cost of the general path below (uploads parse one per value).
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass  # the general path below says what is wrong
    try:
        epoch = float(text)
    except ValueError:
        pass
    else:
        if not (math.isfinite(epoch) and MIN_EPOCH_S <= epoch <= MAX_EPOCH_S):
            raise Invalid(
                f"{field} must be an epoch or ISO-8601 time in years 1..9999, got {value!r}",
                field=field,
            )
        return epoch
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    main, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        text = f"{main}.{frac[:6].ljust(6, '0')}{tail}"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Invalid(f"{field} must be an ISO-8601 time, got {value!r}", field=field) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
