"""Observations on the iTwin face: the metric a request names, series streamed from the store,
first/last summaries, and uploads through ingest.

Streams (getData, getObservations) read the store a batch at a time
(QueryService.observation_batches, keyset pages), one batch ahead of the one being sent: the
socket adapters ask for the next chunk only after the previous one's send has drained. So a
million-point request holds at most two batches, and a slow reader slows the read instead of
growing the server. Rows keep the stored integer microseconds all the way to the chunk's
JSON (series.chunk_json), which prints them with the face's one rounding (timestamps.py).

Delta metrics (`dT` of `T`, domain/deltas.py) are computed in the raw unit, then converted
as differences: against one reference reading (ZERO_DATE, START_DATE, the sensor's ZERO_DATE
prop, the query's startDate, the first observation) or, with `dt`, a rolling window that a
second cursor over the same series provides (RollingDelta).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from thinghub.domain.clock import MAX_EPOCH_S, MIN_EPOCH_S, parse_ts
from thinghub.domain.deltas import DeltaParams, RollingDelta, reference_time
from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import Metric, metrics_with_deltas
from thinghub.domain.model import Device
from thinghub.domain.telemetry import SeriesPoint, TelemetrySeries
from thinghub.faces.itwin.ids import EntityKind
from thinghub.faces.itwin.network import SENSOR_PROPS, Facts, Network, Sensor, created_info
from thinghub.faces.itwin.params import (
    MAX_METRIC_ID_CHARS,
    MAX_VALUES_PER_ENTRY,
    Limit,
    RejectedEntry,
    UploadEntry,
    check_upload_entries,
    from_iso,
)
from thinghub.faces.itwin.scope import Scope
from thinghub.faces.itwin.sensor_metrics import SensorMetrics
from thinghub.faces.itwin.series import MAX_CHUNK_POINTS, Row, chunk_json
from thinghub.faces.itwin.timestamps import format_us, us_of
from thinghub.services.core import Services
from thinghub.services.units import IDENTITY, Conversion, conversion_for

__all__ = ["BATCH_ROWS", "MetricChoice", "Observations", "Row", "chunks", "one_point"]

# Rows one store read of a stream returns: a multiple of MAX_CHUNK_POINTS, so only the last
# chunk of a stream is short.
BATCH_ROWS: Final = 5 * MAX_CHUNK_POINTS
# An upload's write units being stored while the next one is prepared.
UPLOAD_UNITS_IN_FLIGHT: Final = 2

# One write unit of an upload: a series per sensor.
SeriesUnit = list[tuple[Device, TelemetrySeries]]
# The entries of a series' points: their sensorId and their indices in the request.
Kept = tuple[str, list[int]]


@dataclass(frozen=True, slots=True)
class MetricChoice:
    """The metric a request named, on one sensor, and how its values reach the asked unit.

    `key` is the observation metric the raw values are stored under; `conversion` takes a
    value of `metric` (a raw value, or a delta of one) to the requested unit.
    """

    metric: Metric
    raw: Metric
    key: str
    unit: str
    conversion: Conversion


class Observations:
    def __init__(self, services: Services, network: Network, metrics: SensorMetrics) -> None:
        self.services = services
        self.network = network
        self.metrics = metrics

    # -- metrics ---------------------------------------------------------------------------

    async def raw_metrics(self, scope: Scope, facts: Facts, sensor: Sensor) -> tuple[Metric, ...]:
        latest = await self.network.latest(scope, facts, sensor.holder.id)
        return await self.metrics.raw_metrics(sensor, latest)

    async def all_metrics(self, scope: Scope, facts: Facts, sensor: Sensor) -> tuple[Metric, ...]:
        """getMetrics: the delta metrics, then the raw metrics (the seed's order)."""
        return metrics_with_deltas(await self.raw_metrics(scope, facts, sensor))

    async def choose(
        self,
        scope: Scope,
        facts: Facts,
        sensor: Sensor,
        metric_id: str,
        unit: str | None,
        *,
        raw_only: bool = False,
    ) -> MetricChoice:
        """The metric `metric_id` of `sensor`, converted to `unit` (None: its default unit).

        Raises:
            Invalid: naming `metric` (not a metric of the sensor) or `unit` (not a unit of it).
        """
        raw = await self.raw_metrics(scope, facts, sensor)
        candidates = raw if raw_only else metrics_with_deltas(raw)
        metric = next((m for m in candidates if m.id == metric_id), None)
        if metric is None:
            known = ", ".join(m.id for m in candidates) or "none yet"
            raise Invalid(
                f"metric: {metric_id!r} is not a metric of sensor {sensor.id!r} (its metrics: "
                f"{known})",
                field="metric",
            )
        source = (
            metric if metric.delta_of is None else next(m for m in raw if m.id == metric.delta_of)
        )
        target = unit if unit is not None else metric.default_unit
        return MetricChoice(
            metric, source, sensor.metric_key(source.id), target, conversion_for(metric, target)
        )

    # -- series ----------------------------------------------------------------------------

    async def series(
        self,
        scope: Scope,
        sensor: Sensor,
        choice: MetricChoice,
        delta: DeltaParams,
        since: float | None,
        until: float | None,
        limit: Limit | None,
    ) -> AsyncIterator[list[Row]]:
        """The rows of a choice in [since, until], oldest first, in the raw unit (deltas
        already taken), a batch at a time; times in integer microseconds."""
        holder, key = sensor.holder.id, choice.key
        if choice.metric.delta_of is None:
            async for batch in self._raw(scope, holder, key, since, until, limit):
                yield batch
            return
        if delta.window_s is not None:
            async for batch in self._rolling(
                scope, holder, key, delta.window_s, since, until, limit
            ):
                yield batch
            return
        at = reference_time(delta, sensor_zero_ts=_zero_date(sensor), query_start_ts=since)
        reference = await self._first(scope, holder, key, at, None)
        if reference is None:
            return
        base = reference[1]
        async for batch in self._raw(scope, holder, key, since, until, limit):
            yield [(ts, value - base) for ts, value in batch]

    async def series_chunks(
        self,
        scope: Scope,
        sensor: Sensor,
        choice: MetricChoice,
        delta: DeltaParams,
        since: float | None,
        until: float | None,
        limit: Limit | None,
    ) -> AsyncIterator[orjson.Fragment]:
        """series as `{ISO: value}` chunks of at most MAX_CHUNK_POINTS, converted, each its
        JSON text. A plain metric's whole range (no delta, no limit) is read converted by
        the store (in its reader thread), so only the keys are made here."""
        if choice.metric.delta_of is not None or limit is not None:
            async for batch in self.series(scope, sensor, choice, delta, since, until, limit):
                for chunk in chunks(batch, choice.conversion):
                    yield chunk
            return
        conversion = choice.conversion
        affine = (
            None
            if conversion.is_identity
            else (conversion.scale, conversion.shift, conversion.divisor)
        )
        batches = self.services.queries.observation_batches(
            scope.principal, sensor.holder.id, choice.key, since, until, BATCH_ROWS, affine
        )
        async for batch in _one_ahead(batches):
            for chunk in chunks(batch, IDENTITY):
                yield chunk

    async def _raw(
        self,
        scope: Scope,
        holder: str,
        key: str,
        since: float | None,
        until: float | None,
        limit: Limit | None,
    ) -> AsyncIterator[list[Row]]:
        queries = self.services.queries
        if limit is not None and limit.function == "last":
            rows = await queries.recent_observations(
                scope.principal, holder, key, since, until, limit.size
            )
            if rows:
                yield [(us_of(o.ts), o.value) for o in reversed(rows)]
            return
        if limit is not None:  # the first `size`: one read
            batches = queries.observation_batches(
                scope.principal, holder, key, since, until, limit.size
            )
            async for batch in batches:
                yield batch
                return
            return
        batches = queries.observation_batches(
            scope.principal, holder, key, since, until, BATCH_ROWS
        )
        async for batch in _one_ahead(batches):
            yield batch

    async def _first(
        self, scope: Scope, holder: str, key: str, since: float | None, until: float | None
    ) -> Row | None:
        batches = self.services.queries.observation_batches(
            scope.principal, holder, key, since, until, 1
        )
        async for batch in batches:
            return batch[0]
        return None

    async def _rolling(
        self,
        scope: Scope,
        holder: str,
        key: str,
        window_s: float,
        since: float | None,
        until: float | None,
        limit: Limit | None,
    ) -> AsyncIterator[list[Row]]:
        queries = self.services.queries
        if limit is not None and limit.function == "last":
            rows = await queries.recent_observations(
                scope.principal, holder, key, since, until, limit.size
            )
            out = []
            for row in reversed(rows):
                before = await queries.recent_observations(
                    scope.principal, holder, key, None, row.ts - window_s, 1
                )
                if before:
                    out.append((us_of(row.ts), row.value - before[0].value))
            if out:
                yield out
            return
        # Two cursors over one series: the leading one answers, the lagging one (from a
        # window earlier) provides each point's reference (domain/deltas.RollingDelta, here
        # in the rows' integer microseconds: a window under 1 µs is 1 µs, the earlier row).
        state = RollingDelta(max(1, us_of(window_s)))
        lagging = _points(
            queries.observation_batches(
                scope.principal,
                holder,
                key,
                None if since is None else since - window_s,
                until,
                BATCH_ROWS,
            )
        )
        wanted = None if limit is None else limit.size
        async for batch in queries.observation_batches(
            scope.principal, holder, key, since, until, BATCH_ROWS
        ):
            out = []
            for ts, value in batch:
                while state.wants_lagging(ts):
                    point = await anext(lagging, None)
                    if point is None:
                        state.lagging_done()
                        break
                    state.offer_lagging(point)
                change = state.delta(ts, value)
                if change is not None:
                    out.append((ts, change))
            if wanted is not None:
                out = out[:wanted]
                wanted -= len(out)
            if out:
                yield out
            if wanted == 0:
                break
        await lagging.aclose()

    async def first_after(
        self, scope: Scope, sensor: Sensor, choice: MetricChoice, at: float | None
    ) -> Row | None:
        """The first raw observation of a choice at or after `at` (None: the first of all)."""
        return await self._first(scope, sensor.holder.id, choice.key, at, None)

    async def value_before(self, scope: Scope, holder: str, key: str, at: float) -> float | None:
        """The latest raw value of an observation key at or before `at`."""
        rows = await self.services.queries.recent_observations(
            scope.principal, holder, key, None, at, 1
        )
        return rows[0].value if rows else None

    async def first_and_last(
        self,
        scope: Scope,
        sensor: Sensor,
        choice: MetricChoice,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[Row | None, Row | None]:
        """The first and the last raw row of a choice in [since, until]."""
        first = await self._first(scope, sensor.holder.id, choice.key, since, until)
        rows = await self.services.queries.recent_observations(
            scope.principal, sensor.holder.id, choice.key, since, until, 1
        )
        return first, None if not rows else (us_of(rows[0].ts), rows[0].value)

    # -- uploads ---------------------------------------------------------------------------

    async def upload(
        self, scope: Scope, entries: Sequence[UploadEntry], source: str = "itwin"
    ) -> tuple[int, list[RejectedEntry]]:
        """Store observations, each a telemetry message of its sensor's device (with the
        sensor's component) or of the created sensor, through ingest's series path
        (IngestService.ingest_series: rows straight from the entries, no message object
        each): they show on /v1, in every face's live feed and in getData, committed before
        this returns.

        Returns:
            How many were stored, and the entries that were not, each with why.
        """
        batch = self.services.ingest.batch_max
        rejected: list[RejectedEntry] = []
        prepare = _Preparer(self, scope, source, rejected)

        async def units() -> AsyncIterator[tuple[SeriesUnit, list[Kept]]]:
            for start in range(0, len(entries), batch):
                yield await prepare.series(entries[start : start + batch])

        return await self._upload_units(units(), rejected)

    async def upload_data(
        self, scope: Scope, data: Sequence[Any]
    ) -> tuple[int, list[RejectedEntry]]:
        """upload() of uploadData's entries as the request holds them: each write unit's
        entries are checked (read_upload_entries) and turned into series in one pass, while
        the unit before is being written."""
        batch = self.services.ingest.batch_max
        rejected: list[RejectedEntry] = []
        prepare = _Preparer(self, scope, "itwin", rejected)

        async def units() -> AsyncIterator[tuple[SeriesUnit, list[Kept]]]:
            for start in range(0, len(data), batch):
                unit = data[start : start + batch]
                done = 0
                # check() stops at an entry whose sensor is not looked up yet
                while (stop := prepare.check(unit, start, done)) is not None:
                    await prepare.sensor(unit[stop]["sensorId"])
                    done = stop
                yield prepare.take()

        return await self._upload_units(units(), rejected)

    async def _upload_units(
        self, units: AsyncIterator[tuple[SeriesUnit, list[Kept]]], rejected: list[RejectedEntry]
    ) -> tuple[int, list[RejectedEntry]]:
        """Each unit's series stored while the next unit is prepared
        (UPLOAD_UNITS_IN_FLIGHT), so the database writes while this reads the request."""
        stored = 0
        gate = asyncio.Semaphore(UPLOAD_UNITS_IN_FLIGHT)

        async def store(items: SeriesUnit, kept: list[Kept]) -> None:
            nonlocal stored
            try:
                result = await self.services.ingest.ingest_series(items)
            finally:
                gate.release()
            stored += result.stored
            for position, reason in result.refused.items():
                index, sensor_id = _entry_of(kept, position)
                rejected.append(RejectedEntry(index, f"data[{index}]", reason, sensor_id))

        async with asyncio.TaskGroup() as tasks:
            async for items, kept in units:
                if items:
                    await gate.acquire()
                    tasks.create_task(store(items, kept), name="itwin.upload")
        rejected.sort(key=lambda r: r.index)
        return stored, rejected

    async def declared_metrics(self, scope: Scope, facts: Facts, sensor: Sensor) -> set[str] | None:
        """The metric ids a created generic sensor declares (uploads may carry only those);
        None: any numeric field is a metric."""
        info = created_info(sensor.holder)
        props = None if info is None else info.get("props")
        if not isinstance(props, dict) or not any(k.endswith("_METRICS") for k in props):
            return None
        return {m.id for m in await self.raw_metrics(scope, facts, sensor)}


class _Preparer:
    """Turns upload entries into series (one per sensor and write unit), remembering each
    sensor it looked up (and the metrics a generic one declares) for the rest of the
    request."""

    def __init__(
        self, owner: Observations, scope: Scope, source: str, rejected: list[RejectedEntry]
    ) -> None:
        self.owner = owner
        self.scope = scope
        self.source = source
        self.rejected = rejected
        self.facts = Facts()
        self.sensors: dict[str, Sensor | None] = {}
        self.declared: dict[str, set[str] | None] = {}
        # The UTF-8 bytes of each found sensor's component name (counted in a message's size).
        self.component_bytes: dict[str, int] = {}
        self.limit = owner.services.ingest.max_payload_bytes
        # The points accepted since the last take(), and their entries' indices, per sensor.
        self.points: dict[str, list[SeriesPoint]] = {}
        self.kept: dict[str, list[int]] = {}
        # accept()'s current sensor (None: none yet), and what it needs of it.
        self._current: str | None = None
        self._metrics: set[str] | None = None
        self._component_bytes = 0
        self._points: list[SeriesPoint] = []
        self._kept: list[int] = []

    async def sensor(self, sensor_id: str) -> Sensor | None:
        if sensor_id not in self.sensors:
            try:
                found = await self.owner.network.find(
                    self.scope, sensor_id, EntityKind.SENSOR, "sensorId", self.facts
                )
            except Invalid:
                found = None
            sensor = found if isinstance(found, Sensor) else None
            if sensor is not None:
                try:
                    self.owner.services.ingest.check_component(sensor.component)
                except Invalid:  # a component no message may carry: nothing to store
                    sensor = None
            self.sensors[sensor_id] = sensor
            if sensor is not None:
                self.component_bytes[sensor_id] = len((sensor.component or "").encode())
                self.declared[sensor_id] = await self.owner.declared_metrics(
                    self.scope, self.facts, sensor
                )
        return self.sensors[sensor_id]

    async def resolve(self, sensor_ids: Iterable[str]) -> None:
        """Look up the sensors named that were not looked up yet."""
        for sensor_id in sensor_ids:
            if sensor_id not in self.sensors:
                await self.sensor(sensor_id)

    async def series(self, entries: Sequence[UploadEntry]) -> tuple[SeriesUnit, list[Kept]]:
        """The series of `entries` (one per sensor), and the entries of each one's points
        (take()); the other entries are rejected."""
        await self.resolve({entry.sensor_id for entry in entries})
        accept = self.accept
        for entry in entries:
            accept(entry.index, entry.sensor_id, entry.ts, entry.values)
        return self.take()

    def check(self, unit: Sequence[Any], start: int, done: int = 0) -> int | None:
        """check_upload_entries(unit[done:], start + done, self.accept), up to the first
        entry whose sensorId was not looked up yet: its position in `unit` (None: all were
        checked). The common entry (the current sensor's, one with no declared metrics; a
        timestamp in the common form; values a dict of finite floats) is checked and
        accepted here, in one pass with no call per entry; any other goes through
        check_upload_entries and accept, so its errors are theirs."""
        rejected = self.rejected
        dumps = orjson.dumps
        inf = math.inf
        limit = self.limit - self._component_bytes
        current = self._current if self._metrics is None else None
        add_point = self._points.append
        add_index = self._kept.append
        for index in range(start + done, start + len(unit)):
            entry = unit[index - start]
            if (
                current is not None
                and entry.__class__ is dict
                and entry.get("sensorId") == current
                and (stamp := entry.get("timestamp")).__class__ is str
                and len(stamp) >= 20
                and stamp[4] == "-"
                and stamp[-1] == "Z"
                and (values := entry.get("values")).__class__ is dict
                and 0 < len(values) <= MAX_VALUES_PER_ENTRY
            ):
                # check_upload_entries' reading of the common timestamp form
                try:
                    ts = from_iso(stamp).timestamp()
                except ValueError:
                    ts = math.nan  # out of the range below: the full check names it
                if MIN_EPOCH_S <= ts <= MAX_EPOCH_S:
                    for key, value in values.items():
                        if value.__class__ is not float or not -inf < value < inf:
                            break
                        if not 0 < len(key) <= MAX_METRIC_ID_CHARS:
                            break
                    else:
                        try:
                            raw = dumps(values)
                        except orjson.JSONEncodeError:
                            pass  # (accept names it)
                        else:
                            if len(raw) <= limit:
                                add_point((ts, values, raw.decode()))
                                add_index(index)
                                continue
            if entry.__class__ is dict:
                # (a sensorId that is no string may be no key either: a list)
                sensor_id = entry.get("sensorId")
                if sensor_id.__class__ is str and sensor_id not in self.sensors:
                    return index - start
            rejected += check_upload_entries((entry,), index, self.accept)
            # accept() may have switched sensors
            limit = self.limit - self._component_bytes
            current = self._current if self._metrics is None else None
            add_point = self._points.append
            add_index = self._kept.append
        return None

    def accept(self, index: int, sensor_id: str, ts: float, values: dict[str, float]) -> None:
        """An entry whose fields are checked (read_upload_entries): a point of its sensor's
        series, or rejected. Its sensor was looked up (resolve)."""
        # Consecutive entries mostly share their sensor: it is switched only on a change.
        if sensor_id != self._current and not self._switch(sensor_id):
            self._reject(index, sensor_id, f"data[{index}].sensorId", "no such sensor")
            return
        metrics = self._metrics
        if metrics is not None:
            unknown = [k for k in values if k not in metrics]
            if unknown:
                self._reject(
                    index,
                    sensor_id,
                    f"data[{index}].values.{unknown[0]}",
                    f"{unknown[0]!r} is not a metric of this sensor ({', '.join(sorted(metrics))})",
                )
                return
        try:
            raw = orjson.dumps(values)
        except orjson.JSONEncodeError:  # a metric name orjson cannot write (\ud800)
            self._reject(
                index, sensor_id, f"data[{index}].values", "has a metric name that is not text"
            )
            return
        # ingest.build_parsed's size rule: the body and the component's name.
        size = len(raw) + self._component_bytes
        if size > self.limit:
            self._reject(
                index,
                sensor_id,
                f"data[{index}].values",
                f"telemetry is {size} bytes with its properties; the limit is {self.limit}",
            )
            return
        self._points.append((ts, values, raw.decode()))
        self._kept.append(index)

    def _switch(self, sensor_id: str) -> bool:
        """Make `sensor_id` the current sensor of accept(); False when there is no such
        sensor (then there is no current one)."""
        sensor = self.sensors[sensor_id]
        if sensor is None:
            self._current = None
            return False
        self._current = sensor_id
        self._metrics = self.declared.get(sensor_id)
        self._component_bytes = self.component_bytes[sensor_id]
        if sensor_id not in self.points:
            self.points[sensor_id] = []
            self.kept[sensor_id] = []
        self._points = self.points[sensor_id]
        self._kept = self.kept[sensor_id]
        return True

    def take(self) -> tuple[SeriesUnit, list[Kept]]:
        """The series of the points accepted since the last take(), one per sensor, and
        the entries of each one's points (sensorId, indices), in order."""
        items: SeriesUnit = []
        order: list[Kept] = []
        for sensor_id, own in self.points.items():
            if not own:  # every entry of it was rejected
                continue
            found = self.sensors[sensor_id]
            assert found is not None
            device = found.holder
            series = TelemetrySeries(
                device.account_id,
                device.id,
                device.project,
                device.deployment,
                found.component,
                self.source,
                own,
            )
            items.append((device, series))
            order.append((sensor_id, self.kept[sensor_id]))
        self.points = {}
        self.kept = {}
        self._current = None
        return items, order

    def _reject(self, index: int, sensor_id: str, path: str, message: str) -> None:
        self.rejected.append(RejectedEntry(index, path, message, sensor_id))


def _entry_of(kept: list[Kept], position: int) -> tuple[int, str]:
    """The index and sensorId of the entry of the point at `position` among a unit's."""
    for sensor_id, indices in kept:
        if position < len(indices):
            return indices[position], sensor_id
        position -= len(indices)
    raise IndexError(position)


def _zero_date(sensor: Sensor) -> float | None:
    """A sensor's ZERO_DATE prop (the seed's entities carry one), if it is a date."""
    info = created_info(sensor.holder)
    props: Mapping[str, Any] = {}
    if info is not None and isinstance(info.get("props"), dict):
        props = info["props"]
    else:
        stored = sensor.holder.attributes.get(SENSOR_PROPS)
        own = stored.get(sensor.component or "default") if isinstance(stored, dict) else None
        props = own if isinstance(own, dict) else {}
    value = props.get("ZERO_DATE")
    if not isinstance(value, str):
        return None
    try:
        return parse_ts(value, "ZERO_DATE")
    except Invalid:
        return None


async def _one_ahead(batches: AsyncIterator[list[Row]]) -> AsyncGenerator[list[Row], None]:
    """The batches of a stream, the next one read while the caller handles this one: the
    database reads (in its reader thread) while this formats and sends. One batch ahead at
    most, so a slow reader still slows the read, one batch later."""
    ahead: asyncio.Future[list[Row] | None] = asyncio.ensure_future(anext(batches, None))
    try:
        while (batch := await ahead) is not None:
            ahead = asyncio.ensure_future(anext(batches, None))
            yield batch
    finally:
        if not ahead.done():
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ahead


async def _points(batches: AsyncIterator[list[Row]]) -> AsyncGenerator[Row, None]:
    async for batch in batches:
        for point in batch:
            yield point


def chunks(batch: Sequence[Row], conversion: Conversion) -> list[orjson.Fragment]:
    """A batch of rows as `{ISO: value}` chunks of at most MAX_CHUNK_POINTS, converted, each
    its JSON text (embedded as it is in the message that carries it)."""
    return [
        chunk_json(batch[start : start + MAX_CHUNK_POINTS], conversion)
        for start in range(0, len(batch), MAX_CHUNK_POINTS)
    ]


def one_point(point: Row | None, conversion: Conversion) -> dict[str, float]:
    """`{ISO: value}` of one row (empty for none), converted."""
    return {} if point is None else {format_us(point[0]): conversion(point[1])}
