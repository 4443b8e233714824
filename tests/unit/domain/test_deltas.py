"""Tests for thinghub.domain.deltas: metric params, references and delta series."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.deltas import (
    DeltaParams,
    Point,
    RollingDelta,
    deltas_from,
    parse_delta_params,
    pick_reference,
    reference_time,
    rolling_deltas,
)
from thinghub.domain.errors import Invalid

ZERO = "2017-03-01T22:00:00.000Z"
ZERO_TS = 1_488_405_600.0


def test_seed_metric_params() -> None:
    # getData's example, and the "Metric Parameters" example (AZIMUTH_XY is accepted, unused).
    assert parse_delta_params({"ZERO_DATE": {"value": ZERO}}) == DeltaParams(zero_ts=ZERO_TS)
    assert parse_delta_params({"AZIMUTH_XY": {"value": 90}, "ZERO_DATE": {"value": ZERO}}) == (
        DeltaParams(zero_ts=ZERO_TS)
    )
    assert parse_delta_params({"dt": {"value": 604800}}) == DeltaParams(window_s=604800.0)
    assert parse_delta_params({"START_DATE": {"value": ZERO}}).start_ts == ZERO_TS
    assert parse_delta_params({}) == DeltaParams() == parse_delta_params(None)
    assert not DeltaParams().is_rolling and DeltaParams(window_s=1).is_rolling


@pytest.mark.parametrize(
    ("unit", "seconds"), [("s", 7), ("ms", 0.007), ("min", 420), ("h", 25200), ("d", 604800)]
)
def test_dt_units(unit: str, seconds: float) -> None:
    got = parse_delta_params({"dt": {"value": 7, "unit": unit}}).window_s
    assert got == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([1], "params"),
        ({"ZERO_DATE": "2017-03-01"}, "params.ZERO_DATE"),
        ({"ZERO_DATE": {"value": 5}}, "params.ZERO_DATE.value"),
        ({"ZERO_DATE": {"value": "March"}}, "params.ZERO_DATE.value"),
        ({"START_DATE": {}}, "params.START_DATE.value"),
        ({"dt": 60}, "params.dt"),
        ({"dt": {"value": "60"}}, "params.dt.value"),
        ({"dt": {"value": True}}, "params.dt.value"),
        ({"dt": {"value": 0}}, "params.dt.value"),
        ({"dt": {"value": -5}}, "params.dt.value"),
        ({"dt": {"value": 1e300, "unit": "d"}}, "params.dt.value"),
        ({"dt": {"value": 60, "unit": "fortnight"}}, "params.dt.unit"),
    ],
)
def test_bad_params_name_the_param(params: Any, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_delta_params(params)
    assert caught.value.field == field


def test_reference_time_precedence() -> None:
    both = DeltaParams(zero_ts=1.0, start_ts=2.0)
    assert reference_time(both, sensor_zero_ts=3.0, query_start_ts=4.0) == 1.0
    assert reference_time(DeltaParams(start_ts=2.0), sensor_zero_ts=3.0, query_start_ts=4.0) == 2.0
    assert reference_time(DeltaParams(), sensor_zero_ts=3.0, query_start_ts=4.0) == 3.0
    assert reference_time(DeltaParams(), query_start_ts=4.0) == 4.0
    assert reference_time(DeltaParams()) is None


SERIES: list[Point] = [(10.0, 5.0), (20.0, 7.5), (30.0, 6.0), (40.0, 9.0)]


def test_pick_reference_is_the_first_point_at_or_after() -> None:
    assert pick_reference(SERIES, None) == (10.0, 5.0)
    assert pick_reference(SERIES, 20.0) == (20.0, 7.5)
    assert pick_reference(SERIES, 20.5) == (30.0, 6.0)
    assert pick_reference(SERIES, 41.0) is None
    assert pick_reference([], None) is None


def test_pick_reference_reads_only_up_to_the_reference() -> None:
    read: list[Point] = []

    def source() -> Any:
        for point in SERIES:
            read.append(point)
            yield point

    pick_reference(source(), 15.0)
    assert read == SERIES[:2]


def test_deltas_from_a_reference() -> None:
    assert list(deltas_from(7.5, SERIES)) == [(10.0, -2.5), (20.0, 0.0), (30.0, -1.5), (40.0, 1.5)]


def test_rolling_delta_by_hand() -> None:
    # dt = 15 s: 30 - 15 = 15 -> the reading at 10 (5.0); 40 - 15 = 25 -> the one at 20 (7.5).
    assert list(rolling_deltas(SERIES, SERIES, 15.0)) == [(30.0, 1.0), (40.0, 1.5)]
    # A window that ends exactly on a reading takes it.
    assert list(rolling_deltas(SERIES, SERIES, 10.0)) == [(20.0, 2.5), (30.0, -1.5), (40.0, 3.0)]
    assert list(rolling_deltas(SERIES, SERIES, 100.0)) == []


def naive_rolling(series: list[Point], window: float) -> list[Point]:
    out = []
    for ts, value in series:
        older = [p for p in series if p[0] <= ts - window]
        if older:
            out.append((ts, value - older[-1][1]))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(-50, 50)), max_size=40),
    st.integers(1, 60),
)
def test_rolling_delta_matches_the_definition(raw: list[tuple[int, int]], window: int) -> None:
    series = sorted({ts: (float(ts), float(v)) for ts, v in raw}.values())
    assert list(rolling_deltas(series, series, float(window))) == naive_rolling(series, window)


def test_rolling_delta_reads_each_cursor_once_with_constant_state() -> None:
    series = [(float(i), float(i * i)) for i in range(10_000)]
    lagging_reads = 0

    def lagging() -> Any:
        nonlocal lagging_reads
        for point in series:
            lagging_reads += 1
            yield point

    out = list(rolling_deltas(series, lagging(), 100.0))
    assert len(out) == 10_000 - 100
    assert out[0] == (100.0, 100.0**2)
    assert lagging_reads <= len(series)


def test_rolling_delta_protocol_misuse() -> None:
    with pytest.raises(ValueError):
        RollingDelta(0)
    state = RollingDelta(5.0)
    assert state.wants_lagging(100.0)
    state.offer_lagging((200.0, 1.0))
    with pytest.raises(ValueError):
        state.offer_lagging((201.0, 1.0))
