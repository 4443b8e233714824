"""The SQL backends only: the driver contract for bulk reads (telemetry and event queries):
readers of their own, a timeout, and a statement that really stops when its caller is
cancelled (issue 7); and the query plan SQLite picks for a listing."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.contract.conftest import Backend
from thinghub.domain.errors import TimedOut
from thinghub.ports import EventQuery, TelemetryQuery
from thinghub.storage.database import Database
from thinghub.storage.postgres import PostgresDatabase
from thinghub.storage.sql import SqlEventStore, SqlTelemetryStore
from thinghub.storage.sqlite import SqliteDatabase

# Counts to a billion: minutes on either database, unless it is stopped.
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c"
)
# How long a statement that was stopped may take to give its reader back.
FREED_WITHIN_S = 3.0


async def open_db(backend: Backend, *, timeout_s: float) -> Database:
    """The backend's driver with ONE bulk reader, so a reader left busy shows at once."""
    db: Database
    if backend.name == "sqlite":
        db = SqliteDatabase(
            Path(backend.url.removeprefix("sqlite:///")), query_readers=1, query_timeout_s=timeout_s
        )
    else:
        db = PostgresDatabase(backend.url, query_pool_size=1, query_timeout_s=timeout_s)
    await db.start()
    return db


@pytest.fixture
async def opened() -> AsyncIterator[list[Database]]:
    dbs: list[Database] = []
    yield dbs
    for db in dbs:
        await db.close()


async def timed(coro: object) -> float:
    started = time.monotonic()
    await coro  # type: ignore[misc]
    return time.monotonic() - started


async def running_on_postgres(backend: Backend) -> int:
    """How many sessions run the slow statement right now."""
    conn = await asyncpg.connect(backend.url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'WITH RECURSIVE c(x)%' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def wait_stopped(backend: Backend) -> None:
    if backend.name == "sqlite":
        return  # the free reader (checked by the caller) is the only witness
    async with asyncio.timeout(FREED_WITHIN_S):
        while await running_on_postgres(backend):
            await asyncio.sleep(0.05)


async def test_a_bulk_read_past_its_timeout_is_stopped(
    sql_backend: Backend, opened: list[Database]
) -> None:
    db = await open_db(sql_backend, timeout_s=0.5)
    opened.append(db)
    started = time.monotonic()
    with pytest.raises(TimedOut) as caught:
        await db.fetch_all(SLOW, bulk=True)
    assert 0.4 < time.monotonic() - started < FREED_WITHIN_S
    assert "query_timeout_s" in caught.value.message
    await wait_stopped(sql_backend)
    # The only bulk reader is free again: the statement stopped, it did not run on.
    assert await timed(db.fetch_all("SELECT 1", bulk=True)) < FREED_WITHIN_S
    assert await db.fetch_all("SELECT 2", bulk=True) == [(2,)]


async def test_a_cancelled_bulk_read_stops_its_statement(
    sql_backend: Backend, opened: list[Database]
) -> None:
    db = await open_db(sql_backend, timeout_s=600)
    opened.append(db)
    slow = asyncio.create_task(db.fetch_all(SLOW, bulk=True))
    if sql_backend.name != "sqlite":
        async with asyncio.timeout(10):
            while not await running_on_postgres(sql_backend):
                await asyncio.sleep(0.02)
    else:
        await asyncio.sleep(0.3)  # let the reader thread start it
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    await wait_stopped(sql_backend)
    assert await timed(db.fetch_all("SELECT 1", bulk=True)) < FREED_WITHIN_S


async def test_a_queued_bulk_read_that_is_cancelled_never_runs(
    sql_backend: Backend, opened: list[Database]
) -> None:
    db = await open_db(sql_backend, timeout_s=2.0)
    opened.append(db)
    busy = asyncio.create_task(db.fetch_all(SLOW, bulk=True))  # takes the one reader
    await asyncio.sleep(0.2)
    queued = [asyncio.create_task(db.fetch_all(SLOW, bulk=True)) for _ in range(5)]
    await asyncio.sleep(0.1)
    for task in queued:
        task.cancel()
    with pytest.raises(TimedOut):
        await busy
    await asyncio.gather(*queued, return_exceptions=True)
    # Five cancelled reads of up to 2 s each would hold the reader for 10 s more.
    assert await timed(db.fetch_all("SELECT 1", bulk=True)) < FREED_WITHIN_S


async def test_point_reads_are_not_held_up_by_bulk_reads(
    sql_backend: Backend, opened: list[Database]
) -> None:
    db = await open_db(sql_backend, timeout_s=600)
    opened.append(db)
    hogs = [asyncio.create_task(db.fetch_all(SLOW, bulk=True)) for _ in range(8)]
    try:
        await asyncio.sleep(0.3)
        for _ in range(5):  # as a device CONNECT does: several point reads in a row
            assert await timed(db.fetch_one("SELECT 1")) < 1.0
        assert await db.fetch_all("SELECT 3") == [(3,)]
    finally:
        for hog in hogs:
            hog.cancel()
        await asyncio.gather(*hogs, return_exceptions=True)
    await wait_stopped(sql_backend)


class Recording(SqliteDatabase):
    """The SQLite driver, noting each bulk read's SQL and parameters."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.bulk_reads: list[tuple[str, tuple[object, ...]]] = []

    async def fetch_all(
        self, sql: str, params: Sequence[Any] = (), *, bulk: bool = False
    ) -> list[tuple[Any, ...]]:
        if bulk:
            self.bulk_reads.append((sql, tuple(params)))
        return await super().fetch_all(sql, params, bulk=bulk)


@pytest.mark.parametrize("kind", ["telemetry", "events"])
async def test_an_unfiltered_listing_reads_an_index_in_order(
    kind: str, sqlite_template: Path, tmp_path: Path
) -> None:
    """Newest first over the whole account is an index walk that stops at `limit`, not a
    sort of every row of the account (issue 7: minutes on a large database)."""
    path = tmp_path / "thinghub.db"
    shutil.copyfile(sqlite_template, path)
    db = Recording(path)
    await db.start()
    try:
        if kind == "telemetry":
            await SqlTelemetryStore(db).query(TelemetryQuery("acc-1", limit=1000))
        else:
            await SqlEventStore(db).query(EventQuery("acc-1", event_types=None, limit=1000))
        ((sql, params),) = db.bulk_reads
    finally:
        await db.close()
    with sqlite3.connect(path) as conn:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "TEMP B-TREE" not in plan, plan
    assert f"ix_{kind}_account" in plan, plan
