"""The NATS bus: several thinghub nodes on one NATS server (or cluster) share live events,
device ownership and locks, and reach each other's devices.

Theory of operation. `NatsCluster.connect` opens one NATS connection per node and builds on it:

- `NatsBus` (the Bus port): an event is published once to `thinghub.live.<subject>`, where
  `<subject>` is the event's own subject `{kind}.{account}.{project|_}.{device}`
  (thinghub.domain.live), its tokens escaped so no value can span or fake a token. Every node
  subscribes to `thinghub.live.>` once and hands what arrives to an in-process MemoryBus, whose
  subscribers (faces, caches) filter by pattern exactly as on one node; an event for which no
  local subscriber has a matching pattern is not even decoded. A subscription to
  `thinghub.live.*.<account>.>` receives nothing of another account: the account is a whole
  token of every subject (tests/e2e/test_cluster.py proves it with a raw NATS client).
- `NatsPresence` (the Presence port, thinghub.bus.nats_presence): which node holds each
  device's connection, in the JetStream key-value bucket `thinghub_owners`, and which nodes are
  alive, in `thinghub_nodes` (a heartbeat per node with its lease).
- `NatsLocks` (the Locks port, thinghub.bus.nats_presence): named locks in the bucket
  `thinghub_locks`, so one C2D delivery and one connection-state change per device run at a
  time across the cluster.
- `NatsDeviceChannel` (the DeviceChannel port, thinghub.bus.nats_channel): a call for a device
  goes to this node's LocalLinks when this node holds the connection, else by request/reply to
  `thinghub.node.<node>`, the owner node's own subject, which serves it from its LocalLinks.

`NatsCluster.run` is the node's background work, until cancelled: it renews the heartbeat
every third of the lease, serves requests on the node's subject, and every half lease reaps the
devices of nodes whose lease lapsed (`on_lost(device_id)` marks each one Disconnected, once in
the cluster: the reaper that deletes the ownership entry at its revision wins).

The Counter port stays per node (MemoryCounter): connection events' sequence numbers start with
the time in 100 ns units, so with clocks in step (NTP) they still increase across nodes; the
counter only orders events within the same 100 ns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from thinghub.bus.live_codec import UndecodableEvent, decode, encode
from thinghub.bus.memory import MemoryBus, MemoryLocks
from thinghub.bus.nats_channel import LocalLinks, NatsDeviceChannel, serve_request
from thinghub.bus.nats_presence import (
    NatsLocks,
    NatsPresence,
    kv_key,
    open_buckets,
)
from thinghub.domain.live import LiveEvent

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_LEASE_S",
    "LIVE_PREFIX",
    "NODE_PREFIX",
    "NatsBus",
    "NatsCluster",
    "node_subject",
]

logger = logging.getLogger(__name__)

LIVE_PREFIX = "thinghub.live."  # + {kind}.{account}.{project|_}.{device}
NODE_PREFIX = "thinghub.node."  # + the node's key: requests for the devices it holds
DEFAULT_LEASE_S = 15.0  # a node silent this long has lost its devices
CONNECT_TIMEOUT_S = 5.0  # one attempt to connect to NATS
FIRST_CONNECT_S = 10.0  # at start: NATS unreachable this long stops the node
RECONNECT_WAIT_S = 1.0  # between attempts after NATS went away (forever)
PING_TIMEOUT_S = 2.0  # /readyz: a NATS round trip slower than this is "not ready"
HEARTBEATS_PER_LEASE = 3  # the heartbeat is renewed this often per lease
REAPS_PER_LEASE = 2  # lapsed nodes are looked for this often per lease


async def settled(nc: Client, timeout_s: float = PING_TIMEOUT_S) -> None:
    """Return once the server has processed everything this connection sent before the call
    (subscriptions included).

    One `flush()` is not that: nats-py writes its PING straight to the socket, ahead of
    commands still waiting in its buffer for the flusher task, so the PONG can come back
    before the server has seen a SUB sent just before. By the time that first PONG is back
    the flusher has written the buffer out, so a second PING follows it on the wire and its
    PONG means the server read everything before.
    """
    await nc.flush(timeout=int(timeout_s))
    await nc.flush(timeout=int(timeout_s))


def node_subject(node_id: str) -> str:
    return NODE_PREFIX + kv_key(node_id)


class NatsBus:
    """Live fan-out over NATS (the Bus port). Publishing is best effort: when NATS is away the
    event is logged and dropped (the store is the record), never an error for the caller."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._local = MemoryBus()
        self._sub: Subscription | None = None
        self.dropped = 0  # events that could not be published (NATS away, buffer full)

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(LIVE_PREFIX + ">", cb=self._receive)

    async def publish(self, event: LiveEvent) -> None:
        try:
            await self._nc.publish(LIVE_PREFIX + event.subject, encode(event))
        except nats.errors.Error as exc:
            self.dropped += 1
            logger.warning("bus: %s on %s not published: %s", event.kind, event.subject, exc)

    def listens(self, subject: str) -> bool:
        """True: a subscriber on another node cannot be seen from here."""
        return True

    def subscribe(self, pattern: str) -> AsyncGenerator[LiveEvent, None]:
        return self._local.subscribe(pattern)

    def close(self) -> None:
        """End this node's subscriptions (at shutdown: its live streams to clients end)."""
        self._local.close()

    @property
    def subscriptions(self) -> int:
        """This node's open subscriptions (for metrics)."""
        return self._local.subscriptions

    async def _receive(self, msg: Msg) -> None:
        tokens = msg.subject[len(LIVE_PREFIX) :].split(".")
        if not self._local.wants(tokens):
            return
        try:
            event = decode(msg.data)
        except UndecodableEvent as exc:
            logger.warning("bus: dropped a message on %s: %s", msg.subject, exc)
            return
        await self._local.publish(event)


