"""Tests for thinghub.faces.itwin.timestamps: ISO ms times on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.faces.itwin.timestamps import (
    format_time,
    format_time_offset,
    format_times,
    parse_time,
)


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
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=round(ts * 1000))
    assert format_time(ts) == moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    assert format_time_offset(ts) == moment.isoformat(timespec="milliseconds")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0), max_size=50).map(
        sorted
    )
)
def test_many_times_format_as_each_alone(stamps: list[float]) -> None:
    """format_times (a chunk's keys, hour prefixes cached) gives format_time's strings, in
    order, also across hour, day and year boundaries and before 1970."""
    assert format_times(stamps) == [format_time(ts) for ts in stamps]
    edges = [3599.9995, 3599.9996, 86_399.9999, -0.0004, -0.0006, 946_684_799.9996]
    assert format_times(edges) == [format_time(ts) for ts in edges]
