"""Delta metrics: the change of a raw metric relative to a reference reading.

The iTwin IoT API derives a delta metric from each raw metric (`dT` from `T`, `dx` from `x`)
and lets a request pick the reference through metric parameters (seed, "Metric
Parameters" and the getData example), each `{"value": ..., "unit"?: ...}`:

- `ZERO_DATE {value: ISO}`: relative to the sensor's zero reading at that date;
- `START_DATE {value: ISO}`: relative to the first reading at or after that date;
- `dt {value: seconds, unit?}`: a rolling change over a window: each value minus the
  latest reading at or before `dt` seconds earlier.

Decisions where the seed is silent (docs/faces/itwin.md, "Observations"):
- the reference of ZERO_DATE and START_DATE is the first observation at or after the date;
  when there is none, the delta series is empty;
- precedence: `dt` > `ZERO_DATE` > `START_DATE` > the sensor's `ZERO_DATE` prop > the first
  observation the query returns;
- unknown parameter ids (AZIMUTH_XY, END, ...) are accepted and ignored.

Everything here streams: a series is any iterable of (epoch seconds, value) pairs in time
order, and memory does not grow with its length. RollingDelta reads a second, lagging
cursor over the same series instead of buffering the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from thinghub.domain.clock import parse_ts
from thinghub.domain.errors import Invalid

__all__ = [
    "MAX_WINDOW_S",
    "SECONDS_PER",
    "DeltaParams",
    "Point",
    "RollingDelta",
    "deltas_from",
    "parse_delta_params",
    "pick_reference",
    "reference_time",
    "rolling_deltas",
]

Point = tuple[float, float]  # (epoch seconds, value)

# `dt` units: the catalog's time units (domain/metrics.py), exact factors.
SECONDS_PER: Mapping[str, float] = {"s": 1.0, "ms": 0.001, "min": 60.0, "h": 3600.0, "d": 86400.0}
# A window longer than the representable time range is a mistake, not a request.
MAX_WINDOW_S = 10_000 * 366 * 86400.0


@dataclass(frozen=True, slots=True)
class DeltaParams:
    """The reference a delta metric is computed against, as a request gave it."""

    zero_ts: float | None = None
    start_ts: float | None = None
    window_s: float | None = None

    @property
    def is_rolling(self) -> bool:
        return self.window_s is not None


def parse_delta_params(params: object, field: str = "params") -> DeltaParams:
    """Read the metric parameters of getData/subscribeData (`{"ZERO_DATE": {"value": ISO}}`).

    Args:
        params: the request's `params` member; None or {} means none.
        field: the name errors are reported under.

    Raises:
        Invalid: naming the parameter (e.g. `params.ZERO_DATE.value`) when a known parameter
            is not an object with a valid `value`.
    """
    if params is None:
        return DeltaParams()
    if not isinstance(params, Mapping):
        raise Invalid(f"{field} must be an object of metric parameters", field=field)
    zero = _date_param(params, "ZERO_DATE", field)
    start = _date_param(params, "START_DATE", field)
    window = None
    if "dt" in params:
        spec = _param_object(params["dt"], f"{field}.dt")
        value = spec.get("value")
        name = f"{field}.dt.value"
        if value.__class__ is bool or not isinstance(value, int | float):
            raise Invalid(f"{name} must be a number of seconds, got {value!r}", field=name)
        unit = spec.get("unit", "s")
        factor = SECONDS_PER.get(unit) if isinstance(unit, str) else None
        if factor is None:
            raise Invalid(
                f"{field}.dt.unit must be one of {', '.join(SECONDS_PER)}, got {unit!r}",
                field=f"{field}.dt.unit",
            )
        window = float(value) * factor
        if not (math.isfinite(window) and 0 < window <= MAX_WINDOW_S):
            raise Invalid(f"{name} must be a positive window, got {value!r}", field=name)
    return DeltaParams(zero, start, window)


def _param_object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(f"{name} must be an object with a value, got {value!r}", field=name)
    return value


def _date_param(params: Mapping[str, Any], key: str, field: str) -> float | None:
    if key not in params:
        return None
    spec = _param_object(params[key], f"{field}.{key}")
    value = spec.get("value")
    name = f"{field}.{key}.value"
    if not isinstance(value, str):
        raise Invalid(f"{name} must be an ISO-8601 date, got {value!r}", field=name)
    return parse_ts(value, name)


def reference_time(
    params: DeltaParams,
    *,
    sensor_zero_ts: float | None = None,
    query_start_ts: float | None = None,
) -> float | None:
    """When the reference reading is taken, for a non-rolling delta.

    Precedence: the request's ZERO_DATE, its START_DATE, the sensor's ZERO_DATE prop, the
    query's startDate; None means "the first observation of the series".
    """
    for ts in (params.zero_ts, params.start_ts, sensor_zero_ts, query_start_ts):
        if ts is not None:
            return ts
    return None


def pick_reference(series: Iterable[Point], at_ts: float | None) -> Point | None:
    """The reference reading: the first point at or after `at_ts` (any point when None).

    `series` is in time order; only the points up to the reference are read.
    """
    for point in series:
        if at_ts is None or point[0] >= at_ts:
            return point
    return None


def deltas_from(reference: float, series: Iterable[Point]) -> Iterator[Point]:
    """Each point's value minus the reference value, in the raw unit."""
    for ts, value in series:
        yield ts, value - reference


