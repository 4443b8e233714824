"""Times on the iTwin wire: ISO-8601 UTC with milliseconds.

The socket API and the REST entity lists print `2016-10-18T22:26:24.818Z` (data keys,
LAST_COMM, LAST_OBSERVATION.timestamp, CREATION_DATE of getNodes); the Sensor Data Service's
integration answers print `2024-03-05T10:27:22.553+00:00` (CREATION_DATE). Both always carry
three fraction digits. Inside, times are epoch seconds (domain/clock.py); the store keeps
them as integer microseconds (round(ts * 1e6)), and observation streams hand those integers
over as they are.

One rounding everywhere: a time is taken to its stored microseconds, then to milliseconds
rounding half up on the integer (`ms = (us + 500) // 1000`, so 1.5 ms prints .002 and
-1.5 ms prints .999 of the second before). getData, getObservations, the summaries,
subscribeData pushes, the entity times and REST all print through this module, so one
observation prints the same wherever it shows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Final

from thinghub.domain.clock import MAX_EPOCH_S, MIN_EPOCH_S, parse_ts
from thinghub.domain.errors import Invalid

__all__ = [
    "US_PER_MINUTE",
    "format_ms",
    "format_time",
    "format_time_offset",
    "format_times",
    "format_us",
    "minute_prefix",
    "ms_of_us",
    "parse_time",
    "second_keys",
    "us_of",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)
_MS_PER_MINUTE: Final = 60_000
US_PER_MINUTE: Final = 60_000_000

# A key is its minute's prefix ("2016-06-24T18:01:": the hour's part cached, the minute's
# from a table) and the seconds and milliseconds within the minute from a table ("07.250Z":
# 60,000 short strings, about 3.5 MB once the face prints its first time). A stream makes a
# new minute's prefix every 60 rows at 1 Hz (a cache of whole minute prefixes would miss on
# each of them), so that is one division and one concatenation too.
_HOUR_PREFIXES: Final = 4096
_MINUTE_KEYS: Final = tuple(f"{minute:02d}:" for minute in range(60))


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return (_EPOCH_DAY + timedelta(days=day)).isoformat()


@functools.lru_cache(maxsize=_HOUR_PREFIXES)
def _hour_prefix(hour: int) -> str:
    day, of_day = divmod(hour, 24)
    return "%sT%02d:" % (_day(day), of_day)  # noqa: UP031


def minute_prefix(minute: int) -> str:
    """`2016-06-24T18:01:` of an epoch minute."""
    hour, of_hour = divmod(minute, 60)
    return _hour_prefix(hour) + _MINUTE_KEYS[of_hour]


@functools.cache
def second_keys() -> tuple[str, ...]:
    """`07.250Z` for each millisecond of a minute, by index (made once)."""
    return tuple("%02d.%03dZ" % divmod(ms, 1000) for ms in range(_MS_PER_MINUTE))  # noqa: UP031


def us_of(ts: float) -> int:
    """Epoch seconds as the store keeps them: integer microseconds (the same rounding the
    SQL and memory stores apply when they write a time, so a live event's float time and the
    stored row of it print the same key)."""
    return round(ts * 1_000_000)


def ms_of_us(us: int) -> int:
    """Integer microseconds to milliseconds, rounding half up (the face's one rounding)."""
    return (us + 500) // 1000


def format_ms(ms: int) -> str:
    """`2016-06-24T18:01:00.000Z` of epoch milliseconds."""
    minute, rest = divmod(ms, _MS_PER_MINUTE)
    return minute_prefix(minute) + second_keys()[rest]


def format_us(us: int) -> str:
    """`2016-06-24T18:01:00.000Z` of epoch microseconds (a stored time)."""
    return format_ms((us + 500) // 1000)


def format_time(ts: float) -> str:
    """`2016-06-24T18:01:00.000Z`: the socket API's form (getData keys, LAST_COMM, ...).

    In integer arithmetic from the stored microseconds, so a time read from a millisecond
    ISO string prints back as the same string (even in year 2243, where a float epoch's last
    bits are worth a microsecond).
    """
    return format_ms((round(ts * 1_000_000) + 500) // 1000)


def format_times(stamps_us: Iterable[int]) -> list[str]:
    """format_us of many stored times (the keys of a data chunk), the same strings.

    The minute's prefix is kept while the times stay in it (series.chunk_points explains the
    [lo, hi) test), so a time costs two comparisons, one subtraction and one division.
    """
    table = second_keys()
    out: list[str] = []
    append = out.append
    lo = hi = 0  # an empty minute: the first row sets it
    prefix = ""
    for us in stamps_us:
        if not lo <= us < hi:
            minute = (us + 500) // US_PER_MINUTE
            lo = minute * US_PER_MINUTE - 500
            hi = lo + US_PER_MINUTE
            prefix = minute_prefix(minute)
        append(prefix + table[(us - lo) // 1000])
    return out


def format_time_offset(ts: float) -> str:
    """`2024-03-05T10:27:22.553+00:00`: the Sensor Data Service's form (CREATION_DATE)."""
    moment = _EPOCH + timedelta(milliseconds=ms_of_us(us_of(ts)))
    return moment.isoformat(timespec="milliseconds")


def parse_time(value: object, field: str) -> float:
    """Epoch seconds of an ISO-8601 time given in a request (`startDate`, `timestamp`, ...).

    Raises:
        Invalid: naming `field` when it is not an ISO-8601 string within years 1..9999.
    """
    if not isinstance(value, str):
        raise Invalid(f"{field} must be an ISO-8601 date, got {value!r}", field=field)
    ts = parse_ts(value, field)
    if not MIN_EPOCH_S <= ts <= MAX_EPOCH_S:
        raise Invalid(f"{field} must be a date in years 1..9999, got {value!r}", field=field)
    return ts