class NatsCluster:
    """One node's share of the cluster: its NATS connection and the ports built on it."""

    def __init__(self, nc: Client, node_id: str, lease_s: float) -> None:
        self.nc = nc
        self.node_id = node_id
        self.lease_s = lease_s
        self.boot = secrets.token_hex(8)  # this run of the node: a restart is a new owner
        self.bus = NatsBus(nc)
        self.presence: NatsPresence
        self.locks: NatsLocks
        self._requests: Subscription | None = None
        self._reconnected = False  # NATS came back: claim this node's devices again
        self._reconnected_at = -math.inf  # when; the reaper waits a lease after it

    @classmethod
    async def connect(cls, url: str, node_id: str, *, lease_s: float) -> NatsCluster:
        """Connect, open the buckets, announce this node and subscribe. Raises OSError
        naming the URL when NATS cannot be reached within FIRST_CONNECT_S."""
        holder: list[NatsCluster] = []

        async def on_error(exc: Exception) -> None:
            logger.warning("nats: %s", exc)

        async def on_disconnected() -> None:
            logger.warning("nats: disconnected from %s; reconnecting", url)

        async def on_reconnected() -> None:
            logger.info("nats: reconnected to %s", url)
            if holder:
                holder[0]._reconnected = True
                holder[0]._reconnected_at = time.monotonic()

        nc = Client()
        try:
            # The client retries forever (it must, once running); the first connection gets
            # FIRST_CONNECT_S, so a wrong URL stops the start with a message instead.
            async with asyncio.timeout(FIRST_CONNECT_S):
                await nc.connect(
                    servers=[url],
                    name=f"thinghub {node_id}",
                    connect_timeout=int(CONNECT_TIMEOUT_S),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=int(RECONNECT_WAIT_S),
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            await nc.close()
            raise OSError(
                f"bus: cannot connect to NATS at {url}: {exc or type(exc).__name__}"
            ) from exc
        cluster = cls(nc, node_id, lease_s)
        holder.append(cluster)
        try:
            await cluster._open()
        except BaseException:
            await nc.close()
            raise
        return cluster

    async def _open(self) -> None:
        try:
            js = self.nc.jetstream()
            owners, nodes, locks = await open_buckets(js)
        except nats.errors.Error as exc:
            raise OSError(
                f"bus: NATS at {self.nc.connected_url} has no JetStream (start nats-server with "
                f"-js): {exc}"
            ) from exc
        self.presence = NatsPresence(
            js, owners, nodes, self.node_id, self.boot, lease_s=self.lease_s, on_takeover=self._drop
        )
        self.locks = NatsLocks(
            locks, self.node_id, self.boot, MemoryLocks(), self.presence.is_alive
        )
        await self.presence.heartbeat()
        await self.bus.start()
        self._requests = await self.nc.subscribe(node_subject(self.node_id))
        await settled(self.nc)  # the node's subscriptions are live before it says ready

    def channel(self, links: LocalLinks) -> NatsDeviceChannel:
        return NatsDeviceChannel(self.nc, self.presence, links, self.node_id, node_subject)

    async def _drop(self, device_id: str, old_node: str) -> None:
        """The device connected here while `old_node` held it: tell that node to drop its
        connection without recording a disconnect (IoT Hub's duplicate-connection rule)."""
        try:
            await self.nc.publish(
                node_subject(old_node), b'{"op":"drop","device":' + orjson.dumps(device_id) + b"}"
            )
        except nats.errors.Error as exc:
            logger.warning("device %s: node %s not told to drop it: %s", device_id, old_node, exc)

    async def run(
        self,
        links: LocalLinks,
        on_lost: Callable[[str], Awaitable[None]],
        on_found: Callable[[str], Awaitable[None]],
    ) -> None:
        """Heartbeat, serve the node's subject, reap lapsed nodes' devices; until cancelled.

        `on_lost(device)`: the device's node lapsed and this node removed its ownership (record
        it Disconnected). `on_found(device)`: after NATS came back, this node claimed a device
        connected here that had no owner any more (record it Connected again)."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._heartbeats(links, on_found), name="nats.heartbeat")
            tasks.create_task(self._reaper(on_lost), name="nats.reaper")
            tasks.create_task(self._serve(links, tasks), name="nats.requests")

    async def _heartbeats(
        self, links: LocalLinks, on_found: Callable[[str], Awaitable[None]]
    ) -> None:
        while True:
            await asyncio.sleep(self.lease_s / HEARTBEATS_PER_LEASE)
            try:
                await self.presence.heartbeat()
                if self._reconnected or self.presence.needs_resync:
                    self._reconnected = False  # NATS may have lost entries, a reaper taken some
                    await self._resync(links, on_found)
            except nats.errors.Error as exc:
                logger.warning("nats: heartbeat of node %s failed: %s", self.node_id, exc)

    async def _resync(self, links: LocalLinks, on_found: Callable[[str], Awaitable[None]]) -> None:
        for device_id in await self.presence.resync(set(links.device_ids())):
            try:
                await on_found(device_id)
            except Exception:
                logger.exception("device %s: recording its connection failed", device_id)

    async def _reaper(self, on_lost: Callable[[str], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.lease_s / REAPS_PER_LEASE)
            if time.monotonic() - self._reconnected_at < self.lease_s:
                continue  # every node gets a whole lease to renew after NATS was away
            try:
                lost = await self.presence.reap()
            except nats.errors.Error as exc:
                logger.warning("nats: looking for lapsed nodes failed: %s", exc)
                continue
            for device_id in lost:
                try:
                    await on_lost(device_id)
                except Exception:
                    logger.exception("device %s: recording its disconnection failed", device_id)

    async def _serve(self, links: LocalLinks, tasks: asyncio.TaskGroup) -> None:
        assert self._requests is not None
        async for msg in self._requests.messages:
            tasks.create_task(serve_request(msg, links), name="nats.request")

    async def ping(self) -> float:
        """A round trip to NATS in seconds; raises when NATS does not answer in time."""
        started = time.perf_counter()
        await self.nc.flush(timeout=int(PING_TIMEOUT_S))
        return time.perf_counter() - started

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Leave the cluster: this node's heartbeat goes at once, so nobody waits for its lease."""
        try:
            await self.presence.leave()
        except nats.errors.Error as exc:
            logger.warning("nats: leaving the cluster: %s", exc)
        try:
            await self.nc.flush(timeout=int(PING_TIMEOUT_S))  # what was published goes out
        except (nats.errors.Error, TimeoutError) as exc:
            logger.warning("nats: closing: %s", exc)
        await self.nc.close()