class RollingDelta:
    """The `dt` delta over a stream: value(t) minus the latest value at or before t - window.

    Theory of operation: the caller walks the series twice at once, a leading cursor (the
    points to answer) and a lagging cursor over the same series. Before answering a leading
    point at t it feeds lagging points while `wants_lagging(t)` says so; the object keeps the
    latest lagging point at or before t - window (the reference) and one look-ahead point.
    Memory is O(1) whatever the window, and each cursor is read once. The same loop works
    over sync iterators and async cursors (see rolling_deltas for the sync form).
    """

    __slots__ = ("_ahead", "_is_done", "_reference", "window_s")

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self.window_s = window_s
        self._reference: Point | None = None
        self._ahead: Point | None = None
        self._is_done = False

    def wants_lagging(self, ts: float) -> bool:
        """Whether to feed another lagging point before answering the leading point at `ts`."""
        if self._is_done:
            return False
        horizon = ts - self.window_s
        if self._ahead is not None and self._ahead[0] <= horizon:
            self._reference, self._ahead = self._ahead, None
        return self._ahead is None

    def offer_lagging(self, point: Point) -> None:
        """The lagging cursor's next point."""
        if self._ahead is not None:
            raise ValueError("offer_lagging called when wants_lagging was False")
        self._ahead = point

    def lagging_done(self) -> None:
        """The lagging cursor is exhausted."""
        self._is_done = True

    def delta(self, ts: float, value: float) -> float | None:
        """The delta of the leading point (ts, value); None when nothing is old enough yet."""
        horizon = ts - self.window_s
        if self._ahead is not None and self._ahead[0] <= horizon:
            self._reference, self._ahead = self._ahead, None
        if self._reference is None:
            return None
        return value - self._reference[1]


def rolling_deltas(
    series: Iterable[Point], lagging: Iterable[Point], window_s: float
) -> Iterator[Point]:
    """The `dt` delta series; points with no reading `window_s` earlier are left out.

    Args:
        series: the points to answer, in time order.
        lagging: a second iterator over the same points (a second cursor), from the start.
        window_s: the window in seconds.
    """
    state = RollingDelta(window_s)
    behind = iter(lagging)
    for ts, value in series:
        while state.wants_lagging(ts):
            point = next(behind, None)
            if point is None:
                state.lagging_done()
                break
            state.offer_lagging(point)
        delta = state.delta(ts, value)
        if delta is not None:
            yield ts, delta
