"""Telemetry series in SQL: an upload's messages written as rows straight from their points,
with no TelemetryMessage (nor Observation) object per message.

A series point is stored as the row SqlTelemetryStore.append writes for the message
TelemetrySeries.messages() gives (same columns, same values), and its observations are the
set append derives from that message (observation_values). The messages of a series have
no ids, so every one is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinghub.domain.telemetry import METRIC_NAME_MAX_CHARS, TelemetrySeries
from thinghub.storage.database import Step
from thinghub.storage.sql.telemetry import (
    _APPEND_TELEMETRY,
    _INSERT_SET,
    UPSERT_LATEST_ROWS,
    SqlTelemetryStore,
    newest_per_metric,
    set_text,
)

__all__ = ["SeriesSqlTelemetryStore", "series_rows"]

_Row = tuple[Any, ...]


def series_rows(series: Sequence[TelemetrySeries]) -> tuple[list[_Row], list[_Row], list[_Row]]:
    """The telemetry rows (in TELEMETRY_COLUMNS' order, as telemetry_params makes them), the
    plain observation sets of every point of `series`, and the latest value of each metric
    they hold as rows (account_id, entity_id, metric, ts, value): the newest point's, the
    later one on equal times. (A series has many points of few metrics: one upsert per
    metric, not one per point.)"""
    telemetry: list[_Row] = []
    observations: list[_Row] = []
    values_of: list[_Row] = []  # (account, device, metric, ts, value) of every point
    add_message = telemetry.append
    add_set = observations.append
    add_values = values_of.extend
    for s in series:
        account, device, project, deployment = s.account_id, s.device_id, s.project, s.deployment
        component, source = s.component, s.source
        prefix = f"{component}." if component else ""
        for ts, body, text in s.points:
            us = round(ts * 1_000_000)  # _rows.to_us
            add_message((account, device, project, deployment, us, text, None, None, None,
                         None, None, None, component, source))  # fmt: skip
            values = {
                metric: value
                for key, value in body.items()
                # observation_values' rule for names (the values are finite floats)
                if len(metric := prefix + key) <= METRIC_NAME_MAX_CHARS and "\x00" not in metric
            }
            if values:
                add_set((account, device, us, set_text(values)))
                add_values((account, device, metric, us, v) for metric, v in values.items())
    return telemetry, observations, newest_per_metric(values_of)


class SeriesSqlTelemetryStore(SqlTelemetryStore):
    """The SQL telemetry area with a series path (ports.SeriesTelemetryStore)."""

    async def append_series(self, series: Sequence[TelemetrySeries]) -> None:
        """Every point of `series` as a new message, in one write unit."""
        telemetry, sets, latest = series_rows(series)
        if not telemetry:
            return
        steps = [Step("append", _APPEND_TELEMETRY, telemetry)]
        if sets:
            steps += [Step("append", _INSERT_SET, sets), Step("many", UPSERT_LATEST_ROWS, latest)]
        await self._write(*steps)
