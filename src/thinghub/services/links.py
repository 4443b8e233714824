"""Live device links: which devices are connected here, and how to reach each one.

The device adapters (MQTT) register a DeviceLink per connection; services reach devices only
through this registry. A newer link for the same device replaces the older one.
"""

from __future__ import annotations

from typing import Any, Protocol

from thinghub.domain.errors import DeviceOffline
from thinghub.ports import C2DMessage, MethodResult

__all__ = ["DeviceLink", "LinkRegistry"]


class DeviceLink(Protocol):
    device_id: str

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult: ...
    async def push_desired(self, patch: dict[str, Any], version: int) -> None: ...
    async def push_c2d(self, message: C2DMessage) -> bool: ...
    async def close(self) -> None: ...


class LinkRegistry:
    """Implements the DeviceLinks port over the links registered by adapters."""

    def __init__(self) -> None:
        self._links: dict[str, DeviceLink] = {}

    def attach(self, link: DeviceLink) -> DeviceLink | None:
        """Register a link; returns the link it replaces, which the caller should close."""
        previous = self._links.get(link.device_id)
        self._links[link.device_id] = link
        return previous

    def detach(self, link: DeviceLink) -> bool:
        """Unregister a link if it is still the current one for its device."""
        if self._links.get(link.device_id) is link:
            del self._links[link.device_id]
            return True
        return False

    def get(self, device_id: str) -> DeviceLink | None:
        return self._links.get(device_id)

    def is_connected(self, device_id: str) -> bool:
        return device_id in self._links

    def count(self) -> int:
        return len(self._links)

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
