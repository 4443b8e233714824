"""The cluster's session store: ux4iot sessions in one NATS JetStream key-value bucket.

Theory of operation. Behind a TCP load balancer a browser's `POST /session`, its `PUT /grants`
and its Socket.IO socket may each land on another node, so every node must see one set of
sessions. The bucket `thinghub_ux4iot_sessions` holds one entry per session (key: the id's
UTF-8 bytes in unpadded URL-safe base64), whose value is the whole session as JSON: account,
protocol, times, grants, subscriptions, and the sockets attached to it *per node*.

- Every call that reads or changes a session reads its entry from the bucket (so a node sees
  what another node just did), replays the change on a one-session `SessionTable` (the very
  rules, limits and errors of a single node), and writes the result back at the revision it
  read. A concurrent writer makes that write fail; the call then starts over from a fresh read
  (compare-and-set, at most CAS_ATTEMPTS times).
- `audience()` is on the fan-out hot path and synchronous: it is answered from a node-local
  replica (a `SessionTable` of every session), kept current by a watch on the bucket. A change
  made on another node reaches the replica within the watch's delivery time (milliseconds on
  one network); until then that node's sockets get what the previous state said.
- Idle expiry is once per cluster: every node sweeps its replica, and deletes an idle session
  at the revision it read, so exactly one node wins and a session touched meanwhile is left
  alone. A request with a session id that has just idled out finds it unknown (lazy expiry),
  as on one node.
- Sockets are counted per node, so a session with a socket on any node is not idle; a detach
  only lowers this node's count.
- When a session leaves the bucket (deleted on any node, or expired), every node hears it from
  the watch and disconnects its own sockets of that session (`on_removed`); a session bound to
  an account makes every node watch that account's live events (`on_bound`).

`touch` (every REST request) writes only when the stored last-seen time is more than
TOUCH_SLACK_S behind, so a burst of requests costs reads, not writes; idle expiry is at most
that much early.

A node that dies with sockets attached leaves its counts in their sessions' entries. Given
`node_alive` (the cluster's node leases), the sweep does not count sockets of nodes whose lease
lapsed, so those sessions idle out as if the sockets had closed when the node died.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from thinghub.domain.errors import Conflict, RateLimited, TimedOut
from thinghub.domain.ids import new_uuid
from thinghub.faces.ux4iot.grants import (
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    WireProtocol,
)
from thinghub.faces.ux4iot.sessions import (
    MAX_GRANTS_PER_SESSION,
    MAX_SESSIONS,
    MAX_SUBSCRIPTIONS_PER_SESSION,
    SESSION_IDLE_S,
    Audience,
    SessionInfo,
    SessionState,
    SessionTable,
)
from thinghub.services.kv_watch import next_entry, snapshot

__all__ = ["CAS_ATTEMPTS", "SESSIONS_BUCKET", "TOUCH_SLACK_S", "NatsSessionStore"]

logger = logging.getLogger(__name__)

SESSIONS_BUCKET = "thinghub_ux4iot_sessions"
# Concurrent writers of one session are one browser's requests: a few retries suffice; the
# bound is for a pathological client. A lost race waits a jittered, growing pause first.
CAS_ATTEMPTS = 50
CAS_BACKOFF_S = 0.001  # times the attempt number, jittered
TOUCH_SLACK_S = 1.0  # a touch writes when the stored last-seen time is this far behind
# The replica's watch wakes up this often when nothing changes, to notice that NATS reconnected
# (it then watches anew: an ordered consumer can take seconds to recover on its own).
WATCH_POLL_S = 0.25
WATCH_RETRY_S = 0.5  # the pause before watching again after an error
WATCH_STOP_S = 2.0  # how long ending a watch may wait on NATS to unsubscribe
_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: "wrong last sequence"

T = TypeVar("T")
Removed = Callable[[str], Awaitable[None]]
Bound = Callable[[str], Awaitable[None]]


class Unavailable(TimedOut):
    """The shared session bucket did not answer in time (answered 504 by the face)."""


def session_key(session_id: str) -> str:
    return base64.urlsafe_b64encode(session_id.encode("utf-8")).decode("ascii").rstrip("=")


def key_session(key: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _wrong_last(exc: Exception) -> bool:
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code in _WRONG_LAST_SEQUENCE
    )


# -- the stored value -------------------------------------------------------------------------


def encode(state: SessionState, sockets: dict[str, int]) -> bytes:
    return orjson.dumps(
        {
            "account": state.account_id,
            "protocol": state.protocol.value,
            "created": state.created_at,
            "seen": state.last_seen,
            "sockets": {node: n for node, n in sorted(sockets.items()) if n > 0},
            "grants": sorted(
                [g.device_id, g.type.value, g.telemetry_key, g.method_name] for g in state.grants
            ),
            "subs": sorted(
                [s.device_id, s.type.value, s.telemetry_key] for s in state.subscriptions
            ),
        }
    )


def decode(session_id: str, value: bytes) -> tuple[SessionState, dict[str, int]]:
    """Raises ValueError (or KeyError, TypeError) on a value this module did not write."""
    body: dict[str, Any] = orjson.loads(value)
    sockets = {str(node): int(n) for node, n in dict(body["sockets"]).items()}
    state = SessionState(
        session_id,
        None if body["account"] is None else str(body["account"]),
        WireProtocol(body["protocol"]),
        float(body["created"]),
        float(body["seen"]),
        sum(sockets.values()),
        frozenset(Grant(d, GrantType(t), k, m) for d, t, k, m in body["grants"]),
        frozenset(Subscription(d, SubscriptionType(t), k) for d, t, k in body["subs"]),
    )
    return state, sockets


@dataclasses.dataclass(slots=True)
class _Read:
    state: SessionState
    sockets: dict[str, int]
    revision: int


class NatsSessionStore:
    """The SessionStore port over a JetStream KV bucket, with a node-local replica.

    `node_id` names this node's socket counts (unique per node and run). `run()` keeps the
    replica current and must run while the store serves; `on_removed` / `on_bound` are set by
    the face before that.
    """

    def __init__(
        self,
        nc: Client,
        node_id: str,
        *,
        idle_s: float = SESSION_IDLE_S,
        max_sessions: int = MAX_SESSIONS,
        max_grants: int = MAX_GRANTS_PER_SESSION,
        max_subscriptions: int = MAX_SUBSCRIPTIONS_PER_SESSION,
        new_id: Callable[[], str] = new_uuid,
        bucket: str = SESSIONS_BUCKET,
        node_alive: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.node_id = node_id
        self._idle_s = idle_s
        self._limits = (max_grants, max_subscriptions)
        self._max_sessions = max_sessions
        self._new_id = new_id
        self._bucket_name = bucket
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()
        self.replica = SessionTable(
            idle_s=idle_s,
            max_sessions=max_sessions,
            max_grants=max_grants,
            max_subscriptions=max_subscriptions,
        )
        self._revisions: dict[str, int] = {}  # replica: session id -> revision held
        self.replica_ready = asyncio.Event()  # the watch delivered what the bucket held
        self._holders: dict[str, dict[str, int]] = {}  # replica: session id -> sockets per node
        # Whether a node (id, run) is alive; with it, sockets of dead nodes do not keep a
        # session. `node_id` must then be "<run>:<node id>".
        self.node_alive: Callable[[str, str], Awaitable[bool]] | None = node_alive
        self.on_removed: Removed | None = None
        self.on_bound: Bound | None = None

    # -- the bucket --------------------------------------------------------------------------

    async def bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._opening:
            if self._kv is None:
                try:
                    try:
                        self._kv = await self._js.key_value(self._bucket_name)
                    except nats.js.errors.BucketNotFoundError:
                        try:
                            self._kv = await self._js.create_key_value(
                                bucket=self._bucket_name, history=1
                            )
                        except nats.js.errors.BadRequestError:  # another node was first
                            self._kv = await self._js.key_value(self._bucket_name)
                except (nats.errors.Error, TimeoutError) as exc:
                    raise Unavailable(f"the session store is unreachable: {exc}") from exc
            return self._kv

    def _scratch(self) -> SessionTable:
        grants, subs = self._limits
        return SessionTable(
            idle_s=self._idle_s,
            max_sessions=self._max_sessions,
            max_grants=grants,
            max_subscriptions=subs,
        )

    async def _read(self, session_id: str) -> _Read | None:
        kv = await self.bucket()
        try:
            entry = await kv.get(session_key(session_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the session store is unreachable: {exc}") from exc
        if entry.value is None or entry.revision is None:
            return None
        try:
            state, sockets = decode(session_id, entry.value)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ux4iot: session %s has an unreadable entry: %s", session_id, exc)
            return None
        return _Read(state, sockets, entry.revision)

    async def _write(self, read: _Read, state: SessionState, sockets: dict[str, int]) -> bool:
        """Store `state` at the revision read; False when another writer was first."""
        kv = await self.bucket()
        try:
            revision = await kv.update(
                session_key(state.id), encode(state, sockets), last=read.revision
            )
        except (nats.errors.Error, TimeoutError) as exc:
            if _wrong_last(exc):
                return False
            raise Unavailable(f"the session store is unreachable: {exc}") from exc
        await self._apply(state, revision, sockets)  # own changes, without the watch's hop
        return True

    async def _remove(self, session_id: str, revision: int) -> bool:
        """Delete at the revision read; False when it changed (or went) meanwhile."""
        kv = await self.bucket()
        try:
            await kv.delete(session_key(session_id), last=revision)
        except (nats.errors.Error, TimeoutError) as exc:
            if _wrong_last(exc):
                return False
            raise Unavailable(f"the session store is unreachable: {exc}") from exc
        if session_id in self._revisions:
            await self._apply_removal(session_id)
        return True

    async def _change(
        self,
        session_ids: Sequence[str],
        op: Callable[[SessionTable], T],
        *,
        slack_s: float = 0.0,
    ) -> T:
        """Replay `op` on a table holding these sessions as stored, then store what changed.

        Sessions the op dropped (idle) are deleted; an error of the op stores nothing. A write
        that loses to a concurrent one starts the whole call over.
        """
        ids = list(dict.fromkeys(session_ids))
        for attempt in range(CAS_ATTEMPTS):
            reads: dict[str, _Read] = {}
            table = self._scratch()
            for sid in ids:
                read = await self._read(sid)
                if read is not None:
                    reads[sid] = read
                    table.put_state(read.state)
            result = op(table)
            raced = False
            for sid, read in reads.items():
                after = table.state(sid)
                if after is None:
                    await self._remove(sid, read.revision)  # lazily expired: gone either way
                    continue
                if _same(read.state, after, slack_s):
                    continue
                sockets = dict(read.sockets)
                here = sockets.get(self.node_id, 0) + after.sockets - read.state.sockets
                sockets[self.node_id] = max(0, here)
                if not await self._write(read, after, sockets):
                    raced = True
                    break
            if not raced:
                return result
            await _backoff(attempt)
        raise Conflict(f"sessions {', '.join(ids)} changed too often concurrently; try again")

    # -- sessions ------------------------------------------------------------------------------

    async def create(self, now: float) -> SessionInfo:
        """Open a session; MAX_SESSIONS counts every node's (as the replica knows them).

        Raises:
            RateLimited: max_sessions are open even after the idle ones are swept.
        """
        if len(self.replica) >= self._max_sessions:
            await self.expire(now)
            if len(self.replica) >= self._max_sessions:
                raise RateLimited(
                    f"too many open sessions (limit {self._max_sessions}); try again later"
                )
        kv = await self.bucket()
        for _ in range(CAS_ATTEMPTS):
            session_id = self._new_id()
            state = SessionState(
                session_id, None, WireProtocol.V4, now, now, 0, frozenset(), frozenset()
            )
            try:
                revision = await kv.create(session_key(session_id), encode(state, {}))
            except (nats.errors.Error, TimeoutError) as exc:
                if _wrong_last(exc):
                    continue  # the id exists: draw another
                raise Unavailable(f"the session store is unreachable: {exc}") from exc
            await self._apply(state, revision, {})
            return SessionInfo(session_id, None, WireProtocol.V4, now, now, 0, 0, 0)
        raise Conflict("could not draw an unused session id")

    async def get(self, session_id: str, now: float) -> SessionInfo | None:
        return await self._change([session_id], lambda t: t.get(session_id, now))

    async def touch(self, session_id: str, now: float) -> bool:
        slack = min(TOUCH_SLACK_S, self._idle_s / 10)
        return await self._change([session_id], lambda t: t.touch(session_id, now), slack_s=slack)

    async def attach(self, session_id: str, now: float) -> SessionInfo | None:
        return await self._change([session_id], lambda t: t.attach(session_id, now))

    async def detach(self, session_id: str, now: float) -> None:
        for attempt in range(CAS_ATTEMPTS):
            read = await self._read(session_id)
            if read is None or read.sockets.get(self.node_id, 0) <= 0:
                return
            sockets = dict(read.sockets)
            sockets[self.node_id] -= 1
            state = dataclasses.replace(read.state, sockets=sum(sockets.values()), last_seen=now)
            if await self._write(read, state, sockets):
                return
            await _backoff(attempt)
        raise Conflict(f"session {session_id} changed too often concurrently; try again")

    async def delete(self, session_id: str, account_id: str) -> bool:
        for _ in range(CAS_ATTEMPTS):
            read = await self._read(session_id)
            if read is None or read.state.account_id not in (None, account_id):
                return False
            if await self._remove(session_id, read.revision):
                self.replica.forget(session_id)
                return True
        raise Conflict(f"session {session_id} changed too often concurrently; try again")

    async def delete_account(self, account_id: str) -> list[str]:
        gone: list[str] = []
        for session_id in await self._bound_to(account_id):
            if await self.delete(session_id, account_id):
                gone.append(session_id)
        return sorted(gone)

    async def _bound_to(self, account_id: str) -> list[str]:
        """Every session bound to the account, read from the bucket itself (the replica may
        not have heard of one bound a moment ago on another node)."""
        await self.bucket()  # created if missing
        found: list[str] = []
        try:
            for item in await snapshot(self._js, self._bucket_name):
                sid = key_session(item.key)
                if sid is None:
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if decode(sid, item.value)[0].account_id == account_id:
                        found.append(sid)
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable(f"the session store is unreachable: {exc}") from exc
        return found

    async def expire(self, now: float) -> list[str]:
        """Delete the sessions idle now (as the replica knows them, then checked against the
        bucket); the ids this node deleted. Another node sweeping at once deletes the rest."""
        gone: list[str] = []
        for candidate in self.replica.idle(now, with_sockets=self.node_alive is not None):
            if candidate.sockets and not await self._only_dead_hold(
                self._holders.get(candidate.id, {})
            ):
                continue
            read = await self._read(candidate.id)
            if read is None:
                self.replica.forget(candidate.id)
                continue
            if now - read.state.last_seen <= self._idle_s:
                continue
            if read.state.sockets and not await self._only_dead_hold(read.sockets):
                continue
            if await self._remove(candidate.id, read.revision):
                self.replica.forget(candidate.id)
                gone.append(candidate.id)
        return gone

    async def _only_dead_hold(self, sockets: dict[str, int]) -> bool:
        """Whether every node counted holding a socket is gone (its lease lapsed)."""
        if self.node_alive is None:
            return False
        for holder, count in sockets.items():
            boot, _, node = holder.partition(":")
            if count > 0 and (holder == self.node_id or await self.node_alive(node, boot)):
                return False
        return True

    # -- grants --------------------------------------------------------------------------------

    async def grant(
        self,
        session_id: str,
        account_id: str,
        grant: Grant,
        now: float,
        protocol: WireProtocol = WireProtocol.V4,
    ) -> Subscription | None:
        return await self._change(
            [session_id], lambda t: t.grant(session_id, account_id, grant, now, protocol)
        )

    async def revoke(
        self, session_id: str, account_id: str, grant: Grant, now: float
    ) -> list[Subscription]:
        return await self._change(
            [session_id], lambda t: t.revoke(session_id, account_id, grant, now)
        )

    async def allows(self, session_id: str, need: Grant, now: float) -> bool:
        return await self._change([session_id], lambda t: t.allows(session_id, need, now))

    async def granted_telemetry_keys(
        self, session_id: str, device_id: str, now: float
    ) -> frozenset[str] | None:
        return await self._change(
            [session_id], lambda t: t.granted_telemetry_keys(session_id, device_id, now)
        )

    async def session_account(self, session_id: str, now: float) -> str | None:
        return await self._change([session_id], lambda t: t.session_account(session_id, now))

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        await self._change([session_id], lambda t: t.subscribe(session_id, sub, now))

    async def unsubscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        await self._change([session_id], lambda t: t.unsubscribe(session_id, sub, now))

    async def subscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        return await self._change(
            [s for s, _ in requests], lambda t: t.subscribe_many(requests, now)
        )

    async def unsubscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        return await self._change(
            [s for s, _ in requests], lambda t: t.unsubscribe_many(requests, now)
        )

    async def subscriptions(self, session_id: str, now: float) -> frozenset[Subscription]:
        return await self._change([session_id], lambda t: t.subscriptions(session_id, now))

    async def accounts(self) -> frozenset[str]:
        return self.replica.accounts()

    def audience(
        self, account_id: str, device_id: str, kind: SubscriptionType
    ) -> tuple[Audience, ...]:
        return self.replica.audience(account_id, device_id, kind)

    # -- the replica ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the replica current from the bucket's watch, forever (re-watching after NATS
        errors)."""
        while True:
            try:
                await self._watch()
            except (nats.errors.Error, TimeoutError, Unavailable) as exc:
                if self._nc.is_closed:  # the node is stopping
                    logger.info("ux4iot: session watch ended (the NATS connection closed)")
                    return
                logger.warning("ux4iot: session watch interrupted (%s); watching again", exc)
                await asyncio.sleep(WATCH_RETRY_S)

    async def _watch(self) -> None:
        kv = await self.bucket()
        watcher = await kv.watchall()
        held = dict(self._revisions)  # what the replica held when this watch began
        initial = True
        reconnects = self._nc.stats["reconnects"]
        try:
            while True:
                try:
                    entry = await next_entry(watcher, WATCH_POLL_S)
                except TimeoutError:
                    if self._nc.stats["reconnects"] != reconnects:
                        logger.info("ux4iot: NATS reconnected; watching the sessions anew")
                        return
                    continue
                if entry is None:  # nats-py's end of the current values: may come early
                    if initial:
                        initial = False
                        await self._catch_up(held)
                        self.replica_ready.set()
                    continue
                sid = key_session(entry.key or "")
                if sid is None:
                    continue
                if entry.operation in ("DEL", "PURGE") or entry.value is None:
                    await self._apply_removal(sid)
                    continue
                await self._apply_value(sid, entry.value, entry.revision or 0)
        finally:
            # Bounded: unsubscribing waits on the connection, which a NATS restart may hold
            # up for good; a watch that cannot say goodbye must still end (and be cancellable).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WATCH_STOP_S):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    async def _catch_up(self, held: dict[str, int]) -> None:
        """At the watch's end-of-current-values marker: every session the bucket holds now,
        read exactly (`snapshot`: the marker can come before values still on their way), into
        the replica; and out of it, what the replica `held` before this watch began and the
        bucket no longer holds (removed while not watching), unless the watch changed it
        since. Applying is by revision, so the values the watch then delivers change
        nothing."""
        present: set[str] = set()
        for item in await snapshot(self._js, self._bucket_name):
            sid = key_session(item.key)
            if sid is not None:
                present.add(sid)
                await self._apply_value(sid, item.value, item.revision)
        for stale, revision in held.items():
            if stale not in present and self._revisions.get(stale) == revision:
                await self._apply_removal(stale)

    async def _apply_value(self, session_id: str, value: bytes, revision: int) -> None:
        try:
            state, sockets = decode(session_id, value)
        except (ValueError, KeyError, TypeError):
            return
        await self._apply(state, revision, sockets)

    async def _apply(self, state: SessionState, revision: int, sockets: dict[str, int]) -> None:
        if self._revisions.get(state.id, 0) >= revision:
            return
        before = self.replica.state(state.id)
        self.replica.put_state(state)
        self._revisions[state.id] = revision
        self._holders[state.id] = {node: n for node, n in sockets.items() if n > 0}
        newly_bound = state.account_id is not None and (
            before is None or before.account_id != state.account_id
        )
        if newly_bound and self.on_bound is not None and state.account_id is not None:
            await self.on_bound(state.account_id)

    async def _apply_removal(self, session_id: str) -> None:
        self._revisions.pop(session_id, None)
        self._holders.pop(session_id, None)
        self.replica.forget(session_id)
        if self.on_removed is not None:
            await self.on_removed(session_id)


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, CAS_BACKOFF_S * (attempt + 1)))


def _same(before: SessionState, after: SessionState, slack_s: float) -> bool:
    """Nothing worth writing changed (last-seen moving less than slack_s does not count)."""
    if before == after:
        return True
    if after.last_seen - before.last_seen >= slack_s or slack_s <= 0:
        return False
    return dataclasses.replace(after, last_seen=before.last_seen) == before
