"""SQLite driver: WAL, one writer thread with group commit, readers on a thread pool.

Theory of operation: every write unit is queued to the writer thread. The writer takes the
first unit, then everything else already queued (up to `batch_max_rows`), runs each unit
inside a SAVEPOINT of one transaction and commits once; only after COMMIT returns are the
callers' futures resolved. While a commit is running, new units pile up in the queue and
share the next commit, so throughput grows with load while a lone write pays one commit.
A failing unit rolls back to its savepoint without disturbing the others. Readers use their
own connections (WAL lets them run beside the writer), never on the event loop. A
checkpointer thread with a connection of its own copies committed pages from the WAL into
the database file (CHECKPOINT_EVERY_S), so that work stays out of the writer's commits.

Two reader pools: point reads (a device, a token, an account: what device login and every
request's authentication need) have READER_THREADS of their own, and `bulk` reads (telemetry,
event and observation queries, which may scan) have `query_readers` others, so no number of
slow queries can make a device CONNECT wait for a thread (issue 7). A bulk read has a
deadline (`query_timeout_s`); when it passes, or the awaiting task is cancelled (its HTTP
client went away), the statement is stopped with `sqlite3.Connection.interrupt()` and its
reader is free again at once. A bulk read still waiting for a reader is simply dropped.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from thinghub.domain.errors import TimedOut
from thinghub.storage.database import DuplicateKeyError, Step

__all__ = ["SqliteDatabase"]

logger = logging.getLogger(__name__)

MIN_SQLITE = (3, 38, 0)  # observation sets are read with `->>` (3.38, 2022)
READER_THREADS = 4  # point reads: device login, authentication, registry lookups
QUERY_READERS = 2  # bulk reads (telemetry and event queries), apart from the point readers
QUERY_TIMEOUT_S = 30.0
BUSY_TIMEOUT_MS = 10_000
# Telemetry dirties one index leaf per device (and per device metric) in every group commit.
# SQLite's default checkpoint every 1,000 WAL pages (4 MiB) then copies those hot pages back
# into the database file every commit or two; at 16,384 pages (64 MiB of WAL) each is copied
# once for many commits. Crash safety is the same (the WAL is replayed on open). With a
# 64 MiB page cache for the writer (the default is 2 MiB) the same leaves stay in memory:
# together ~1.8x the telemetry rows per second of the defaults in bench (see performance.md).
WAL_AUTOCHECKPOINT_PAGES = 16_384
WRITER_CACHE_KIB = 65_536
#: How often the checkpointer thread copies what was committed into the database file, in
#: seconds. The writer's own automatic checkpoint (when the WAL reaches
#: WAL_AUTOCHECKPOINT_PAGES) ran inside a COMMIT: copying up to 64 MiB and two fsyncs held
#: every caller of that commit (a PUBACK) for 45-280 ms every ~0.7 s at 2,000 msgs/s. A
#: PASSIVE checkpoint on a connection of its own runs beside the writer and the readers and
#: blocks neither, so the writer's checkpoint finds only the last fraction of a second to copy
#: (and then lets the WAL start over from its beginning, which only the writer can do).
CHECKPOINT_EVERY_S = 0.2

#: Parameters one multi-row INSERT statement binds at most (SQLite's historic default limit,
#: SQLITE_MAX_VARIABLE_NUMBER before 3.32; newer builds allow 32,766).
MULTI_ROW_PARAMS = 999

_Unit = tuple[Sequence[Step], "asyncio.Future[list[Any]]", asyncio.AbstractEventLoop]


class _BulkRead:
    """One bulk read, cancellable from the event loop while a reader thread runs it.

    `lock` orders the reader's start and end of the statement against `cancel()`, so an
    interrupt only ever reaches the connection while this read's statement is on it (never a
    later read that reuses the connection).
    """

    __slots__ = ("cancelled", "conn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.conn: sqlite3.Connection | None = None

    def cancel(self) -> bool:
        """Stop the read; True if its statement was running (and is now interrupted)."""
        with self.lock:
            self.cancelled = True
            if self.conn is None:
                return False
            self.conn.interrupt()
            return True


def _connect(path: Path, *, read_only: bool, writer: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a committed transaction survives a crash of this process
    # (kill -9); FULL would also survive power loss at one fsync per group commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    if read_only:
        conn.execute("PRAGMA query_only = 1")
    elif writer:
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    return conn


# `INSERT ... VALUES (?, ..., ?) [ON CONFLICT ...]`: one row of placeholders, nothing else.
_ONE_ROW_INSERT = re.compile(r"(INSERT\s.*?\sVALUES\s*)(\(\?(?:\s*,\s*\?)*\))(.*)", re.S | re.I)


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str) -> tuple[str, int] | None:
    """For an INSERT of one row of placeholders: the same statement taking as many rows as
    MULTI_ROW_PARAMS allows, and that number of rows; None for any other statement."""
    match = _ONE_ROW_INSERT.fullmatch(sql)
    if match is None:
        return None
    head, row, tail = match.groups()
    rows = MULTI_ROW_PARAMS // row.count("?")
    if rows < 2 or "?" in head or "?" in tail:  # parameters outside the row: not repeated
        return None
    return f"{head}{','.join([row] * rows)}{tail}", rows


def _insert_many(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    """executemany(sql, params), with an INSERT of one row of placeholders sent many rows a
    statement. sqlite3 lets the GIL go for every statement it steps and takes it back to
    bind the next row: with the event loop busy, each row then waited for the loop to let go
    of the GIL (100,000 rows of 14 values: 0.46 s alone, 2.4 s beside a busy thread; many
    rows a statement: 0.32 s and 0.9 s). The rows go in order, each as its own row of the
    statement (ON CONFLICT applies row by row), so the result is executemany's."""
    plan = _multi_row(sql) if len(params) > 1 else None
    if plan is None:
        conn.executemany(sql, params)
        return
    many_sql, rows = plan
    full = len(params) - len(params) % rows
    chain = itertools.chain.from_iterable
    for start in range(0, full, rows):
        conn.execute(many_sql, list(chain(params[start : start + rows])))
    if full < len(params):
        conn.executemany(sql, params[full:])


