"""Ports: the interfaces services use; storage, bus and device adapters implement them.

The storage areas are in `thinghub.ports.store`; every name is importable from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from thinghub.ports.store import (
    AccountStore,
    C2DMessage,
    C2DStore,
    CommandStore,
    CredentialStore,
    DeviceStore,
    DocumentStore,
    EventQuery,
    EventStore,
    Lifecycle,
    Page,
    SessionStore,
    Stores,
    TelemetryQuery,
    TelemetryStore,
    TwinStore,
)

__all__ = [
    "AccountStore",
    "Bus",
    "C2DMessage",
    "C2DStore",
    "Clock",
    "CommandStore",
    "CredentialStore",
    "DeviceLinks",
    "DeviceStore",
    "DocumentStore",
    "EventQuery",
    "EventStore",
    "Lifecycle",
    "MethodResult",
    "Page",
    "SessionStore",
    "Stores",
    "TelemetryQuery",
    "TelemetryStore",
    "TwinStore",
]


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class MethodResult:
    status: int
    payload: Any


class DeviceLinks(Protocol):
    """Live connections to devices, owned by the device adapters (MQTT)."""

    def is_connected(self, device_id: str) -> bool: ...
    async def call_method(
        self, device_id: str, name: str, payload: Any, timeout_s: float
    ) -> MethodResult: ...
    async def push_desired(self, device_id: str, patch: dict[str, Any], version: int) -> None: ...
    async def push_c2d(self, message: C2DMessage) -> bool: ...


Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


class Bus(Protocol):
    """Live fan-out of core events (telemetry, twin changes, connection state) to subscribers."""

    async def publish(self, subject: str, message: dict[str, Any]) -> None: ...
    def subscribe(self, pattern: str) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...
