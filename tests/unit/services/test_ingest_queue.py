"""Tests for thinghub.services.ingest: the memory bound on queued telemetry (queued bytes are
counted, and a full queue says so), how small batches wait for other devices' messages, and a
message's size as IoT Hub counts it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import thinghub.services.ingest as ingest_module
from tests.unit.services.node import node
from thinghub.domain.model import Device, DeviceKind
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.ports import TelemetryQuery
from thinghub.services.events import EventService
from thinghub.services.ingest import MESSAGE_OVERHEAD_BYTES, IngestService, message_size
from thinghub.services.registry import Registry
from thinghub.storage.memory import MemoryTelemetryStore, Tables, memory_stores


class GatedTelemetry(MemoryTelemetryStore):
    """The memory telemetry area, whose appends wait until the test opens the gate."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.gate = asyncio.Event()

    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        await self.gate.wait()
        return await super().append(messages, observations)

    async def stored(self) -> int:
        return len((await self.query(TelemetryQuery("acc-1", limit=1000))).items)


class Clock:
    def now(self) -> float:
        return 1_700_000_000.0


DEVICE = Device("d1", "acc-1", DeviceKind.DEVICE, "d1", "k1", "k2", 0.0, 0.0)


def service(max_queued_bytes: int) -> tuple[IngestService, GatedTelemetry]:
    tables = Tables()
    telemetry = GatedTelemetry(tables)
    stores = memory_stores(tables, telemetry=telemetry)
    n = node(Clock())
    events = EventService(stores, n.bus, Clock(), n.counter)
    return IngestService(
        stores,
        Clock(),
        n.bus,
        Registry(
            stores, Clock(), events, n.bus, presence=n.presence, channel=n.links, locks=n.locks
        ),
        events,
        max_payload_bytes=262_144,
        max_queued_bytes=max_queued_bytes,
    ), telemetry


def message(ingest: IngestService, size: int) -> TelemetryMessage:
    return ingest.build(DEVICE, b"x" * size)


async def test_queued_bytes_fill_the_queue_and_writes_empty_it() -> None:
    cost = 10_000 + MESSAGE_OVERHEAD_BYTES
    ingest, store = service(max_queued_bytes=3 * cost)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ingest.run())
        futures = [ingest.submit(DEVICE, message(ingest, 10_000)) for _ in range(2)]
        assert ingest.queued_bytes == 2 * cost
        assert not ingest.is_full
        futures.append(ingest.submit(DEVICE, message(ingest, 10_000)))
        assert ingest.is_full  # nothing refused: the third is queued like the others
        waiter = asyncio.ensure_future(ingest.wait_for_room())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # the store has not written anything yet
        store.gate.set()
        await asyncio.wait_for(waiter, timeout=5)
        outcomes = await asyncio.gather(*futures)
        assert [o.is_new for o in outcomes] == [True, True, True]
        for _ in range(100):  # the batch's end (after its live events) releases its bytes
            if ingest.queued_bytes == 0:
                break
            await asyncio.sleep(0)
        assert ingest.queued_bytes == 0
        assert not ingest.is_full
        ingest.stop()
    assert await store.stored() == 3


async def test_ingest_waits_for_room_before_queueing() -> None:
    ingest, store = service(max_queued_bytes=1)  # any one message fills it
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ingest.run())
        first = ingest.submit(DEVICE, message(ingest, 10))
        assert ingest.is_full
        second: asyncio.Task[Any] = tasks.create_task(ingest.ingest(DEVICE, message(ingest, 10)))
        await asyncio.sleep(0.01)
        assert ingest.queued_bytes == 10 + MESSAGE_OVERHEAD_BYTES  # the second is not queued
        store.gate.set()
        assert (await first).is_new
        assert await asyncio.wait_for(second, timeout=5) is True
        ingest.stop()
    assert await store.stored() == 2


class CountingTelemetry(GatedTelemetry):
    """Records the size of every append (a batch), gate open."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.gate.set()
        self.batches: list[int] = []

    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        self.batches.append(len(messages))
        return await super().append(messages, observations)


def counting_service(monkeypatch: pytest.MonkeyPatch) -> tuple[IngestService, CountingTelemetry]:
    monkeypatch.setattr(ingest_module, "COMMIT_LINGER_S", 0.5)  # long enough to tell apart
    tables = Tables()
    telemetry = CountingTelemetry(tables)
    ingest, _ = service(max_queued_bytes=10_000_000)
    ingest.stores = memory_stores(tables, telemetry=telemetry)
    return ingest, telemetry


def other(device_id: str) -> Device:
    return Device(device_id, "acc-1", DeviceKind.DEVICE, device_id, "k1", "k2", 0.0, 0.0)


async def test_a_device_sending_alone_never_waits_for_company(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, store = counting_service(monkeypatch)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ingest.run())
        for _ in range(5):  # each waits for its outcome, as a device waits for its PUBACK
            outcome = await asyncio.wait_for(ingest.submit(DEVICE, message(ingest, 10)), 0.25)
            assert outcome.is_new
        ingest.stop()
    assert store.batches == [1, 1, 1, 1, 1]


async def test_a_small_batch_waits_for_other_devices_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, store = counting_service(monkeypatch)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(ingest.run())
        assert (await ingest.submit(DEVICE, message(ingest, 10))).is_new  # alone: at once
        b = ingest.submit(other("d2"), ingest.build(other("d2"), b"{}"))
        await asyncio.sleep(0.05)  # d2's batch is waiting (another device went just before)
        assert not b.done()
        c = ingest.submit(other("d3"), ingest.build(other("d3"), b"{}"))
        outcomes = await asyncio.wait_for(asyncio.gather(b, c), 5)
        assert [o.is_new for o in outcomes] == [True, True]
        ingest.stop()
    assert store.batches == [1, 2]  # d2 and d3 shared one write


def test_the_size_is_the_body_plus_property_names_and_values_plus_system_values() -> None:
    assert message_size(b"12345", None) == 5
    assert message_size(b"12345", {"ab": "cde"}) == 10
    assert message_size(b"", {"k": "é"}) == 3  # UTF-8 bytes, not characters
    assert message_size(b"x", {}, ("id-1", None, "application/json")) == 1 + 4 + 16


def test_many_small_properties_add_up() -> None:
    props = {f"p{i}": "v" for i in range(100_000)}
    assert message_size(b"{}", props) > 262_144
