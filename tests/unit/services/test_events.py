"""EventService on the memory stores: every event is stored and published on the bus under
its device's subject; connection events take ever-increasing sequence numbers."""

from __future__ import annotations

import asyncio

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node
from thinghub.domain.events import EventType
from thinghub.domain.live import EventRecorded, live_pattern
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.ports import EventQuery, Stores
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
DEVICE = Device("d.1", "acc-1", DeviceKind.DEVICE, "d", "k1", "k2", 0.0, 0.0, project="farm",
                deployment="north")  # fmt: skip


async def test_an_event_is_stored_and_published(
    services: Services, stores: Stores, live: Node, clock: TestClock
) -> None:
    events = live.bus.subscribe(live_pattern("event", "acc-1", "farm", "d.1"))
    recorded = await services.events.record(DEVICE, EventType.CHANGE, {"version": 2})
    assert (recorded.ts, recorded.project, recorded.deployment) == (clock.t, "farm", "north")
    at = await services.events.record(DEVICE, EventType.LIFECYCLE, {"operation": "x"}, ts=5.0)
    assert at.ts == 5.0
    async with asyncio.timeout(5):
        published = [await anext(events) for _ in range(2)]
    await events.aclose()
    assert published == [
        EventRecorded("acc-1", "farm", "d.1", recorded),
        EventRecorded("acc-1", "farm", "d.1", at),
    ]
    assert published[0].subject == "event.acc-1.farm.d%2E1"
    page = await stores.events.query(
        EventQuery("acc-1", event_types=frozenset({EventType.CHANGE, EventType.LIFECYCLE}))
    )
    assert page.items == [recorded, at]


async def test_connection_events_number_themselves_in_order(
    services: Services, clock: TestClock
) -> None:
    bodies = []
    for connected in (True, False, True):
        event = await services.events.connection_changed(DEVICE, connected)
        assert event.type is EventType.CONNECTION_STATE
        bodies.append(event.body)
    # The same instant: the counter still orders them.
    assert [b["state"] for b in bodies] == [
        "deviceConnected",
        "deviceDisconnected",
        "deviceConnected",
    ]
    numbers = [b["sequenceNumber"] for b in bodies]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert all(len(n) == 64 for n in numbers)
    clock.t -= 100  # even a clock stepped back never reuses a number
    later = await services.events.connection_changed(DEVICE, False)
    assert later.body["sequenceNumber"][32:] > numbers[-1][32:]
