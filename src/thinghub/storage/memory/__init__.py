"""Every storage area in memory: plain dicts, no SQL, gone with the process.

It passes the same contract suite as the SQL backends (tests/contract) and is what the unit
tests of the services run on. Two `memory_stores` over one `Tables` see the same data (as
two processes on one database do).
"""

from __future__ import annotations

from thinghub.ports.store import Stores
from thinghub.storage.memory._tables import Tables
from thinghub.storage.memory.accounts import MemoryAccountStore, MemoryCredentialStore
from thinghub.storage.memory.c2d import MemoryC2DStore
from thinghub.storage.memory.claims import MemoryClaimStore
from thinghub.storage.memory.commands import MemoryCommandStore
from thinghub.storage.memory.console_sessions import MemoryConsoleSessionStore
from thinghub.storage.memory.devices import MemoryDeviceStore
from thinghub.storage.memory.documents import MemoryDocumentStore
from thinghub.storage.memory.events import MemoryEventStore
from thinghub.storage.memory.files import MemoryFileStore
from thinghub.storage.memory.products import MemoryProductStore
from thinghub.storage.memory.sessions import MemorySessionStore
from thinghub.storage.memory.telemetry import MemoryTelemetryStore
from thinghub.storage.memory.twins import MemoryTwinStore

__all__ = [
    "MemoryAccountStore",
    "MemoryC2DStore",
    "MemoryClaimStore",
    "MemoryCommandStore",
    "MemoryConsoleSessionStore",
    "MemoryCredentialStore",
    "MemoryDeviceStore",
    "MemoryDocumentStore",
    "MemoryEventStore",
    "MemoryFileStore",
    "MemoryProductStore",
    "MemorySessionStore",
    "MemoryTelemetryStore",
    "MemoryTwinStore",
    "Tables",
    "memory_stores",
]


def memory_stores(
    tables: Tables | None = None, *, telemetry: MemoryTelemetryStore | None = None
) -> Stores:
    """Every area over `tables` (new, empty ones by default).

    `telemetry` replaces the telemetry area (a test's subclass, e.g. one that waits on a gate
    before it writes); it must be over the same tables.
    """
    tables = Tables() if tables is None else tables
    return Stores(
        accounts=MemoryAccountStore(tables),
        credentials=MemoryCredentialStore(tables),
        devices=MemoryDeviceStore(tables),
        twins=MemoryTwinStore(tables),
        telemetry=MemoryTelemetryStore(tables) if telemetry is None else telemetry,
        events=MemoryEventStore(tables),
        commands=MemoryCommandStore(tables),
        c2d=MemoryC2DStore(tables),
        sessions=MemorySessionStore(tables),
        documents=MemoryDocumentStore(tables),
        products=MemoryProductStore(tables),
        claims=MemoryClaimStore(tables),
        files=MemoryFileStore(tables),
        console_sessions=MemoryConsoleSessionStore(tables),
    )
