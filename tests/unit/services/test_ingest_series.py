"""ingest_series: an upload's messages as series, stored as rows where no policy checks the
device and the store has a series path (SQLite here), else as messages (the memory store, a
templated device, a failed write); counted, touched, published and observed either way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.services.node import node
from tests.unit.services.test_ingest import (
    ACCOUNT,
    WAIT_S,
    FakeClock,
    device,
    one_double_template,
)
from thinghub.domain.live import live_pattern
from thinghub.domain.model import Device, Principal, Role
from thinghub.domain.telemetry import TelemetryMessage, TelemetrySeries
from thinghub.ports import EventQuery, SeriesTelemetryStore, Stores, TelemetryQuery
from thinghub.services.events import EventService
from thinghub.services.ingest import IngestService
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService
from thinghub.storage.memory import memory_stores
from thinghub.storage.migrate import upgrade
from thinghub.storage.sql import sql_stores
from thinghub.storage.sqlite import SqliteDatabase

T0 = 1_700_000_000.0


class World:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        clock = FakeClock()
        n = node(clock)
        events = EventService(stores, n.bus, clock, n.counter)
        registry = Registry(
            stores, clock, events, n.bus, presence=n.presence, channel=n.links, locks=n.locks
        )
        self.ingest = IngestService(
            stores, clock, n.bus, registry, events, max_payload_bytes=262_144,
            max_queued_bytes=1 << 26,
        )  # fmt: skip
        self.templates = TemplateService(stores, clock, registry)
        self.ingest.policies.append(self.templates.policy)
        self.commits: list[dict[str, int]] = []
        self.ingest.on_series_commit.append(lambda _s, counts: self.commits.append(counts))

    async def stored(self) -> list[TelemetryMessage]:
        page = await self.stores.telemetry.query(TelemetryQuery(ACCOUNT))
        return page.items[::-1]


@pytest.fixture(params=["sqlite", "memory"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    if request.param == "sqlite":
        path = tmp_path / "thinghub.db"
        await asyncio.to_thread(upgrade, f"sqlite:///{path}")
        stores = sql_stores(SqliteDatabase(path))
    else:
        stores = memory_stores()
    await stores.start()
    try:
        yield World(stores)
    finally:
        await stores.close()


def series(target: Device, bodies: list[dict[str, float]], start: int = 0) -> TelemetrySeries:
    points = [(T0 + start + i, body, orjson.dumps(body).decode()) for i, body in enumerate(bodies)]
    return TelemetrySeries(
        target.account_id, target.id, target.project, target.deployment, None, "itwin", points
    )


async def test_series_are_stored_published_and_counted(world: World) -> None:
    plain, other = device(device_id="plain"), device(device_id="other")
    live = world.ingest.bus.subscribe(live_pattern("telemetry", ACCOUNT, None, "plain"))
    items = [
        (plain, series(plain, [{"x": 1.0}, {"x": 2.0, "y": 3.0}])),
        (other, series(other, [{"x": 4.0}], start=5)),
    ]
    async with asyncio.timeout(WAIT_S):
        result = await world.ingest.ingest_series(items)
        pushed = [await anext(live) for _ in range(2)]
    assert result.stored == 3 and result.refused == {}
    stored = await world.stored()
    assert [(m.device_id, m.body, m.source, m.enqueued_at) for m in stored] == [
        ("plain", {"x": 1.0}, "itwin", T0), ("plain", {"x": 2.0, "y": 3.0}, "itwin", T0 + 1),
        ("other", {"x": 4.0}, "itwin", T0 + 5),
    ]  # fmt: skip
    values = await world.stores.telemetry.observations(ACCOUNT, "plain", "x", None, None, 10)
    assert [o.value for o in values] == [2.0, 1.0]
    assert (await world.stores.telemetry.latest(ACCOUNT, "plain"))["y"].value == 3.0
    assert [(e.device_id, e.body) for e in pushed] == [  # type: ignore[union-attr]
        ("plain", {"x": 1.0}), ("plain", {"x": 2.0, "y": 3.0}),
    ]  # fmt: skip
    # Only the series path tells on_series_commit (the memory store writes messages).
    is_rows = isinstance(world.stores.telemetry, SeriesTelemetryStore)
    assert world.commits == ([{"itwin": 3}] if is_rows else [])
    await live.aclose()


async def test_a_templated_devices_series_is_checked_as_messages(world: World) -> None:
    """The template's refusal is named by the point's position among all points, and
    recorded as an event; the other points land."""
    principal = Principal(ACCOUNT, Role.ADMIN, "admin")
    await world.templates.put(principal, "tpl", one_double_template("tpl"))
    plain, typed = device(device_id="plain"), device("tpl", device_id="typed")
    items = [
        (plain, series(plain, [{"x": 1.0}])),
        (typed, series(typed, [{"x": 2.0}, {"z": 3.0}, {"x": 4.0}], start=1)),
    ]
    async with asyncio.timeout(WAIT_S):
        result = await world.ingest.ingest_series(items)
    assert result.stored == 3
    assert list(result.refused) == [2]
    assert [m.body for m in await world.stored()] == [{"x": 1.0}, {"x": 2.0}, {"x": 4.0}]
    [event] = (await world.stores.events.query(EventQuery(ACCOUNT))).items
    assert event.device_id == "typed" and event.body["body"] == {"z": 3.0}


async def test_a_failed_series_write_goes_a_message_at_a_time(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    if not isinstance(world.stores.telemetry, SeriesTelemetryStore):
        assert world.commits == []  # nothing to fail: the memory store writes messages
        return
    store: Any = world.stores.telemetry
    original = store.append

    async def failing_series(_series: Any) -> None:
        raise RuntimeError("the database refused a row")

    async def append(messages: Any, observations: Any = None) -> list[bool]:
        if any(m.body == {"t": 2.0} for m in messages):
            raise RuntimeError("the database refused a row")
        return list(await original(messages, observations))

    store.append_series = failing_series
    store.append = append
    target = device()
    with caplog.at_level(logging.WARNING, logger="thinghub.services.ingest"):
        async with asyncio.timeout(WAIT_S):
            result = await world.ingest.ingest_series(
                [(target, series(target, [{"t": 1.0}, {"t": 2.0}, {"t": 3.0}]))]
            )
    assert result.stored == 2 and result.refused == {1: "not stored"}
    assert [m.body for m in await world.stored()] == [{"t": 1.0}, {"t": 3.0}]
    assert any("writing each message" in r.message for r in caplog.records)
