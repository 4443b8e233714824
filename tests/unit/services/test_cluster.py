"""Services on two nodes over one store, one bus and one presence (what NATS and PostgreSQL
give a cluster; here the memory stores and the in-memory ports stand in for them): what changes
on one node is published as a typed event and seen on the other at once, not after a cache's
TTL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from thinghub.app import build_services
from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.config import Settings
from thinghub.devices.links import LocalLinks
from thinghub.domain.commands import CommandStatus
from thinghub.domain.errors import NotFound
from thinghub.domain.events import EventType
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
    live_pattern,
)
from thinghub.domain.model import Principal, Role
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult, Stores
from thinghub.services.core import Services
from thinghub.storage.memory import memory_stores

DEADLINE_S = 5.0


class Clock:
    """Time stands still: nothing in these tests ages out of a cache."""

    def now(self) -> float:
        return 1_700_000_000.0


@dataclass
class Node:
    services: Services
    links: LocalLinks


class Link:
    """A device connected to one node, answering every method with 200."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.calls: list[str] = []
        self.desired: list[int] = []

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        self.calls.append(name)
        return MethodResult(200, {"ok": name})

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        self.desired.append(version)

    async def push_c2d(self, message: C2DMessage) -> bool:
        return False

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        return feed in ("methods", "desired")

    async def close(self) -> None:
        return None


@dataclass
class Cluster:
    a: Node
    b: Node
    stores: Stores
    bus: MemoryBus
    presence: MemoryPresence
    admin: Principal


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    stores = memory_stores()  # one storage for both nodes, as one database would be
    clock, bus = Clock(), MemoryBus()
    presence = MemoryPresence(clock)
    counter, locks = MemoryCounter(), MemoryLocks()  # shared, as a cluster's would be

    def node(name: str) -> Node:
        links = LocalLinks(presence, name)
        services = build_services(
            Settings.defaults(),
            stores,
            bus=bus,
            clock=clock,
            presence=presence,
            channel=links,
            locks=locks,
            counter=counter,
            issuer=None,
        )
        return Node(services, links)

    a, b = node("node-a"), node("node-b")
    await a.services.start()
    await b.services.start()
    account = await a.services.auth.ensure_account()
    admin = Principal(account.id, Role.ADMIN, "t", "token")
    async with asyncio.TaskGroup() as tasks:
        loops = [
            tasks.create_task(loop())
            for n in (a, b)
            for loop in (n.services.registry.watch, n.services.twins.watch)
        ]
        loops += [tasks.create_task(n.services.commands.run()) for n in (a, b)]
        await until(lambda: bus.subscriptions == 6)  # each watcher subscribed
        yield Cluster(a, b, stores, bus, presence, admin)
        for loop in loops:
            loop.cancel()


async def until(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll `check` (loop turns, then short sleeps) until true; fail after DEADLINE_S."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.001)


async def test_a_device_changed_on_one_node_is_seen_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="before")
    assert (await b.registry.get_device(cluster.admin, device.id)).name == "before"  # cached
    await a.registry.update_device(cluster.admin, device, name="after")

    async def renamed() -> bool:
        return (await b.registry.get_device(cluster.admin, device.id)).name == "after"

    await until(renamed)
    await a.registry.delete_device(cluster.admin, device.id)

    async def gone() -> bool:
        try:
            await b.registry.get_device(cluster.admin, device.id)
        except NotFound:
            return True
        return False

    await until(gone)


async def test_without_an_event_the_other_node_keeps_its_copy(cluster: Cluster) -> None:
    """What the previous test sees is the bus's doing: a change written behind the services'
    back (no event) is not seen while the cached copy is fresh; the next published change is."""
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="before")
    assert (await b.registry.get_device(cluster.admin, device.id)).name == "before"
    await cluster.stores.devices.update(dataclasses.replace(device, name="quiet"))
    assert (await b.registry.get_device(cluster.admin, device.id)).name == "before"
    await a.registry.update_device(cluster.admin, device, name="loud")
    await until(lambda: _name_is(b, cluster, device.id, "loud"))


async def _name_is(services: Services, cluster: Cluster, device_id: str, name: str) -> bool:
    return (await services.registry.get_device(cluster.admin, device_id)).name == name


async def test_a_twin_changed_on_one_node_is_seen_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="d")
    assert (await b.twins.get(device)).desired.version == 1  # cached on b
    twin = await a.twins.patch_desired(device, {"target": 21})

    async def fresh() -> bool:
        return (await b.twins.get(device)).desired.properties == {"target": 21}

    await until(fresh)
    # a's own copy is at the event's version: its watcher kept it
    await until(lambda: not _queued(cluster))
    assert a.twins._cache.get(device.id) == twin


def _queued(cluster: Cluster) -> bool:
    return any(not queue.empty() for _, queue in cluster.bus._subscribers)


async def test_connection_state_is_the_same_on_every_node(cluster: Cluster) -> None:
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="d")
    assert not await b.registry.is_connected(device.id)
    link = Link(device.id)
    await cluster.a.links.attach(link)  # connected to node a
    assert await b.registry.is_connected(device.id)
    assert await cluster.presence.owner(device.id) == "node-a"
    # a desired patch made on node a reaches the device through a's channel
    twin = await a.twins.patch_desired(device, {"target": 1})
    assert link.desired == [twin.desired.version]
    await cluster.a.links.detach(link)
    assert not await b.registry.is_connected(device.id)


