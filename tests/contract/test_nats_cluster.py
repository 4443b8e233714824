"""The NATS implementations of the bus and cluster ports, against a real nats-server.

Two or three `NatsCluster`s in this process stand for nodes (each its own NATS connection,
node id and run); "a node dies" is its connection closing without leaving the cluster, so its
heartbeat stops as a SIGKILL would stop it. LEASE_S is short so leases lapse quickly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nats_server import NatsServer
from thinghub.bus import nats_presence
from thinghub.bus.live_codec import decode, encode
from thinghub.bus.nats import LIVE_PREFIX, NatsCluster, settled
from thinghub.bus.nats_presence import kv_key
from thinghub.bus.subjects import live_pattern
from thinghub.devices.links import LocalLinks
from thinghub.domain.errors import DeviceOffline, TimedOut
from thinghub.domain.events import Event, EventType
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
)
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult

LEASE_S = 1.5
WITHIN_S = 10.0


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture
async def nodes(nats_url: str) -> AsyncIterator[list[NatsCluster]]:
    started: list[NatsCluster] = []
    tag = str(time.monotonic_ns())  # node ids of their own: the buckets outlive each test
    for name in ("a", "b", "c"):
        started.append(await NatsCluster.connect(nats_url, f"{name}-{tag}", lease_s=LEASE_S))
    yield started
    for cluster in started:
        if cluster.nc.is_connected:
            await cluster.close()


async def die(cluster: NatsCluster) -> None:
    """Stop like a killed process: no goodbye, the heartbeat just stops."""
    await cluster.nc.close()


class Link:
    """A connected device as its adapter offers it; methods named "slow" never answer."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.desired: list[tuple[dict[str, Any], int]] = []
        self.c2d: list[C2DMessage] = []
        self.closed = False

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        if name == "slow":
            await asyncio.sleep(timeout_s)
            raise TimedOut(f"device {self.device_id!r} did not answer within {timeout_s} s")
        return MethodResult(201, {"name": name, "got": payload})

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        self.desired.append((patch, version))

    async def push_c2d(self, message: C2DMessage) -> bool:
        self.c2d.append(message)
        return True

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        return feed == "methods"

    async def close(self) -> None:
        self.closed = True


async def eventually(probe: Any, what: str) -> Any:
    deadline = time.monotonic() + WITHIN_S
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- the codec -------------------------------------------------------------------------------


def test_every_live_event_survives_the_wire() -> None:
    event = Event("acc", "dev", EventType.CONNECTION_STATE, 1.5, {"state": "x"}, "p", "d")
    samples: list[LiveEvent] = [
        TelemetryReceived("acc", "p", "dev", 1.25, {"t": [1, None]}, {"k": "v"}, None, "mqtt", "m"),
        TwinChanged("acc", None, "dev/mod", "desired", {"a": None}, 7),
        ConnectionChanged("acc", "p", "dev", True, 2.0),
        EventRecorded("acc", "p", "dev", event),
        DeviceChanged("acc", None, "dev", "deleted"),
    ]
    for sample in samples:
        assert decode(encode(sample)) == sample


def test_keys_hold_any_device_id() -> None:
    for value in ("dev", "a.b*c>d", "dev/mod", "ü ñ", "_", "x" * 300):
        key = kv_key(value)
        assert key and all(ch.isalnum() or ch in "-_" for ch in key)


# -- the bus -------------------------------------------------------------------------------


async def test_events_reach_subscribers_on_every_node_by_pattern(
    nodes: list[NatsCluster],
) -> None:
    a, b, _ = nodes
    mine = b.bus.subscribe(live_pattern("telemetry", "acc-1"))
    everything = a.bus.subscribe(live_pattern())
    await settled(b.nc)
    other = TelemetryReceived("acc-2", None, "d2", 1.0, 1, {}, None, "mqtt", None)
    wanted = TelemetryReceived("acc-1", "p", "d1", 1.0, {"t": 1}, {}, None, "mqtt", None)
    await a.bus.publish(other)
    await a.bus.publish(wanted)
    async with asyncio.timeout(WITHIN_S):
        assert await anext(mine) == wanted  # acc-2's came first and was not delivered
        assert await anext(everything) == other  # the publishing node's own subscribers too
        assert await anext(everything) == wanted
    await mine.aclose()
    await everything.aclose()


