"""Storage fixtures for the contract suite: every test runs once per backend.

Memory: a fresh `Tables` per test (every `open()` in the test sees the same one). SQLite: a
fresh file in tmp_path per test, a copy of one migrated (migrate.upgrade) per session.
PostgreSQL (marker `postgres`): one throwaway server per session (tests/pg.py, or
THINGHUB_TEST_POSTGRES_DSN), one database on it made by CREATE DATABASE and migrate.upgrade,
emptied (TRUNCATE ... RESTART IDENTITY) before each test. Migrating per test costs ~0.5 s a
test, a CREATE DATABASE from a template about as much.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from tests.pg import create_database, drop_database
from thinghub.ports import Stores
from thinghub.storage.memory import Tables, memory_stores
from thinghub.storage.migrate import upgrade
from thinghub.storage.postgres import PostgresDatabase, PostgresTelemetryStore
from thinghub.storage.sql import sql_stores
from thinghub.storage.sqlite import SqliteDatabase

T = TypeVar("T")

SQL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    # The plain SQL areas on the PostgreSQL driver: the shared SQL (telemetry included) and
    # the driver's step kinds, without PostgresTelemetryStore's COPY batching.
    pytest.param("postgres-sql", id="postgres-sql", marks=pytest.mark.postgres),
]
BACKENDS = [pytest.param("memory", id="memory"), *SQL_BACKENDS]


def _in_thread(fn: Callable[[], T]) -> T:
    """Run blocking setup (asyncio.run inside) on its own thread, away from pytest's loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="contract-setup")
    thread.start()
    thread.join(120)
    if thread.is_alive():
        raise TimeoutError("contract database setup took longer than 120 s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


@pytest.fixture(scope="session")
def postgres_database(postgres_dsn: str) -> Iterator[str]:
    """A database of its own, migrated once; yields its DSN. Tests empty it (`_truncate`).

    (`postgres_dsn`, the session's server, is in tests/conftest.py.)
    """
    dsn = create_database(postgres_dsn, "thinghub_contract")
    _in_thread(lambda: upgrade(dsn))
    yield dsn
    drop_database(dsn)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; every test gets a copy of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "thinghub.db"
    _in_thread(lambda: upgrade(f"sqlite:///{path}"))
    return path


async def _truncate(dsn: str) -> None:
    """Empty every table but Alembic's and restart the id sequences: a fresh database."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> 'alembic_version'"
        )
        await conn.execute(f"TRUNCATE {', '.join(t[0] for t in tables)} RESTART IDENTITY")
    finally:
        await conn.close()


@dataclass
class Backend:
    """One backend's fresh database; `open()` gives started stores on it."""

    name: str
    url: str
    tables: Tables = field(default_factory=Tables)  # the memory backend's
    opened: list[Stores] = field(default_factory=list)

    async def open(self) -> Stores:
        if self.name == "memory":
            stores = memory_stores(self.tables)
        elif self.name == "sqlite":
            stores = sql_stores(SqliteDatabase(Path(self.url.removeprefix("sqlite:///"))))
        elif self.name == "postgres-sql":
            stores = sql_stores(PostgresDatabase(self.url))
        else:
            db = PostgresDatabase(self.url)
            stores = sql_stores(db, telemetry=PostgresTelemetryStore(db))
        await stores.start()
        self.opened.append(stores)
        return stores


async def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        url = ""
    elif request.param == "sqlite":
        path = tmp_path / "thinghub.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
        await _truncate(url)
    backend = Backend(request.param, url)
    yield backend
    for stores in backend.opened:
        await stores.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend: memory, SQLite, PostgreSQL (COPY telemetry) and the plain SQL areas on
    PostgreSQL."""
    async for backend in _backend(request, tmp_path):
        yield backend


@pytest.fixture(params=SQL_BACKENDS)
async def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The SQL backends only: for tests of the database drivers under the SQL areas."""
    async for backend in _backend(request, tmp_path):
        yield backend


@pytest.fixture
async def stores(backend: Backend) -> Stores:
    return await backend.open()
