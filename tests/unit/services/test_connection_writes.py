"""ConnectionWriter: connection transitions of many devices in one store write."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Device, DeviceKind
from thinghub.domain.twin import Twin
from thinghub.ports import ConnectionChange, Stores
from thinghub.services.connection_writes import MAX_CHANGES_PER_WRITE, ConnectionWriter
from thinghub.storage.memory import memory_stores
from thinghub.storage.memory._tables import Tables
from thinghub.storage.memory.devices import MemoryDeviceStore


class RecordingDevices(MemoryDeviceStore):
    """The memory devices area, noting each record_connections call; a write waits for
    `gate` while it is clear, and fails with `fail` when set."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.writes: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_write = asyncio.Event()
        self.fail: Exception | None = None
        self.poisoned: set[str] = set()  # a write holding one of these devices fails

    async def record_connections(self, changes: Sequence[ConnectionChange]) -> None:
        self.writes.append([c.device_id for c in changes])
        self.in_write.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.poisoned & {c.device_id for c in changes}:
            raise ValueError("cannot store that one")
        await super().record_connections(changes)


@pytest.fixture
def devices() -> RecordingDevices:
    return RecordingDevices(Tables())


@pytest.fixture
async def stores(devices: RecordingDevices) -> Stores:
    stores = dataclasses.replace(memory_stores(devices.tables), devices=devices)
    for i in range(MAX_CHANGES_PER_WRITE + 20):
        await stores.devices.insert(_device(f"d{i}"), Twin(f"d{i}"))
    return stores


def _device(device_id: str) -> Device:
    return Device(
        id=device_id,
        account_id="acc",
        kind=DeviceKind.DEVICE,
        name=device_id,
        primary_key="k1",
        secondary_key="k2",
        created_at=1.0,
        updated_at=1.0,
    )


def _change(device_id: str, state: str = "Connected", ts: float = 5.0) -> ConnectionChange:
    body = {"state": "deviceConnected" if state == "Connected" else "deviceDisconnected"}
    event = Event("acc", device_id, EventType.CONNECTION_STATE, ts, body)
    return ConnectionChange(device_id, ts, state, event)


async def _state(stores: Stores, device_id: str) -> str | None:
    device = await stores.devices.get(device_id)
    return None if device is None else device.connection_state


async def _connection_events(stores: Stores) -> list[tuple[str, str]]:
    rows = stores.devices.tables.events.values()  # type: ignore[attr-defined]
    return [(row[1], row[4]) for row in rows]


async def test_transitions_asked_together_are_one_write(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    async with asyncio.TaskGroup() as tasks:
        for i in range(10):
            tasks.create_task(writer.write(_change(f"d{i}")))
    assert devices.writes == [[f"d{i}" for i in range(10)]]
    assert [await _state(stores, f"d{i}") for i in range(10)] == ["Connected"] * 10
    expected = [(f"d{i}", EventType.CONNECTION_STATE.value) for i in range(10)]
    assert await _connection_events(stores) == expected


async def test_transitions_asked_during_a_write_go_in_the_next_one(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    devices.gate.clear()
    async with asyncio.TaskGroup() as tasks:
        first = tasks.create_task(writer.write(_change("d0")))
        await devices.in_write.wait()
        later = [tasks.create_task(writer.write(_change(f"d{i}"))) for i in range(1, 6)]
        for _ in range(20):
            await asyncio.sleep(0)
        # Nothing returns before its own write is stored.
        assert not first.done() and not any(t.done() for t in later)
        assert devices.writes == [["d0"]]
        devices.gate.set()
    assert devices.writes == [["d0"], ["d1", "d2", "d3", "d4", "d5"]]
    assert [await _state(stores, f"d{i}") for i in range(6)] == ["Connected"] * 6


async def test_a_write_holds_at_most_its_limit(stores: Stores, devices: RecordingDevices) -> None:
    writer = ConnectionWriter(stores)
    count = MAX_CHANGES_PER_WRITE + 20
    async with asyncio.TaskGroup() as tasks:
        for i in range(count):
            tasks.create_task(writer.write(_change(f"d{i}")))
    assert [len(w) for w in devices.writes] == [MAX_CHANGES_PER_WRITE, 20]
    assert await _state(stores, f"d{count - 1}") == "Connected"


async def test_a_device_connected_then_disconnected_ends_disconnected(stores: Stores) -> None:
    writer = ConnectionWriter(stores)
    await writer.write(_change("d0", "Connected", 5.0))
    await writer.write(_change("d0", "Disconnected", 6.0))
    assert await _state(stores, "d0") == "Disconnected"
    events = stores.devices.tables.events.values()  # type: ignore[attr-defined]
    assert [row[6] for row in events] == [
        '{"state":"deviceConnected"}',
        '{"state":"deviceDisconnected"}',
    ]


async def test_a_failed_write_fails_each_of_its_callers_and_the_next_write_goes(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    devices.fail = RuntimeError("disk full")
    results = await asyncio.gather(
        *(writer.write(_change(f"d{i}")) for i in range(3)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["disk full"] * 3
    assert await _state(stores, "d0") == "Disconnected"  # as it was
    devices.fail = None
    await writer.write(_change("d1"))
    assert await _state(stores, "d1") == "Connected"


async def test_a_transition_that_cannot_be_stored_fails_only_its_own_caller(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    devices.poisoned = {"d1"}
    results = await asyncio.gather(
        *(writer.write(_change(f"d{i}")) for i in range(3)), return_exceptions=True
    )
    assert [None if r is None else str(r) for r in results] == [None, "cannot store that one", None]
    assert devices.writes == [["d0", "d1", "d2"], ["d0"], ["d1"], ["d2"]]
    assert [await _state(stores, f"d{i}") for i in range(3)] == [
        "Connected",
        "Disconnected",
        "Connected",
    ]


async def test_a_cancelled_caller_neither_loses_its_transition_nor_stalls_the_others(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    devices.gate.clear()
    async with asyncio.TaskGroup() as tasks:
        first = tasks.create_task(writer.write(_change("d0")))
        await devices.in_write.wait()
        handed = tasks.create_task(writer.write(_change("d1")))  # would lead the next write
        after = tasks.create_task(writer.write(_change("d2")))
        await asyncio.sleep(0)
        handed.cancel()
        await asyncio.sleep(0)
        devices.gate.set()
        await first
        await after
    assert handed.cancelled()
    assert [await _state(stores, f"d{i}") for i in range(3)] == ["Connected"] * 3
    assert devices.writes == [["d0"], ["d1", "d2"]]


async def test_a_leader_cancelled_before_writing_hands_on_the_lead(
    stores: Stores, devices: RecordingDevices
) -> None:
    writer = ConnectionWriter(stores)
    async with asyncio.TaskGroup() as tasks:
        leader = tasks.create_task(writer.write(_change("d0")))
        other = tasks.create_task(writer.write(_change("d1")))
        await asyncio.sleep(0)  # both queued; the leader waits for the loop pass to end
        leader.cancel()
        await other
    assert leader.cancelled()
    assert devices.writes == [["d0", "d1"]]  # the cancelled caller's transition went too
    assert await _state(stores, "d0") == "Connected"