async def test_raw_subjects_carry_the_escaped_event_subject(nodes: list[NatsCluster]) -> None:
    a, b, _ = nodes
    sub = await b.nc.subscribe(LIVE_PREFIX + "device.>")
    await settled(b.nc)
    await a.bus.publish(DeviceChanged("acc.1", None, "dev*1", "created"))
    msg = await sub.next_msg(timeout=WITHIN_S)
    assert msg.subject == LIVE_PREFIX + "device.acc%2E1._.dev%2A1"
    await sub.unsubscribe()


# -- presence --------------------------------------------------------------------------------


async def test_presence_is_shared_and_released_only_by_the_owner(
    nodes: list[NatsCluster],
) -> None:
    a, b, _ = nodes
    device = f"dev-{time.monotonic_ns()}"
    assert await b.presence.owner(device) is None
    assert await a.presence.claim(device, a.node_id) is None
    assert await b.presence.owner(device) == a.node_id
    assert await b.presence.is_connected(device)
    assert not await b.presence.release(device, b.node_id)  # not b's
    assert await a.presence.release(device, a.node_id)
    assert not await b.presence.is_connected(device)
    with pytest.raises(ValueError, match="cannot claim"):
        await a.presence.claim(device, b.node_id)


async def test_a_dead_nodes_devices_lapse_and_are_reaped_once(nodes: list[NatsCluster]) -> None:
    a, b, c = nodes
    device = f"dev-{time.monotonic_ns()}"
    await a.presence.claim(device, a.node_id)
    assert await b.presence.is_connected(device)
    await die(a)
    started = time.monotonic()
    await eventually(lambda: _not(b.presence.is_connected(device)), "the lease to lapse")
    assert time.monotonic() - started <= LEASE_S + 1.0
    reaped = await b.presence.reap() + await c.presence.reap()
    assert reaped.count(device) == 1  # exactly one node records the disconnection
    assert await c.presence.reap() == []


async def test_a_claim_tells_the_previous_owner_to_drop_the_device(
    nodes: list[NatsCluster],
) -> None:
    a, b, _ = nodes
    device = f"dev-{time.monotonic_ns()}"
    links_a, links_b = LocalLinks(a.presence, a.node_id), LocalLinks(b.presence, b.node_id)
    async with asyncio.TaskGroup() as tasks:
        runs = [
            tasks.create_task(a.run(links_a, _nothing, _nothing)),
            tasks.create_task(b.run(links_b, _nothing, _nothing)),
        ]
        old, new = Link(device), Link(device)
        await links_a.attach(old)
        await links_b.attach(new)  # the device connected again, to node b
        await eventually(_async(lambda: old.closed), "node a to close the old connection")
        assert links_a.get(device) is None
        assert not await links_a.detach(old)  # node a records no disconnection
        assert await a.presence.owner(device) == b.node_id
        for run in runs:
            run.cancel()


async def test_resync_puts_back_what_nats_lost_and_drops_what_left(
    nodes: list[NatsCluster],
) -> None:
    a, b, _ = nodes
    here, gone = f"here-{time.monotonic_ns()}", f"gone-{time.monotonic_ns()}"
    await a.presence.claim(here, a.node_id)
    await a.presence.claim(gone, a.node_id)
    await a.presence.owners.delete(kv_key(here))  # as if NATS lost it, or a reaper took it
    assert not await b.presence.is_connected(here)
    assert await a.presence.resync({here}) == [here]  # `here` had lost its entry
    assert await b.presence.owner(here) == a.node_id
    assert not await b.presence.is_connected(gone)  # no longer connected to node a
    assert await a.presence.resync({here}) == []


# -- routing -------------------------------------------------------------------------------


