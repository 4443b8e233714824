"""This node's live device links, and the DeviceChannel over them.

Theory of operation: a device adapter (the MQTT hub dialect) attaches one DeviceLink per
accepted connection and detaches it when the connection ends; a newer link for the same
device replaces the older one. `LocalLinks` is the DeviceChannel the services use to reach
devices connected to this node, and it keeps Presence up to date: attaching claims the
device for this node, detaching the current link releases it, so every node (and every
service) asks Presence whether a device is connected.

The link table changes at once (no await before it), so the adapter can rely on "attach
returned the link it replaces" and "detach said whether this link was current" without
another connection slipping in between. The Presence calls that follow run under a per-device
lock and look at the table again first: a release never undoes the claim of a link that
attached meanwhile.

With several nodes, a DeviceChannel that routes to the owner node (over NATS) wraps this one:
it calls LocalLinks when Presence names this node, and the owner's LocalLinks otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from thinghub.domain.errors import DeviceOffline
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult, Presence

__all__ = ["DeviceLink", "LocalLinks"]

logger = logging.getLogger(__name__)


class DeviceLink(Protocol):
    """One connected device, as the adapter that holds its connection offers it."""

    device_id: str

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult: ...
    async def push_desired(self, patch: dict[str, Any], version: int) -> None: ...
    async def push_c2d(self, message: C2DMessage) -> bool: ...
    def has_subscribed(self, feed: DeviceFeed) -> bool: ...
    async def close(self, *, revoked: bool = False) -> None:
        """Close the connection; `revoked`: tell the device its credentials are gone first,
        if its dialect has a message for that."""


class LocalLinks:
    """The devices connected to this node (implements the DeviceChannel port)."""

    def __init__(self, presence: Presence, node_id: str, *, lease_s: float | None = None) -> None:
        self.presence = presence
        self.node_id = node_id
        self.lease_s = lease_s  # None: claims last until released (one process)
        self._links: dict[str, DeviceLink] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, device_id: str) -> asyncio.Lock:
        lock = self._locks.get(device_id)
        if lock is None:
            lock = self._locks[device_id] = asyncio.Lock()
        return lock

    async def attach(self, link: DeviceLink) -> DeviceLink | None:
        """Register a link and claim its device for this node; returns the link it replaces
        here, which the caller should close."""
        device_id = link.device_id
        previous = self._links.get(device_id)
        self._links[device_id] = link
        async with self._lock(device_id):
            if self._links.get(device_id) is link:
                owner = await self.presence.claim(device_id, self.node_id, self.lease_s)
                if owner is not None and owner != self.node_id:
                    logger.info("device %s moved here from node %s", device_id, owner)
        return previous

    async def detach(self, link: DeviceLink) -> bool:
        """Unregister a link if it is still the current one for its device (then the device
        is released); False when a newer link replaced it."""
        device_id = link.device_id
        if self._links.get(device_id) is not link:
            return False
        del self._links[device_id]
        async with self._lock(device_id):
            if device_id not in self._links:
                await self.presence.release(device_id, self.node_id)
        return True

    def get(self, device_id: str) -> DeviceLink | None:
        return self._links.get(device_id)

    def count(self) -> int:
        return len(self._links)

    def device_ids(self) -> list[str]:
        """The devices connected here now."""
        return list(self._links)

    def evict(self, device_id: str) -> DeviceLink | None:
        """Forget the device's link without releasing it (another node holds the device now);
        the caller closes the returned link, whose detach then finds it gone and records no
        disconnection."""
        return self._links.pop(device_id, None)

    # -- DeviceChannel ---------------------------------------------------------------------

    async def call_method(
        self, device_id: str, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        link = self._links.get(device_id)
        if link is None:
            raise DeviceOffline(f"device {device_id!r} is not connected", field="deviceId")
        return await link.call_method(name, payload, timeout_s)

    async def push_desired(self, device_id: str, patch: dict[str, Any], version: int) -> None:
        link = self._links.get(device_id)
        if link is not None:
            await link.push_desired(patch, version)

    async def push_c2d(self, message: C2DMessage) -> bool:
        link = self._links.get(message.device_id)
        return False if link is None else await link.push_c2d(message)

    async def disconnect(self, device_id: str, *, revoked: bool = False) -> bool:
        link = self._links.get(device_id)
        if link is None:
            return False
        if revoked:
            await link.close(revoked=True)
        else:
            await link.close()
        return True

    async def has_subscribed(self, device_id: str, feed: DeviceFeed) -> bool:
        link = self._links.get(device_id)
        return link is not None and link.has_subscribed(feed)
