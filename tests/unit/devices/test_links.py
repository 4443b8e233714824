"""Tests for thinghub.devices.links: this node's links, Presence and the DeviceChannel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from thinghub.bus.memory import MemoryPresence
from thinghub.devices.links import LocalLinks
from thinghub.domain.errors import DeviceOffline
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult, Presence

NODE = "node-a"


class Clock:
    def now(self) -> float:
        return 1000.0


class Link:
    def __init__(self, device_id: str, feeds: tuple[DeviceFeed, ...] = ("methods", "c2d")) -> None:
        self.device_id = device_id
        self.feeds = feeds
        self.closed = False
        self.desired: list[tuple[dict[str, Any], int]] = []
        self.c2d: list[str] = []

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        return MethodResult(200, {"name": name, "payload": payload})

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        self.desired.append((patch, version))

    async def push_c2d(self, message: C2DMessage) -> bool:
        self.c2d.append(message.id)
        return True

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        return feed in self.feeds

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def presence() -> MemoryPresence:
    return MemoryPresence(Clock())


async def test_attach_claims_and_detach_releases(presence: MemoryPresence) -> None:
    links = LocalLinks(presence, NODE)
    link = Link("d1")
    assert await links.attach(link) is None
    assert await presence.owner("d1") == NODE
    assert links.get("d1") is link and links.count() == 1
    assert await links.detach(link)
    assert await presence.owner("d1") is None
    assert links.get("d1") is None and links.count() == 0
    assert not await links.detach(link)  # twice: nothing


async def test_a_newer_link_replaces_the_older_and_keeps_the_claim(
    presence: MemoryPresence,
) -> None:
    links = LocalLinks(presence, NODE)
    old, new = Link("d1"), Link("d1")
    await links.attach(old)
    assert await links.attach(new) is old  # the caller closes it
    assert not await links.detach(old)  # no longer current: the device stays claimed
    assert await presence.owner("d1") == NODE
    assert links.get("d1") is new


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # a loop turn, not a delay


class SlowPresence:
    """A remote presence whose releases take longer than its claims."""

    def __init__(self, inner: Presence) -> None:
        self.inner = inner

    async def claim(self, device_id: str, node_id: str, lease_s: float | None = None) -> str | None:
        await turns(1)
        return await self.inner.claim(device_id, node_id, lease_s)

    async def release(self, device_id: str, node_id: str) -> bool:
        await turns(5)
        return await self.inner.release(device_id, node_id)

    async def owner(self, device_id: str) -> str | None:
        return await self.inner.owner(device_id)

    async def is_connected(self, device_id: str) -> bool:
        return await self.inner.is_connected(device_id)


async def test_a_release_never_undoes_a_later_links_claim(presence: MemoryPresence) -> None:
    """A reconnect racing the old connection's close: the device ends up claimed, although
    the old link's release finishes after the new link's claim would have."""
    links = LocalLinks(SlowPresence(presence), NODE)
    old, new = Link("d1"), Link("d1")
    await links.attach(old)
    async with asyncio.timeout(5):
        detached, _ = await asyncio.gather(links.detach(old), links.attach(new))
    assert detached
    assert links.get("d1") is new
    assert await presence.owner("d1") == NODE


async def test_the_device_channel_reaches_the_link(presence: MemoryPresence) -> None:
    links = LocalLinks(presence, NODE)
    link = Link("d1", feeds=("methods",))
    await links.attach(link)
    assert await links.call_method("d1", "reboot", {"now": True}, 5.0) == MethodResult(
        200, {"name": "reboot", "payload": {"now": True}}
    )
    await links.push_desired("d1", {"t": 1}, 3)
    assert link.desired == [({"t": 1}, 3)]
    message = C2DMessage("m1", "d1", b"x", {}, 1.0, 2.0)
    assert await links.push_c2d(message)
    assert link.c2d == ["m1"]
    assert await links.has_subscribed("d1", "methods")
    assert not await links.has_subscribed("d1", "c2d")
    assert await links.disconnect("d1")
    assert link.closed


async def test_the_device_channel_without_a_link(presence: MemoryPresence) -> None:
    links = LocalLinks(presence, NODE)
    with pytest.raises(DeviceOffline):
        await links.call_method("d1", "reboot", None, 5.0)
    await links.push_desired("d1", {"t": 1}, 3)  # nothing to do, and no error
    assert not await links.push_c2d(C2DMessage("m1", "d1", b"x", {}, 1.0, 2.0))
    assert not await links.has_subscribed("d1", "methods")
    assert not await links.disconnect("d1")
