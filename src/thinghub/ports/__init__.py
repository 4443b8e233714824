"""Ports: the interfaces services use; storage, bus and device adapters implement them.

typing.Protocol interfaces only, one module per concern; every name is importable from here:

- `store`: the storage areas (AccountStore, DeviceStore, ...) bundled as `Stores`.
- `bus`: `Bus`, live fan-out of typed events.
- `cluster`: what several nodes share about connected devices (Presence, DeviceChannel,
  Locks, Counter).
- `blobs`: `BlobStore`, the bytes of device files.
- `clock`: `Clock`.
"""

from __future__ import annotations

from thinghub.ports.blobs import BlobStore, BlobWriter
from thinghub.ports.bus import Bus
from thinghub.ports.clock import Clock
from thinghub.ports.cluster import (
    Counter,
    DeviceChannel,
    DeviceFeed,
    Locks,
    MethodResult,
    Presence,
)
from thinghub.ports.store import (
    AccountStore,
    C2DMessage,
    C2DStore,
    ClaimStore,
    CommandStore,
    ConnectionChange,
    ConsoleSessionStore,
    CredentialStore,
    DeviceStore,
    DocumentStore,
    EventQuery,
    EventStore,
    FileStore,
    Lifecycle,
    Page,
    ProductStore,
    SeriesTelemetryStore,
    SessionStore,
    StoredConsoleSession,
    Stores,
    TelemetryQuery,
    TelemetryStore,
    TwinStore,
)

__all__ = [
    "AccountStore",
    "BlobStore",
    "BlobWriter",
    "Bus",
    "C2DMessage",
    "C2DStore",
    "ClaimStore",
    "Clock",
    "CommandStore",
    "ConnectionChange",
    "ConsoleSessionStore",
    "Counter",
    "CredentialStore",
    "DeviceChannel",
    "DeviceFeed",
    "DeviceStore",
    "DocumentStore",
    "EventQuery",
    "EventStore",
    "FileStore",
    "Lifecycle",
    "Locks",
    "MethodResult",
    "Page",
    "Presence",
    "ProductStore",
    "SeriesTelemetryStore",
    "SessionStore",
    "StoredConsoleSession",
    "Stores",
    "TelemetryQuery",
    "TelemetryStore",
    "TwinStore",
]