async def test_calls_reach_the_node_that_holds_the_device(nodes: list[NatsCluster]) -> None:
    a, b, _ = nodes
    device = f"dev-{time.monotonic_ns()}"
    links_a, links_b = LocalLinks(a.presence, a.node_id), LocalLinks(b.presence, b.node_id)
    channel = b.channel(links_b)
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(a.run(links_a, _nothing, _nothing))
        with pytest.raises(DeviceOffline):  # nobody holds it
            await channel.call_method(device, "echo", 1, 5.0)
        assert not await channel.push_c2d(C2DMessage("m0", device, b"x", {}, 1.0, 2.0))
        link = Link(device)
        await links_a.attach(link)

        result = await channel.call_method(device, "echo", {"n": [1, None]}, 5.0)
        assert result == MethodResult(201, {"name": "echo", "got": {"n": [1, None]}})
        with pytest.raises(TimedOut):
            await channel.call_method(device, "slow", None, 0.5)
        await channel.push_desired(device, {"t": 2}, 9)
        assert link.desired == [({"t": 2}, 9)]
        message = C2DMessage("m1", device, b"\x00\xff", {"k": "v"}, 1.0, 2.0)
        assert await channel.push_c2d(message)
        assert link.c2d == [message]
        assert await channel.has_subscribed(device, "methods")
        assert not await channel.has_subscribed(device, "c2d")
        assert await channel.disconnect(device)
        assert link.closed
        assert channel.round_trips == 7  # each call above but the first two went to node a
        run.cancel()


async def test_a_vanished_owner_means_offline(nodes: list[NatsCluster]) -> None:
    a, b, _ = nodes
    device = f"dev-{time.monotonic_ns()}"
    await a.presence.claim(device, a.node_id)
    await die(a)  # its lease has not lapsed yet, but nobody answers on its subject
    channel = b.channel(LocalLinks(b.presence, b.node_id))
    assert await b.presence.owner(device) == a.node_id
    with pytest.raises(DeviceOffline):
        await channel.call_method(device, "echo", None, 1.0)
    assert not await channel.disconnect(device)


# -- locks ---------------------------------------------------------------------------------


async def test_a_lock_admits_one_holder_across_nodes(nodes: list[NatsCluster]) -> None:
    a, b, _ = nodes
    name = f"c2d/{time.monotonic_ns()}"
    order: list[str] = []

    async def hold(cluster: NatsCluster, tag: str) -> None:
        async with cluster.locks.hold(name):
            order.append(f"{tag}+")
            await asyncio.sleep(0.05)
            order.append(f"{tag}-")

    async with asyncio.TaskGroup() as tasks:
        for i in range(3):
            tasks.create_task(hold(a, f"a{i}"))
            tasks.create_task(hold(b, f"b{i}"))
    assert len(order) == 12
    for i in range(0, 12, 2):  # never two holders at once
        assert order[i].endswith("+") and order[i + 1] == order[i][:-1] + "-", order


async def test_a_dead_holders_lock_is_taken_after_its_lease(nodes: list[NatsCluster]) -> None:
    a, b, _ = nodes
    name = f"connection/{time.monotonic_ns()}"
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with a.locks.hold(name):
            entered.set()
            await asyncio.sleep(3600)

    async with asyncio.TaskGroup() as tasks:
        holder = tasks.create_task(hold_forever())
        await entered.wait()
        await die(a)  # its release cannot reach NATS: the entry stays
        holder.cancel()
    started = time.monotonic()
    async with asyncio.timeout(WITHIN_S), b.locks.hold(name):
        waited = time.monotonic() - started
    assert waited <= LEASE_S + 1.0


async def _nothing(device_id: str) -> None:
    return None


async def _not(value: Any) -> bool:
    return not await value


def _async(check: Any) -> Any:
    async def probe() -> bool:
        return bool(check())

    return probe


async def test_a_long_hold_is_renewed_past_the_buckets_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued command's method call may hold `command/<id>` for minutes: the holder renews
    its entry, so the lock stays held past the bucket's TTL (here 1.5 s)."""
    monkeypatch.setattr(nats_presence, "LOCK_TTL_S", 1.5)
    with NatsServer(tmp_path / "nats") as server:  # a bucket created with the short TTL
        a = await NatsCluster.connect(server.url, "a", lease_s=30)
        b = await NatsCluster.connect(server.url, "b", lease_s=30)
        try:
            order: list[str] = []

            async def long_hold() -> None:
                async with a.locks.hold("command/1"):
                    order.append("a+")
                    await asyncio.sleep(4.0)  # more than twice the TTL
                    order.append("a-")

            async def wait_for_it() -> None:
                while not order:
                    await asyncio.sleep(0.01)
                async with b.locks.hold("command/1"):
                    order.append("b+")

            async with asyncio.timeout(WITHIN_S), asyncio.TaskGroup() as tasks:
                tasks.create_task(long_hold())
                tasks.create_task(wait_for_it())
            assert order == ["a+", "a-", "b+"]
        finally:
            await a.close()
            await b.close()
