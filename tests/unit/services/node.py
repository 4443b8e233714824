"""One node's live ports, in memory, for building services in unit tests; and a connected
device as the device adapter would attach it to LocalLinks (FakeLink)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.devices.links import LocalLinks
from thinghub.domain.errors import TimedOut
from thinghub.ports import C2DMessage, Clock, DeviceFeed, MethodResult

NODE_ID = "node-1"


@dataclass(frozen=True, slots=True)
class Node:
    bus: MemoryBus
    presence: MemoryPresence
    links: LocalLinks  # the DeviceChannel: no device is connected until a test attaches one
    locks: MemoryLocks
    counter: MemoryCounter


def node(clock: Clock) -> Node:
    presence = MemoryPresence(clock)
    return Node(
        MemoryBus(), presence, LocalLinks(presence, NODE_ID), MemoryLocks(), MemoryCounter()
    )


@dataclass
class FakeLink:
    """A connected device (a DeviceLink): it answers direct methods with `answer` (status,
    payload), or, when `answer` is None, never within the timeout (TimedOut, as the hub's link
    raises then); it takes desired patches and C2D messages, and records everything.

    `feeds` are what it subscribed to (the SDK subscribes to methods and desired on connect).
    """

    device_id: str
    answer: tuple[int, Any] | None = (200, {"ok": True})
    feeds: frozenset[DeviceFeed] = frozenset({"methods", "desired", "c2d"})
    calls: list[tuple[str, Any, float]] = field(default_factory=list)
    desired: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    c2d: list[C2DMessage] = field(default_factory=list)
    closed: bool = False
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        self.calls.append((name, payload, timeout_s))
        self.called.set()
        if self.answer is None:
            raise TimedOut(f"device {self.device_id!r} did not answer in {timeout_s:g} s")
        return MethodResult(*self.answer)

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        self.desired.append((patch, version))

    async def push_c2d(self, message: C2DMessage) -> bool:
        self.c2d.append(message)
        return True

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        return feed in self.feeds

    async def close(self) -> None:
        self.closed = True
