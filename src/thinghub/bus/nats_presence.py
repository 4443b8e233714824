"""Cluster-wide presence and locks in NATS JetStream key-value buckets.

Theory of operation. Three buckets, created by the first node that needs them:

- `thinghub_nodes`: one key per node, `{"boot": <this run>, "until": <epoch s>}`. A node
  renews it every third of its lease (`heartbeat`) and deletes it when it stops (`leave`). A
  node is alive while its entry is there and `until` has not passed (wall clocks in step, as
  NTP keeps them); the lease is per node (`--node-lease`).
- `thinghub_owners`: one key per connected device, `{"node": <id>, "boot": <run>}`. A claim
  puts it (and tells the previous owner to drop its connection); a release deletes it only if
  this run of this node still owns it, at the revision it read. An owner whose node is not
  alive reads as no owner: a dead node's devices show Disconnected as soon as its lease lapses.
  `reap` scans the bucket (one ordered consumer, not a get per key) and deletes each entry of
  a lapsed node at the revision it saw: exactly one node in the cluster wins each entry and
  records that device's disconnection; a device that reconnected meanwhile has a newer revision
  and is left alone.
- `thinghub_locks`: one key per held lock, `{"node", "boot"}` of its holder; `create`
  succeeds for one holder at a time. A waiter that finds the holder's lease lapsed removes the
  entry (at the revision it read) and takes the lock, so a node that dies while holding a lock
  blocks the others about a lease; the bucket's entries also expire after LOCK_TTL_S (a
  holder renews its entry while it holds the lock, however long). When
  NATS cannot be reached the lock degrades to this node's own lock (logged): the operations
  it guards are then serialized per node only.

Keys are the values' UTF-8 bytes in unpadded URL-safe base64 (letters, digits, `-`, `_`):
whatever a device id holds, it is one valid key and one valid subject token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import orjson
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from thinghub.bus.memory import MemoryLocks
from thinghub.services.kv_watch import snapshot

__all__ = [
    "LOCKS_BUCKET",
    "LOCK_TTL_S",
    "NODES_BUCKET",
    "OWNERS_BUCKET",
    "NatsLocks",
    "NatsPresence",
    "key_value",
    "kv_key",
    "open_buckets",
]

logger = logging.getLogger(__name__)

OWNERS_BUCKET = "thinghub_owners"
NODES_BUCKET = "thinghub_nodes"
LOCKS_BUCKET = "thinghub_locks"
LOCK_TTL_S = 30.0  # a lock whose holder died frees itself after this long
LOCK_SLOW_S = 1.0  # a wait this long for a lock is logged
LOCK_RETRY_MIN_S = 0.002  # first wait for a held lock; doubles (jittered) up to the max
LOCK_RETRY_MAX_S = 0.1
ALIVE_CACHE_S = 1.0  # how long one node remembers another's heartbeat entry
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: "wrong last sequence"


def kv_key(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")


def key_value(key: str) -> str:
    """The value `kv_key` made `key` from."""
    try:
        return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a thinghub key: {key!r}") from exc


async def _bucket(js: JetStreamContext, name: str, ttl_s: float | None) -> KeyValue:
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(bucket=name, history=1, ttl=ttl_s)
    except nats.js.errors.BadRequestError:  # another node created it first
        return await js.key_value(name)


async def open_buckets(js: JetStreamContext) -> tuple[KeyValue, KeyValue, KeyValue]:
    """The owners, nodes and locks buckets, created if missing."""
    return (
        await _bucket(js, OWNERS_BUCKET, None),
        await _bucket(js, NODES_BUCKET, None),
        await _bucket(js, LOCKS_BUCKET, LOCK_TTL_S),
    )


def _wrong_last(exc: Exception) -> bool:
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code in _WRONG_LAST_SEQUENCE
    )


@dataclass(frozen=True, slots=True)
class _Owner:
    node: str
    boot: str
    revision: int


class NatsPresence:
    """Which node holds each device's connection, cluster-wide (the Presence port).

    Claims are made by this node for itself (`node_id` must be this node's): ownership lasts
    while the claiming node's heartbeat does, so the `lease_s` argument of `claim` is not used;
    the node's lease is set once, when the node starts.
    """

    def __init__(
        self,
        js: JetStreamContext,
        owners: KeyValue,
        nodes: KeyValue,
        node_id: str,
        boot: str,
        *,
        lease_s: float,
        on_takeover: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.js = js  # scans read the owners bucket with a consumer of their own (snapshot)
        self.owners = owners
        self.nodes = nodes
        self.node_id = node_id
        self.boot = boot
        self.lease_s = lease_s
        self.on_takeover = on_takeover
        self._alive: dict[str, tuple[str | None, float, float]] = {}  # node: boot, until, read at
        self.needs_resync = False  # a claim or release could not be recorded

    # -- nodes ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Renew this node's lease (also announces the node at start)."""
        until = time.time() + self.lease_s
        await self.nodes.put(
            kv_key(self.node_id), orjson.dumps({"boot": self.boot, "until": until})
        )

    async def leave(self) -> None:
        await self.nodes.delete(kv_key(self.node_id))

    async def is_alive(self, node: str, boot: str) -> bool:
        if node == self.node_id:
            return boot == self.boot
        now = time.monotonic()
        cached = self._alive.get(node)
        if cached is None or now - cached[2] >= ALIVE_CACHE_S:
            current: str | None = None
            until = 0.0
            try:
                entry = await self.nodes.get(kv_key(node))
                body = orjson.loads(entry.value or b"{}")
                current, until = str(body["boot"]), float(body["until"])
            except nats.js.errors.KeyNotFoundError:
                pass
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.warning("presence: node %s has an unreadable heartbeat", node)
            cached = (current, until, now)
            self._alive[node] = cached
        return cached[0] == boot and time.time() < cached[1]

    # -- owners --------------------------------------------------------------------------

    async def _entry(self, device_id: str) -> _Owner | None:
        try:
            entry = await self.owners.get(kv_key(device_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _parse_owner(entry.value, entry.revision)

    async def claim(self, device_id: str, node_id: str, lease_s: float | None = None) -> str | None:
        """Make this node the owner. When NATS cannot be reached the device stays connected
        here, the claim is logged as not recorded, and `resync` makes it when NATS is back."""
        if node_id != self.node_id:
            raise ValueError(f"node {self.node_id!r} cannot claim for node {node_id!r}")
        previous = await self.owner(device_id)
        try:
            await self.owners.put(
                kv_key(device_id), orjson.dumps({"node": self.node_id, "boot": self.boot})
            )
        except nats.errors.Error as exc:
            self.needs_resync = True
            logger.warning("presence: device %s claimed here but not recorded: %s", device_id, exc)
            return previous
        if previous is not None and previous != self.node_id and self.on_takeover is not None:
            await self.on_takeover(device_id, previous)
        return previous

    async def release(self, device_id: str, node_id: str) -> bool:
        try:
            current = await self._entry(device_id)
            if current is None or current.node != node_id or current.boot != self.boot:
                return False
            await self.owners.delete(kv_key(device_id), last=current.revision)
        except nats.errors.Error as exc:
            if _wrong_last(exc):
                return False  # claimed by another node meanwhile
            self.needs_resync = True
            logger.warning("presence: device %s released here but not recorded: %s", device_id, exc)
            return False
        return True

    async def owner(self, device_id: str) -> str | None:
        """The owner node; None when nobody holds the device, its node's lease lapsed, or NATS
        cannot be reached (then nothing can be routed to it anyway)."""
        try:
            current = await self._entry(device_id)
            if current is None or not await self.is_alive(current.node, current.boot):
                return None
        except nats.errors.Error as exc:
            logger.warning("presence: owner of device %s unknown: %s", device_id, exc)
            return None
        return current.node

    async def resync(self, connected_here: set[str]) -> list[str]:
        """After NATS was away: claim every device connected here again, and remove this run's
        entries of devices no longer here. Returns the devices that had lost their entry (a
        reaper may have recorded them Disconnected)."""
        self.needs_resync = False
        mine = {
            key: owner
            for key, owner in await self._scan()
            if owner.node == self.node_id and owner.boot == self.boot
        }
        found: list[str] = []
        for device_id in connected_here:
            if kv_key(device_id) not in mine:
                found.append(device_id)
            await self.owners.put(
                kv_key(device_id), orjson.dumps({"node": self.node_id, "boot": self.boot})
            )
        for key, owner in mine.items():
            with contextlib.suppress(ValueError):
                if key_value(key) in connected_here:
                    continue
            try:
                await self.owners.delete(key, last=owner.revision)
            except nats.errors.Error as exc:
                if not _wrong_last(exc):
                    raise
        return found

    async def is_connected(self, device_id: str) -> bool:
        return await self.owner(device_id) is not None

    async def reap(self) -> list[str]:
        """Delete the ownership entries of nodes whose lease lapsed; the devices whose entry
        this node deleted (it alone records their disconnection)."""
        lost: list[str] = []
        for key, owner in await self._scan():
            if await self.is_alive(owner.node, owner.boot):
                continue
            try:
                await self.owners.delete(key, last=owner.revision)
            except nats.errors.Error as exc:
                if _wrong_last(exc):
                    continue  # another node reaped it, or the device connected again
                raise
            try:
                lost.append(key_value(key))
            except ValueError:
                logger.warning("presence: removed a foreign key %r", key)
            else:
                logger.info("device %s: node %s's lease lapsed", lost[-1], owner.node)
        return lost

    async def _scan(self) -> list[tuple[str, _Owner]]:
        found: list[tuple[str, _Owner]] = []
        for item in await snapshot(self.js, OWNERS_BUCKET):
            owner = _parse_owner(item.value, item.revision)
            if owner is not None:
                found.append((item.key, owner))
        return found


def _parse_owner(value: bytes | None, revision: int | None) -> _Owner | None:
    try:
        body = orjson.loads(value or b"")
        return _Owner(str(body["node"]), str(body["boot"]), int(revision or 0))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class NatsLocks:
    """Named locks across the cluster (the Locks port); see the module docstring."""

    def __init__(
        self,
        kv: KeyValue,
        node_id: str,
        boot: str,
        local: MemoryLocks,
        alive: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        self.kv = kv
        self.node_id = node_id
        self._holder = orjson.dumps({"node": node_id, "boot": boot})
        self._local = local  # waiters on this node queue here, not in NATS
        self._alive = alive  # (node, boot) -> whether that run of that node is alive

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        async with self._local.hold(name):
            key = kv_key(name)
            revision = await self._acquire(key, name)
            if revision is None:  # NATS unavailable: this node's lock only
                yield
                return
            held = [revision]  # the entry's revision, as renewals move it on
            try:
                async with asyncio.TaskGroup() as tasks:
                    renewal = tasks.create_task(self._renew(key, name, held), name="lock.renew")
                    try:
                        yield
                    finally:
                        renewal.cancel()
            finally:
                try:
                    await self.kv.delete(key, last=held[0])
                except nats.errors.Error as exc:
                    logger.warning("lock %s: not released (expires by itself): %s", name, exc)

    async def _renew(self, key: str, name: str, held: list[int]) -> None:
        """Keep a long hold (a queued command's method call) from expiring: rewrite the entry
        every third of LOCK_TTL_S while it is held."""
        while True:
            await asyncio.sleep(LOCK_TTL_S / 3)
            try:
                held[0] = await self.kv.update(key, self._holder, last=held[0])
            except nats.errors.Error as exc:
                logger.warning("lock %s: not renewed: %s", name, exc)
                return

    async def _acquire(self, key: str, name: str) -> int | None:
        delay = LOCK_RETRY_MIN_S
        started = time.monotonic()
        warned = False
        while True:
            try:
                return await self.kv.create(key, self._holder)
            except nats.errors.Error as exc:
                if not _wrong_last(exc):
                    logger.warning(
                        "lock %s: NATS unavailable, holding it on this node: %s", name, exc
                    )
                    return None
            if await self._holder_died(key, name):
                continue
            if not warned and time.monotonic() - started >= LOCK_SLOW_S:
                warned = True
                logger.warning("lock %s: held elsewhere for over %.0f s", name, LOCK_SLOW_S)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, LOCK_RETRY_MAX_S)

    async def _holder_died(self, key: str, name: str) -> bool:
        """Whether the lock was held by a node whose lease lapsed; then it is removed (at the
        revision read, so two waiters cannot both take it)."""
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return True  # released meanwhile: try again at once
        holder = _parse_owner(entry.value, entry.revision)
        if holder is None or await self._alive(holder.node, holder.boot):
            return False
        try:
            await self.kv.delete(key, last=holder.revision)
        except nats.errors.Error as exc:
            if not _wrong_last(exc):
                raise
            return True
        logger.info("lock %s: taken from node %s, whose lease lapsed", name, holder.node)
        return True
