"""Tests for thinghub.domain.clock: the seven-digit wire timestamps and their parsing."""

from __future__ import annotations

import calendar
import re

import pytest

from thinghub.domain.clock import format_ts, format_ts_short, parse_ts
from thinghub.domain.errors import Invalid

# 2025-08-13T13:12:29.676Z, the first telemetry timestamp of the ST API's examples, computed without
# datetime so the expectation does not share code with the implementation.
SEED_EPOCH = calendar.timegm((2025, 8, 13, 13, 12, 29, 0, 0, 0))
SEED_TS = SEED_EPOCH + 0.676
SEVEN_DIGITS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def test_format_ts_matches_the_seed() -> None:
    assert format_ts(SEED_TS) == "2025-08-13T13:12:29.6760000Z"


@pytest.mark.parametrize("ts", [0.0, 1.0, SEED_TS, SEED_EPOCH + 0.000001, 4_102_444_799.999999])
def test_format_ts_always_has_seven_fraction_digits_and_z(ts: float) -> None:
    text = format_ts(ts)
    assert SEVEN_DIGITS.match(text), text
    assert text.endswith("0Z")  # Python keeps microseconds; the seventh digit is always 0


def test_format_ts_epoch() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.0000000Z"


def test_format_ts_short() -> None:
    assert format_ts_short(SEED_EPOCH) == "2025-08-13T13:12:29Z"
    assert format_ts_short(SEED_TS) == "2025-08-13T13:12:29.676Z"


@pytest.mark.parametrize(
    "text",
    [
        "2025-08-13T13:12:29.6760000Z",  # the ST API's seven digits
        "2025-08-13T13:12:29.676Z",
        "2025-08-13T13:12:29.676z",
        "2025-08-13T13:12:29.676+00:00",
        "2025-08-13T15:12:29.676+02:00",
        "2025-08-13T08:12:29.676-05:00",
        "2025-08-13T13:12:29.676",  # no zone: UTC
        "2025-08-13T13:12:29.67600000000Z",  # more digits than microseconds: truncated
        "  2025-08-13T13:12:29.676Z  ",
        repr(SEED_TS),  # epoch seconds, 1755090749.676
    ],
)
def test_parse_ts_accepts(text: str) -> None:
    assert parse_ts(text, "from") == pytest.approx(SEED_TS, abs=1e-6)


def test_parse_ts_whole_seconds_and_integers() -> None:
    assert parse_ts("2025-08-13T13:12:29Z", "from") == SEED_EPOCH
    assert parse_ts(str(SEED_EPOCH), "from") == SEED_EPOCH
    assert parse_ts("0", "from") == 0.0


@pytest.mark.parametrize("ts", [0.0, SEED_TS, 1_700_000_000.123456, 4_102_444_799.5])
def test_parse_ts_reads_what_format_ts_writes(ts: float) -> None:
    assert parse_ts(format_ts(ts), "ts") == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "   ",
        "2025-13-01T00:00:00Z",
        "2025-08-13T25:00:00Z",
        "13/08/2025",
        "2025-08-13T13:12:29.676ZZ",
        "yesterday",
    ],
)
def test_parse_ts_rejects_garbage_naming_the_field(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_ts(text, "to")
    assert info.value.field == "to"
    assert info.value.message.startswith("to ")
    assert repr(text) in info.value.message


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e999"])
def test_parse_ts_rejects_non_finite_epoch(text: str) -> None:
    with pytest.raises(Invalid):
        parse_ts(text, "from")
