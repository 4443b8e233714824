"""Registry on the memory stores: projects and deployments, who sees which device, and what
deleting a gateway takes with it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.errors import Forbidden, NotFound
from thinghub.domain.events import EventType
from thinghub.domain.live import ConnectionChanged, live_pattern
from thinghub.domain.model import DeviceKind, Principal, Role
from thinghub.ports import EventQuery, Stores
from thinghub.services.core import Services
from thinghub.storage.memory import MemoryDeviceStore, Tables, memory_stores

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
IN_P1 = Principal("acc-1", Role.ADMIN, "limited", project="p1")
OTHER = Principal("acc-2", Role.ADMIN, "other")


async def test_devices_make_their_projects_and_deployments(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="a", device_id="a", project="p1",
                                      deployment="line-1")  # fmt: skip
    await services.registry.create_device(ADMIN, name="b", device_id="b", project="p2")
    await services.registry.create_device(ADMIN, name="c", device_id="c")
    assert [p.name for p in await services.registry.list_projects(ADMIN)] == ["p1", "p2"]
    assert [p.name for p in await services.registry.list_projects(IN_P1)] == ["p1"]
    assert [d.name for d in await services.registry.list_deployments(ADMIN, "p1")] == ["line-1"]
    with pytest.raises(NotFound):
        await services.registry.list_deployments(IN_P1, "p2")
    assert await services.registry.list_projects(OTHER) == []


async def test_a_device_is_seen_by_its_account_and_project_only(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="a", device_id="a", project="p1")
    await services.registry.create_device(ADMIN, name="b", device_id="b", project="p2")
    assert [d.id for d in await services.registry.list_devices(ADMIN)] == ["a", "b"]
    assert [d.id for d in await services.registry.list_devices(IN_P1)] == ["a"]
    assert await services.registry.list_devices(IN_P1, project="p2") == []
    assert await services.registry.list_devices(OTHER) == []
    assert (await services.registry.get_device(IN_P1, "a")).project == "p1"
    for principal, device_id in ((IN_P1, "b"), (OTHER, "a")):
        with pytest.raises(NotFound):
            await services.registry.get_device(principal, device_id)
    with pytest.raises(Forbidden):
        await services.registry.create_device(IN_P1, name="x", project="p2")


async def test_deleting_a_gateway_takes_its_modules_twins_and_queues(
    services: Services, stores: Stores
) -> None:
    gateway = await services.registry.create_device(
        ADMIN, name="gw", device_id="gw", kind=DeviceKind.GATEWAY
    )
    await services.registry.create_module(ADMIN, "gw", "m1")
    keep = await services.registry.create_device(ADMIN, name="keep", device_id="keep")
    for device in (gateway, keep):
        await services.commands.submit(ADMIN, device, "reboot", {"delay": 1})
        await services.c2d.send(ADMIN, device, {"hello": 1}, {})
    await stores.sessions.save("gw", {"subscriptions": {}})
    await stores.sessions.save("gw/m1", {"subscriptions": {}})

    await services.registry.delete_device(ADMIN, "gw")

    with pytest.raises(NotFound):
        await services.registry.get_device(ADMIN, "gw")
    for key in ("gw", "gw/m1"):
        assert await stores.devices.get(key) is None
        assert await stores.twins.get(key) is None
        assert await stores.sessions.load(key) is None
    assert await stores.commands.pending("gw") == []
    assert await stores.c2d.pending("gw") == []
    assert len(await stores.commands.pending("keep")) == 1
    assert len(await stores.c2d.pending("keep")) == 1
    lifecycle = await services.queries.events(
        ADMIN, EventQuery("", device_id="gw", event_types=frozenset({EventType.LIFECYCLE}))
    )
    assert [e.body["operation"] for e in lifecycle.items] == ["deleteDevice", "createDevice"]


async def test_connecting_records_state_and_activity(
    services: Services, stores: Stores, clock: TestClock
) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    clock.t += 5
    await services.registry.set_connected(device, True)
    stored = await stores.devices.get("d")
    assert stored is not None
    assert (stored.connection_state, stored.last_activity_at, stored.provisioned) == (
        "Connected", clock.t, True,
    )  # fmt: skip
    page = await services.queries.events(
        ADMIN, EventQuery("", event_types=frozenset({EventType.CONNECTION_STATE}))
    )
    assert [e.body["state"] for e in page.items] == ["deviceConnected"]


class GatedDevices(MemoryDeviceStore):
    """The memory devices area, whose write of a Disconnected state waits for `gate`: a slow
    store write under the old connection's bookkeeping."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def touch(
        self, device_id: str, last_activity_at: float, connection_state: str | None = None
    ) -> None:
        if connection_state == "Disconnected":
            self.waiting.set()
            await self.gate.wait()
        await super().touch(device_id, last_activity_at, connection_state)


async def test_a_quick_reconnect_never_overtakes_the_disconnect_before_it(
    clock: TestClock, live: Node
) -> None:
    """The old connection's Disconnected is asked for first; its store write is slow, and the
    new connection's Connected comes meanwhile. The transitions must come out in the order
    they were asked for: in the events' sequence numbers, on the bus and in the stored state
    (tests/e2e/test_device_sdk.py::test_token_renewal_keeps_working saw Connected, Connected,
    Disconnected, Disconnected, Connected)."""
    tables = Tables()
    devices = GatedDevices(tables)
    stores = dataclasses.replace(memory_stores(tables), devices=devices)
    services = build_services(
        Settings.defaults(),
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    await services.start()
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    device = await services.registry.set_connected(device, True)
    changes = live.bus.subscribe(live_pattern(ConnectionChanged.kind))
    async with asyncio.TaskGroup() as tasks:
        old = tasks.create_task(services.registry.set_connected(device, False))
        await devices.waiting.wait()  # the disconnect is in its store write
        clock.t += 1
        new = tasks.create_task(services.registry.set_connected(device, True))
        # Let the reconnect go as far as it can (memory stores: a few loop passes); it must
        # not get past the disconnect still in progress.
        for _ in range(50):
            if new.done():
                break
            await asyncio.sleep(0)
        devices.gate.set()
    assert (old.result().connection_state, new.result().connection_state) == (
        "Disconnected",
        "Connected",
    )
    page = await services.queries.events(
        ADMIN, EventQuery("", event_types=frozenset({EventType.CONNECTION_STATE}))
    )
    in_order = sorted(page.items, key=lambda e: e.body["sequenceNumber"])
    assert [e.body["state"] for e in in_order] == [
        "deviceConnected",
        "deviceDisconnected",
        "deviceConnected",
    ]
    async with asyncio.timeout(5):  # both were published before set_connected returned
        published = [await anext(changes) for _ in range(2)]
    assert [(type(e), getattr(e, "connected", None)) for e in published] == [
        (ConnectionChanged, False),
        (ConnectionChanged, True),
    ]
    await changes.aclose()
    stored = await stores.devices.get("d")
    assert stored is not None
    assert stored.connection_state == "Connected"
