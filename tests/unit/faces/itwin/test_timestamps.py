"""Tests for thinghub.faces.itwin.timestamps: ISO ms times on the wire."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.faces.itwin.series import chunk_points
from thinghub.faces.itwin.timestamps import (
    format_ms,
    format_time,
    format_time_offset,
    format_times,
    format_us,
    ms_of_us,
    parse_time,
    us_of,
)
from thinghub.services.units import conversion
from thinghub.storage.sql._rows import to_us


def test_seed_forms() -> None:
    ts = parse_time("2016-12-15T23:38:07.000Z", "key")
    assert format_time(ts) == "2016-12-15T23:38:07.000Z"
    assert format_time_offset(parse_time("2024-03-05T10:27:22.553+00:00", "d")) == (
        "2024-03-05T10:27:22.553+00:00"
    )
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


def test_milliseconds_are_rounded() -> None:
    assert format_time(1.0004) == "1970-01-01T00:00:01.000Z"
    assert format_time(1.0006) == "1970-01-01T00:00:01.001Z"
    assert format_time(1.9999999) == "1970-01-01T00:00:02.000Z"
    assert format_time(-0.25) == "1969-12-31T23:59:59.750Z"


def test_half_a_millisecond_rounds_up_on_the_stored_microseconds() -> None:
    """The face's one rounding: the stored integer microseconds, half up (not banker's, not
    the float's last bits): 1.5 ms and 2.5 ms both go up, and so do times before 1970."""
    assert [ms_of_us(us) for us in (1499, 1500, 2500, -1500, -1501, -500, -501)] == [
        1, 2, 3, -1, -2, 0, -1,
    ]  # fmt: skip
    assert format_us(2500) == "1970-01-01T00:00:00.003Z"
    assert format_us(-1500) == "1969-12-31T23:59:59.999Z"
    # A float time goes through its stored microseconds first: the same string as the
    # store's row of it prints.
    for ts in (0.0025, 1.0005, 1_700_000_000.0005, 1_481_845_087.0015, -0.0015):
        assert format_time(ts) == format_us(us_of(ts)) == format_ms(ms_of_us(us_of(ts)))
    assert format_time(0.0025) == "1970-01-01T00:00:00.003Z"
    assert format_time_offset(0.0025) == "1970-01-01T00:00:00.003+00:00"


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_any_millisecond_time_prints_back_the_same(moment: Any) -> None:
    text = moment.isoformat(timespec="milliseconds") + "Z"
    assert format_time(parse_time(text, "timestamp")) == text


@pytest.mark.parametrize("value", [None, 5, "", "yesterday", "2024-13-01T00:00:00Z", "99999-01-01"])
def test_bad_times_name_the_field(value: Any) -> None:
    with pytest.raises(Invalid) as caught:
        parse_time(value, "startDate")
    assert caught.value.field == "startDate"


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0))
def test_fast_formatting_agrees_with_datetime(ts: float) -> None:
    half_up_ms = (round(ts * 1_000_000) + 500) // 1000
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=half_up_ms)
    assert format_time(ts) == moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    assert format_time_offset(ts) == moment.isoformat(timespec="milliseconds")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0), max_size=50).map(
        sorted
    )
)
def test_many_times_format_as_each_alone(stamps: list[float]) -> None:
    """format_times (a chunk's keys, minute prefixes cached) gives format_time's strings, in
    order, also across minute, hour, day and year boundaries and before 1970."""
    assert format_times([us_of(ts) for ts in stamps]) == [format_time(ts) for ts in stamps]
    edges = [59.9995, 3599.9995, 3599.9996, 86_399.9999, -0.0004, -0.0006, 946_684_799.9996]
    assert format_times([us_of(ts) for ts in edges]) == [format_time(ts) for ts in edges]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0))
def test_a_live_time_prints_as_its_stored_row(ts: float) -> None:
    """A push prints the event's float time; getData prints the row the store wrote of it
    (to_us): the same microseconds, so the same key."""
    assert us_of(ts) == to_us(ts)
    assert format_time(ts) == format_us(to_us(ts))


def reference_key(us: int) -> str:
    """The key of stored microseconds by datetime alone: half up to the millisecond on the
    integer, then ISO 8601 with milliseconds and Z."""
    moment = datetime(1970, 1, 1) + timedelta(milliseconds=(us + 500) // 1000)
    return moment.isoformat(timespec="milliseconds") + "Z"


MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00.000Z
MAX_US = 253_402_300_799_999_499  # 9999-12-31T23:59:59.999Z, the last that rounds into 9999


def boundary_times() -> list[int]:
    """Stored times around the half millisecond that rounds up across a second, minute, hour,
    day and year (before and after 1970), and the first and last times of years 1 and 9999."""
    edges_ms = [
        0, 1000, 60_000, 3_600_000, 86_400_000,
        946_684_800_000,  # 2000-01-01
        1_704_067_200_000,  # 2024-01-01
        -86_400_000, -31_536_000_000,  # 1969-12-31, 1969-01-01
        MIN_US // 1000 + 60_000, MAX_US // 1000 - 59_999,
    ]  # fmt: skip
    out = [MIN_US, MIN_US + 499, MIN_US + 500, MAX_US - 500, MAX_US - 1, MAX_US]
    for ms in edges_ms:
        base = ms * 1000
        out += [base - 501, base - 500, base - 499, base - 1, base, base + 499, base + 500]
    return out


def test_chunk_keys_match_the_reference_at_the_edges() -> None:
    """format_times and series.chunk_points (minute kept while rows stay in it) against the
    datetime reference: at every edge, in order, reversed and shuffled (a row outside the
    kept minute recomputes it)."""
    stamps = sorted(boundary_times())
    expected = [reference_key(us) for us in stamps]
    assert expected[0] == "0001-01-01T00:00:00.000Z"
    assert expected[-1] == "9999-12-31T23:59:59.999Z"
    assert reference_key(-500) == "1970-01-01T00:00:00.000Z"
    assert reference_key(-501) == "1969-12-31T23:59:59.999Z"
    assert reference_key(59_999_500) == "1970-01-01T00:01:00.000Z"
    for order in (stamps, stamps[::-1], random.Random(9).sample(stamps, len(stamps))):
        want = [reference_key(us) for us in order]
        assert format_times(order) == want
        assert [format_us(us) for us in order] == want
        assert list(chunk_points([(us, 0.0) for us in order])) == list(dict.fromkeys(want))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=MIN_US, max_value=MAX_US - 10**10),
    st.lists(st.integers(min_value=0, max_value=90_000_000), max_size=200),
    st.booleans(),
)
def test_chunk_keys_match_the_reference_on_random_series(
    start: int, steps: list[int], shuffle: bool
) -> None:
    """Random series (steps of 0 to 90 s, so rows share or change minutes) as a stream
    would bring them, oldest first, or shuffled: every key is the reference's."""
    stamps = list(itertools.accumulate(steps, initial=start))
    if shuffle:
        random.Random(start).shuffle(stamps)
    want = [reference_key(us) for us in stamps]
    assert format_times(stamps) == want
    rows = [(us, float(i)) for i, us in enumerate(stamps)]
    expected: dict[str, float] = {}
    for key, (_, value) in zip(want, rows, strict=True):
        expected[key] = value  # the later of two rows in one millisecond wins
    got = chunk_points(rows)
    assert got == expected and list(got) == list(expected)
    to_f = conversion("C", "F")  # the converting loop makes its keys the same way
    converted = chunk_points(rows, to_f)
    assert list(converted) == list(expected)
    assert converted == {key: to_f(value) for key, value in expected.items()}
