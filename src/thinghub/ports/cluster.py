"""Cluster ports: what several nodes must share about connected devices.

Each is a typing.Protocol with an in-memory implementation in thinghub.bus.memory (one
process; LocalLinks in thinghub.devices.links is this node's DeviceChannel); a multi-node
implementation (NATS, PostgreSQL) implements the same protocol, so it is an addition, not a
rewrite.

- `Presence`: which node holds a device's connection.
- `DeviceChannel`: reach a connected device wherever it is connected.
- `Locks`: named async locks (one C2D delivery per device at a time).
- `Counter`: monotonic integers (event sequence numbers).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from thinghub.ports.store import C2DMessage

__all__ = ["Counter", "DeviceChannel", "DeviceFeed", "Locks", "MethodResult", "Presence"]

# What a connected device listens for: direct methods, desired-property patches, C2D messages.
DeviceFeed = Literal["methods", "desired", "c2d"]


@dataclass(frozen=True, slots=True)
class MethodResult:
    """A direct method's answer: the device's status code and its payload."""

    status: int
    payload: Any


class Presence(Protocol):
    """Which node holds each device's connection (one owner per device)."""

    async def claim(self, device_id: str, node_id: str, lease_s: float | None = None) -> str | None:
        """Make `node_id` the owner; returns the previous owner, if any. With a lease the
        claim lapses `lease_s` after it was made unless claimed again."""
        ...

    async def release(self, device_id: str, node_id: str) -> bool:
        """Give up ownership; False (and nothing changes) when `node_id` is not the owner."""
        ...

    async def owner(self, device_id: str) -> str | None: ...

    async def is_connected(self, device_id: str) -> bool: ...


class DeviceChannel(Protocol):
    """Reach a connected device, on whichever node holds its connection."""

    async def call_method(
        self, device_id: str, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        """A direct method's answer. Raises DeviceOffline (not connected, or not listening for
        methods) or TimedOut."""
        ...

    async def push_desired(self, device_id: str, patch: dict[str, Any], version: int) -> None:
        """Send a desired patch if the device is connected and listening; else nothing."""
        ...

    async def push_c2d(self, message: C2DMessage) -> bool:
        """True once the message went out to the device; False when it cannot take it now."""
        ...

    async def disconnect(self, device_id: str, *, revoked: bool = False) -> bool:
        """Close the device's connection; False when it had none.

        `revoked`: the device's credentials were taken back (an Ioto release); a dialect that
        has a message for that (Ioto's provision/release) sends it before closing.
        """
        ...

    async def has_subscribed(self, device_id: str, feed: DeviceFeed) -> bool:
        """Whether the device is connected and listens for `feed`."""
        ...


class Locks(Protocol):
    """Named async locks: `async with locks.hold(name): ...`."""

    def hold(self, name: str) -> AbstractAsyncContextManager[None]: ...


class Counter(Protocol):
    """Monotonic integers per name."""

    async def next(self, name: str) -> int: ...
