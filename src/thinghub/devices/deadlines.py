"""Deadlines of many connections on one loop timer: a wheel of one-second buckets.

A timer per connection (asyncio.TimerHandle, or uvloop's handle and libuv timer) costs about
half a KiB each; the keep-alive of 10,000 idle devices does not need 10,000 of them. A
DeadlineWheel files each item under the whole second its deadline falls in (rounded up) and,
while it holds any, ticks once a second: every item whose second has come is taken out and
told (`on_deadline`), and decides for itself whether it really expired (a connection looks at
when it last received bytes, and files itself again if it did since). So a deadline fires at
most TICK_S late, and moving one costs nothing until the old second comes.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

__all__ = ["TICK_S", "DeadlineWheel", "Expiring"]

#: How often the wheel looks at its due buckets, in seconds (a deadline fires this late at most).
TICK_S = 1.0


class Expiring(Protocol):
    """What a wheel holds: hashable, with a slot for the second it is filed under."""

    deadline_key: int | None

    def on_deadline(self) -> None: ...


class DeadlineWheel:
    """One-second buckets of items, and one loop timer while any is filed."""

    __slots__ = ("_buckets", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, set[Expiring]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, item: Expiring, at: float) -> None:
        """File `item` to be told at `at` (loop time), or up to TICK_S after; refiles it."""
        self.remove(item)
        key = math.ceil(at)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
        bucket.add(item)
        item.deadline_key = key
        if self._timer is None:
            self._timer = self._loop.call_later(TICK_S, self._tick)

    def remove(self, item: Expiring) -> None:
        key = item.deadline_key
        if key is None:
            return
        item.deadline_key = None
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(item)
            if not bucket:
                del self._buckets[key]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        for key in sorted(k for k in self._buckets if k <= now):
            for item in self._buckets.pop(key):
                item.deadline_key = None
                item.on_deadline()
        if self._buckets and self._timer is None:
            self._timer = self._loop.call_later(TICK_S, self._tick)
