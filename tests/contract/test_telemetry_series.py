"""append_series (an upload's messages written as rows, no object per message) stores exactly
what append() stores for the same messages (TelemetrySeries.messages()): the telemetry rows,
the observations and the latest values. Run on every SQL backend; PostgreSQL's COPY writer
has no series path (ingest then writes the messages)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from tests.contract.conftest import Backend
from thinghub.domain.telemetry import TelemetrySeries
from thinghub.ports import SeriesTelemetryStore, Stores, TelemetryQuery

ACC = "acc-1"
T0 = 1_700_000_000.0


def _series(device_id: str, component: str | None) -> TelemetrySeries:
    bodies = [
        {"T": 20.5},
        {"T": 21.25, "P": -3.0e-7},
        {"T": 1e300, "long": 0.1 + 0.2},
        {"x" * 200: 1.0, "ok": 2.0},  # with a component: a name over 256, no observation
        {'é😀\x01"{}\\': 1.5},  # text the JSON of a SQLite series step escapes
        {"nul\x00": 5.0, "T": 19.0},  # NUL in a name: no observation, the message stored
    ]
    times = [T0 + i * 0.001 + 1e-7 for i in range(len(bodies) - 2)]
    times += [-62_135_596_800.0, 253_402_300_799.999]  # years 1 and 9999
    points = [
        (ts, body, orjson.dumps(body).decode()) for ts, body in zip(times, bodies, strict=True)
    ]
    return TelemetrySeries(ACC, device_id, "proj", "dep", component, "itwin", points)


async def _everything(stores: Stores, device_id: str) -> tuple[Any, Any, Any]:
    """A device's messages (without the device id), latest values and observations."""
    page = await stores.telemetry.query(TelemetryQuery(ACC, device_id=device_id, limit=100))
    messages = [dataclasses.replace(m, device_id="") for m in page.items]
    metrics = sorted((await stores.telemetry.latest(ACC, device_id)).items())
    series = {
        metric: [
            (o.ts, o.value)
            for o in await stores.telemetry.observations(ACC, device_id, metric, None, None, 100)
        ]
        for metric, _ in metrics
    }
    latest = [(metric, o.metric, o.ts, o.value) for metric, o in metrics]
    return messages, latest, series


async def test_a_series_is_stored_as_its_messages(sql_backend: Backend) -> None:
    stores = await sql_backend.open()
    store = stores.telemetry
    has_series = isinstance(store, SeriesTelemetryStore)
    assert has_series == (sql_backend.name != "postgres")  # the COPY writer: messages
    if not has_series:
        return
    assert isinstance(store, SeriesTelemetryStore)
    for component in (None, "comp" * 14):
        await store.append_series(
            [_series("by-series", component), _series("by-series-2", component)]
        )
        await store.append(_series("by-messages", component).messages())
        await store.append(_series("by-messages-2", component).messages())
        for a, b in (("by-series", "by-messages"), ("by-series-2", "by-messages-2")):
            got, expected = await _everything(stores, a), await _everything(stores, b)
            assert got == expected
            assert len(got[0]) == 6 * (1 if component is None else 2)
        latest = {m: v for m, _, _, v in (await _everything(stores, "by-series"))[1]}
        assert latest["T"] == 19.0
        assert not any("\x00" in m for m in latest)
