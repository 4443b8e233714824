"""In-memory implementations of the bus and cluster ports: everything one process needs.

- `MemoryBus`: live fan-out of typed events to subscribers on this node. Subscribing is
  eager (nothing published after `subscribe()` returns is missed); a slow subscriber loses
  its oldest events rather than stalling publishers.
- `MemoryPresence`: which node holds each device's connection, with optional leases.
- `MemoryLocks`: named asyncio locks, kept only while held or awaited.
- `MemoryCounter`: monotonic integers per name, from 1.

Each holds state that one process owns; the NATS (or PostgreSQL) implementations of the same
ports share it between nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from thinghub.bus.subjects import tokens_match
from thinghub.domain.live import LiveEvent
from thinghub.ports import Clock

__all__ = [
    "SUBSCRIBER_QUEUE",
    "MemoryBus",
    "MemoryCounter",
    "MemoryLocks",
    "MemoryPresence",
]

SUBSCRIBER_QUEUE = 10_000  # events one subscriber may fall behind by; then its oldest go
# Subjects whose matching subscriptions are remembered (then the memo starts afresh): a
# device's events share one subject, so an upload of 100,000 values matches patterns once.
ROUTES_MAX = 4096


# Pattern tokens and queue; None in the queue ends the subscription (the bus closed).
_Subscriber = tuple[tuple[str, ...], "asyncio.Queue[LiveEvent | None]"]


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        # subject -> the queues of the subscriptions it matches, in subscription order;
        # forgotten whenever a subscription starts or ends.
        self._routes: dict[str, tuple[asyncio.Queue[LiveEvent | None], ...]] = {}
        self._closed = False

    def close(self) -> None:
        """End every subscription (their generators return once they have taken what was
        queued before) and every later one at once; publishing does nothing any more."""
        self._closed = True
        for _, queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers.clear()
        self._routes.clear()

    async def publish(self, event: LiveEvent) -> None:
        if not self._subscribers:
            return
        for queue in self._route(event.subject):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def listens(self, subject: str) -> bool:
        """Whether a subscription on this node matches `subject` (memoized as publish's)."""
        return bool(self._subscribers) and bool(self._route(subject))

    def _route(self, subject: str) -> tuple[asyncio.Queue[LiveEvent | None], ...]:
        """The queues of the subscriptions `subject` matches, in subscription order."""
        queues = self._routes.get(subject)
        if queues is None:
            tokens = subject.split(".")
            queues = tuple(q for pattern, q in self._subscribers if tokens_match(pattern, tokens))
            if len(self._routes) >= ROUTES_MAX:
                self._routes.clear()
            self._routes[subject] = queues
        return queues

    def subscribe(self, pattern: str) -> AsyncGenerator[LiveEvent, None]:
        """Subscribe now (not at the first read): nothing published after this call is missed.

        Close the generator (aclose, or leave an `async for`) to unsubscribe. A generator
        closed or dropped before it was ever iterated runs no `finally`; it unsubscribes when
        it is garbage-collected (at once in CPython, when its last reference goes).
        """
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        entry: _Subscriber = (tuple(pattern.split(".")), queue)
        if self._closed:
            queue.put_nowait(None)
        else:
            self._subscribers.append(entry)
            self._routes.clear()
        stream = self._iterate(entry)
        weakref.finalize(stream, self._unsubscribe, entry)
        return stream

    def _unsubscribe(self, entry: _Subscriber) -> None:
        if entry in self._subscribers:
            self._subscribers.remove(entry)
            self._routes.clear()

    def wants(self, tokens: list[str]) -> bool:
        """Whether any subscription's pattern matches a subject split into `tokens`."""
        return any(tokens_match(pattern, tokens) for pattern, _ in self._subscribers)

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open (for tests and metrics)."""
        return len(self._subscribers)

    async def _iterate(self, entry: _Subscriber) -> AsyncGenerator[LiveEvent, None]:
        try:
            while (event := await entry[1].get()) is not None:
                yield event
        finally:
            self._unsubscribe(entry)


@dataclass(frozen=True, slots=True)
class _Claim:
    node_id: str
    expires_at: float | None  # None: until released


class MemoryPresence:
    """Who holds each device's connection, in this process.

    A claim with a lease expires `lease_s` after it was made (claiming again renews it); an
    expired claim reads as no owner. Without a lease a claim lasts until it is released:
    what one process needs, since its claims die with it.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._claims: dict[str, _Claim] = {}

    def _current(self, device_id: str) -> _Claim | None:
        claim = self._claims.get(device_id)
        if (
            claim is not None
            and claim.expires_at is not None
            and self.clock.now() >= claim.expires_at
        ):
            del self._claims[device_id]
            return None
        return claim

    async def claim(self, device_id: str, node_id: str, lease_s: float | None = None) -> str | None:
        previous = self._current(device_id)
        expires = None if lease_s is None else self.clock.now() + lease_s
        self._claims[device_id] = _Claim(node_id, expires)
        return None if previous is None else previous.node_id

    async def release(self, device_id: str, node_id: str) -> bool:
        claim = self._current(device_id)
        if claim is None or claim.node_id != node_id:
            return False
        del self._claims[device_id]
        return True

    async def owner(self, device_id: str) -> str | None:
        claim = self._current(device_id)
        return None if claim is None else claim.node_id

    async def is_connected(self, device_id: str) -> bool:
        return self._current(device_id) is not None


class MemoryLocks:
    """Named locks in this process. A lock exists while someone holds or awaits it (weak
    values): idle names cost nothing."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        async with lock:  # `lock` keeps it alive until released
            yield

    def is_held(self, name: str) -> bool:
        lock = self._locks.get(name)
        return lock is not None and lock.locked()


class MemoryCounter:
    """Monotonic integers per name, from 1, for this process."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    async def next(self, name: str) -> int:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = itertools.count(1)
        return next(counter)