async def test_a_command_queued_on_one_node_reaches_the_device_on_the_other(
    cluster: Cluster,
) -> None:
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="d")
    command = await b.commands.submit(cluster.admin, device, "reboot", None)  # offline
    link = Link(device.id)
    await cluster.a.links.attach(link)  # it connects to node a, whose adapter says so:
    await a.commands.device_connected(device.id)

    async def completed() -> bool:
        return (await b.commands.get(cluster.admin, device, command.id)).status is (
            CommandStatus.COMPLETED
        )

    await until(completed)
    assert link.calls == ["reboot"]


async def test_a_command_handed_to_both_nodes_goes_out_once(cluster: Cluster) -> None:
    """Node a queues it while the device is connected; node b is told the device connected
    (a takeover): both delivery loops get the Pending command, one delivers it."""
    a, b = cluster.a.services, cluster.b.services
    device = await a.registry.create_device(cluster.admin, name="d")
    link_a, link_b = Link(device.id), Link(device.id)
    await cluster.a.links.attach(link_a)
    await cluster.b.links.attach(link_b)
    command = await a.commands.submit(cluster.admin, device, "once", None)
    await b.commands.device_connected(device.id)

    async def completed() -> bool:
        return (await a.commands.get(cluster.admin, device, command.id)).status is (
            CommandStatus.COMPLETED
        )

    await until(completed)
    await until(lambda: not a.commands._in_flight and not b.commands._in_flight)
    assert link_a.calls + link_b.calls == ["once"]


async def test_a_command_queued_while_connected_goes_out_through_the_channel(
    cluster: Cluster,
) -> None:
    a = cluster.a.services
    device = await a.registry.create_device(cluster.admin, name="d")
    link = Link(device.id)
    await cluster.a.links.attach(link)
    command = await a.commands.submit(cluster.admin, device, "blink", {"n": 2})

    async def completed() -> bool:
        return (await a.commands.get(cluster.admin, device, command.id)).status is (
            CommandStatus.COMPLETED
        )

    await until(completed)
    assert link.calls == ["blink"]
    assert (await a.commands.invoke(cluster.admin, device, "ping", None)).status == 200


async def collect(
    bus: MemoryBus, pattern: str, action: Callable[[], Awaitable[Any]], n: int
) -> list[LiveEvent]:
    events = bus.subscribe(pattern)
    try:
        await action()
        async with asyncio.timeout(DEADLINE_S):
            return [await anext(events) for _ in range(n)]
    finally:
        await events.aclose()


async def test_every_publisher_publishes_typed_events(cluster: Cluster) -> None:
    a = cluster.a.services
    bus = cluster.bus
    created: list[Any] = []

    async def create() -> None:
        created.append(await a.registry.create_device(cluster.admin, name="d", project="farm"))

    got = await collect(bus, live_pattern(account_id=cluster.admin.account_id), create, 2)
    device = created[0]
    assert got[0] == DeviceChanged(device.account_id, "farm", device.id, "created")
    assert isinstance(got[1], EventRecorded) and got[1].event.type is EventType.LIFECYCLE
    assert got[1].subject == f"event.{device.account_id}.farm.{device.id}"

    async def send() -> None:
        message = a.ingest.build(
            device,
            b'{"t": 20.5}',
            properties={"alert": "no"},
            message_id="m-1",
            component="thermostat1",
            source="http",
        )
        await a.ingest.ingest(device, message)

    (telemetry,) = await collect(bus, live_pattern("telemetry"), send, 1)
    assert isinstance(telemetry, TelemetryReceived)
    assert (telemetry.device_id, telemetry.project, telemetry.body) == (
        device.id,
        "farm",
        {"t": 20.5},
    )
    assert (telemetry.properties, telemetry.component, telemetry.source) == (
        {"alert": "no"},
        "thermostat1",
        "http",
    )
    assert telemetry.message_id == "m-1" and telemetry.ts == Clock().now()

    async def report() -> None:
        await a.twins.patch_reported(device, {"t": 20.5})

    (twin,) = await collect(bus, live_pattern("twin"), report, 1)
    assert twin == TwinChanged(device.account_id, "farm", device.id, "reported", {"t": 20.5}, 2)

    async def connect() -> None:
        await a.registry.set_connected(device, True)
        await a.registry.set_connected(device, False)

    events = await collect(bus, live_pattern("event"), connect, 2)
    changes = await collect(
        bus,
        live_pattern("connection"),
        lambda: a.registry.set_connected(device, True),
        1,
    )
    assert changes == [ConnectionChanged(device.account_id, "farm", device.id, True, Clock().now())]
    bodies = [e.event.body for e in events if isinstance(e, EventRecorded)]
    assert [b["state"] for b in bodies] == ["deviceConnected", "deviceDisconnected"]
    # sequence numbers come from the shared Counter: ever increasing, on any node
    assert bodies[0]["sequenceNumber"] < bodies[1]["sequenceNumber"]
