"""Telemetry series in SQL: an upload's messages written as rows straight from their points,
with no TelemetryMessage (nor Observation) object per message.

A series point is stored as the row SqlTelemetryStore.append writes for the message
TelemetrySeries.messages() gives (same columns, same values), and its observations are the
rows append derives from that message (observation_values), with the latest value per metric
upserted once per write. The messages of a series have no ids, so every one is new.

On SQLite a series' message rows go as one statement: the columns every message of the
series shares are parameters, and the times and bodies one JSON array that SQLite expands
(json_each). sqlite3 binds a statement's parameters holding the GIL, so the 14 parameters a
row of the usual multi-row INSERT takes kept the writer thread waiting for the event loop
(which is preparing the next unit of the upload) between statements; this way the writer
binds six values a series and SQLite does the rest without the GIL. The JSON carries only
integers and strings (exact both ways); the observations' floats are bound as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from thinghub.domain.telemetry import METRIC_NAME_MAX_CHARS, TelemetrySeries
from thinghub.storage.database import Step
from thinghub.storage.sql._rows import TELEMETRY_COLUMNS
from thinghub.storage.sql.telemetry import (
    _INSERT_TELEMETRY,
    SqlTelemetryStore,
    _observation_steps,
)

__all__ = ["SeriesSqlTelemetryStore", "series_rows"]

_Row = tuple[Any, ...]

# A series' messages on SQLite: the shared columns, then [[enqueued_at µs, body], ...].
# (`WHERE true` lets SQLite's parser tell the upsert clause from a join's ON.)
_INSERT_SERIES_SQLITE = (
    f"INSERT INTO telemetry ({TELEMETRY_COLUMNS}) SELECT ?1, ?2, ?3, ?4, p.value ->> 0, "
    "p.value ->> 1, NULL, NULL, NULL, NULL, NULL, NULL, ?5, ?6 FROM json_each(?7) AS p "
    "WHERE true ON CONFLICT DO NOTHING"
)


def observation_rows(series: Sequence[TelemetrySeries]) -> list[_Row]:
    """The plain observation rows of every point of `series` (series_rows' second part)."""
    observations: list[_Row] = []
    add_value = observations.append
    for s in series:
        account, device = s.account_id, s.device_id
        prefix = f"{s.component}." if s.component else ""
        for ts, body, _ in s.points:
            us = round(ts * 1_000_000)  # _rows.to_us
            for key, value in body.items():
                metric = prefix + key if prefix else key
                # observation_values' rule for names (the values are finite floats)
                if len(metric) <= METRIC_NAME_MAX_CHARS and "\x00" not in metric:
                    add_value((account, device, metric, us, value))
    return observations


def _sqlite_series_step(s: TelemetrySeries) -> Step:
    points = orjson.dumps([(round(ts * 1_000_000), text) for ts, _, text in s.points])
    params = (s.account_id, s.device_id, s.project, s.deployment, s.component, s.source)
    return Step("exec", _INSERT_SERIES_SQLITE, (*params, points.decode()))


def series_rows(series: Sequence[TelemetrySeries]) -> tuple[list[_Row], list[_Row]]:
    """The telemetry rows (in TELEMETRY_COLUMNS' order, as telemetry_params makes them) and
    the plain observation rows of every point of `series`."""
    telemetry: list[_Row] = []
    observations: list[_Row] = []
    add_message = telemetry.append
    add_value = observations.append
    for s in series:
        account, device, project, deployment = s.account_id, s.device_id, s.project, s.deployment
        component, source = s.component, s.source
        prefix = f"{component}." if component else ""
        for ts, body, text in s.points:
            us = round(ts * 1_000_000)  # _rows.to_us
            add_message((account, device, project, deployment, us, text, None, None, None,
                         None, None, None, component, source))  # fmt: skip
            for key, value in body.items():
                metric = prefix + key if prefix else key
                # observation_values' rule for names (the values are finite floats)
                if len(metric) <= METRIC_NAME_MAX_CHARS and "\x00" not in metric:
                    add_value((account, device, metric, us, value))
    return telemetry, observations


class SeriesSqlTelemetryStore(SqlTelemetryStore):
    """The SQL telemetry area with a series path (ports.SeriesTelemetryStore)."""

    async def append_series(self, series: Sequence[TelemetrySeries]) -> None:
        """Every point of `series` as a new message, in one write unit."""
        series = [s for s in series if s.points]
        if not series:
            return
        if self.db.dialect == "sqlite":
            steps = [_sqlite_series_step(s) for s in series]
            plain = observation_rows(series)
        else:
            telemetry, plain = series_rows(series)
            steps = [Step("many", _INSERT_TELEMETRY, telemetry)]
        if plain:
            steps += _observation_steps(plain, [])
        await self._write(*steps)
