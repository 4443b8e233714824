"""The storage areas in SQL, written once for SQLite and PostgreSQL (`?` placeholders).

Every area is a class over the shared `Database` driver (storage/database.py); rows map to
domain values in `_rows.py` and nowhere else.
"""

from __future__ import annotations

from typing import Protocol

from thinghub.ports.store import Lifecycle, Stores, TelemetryStore
from thinghub.storage.database import Database
from thinghub.storage.sql.accounts import SqlAccountStore, SqlCredentialStore
from thinghub.storage.sql.c2d import SqlC2DStore
from thinghub.storage.sql.claims import SqlClaimStore
from thinghub.storage.sql.commands import SqlCommandStore
from thinghub.storage.sql.console_sessions import SqlConsoleSessionStore
from thinghub.storage.sql.devices import SqlDeviceStore
from thinghub.storage.sql.documents import SqlDocumentStore
from thinghub.storage.sql.events import SqlEventStore
from thinghub.storage.sql.files import SqlFileStore
from thinghub.storage.sql.products import SqlProductStore
from thinghub.storage.sql.sessions import SqlSessionStore
from thinghub.storage.sql.telemetry import SqlTelemetryStore
from thinghub.storage.sql.telemetry_series import SeriesSqlTelemetryStore
from thinghub.storage.sql.twins import SqlTwinStore

__all__ = [
    "SeriesSqlTelemetryStore",
    "SqlAccountStore",
    "SqlC2DStore",
    "SqlClaimStore",
    "SqlCommandStore",
    "SqlConsoleSessionStore",
    "SqlCredentialStore",
    "SqlDeviceStore",
    "SqlDocumentStore",
    "SqlEventStore",
    "SqlFileStore",
    "SqlProductStore",
    "SqlSessionStore",
    "SqlTelemetryStore",
    "SqlTwinStore",
    "TelemetryWriter",
    "sql_stores",
]


class TelemetryWriter(TelemetryStore, Lifecycle, Protocol):
    """A telemetry area with a task of its own (PostgreSQL's COPY writer)."""


def sql_stores(db: Database, *, telemetry: TelemetryWriter | None = None) -> Stores:
    """Every area over `db`; `start()` starts the database and `close()` closes it.

    `telemetry` replaces the plain SQL telemetry area; it starts after the database and
    closes before it (writing what is still queued).
    """
    return Stores(
        accounts=SqlAccountStore(db),
        credentials=SqlCredentialStore(db),
        devices=SqlDeviceStore(db),
        twins=SqlTwinStore(db),
        telemetry=SeriesSqlTelemetryStore(db) if telemetry is None else telemetry,
        events=SqlEventStore(db),
        commands=SqlCommandStore(db),
        c2d=SqlC2DStore(db),
        sessions=SqlSessionStore(db),
        documents=SqlDocumentStore(db),
        products=SqlProductStore(db),
        claims=SqlClaimStore(db),
        files=SqlFileStore(db),
        console_sessions=SqlConsoleSessionStore(db),
        resources=(db,) if telemetry is None else (db, telemetry),
    )