@functools.lru_cache(maxsize=64)
def _or_ignore(sql: str) -> str:
    if not sql.startswith("INSERT INTO ") or " ON CONFLICT " in sql.upper():
        raise ValueError(f"an append step takes a plain INSERT, got {sql[:60]!r}")
    return "INSERT OR IGNORE INTO " + sql[len("INSERT INTO ") :]


def _append_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    """An `append` step: the rows of a plain INSERT that no unique key can refuse.

    Inside the group commit's transaction, a statement that writes several rows and may
    fail part-way (a NOT NULL column) first copies each page it changes into a statement
    journal, so it can be undone alone; past 64 KiB that journal is a temporary file: 4 KiB
    written per page, for every multi-row INSERT (strace: more bytes than the WAL took).
    `INSERT OR IGNORE` cannot fail part-way, so SQLite keeps no statement journal for it.
    What it would ignore can only be a row breaking a constraint, which the plain INSERT
    would have refused: counting the rows stored and raising when one is missing keeps the
    plain INSERT's outcome (the unit fails and rolls back to its savepoint).
    """
    before = conn.total_changes
    _insert_many(conn, _or_ignore(sql), params)
    stored = conn.total_changes - before
    if stored != len(params):
        raise sqlite3.IntegrityError(
            f"{len(params) - stored} of {len(params)} rows refused by a constraint: {sql[:60]}"
        )


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        batch_max: int = 2000,
        query_readers: int = QUERY_READERS,
        query_timeout_s: float = QUERY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.batch_max = batch_max
        self.query_timeout_s = query_timeout_s
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="sqlite-reader")
        self._query_readers = ThreadPoolExecutor(query_readers, thread_name_prefix="sqlite-query")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: thinghub needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (its JSON ->> operator)"
            )
        conn = _connect(self.path, read_only=False)
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        self._closing.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop,
            args=(_connect(self.path, read_only=False, writer=False),),
            name="sqlite-checkpointer",
            daemon=True,
        )
        self._checkpointer.start()

    async def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._readers.shutdown(wait=True)
        self._query_readers.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    async def write(self, steps: Sequence[Step]) -> list[Any]:
        if self._writer is None:
            raise RuntimeError("database is not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.put((steps, future, loop))
        return await future

    async def fetch_all(
        self, sql: str, params: Sequence[Any] = (), *, bulk: bool = False
    ) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        if bulk:
            return await self._bulk(loop, sql, params)
        return await loop.run_in_executor(self._readers, self._read, sql, params, False)

    async def _bulk(
        self, loop: asyncio.AbstractEventLoop, sql: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """A bulk read on the query readers, within query_timeout_s (waiting included)."""
        read = _BulkRead()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.query_timeout_s):
                return await loop.run_in_executor(
                    self._query_readers, self._read_bulk, read, sql, params
                )
        except TimeoutError:
            read.cancel()
            logger.info("query stopped after %.1f s (query_timeout_s)", self.query_timeout_s)
            raise TimedOut(
                f"the query did not finish within {self.query_timeout_s:g} s "
                "(query_timeout_s); narrow it with a time range or a device",
            ) from None
        except asyncio.CancelledError:
            running = read.cancel()
            logger.debug(
                "query cancelled after %.3f s (%s)",
                time.monotonic() - started,
                "interrupted" if running else "not started",
            )
            raise

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._readers, self._read, sql, params, True)
        return rows[0] if rows else None

    # -- reader threads ------------------------------------------------------------------

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _read_bulk(self, read: _BulkRead, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = self._reader_conn()
        with read.lock:
            if read.cancelled:
                return []  # abandoned while it waited for a reader; nobody reads this
            read.conn = conn
        try:
            return self._read(sql, params, False)
        except sqlite3.OperationalError:
            if read.cancelled:
                return []  # interrupted: the caller is gone (cancelled or timed out)
            raise
        finally:
            with read.lock:
                read.conn = None

    def _read(self, sql: str, params: Sequence[Any], first: bool) -> list[tuple[Any, ...]]:
        conn = self._reader_conn()
        cursor = conn.execute(sql, tuple(params))
        try:
            if first:
                row = cursor.fetchone()
                return [row] if row is not None else []
            return cursor.fetchall()
        finally:
            cursor.close()

    # -- the checkpointer thread ---------------------------------------------------------

    def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        """PASSIVE checkpoints every CHECKPOINT_EVERY_S until close(): never waits for the
        writer or a reader (a page a reader still needs is left for the next one)."""
        try:
            while not self._closing.wait(CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the writer's own checkpoint still runs
                    logger.warning("background checkpoint failed: %s", exc)
        finally:
            conn.close()

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        running = True
        while running:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    running = False
                    break
                batch.append(item)
            self._commit(conn, batch)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Unit]) -> None:
        outcomes: list[tuple[_Unit, list[Any] | None, BaseException | None]] = []
        # A lone unit needs no savepoint: its failure rolls back the whole transaction.
        isolate = len(batch) > 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for unit in batch:
                if isolate:
                    conn.execute("SAVEPOINT unit")
                try:
                    result: list[Any] = []
                    for step in unit[0]:
                        result.append(self._run(conn, step, result))
                # Not only sqlite3.Error: a value sqlite3 cannot bind (a str holding a lone
                # surrogate raises UnicodeEncodeError) fails its unit, and must not end this
                # thread, which would leave every later write waiting for ever.
                except Exception as exc:
                    if isolate:
                        conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                    else:
                        conn.execute("ROLLBACK")
                    error: BaseException = exc
                    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
                        error = DuplicateKeyError(str(exc))
                    outcomes.append((unit, None, error))
                else:
                    if isolate:
                        conn.execute("RELEASE unit")
                    outcomes.append((unit, result, None))
            if conn.in_transaction:
                conn.execute("COMMIT")
        except Exception as exc:
            logger.error("group commit of %d units failed: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failed: BaseException = exc
            outcomes = [(unit, None, failed) for unit in batch]
        # One hop per event loop for the whole batch, not one per unit.
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_steps, future, loop), value, problem in outcomes:
            by_loop.setdefault(loop, []).append((future, value, problem))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    @staticmethod
    def _run(conn: sqlite3.Connection, step: Step, done: Sequence[Any] = ()) -> Any:
        """One step; `done`: the results of the unit's steps before it."""
        if step.kind == "landed":
            stored = done[0]
            rows = [row for row, owner in step.params if stored[owner]]
            if rows:
                _insert_many(conn, step.sql, rows)
            return None
        if step.kind == "each":
            counts = []
            for row in step.params:
                counts.append(conn.execute(step.sql, tuple(row)).rowcount)
            return counts
        if step.kind == "many":
            _insert_many(conn, step.sql, step.params)
            return None
        if step.kind == "append":
            _append_all(conn, step.sql, step.params)
            return None
        cursor = conn.execute(step.sql, tuple(step.params))
        try:
            if step.kind == "exec":
                return cursor.rowcount
            if step.kind == "one":
                return cursor.fetchone()
            return cursor.fetchall()
        finally:
            cursor.close()


def _settle_all(
    settled: list[tuple[asyncio.Future[list[Any]], list[Any] | None, BaseException | None]],
) -> None:
    for future, result, error in settled:
        _settle(future, result, error)


def _settle(
    future: asyncio.Future[list[Any]], result: list[Any] | None, error: BaseException | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result if result is not None else [])
