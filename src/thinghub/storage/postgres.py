"""PostgreSQL backend: an asyncpg driver for the SQL areas, and a telemetry area that COPYs.

Theory of operation (telemetry): `PostgresTelemetryStore.append` does not write. It queues
the call with a future and wakes the batcher, one named task owned by the area (started in
start(), drained and stopped in close()). The batcher waits until calls are queued, lingers
up to `flush_interval_s` for more (or less, once `batch_max` messages are queued), then writes
the batch in ONE transaction: the messages are COPYed into a per-connection TEMP staging
table and moved with `INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`, so the unique
(device_id, message_id) index drops redeliveries and the returned keys say which messages
were new; observations are COPYed straight into `observation_sets`, and `latest_observations`
is upserted (newer timestamps win). Only after COMMIT does each caller's future get its
per-message `is_new` list, so a QoS 1 PUBACK never precedes durability. One batch is in
flight at a time; calls arriving meanwhile form the next batch (group commit, as in the
SQLite driver). If PostgreSQL rejects a batch, each call in it is retried on its own, so
one bad message fails only its caller; any other failure fails every future of the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import asyncpg
import orjson

from thinghub.domain.errors import Invalid, TimedOut
from thinghub.domain.telemetry import Observation, TelemetryMessage, observations_of
from thinghub.storage.database import DuplicateKeyError, Step
from thinghub.storage.sql._rows import body_text, to_us
from thinghub.storage.sql.telemetry import SqlTelemetryStore, newest_per_metric, sets_of

__all__ = ["PostgresDatabase", "PostgresTelemetryStore"]

logger = logging.getLogger(__name__)

POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10
# Bulk reads (telemetry and event queries) get a pool of their own, so they never hold the
# connections device login and authentication need (issue 7).
QUERY_POOL_SIZE = 2
QUERY_TIMEOUT_S = 30.0
# How long the first queued telemetry call waits for company before its batch is written.
FLUSH_INTERVAL_S = 0.002


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without a reset round trip.

    We never SET, LISTEN, lock advisory locks or leave cursors open, so asyncpg's reset query
    (sent on every release) would only cost a round trip; open transactions are still rolled
    back by the pool.
    """

    def get_reset_query(self) -> str:
        return ""


@lru_cache(maxsize=2048)
def numbered(sql: str) -> str:
    """`?` placeholders to PostgreSQL's `$1..$n`, leaving quoted text and identifiers alone."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(char)
    return "".join(out)


def _rowcount(status: str) -> int:
    """The row count in a command status: "INSERT 0 1" -> 1, "UPDATE 3" -> 3."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class PostgresDatabase:
    """The Database driver over an asyncpg pool; each write unit is one transaction."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 2000,
        query_pool_size: int = QUERY_POOL_SIZE,
        query_timeout_s: float = QUERY_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.batch_max = batch_max
        self.query_pool_size = query_pool_size
        self.query_timeout_s = query_timeout_s
        self._session_setup: list[str] = []
        self._pool: asyncpg.Pool | None = None
        self._query_pool: asyncpg.Pool | None = None
        self._closing = False
        self._busy = 0  # operations in flight; close() waits for them
        self._idle = asyncio.Event()
        self._idle.set()

    def add_session_setup(self, sql: str) -> None:
        """Run `sql` once on every new connection (e.g. CREATE TEMP TABLE); before start()."""
        if self._pool is not None:
            raise RuntimeError("add_session_setup() must be called before start()")
        self._session_setup.append(sql)

    async def start(self) -> None:
        self._closing = False
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            init=self._init_connection,
            connection_class=_Connection,
        )
        # The server stops a bulk read by itself too (statement_timeout), should this
        # process be unable to (a lost cancel request).
        timeout_ms = max(1, round(self.query_timeout_s * 1000))
        self._query_pool = await asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=self.query_pool_size,
            connection_class=_Connection,
            server_settings={"statement_timeout": str(timeout_ms)},
        )

    async def close(self) -> None:
        """Refuse new work, let writes in flight commit, then close the pools."""
        if self._pool is None:
            return
        self._closing = True
        await self._idle.wait()
        pool, self._pool = self._pool, None
        query_pool, self._query_pool = self._query_pool, None
        await pool.close()
        if query_pool is not None:
            await query_pool.close()

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        for sql in self._session_setup:
            await conn.execute(sql)

    @asynccontextmanager
    async def _operation(self) -> AsyncIterator[asyncpg.Pool]:
        if self._pool is None or self._closing:
            raise RuntimeError("database is not started, or closing")
        self._busy += 1
        self._idle.clear()
        try:
            yield self._pool
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction, committed when the block exits cleanly.

        Raises:
            DuplicateKeyError: a unique constraint refused a write.
        """
        try:
            async with self._operation() as pool, pool.acquire() as conn, conn.transaction():
                yield conn
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateKeyError(str(exc)) from exc
        except asyncpg.CharacterNotInRepertoireError as exc:
            raise _no_nul(exc) from exc

    async def write(self, steps: Sequence[Step]) -> list[Any]:
        async with self.transaction() as conn:
            done: list[Any] = []
            for step in steps:
                done.append(await self._run(conn, step, done))
            return done

    @staticmethod
    async def _run(conn: asyncpg.Connection, step: Step, done: Sequence[Any]) -> Any:
        sql = numbered(step.sql)
        if step.kind == "landed":
            rows = [row for row, owner in step.params if done[0][owner]]
            if rows:
                await conn.executemany(sql, rows)
            return None
        if step.kind == "exec":
            return _rowcount(await conn.execute(sql, *step.params))
        if step.kind == "each":
            return [_rowcount(await conn.execute(sql, *row)) for row in step.params]
        if step.kind in ("many", "append"):
            if step.params:
                await conn.executemany(sql, step.params)
            return None
        if step.kind == "one":
            row = await conn.fetchrow(sql, *step.params)
            return None if row is None else tuple(row)
        if step.kind == "all":
            return [tuple(r) for r in await conn.fetch(sql, *step.params)]
        raise ValueError(f"unknown step kind {step.kind!r}")

    async def fetch_all(
        self, sql: str, params: Sequence[Any] = (), *, bulk: bool = False
    ) -> list[tuple[Any, ...]]:
        try:
            async with self._operation() as pool:
                if bulk:
                    return await self._bulk(sql, params)
                return [tuple(r) for r in await pool.fetch(numbered(sql), *params)]
        except asyncpg.CharacterNotInRepertoireError as exc:
            raise _no_nul(exc) from exc

    async def _bulk(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A bulk read on the query pool within query_timeout_s, waiting included. asyncpg
        sends PostgreSQL a cancel request when the awaiting task is cancelled (its HTTP
        client went away, or the timeout passed), so the statement stops in the server."""
        if self._query_pool is None:
            raise RuntimeError("database is not started")
        try:
            async with asyncio.timeout(self.query_timeout_s):
                rows = await self._query_pool.fetch(numbered(sql), *params)
        except (TimeoutError, asyncpg.QueryCanceledError):
            logger.info("query stopped after %.1f s (query_timeout_s)", self.query_timeout_s)
            raise TimedOut(
                f"the query did not finish within {self.query_timeout_s:g} s "
                "(query_timeout_s); narrow it with a time range or a device",
            ) from None
        except asyncio.CancelledError:
            logger.debug("query cancelled: its caller is gone")
            raise
        return [tuple(r) for r in rows]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        try:
            async with self._operation() as pool:
                row = await pool.fetchrow(numbered(sql), *params)
        except asyncpg.CharacterNotInRepertoireError as exc:
            raise _no_nul(exc) from exc
        return None if row is None else tuple(row)


def _no_nul(exc: Exception) -> Invalid:
    """PostgreSQL text cannot hold NUL (U+0000), which SQLite and JSON allow: the same input
    is then a 400 on either backend's faces, not a 500 on this one."""
    logger.info("refused text PostgreSQL cannot store: %s", exc)
    return Invalid("text may not contain the NUL character (U+0000)")


# -- telemetry batching ----------------------------------------------------------------------

_STAGING = "thinghub_telemetry_staging"
_STAGED_COLUMNS = (
    "account_id", "device_id", "project", "deployment", "enqueued_at", "body", "raw",
    "properties", "message_id", "correlation_id", "content_type", "content_encoding",
    "component", "source",
)  # fmt: skip
# ON COMMIT DELETE ROWS: every batch starts from an empty table, even after a rollback.
_STAGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (ord integer NOT NULL, account_id text, "
    "device_id text, project text, deployment text, enqueued_at bigint, body text, raw bytea, "
    "properties text, message_id text, correlation_id text, content_type text, "
    "content_encoding text, component text, source text) ON COMMIT DELETE ROWS"
)
_MOVE_STAGED = (
    f"INSERT INTO telemetry ({', '.join(_STAGED_COLUMNS)}) "
    f"SELECT {', '.join(_STAGED_COLUMNS)} FROM {_STAGING} ORDER BY ord "
    "ON CONFLICT DO NOTHING RETURNING device_id, message_id"
)
_SET_COLUMNS = ("account_id", "entity_id", "ts", "vals")
# Sorted keys, so concurrent batches (other nodes) lock latest rows in one order.
_UPSERT_LATEST = (
    "INSERT INTO latest_observations (account_id, entity_id, metric, ts, value) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[]) "
    "AS t(account_id, entity_id, metric, ts, value) ORDER BY entity_id, metric "
    "ON CONFLICT (entity_id, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value "
    "WHERE excluded.ts >= latest_observations.ts"
)

_Row = tuple[Any, ...]


@dataclass(slots=True)
class _Append:
    """One queued append call."""

    messages: Sequence[TelemetryMessage]
    observations: Sequence[Observation]
    future: asyncio.Future[list[bool]]


@dataclass(slots=True)
class _Batch:
    calls: list[_Append] = field(default_factory=list)
    messages: int = 0


def _staged_row(ord_: int, m: TelemetryMessage) -> _Row:
    # The same encoding as the SQL rows: JSON text body, else the raw bytes.
    body = body_text(m)
    return (
        ord_, m.account_id, m.device_id, m.project, m.deployment, to_us(m.enqueued_at), body,
        m.raw if m.body is None else None,
        orjson.dumps(m.properties).decode() if m.properties else None, m.message_id,
        m.correlation_id, m.content_type, m.content_encoding, m.component, m.source,
    )  # fmt: skip


def _settle(future: asyncio.Future[list[bool]], result: list[bool] | BaseException) -> None:
    if future.done():
        return  # the caller was cancelled; the write stands
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class PostgresTelemetryStore(SqlTelemetryStore):
    """The SQL telemetry area on PostgreSQL, with batched COPY for appends. Start it after
    the database and close it before (close writes what is still queued)."""

    db: PostgresDatabase

    def __init__(self, db: PostgresDatabase, *, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        super().__init__(db)
        db.add_session_setup(_STAGING_DDL)
        self.batch_max = db.batch_max
        self.flush_interval_s = flush_interval_s
        self._queue: list[_Append] = []
        self._queued_messages = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._batcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._closing = False
        self._batcher = asyncio.create_task(self._run_batcher(), name="postgres.telemetry")

    async def close(self) -> None:
        if self._batcher is not None:
            self._closing = True
            self._wakeup.set()
            self._full.set()
            await self._batcher  # writes everything still queued
            self._batcher = None

    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        if self._batcher is None or self._closing:
            raise RuntimeError("the telemetry writer is not started, or closing")
        if observations is None:
            observations = [o for m in messages for o in observations_of(m)]
        if not messages and not observations:
            return []
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(messages, observations, future))
        self._queued_messages += len(messages)
        self._wakeup.set()
        if self._queued_messages >= self.batch_max:
            self._full.set()
        return await future

    # -- the batcher task ------------------------------------------------------------------

    async def _run_batcher(self) -> None:
        was_idle = True
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                was_idle = True
                continue
            # A call that found the batcher idle waits a moment for company; calls that
            # queued up while a batch was being written go out at once.
            if was_idle and not self._closing and self._queued_messages < self.batch_max:
                try:
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._full.wait()
                except TimeoutError:
                    pass
            was_idle = False
            batch = self._take()
            try:
                await self._flush(batch.calls)
            except Exception as exc:  # a bug of ours: fail the batch, keep the task alive
                logger.exception("telemetry batch of %d messages failed", batch.messages)
                for call in batch.calls:
                    _settle(call.future, exc)

    def _take(self) -> _Batch:
        """Dequeue whole calls up to batch_max messages (a bigger call goes alone)."""
        batch = _Batch()
        taken = 0
        for call in self._queue:
            if batch.calls and batch.messages + len(call.messages) > self.batch_max:
                break
            batch.calls.append(call)
            batch.messages += len(call.messages)
            taken += 1
        del self._queue[:taken]
        self._queued_messages -= batch.messages
        if self._queued_messages < self.batch_max:
            self._full.clear()
        return batch

    async def _flush(self, calls: list[_Append]) -> None:
        try:
            results = await self._write_batch(calls)
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            # The server refused the batch, or a value did not encode: it was rolled back.
            if len(calls) == 1:
                logger.warning("telemetry write refused: %s", exc)
                _settle(calls[0].future, exc)
                return
            logger.warning("telemetry batch of %d calls refused (%s); writing each alone",
                           len(calls), exc)  # fmt: skip
            for call in calls:
                await self._flush([call])
            return
        except (OSError, asyncpg.InterfaceError) as exc:
            # The outcome is unknown (the connection may have died around COMMIT): fail the
            # callers, who retry; redelivered messages with ids are deduplicated.
            logger.warning("telemetry batch of %d calls failed: %s", len(calls), exc)
            for call in calls:
                _settle(call.future, exc)
            return
        for call, result in zip(calls, results, strict=True):
            _settle(call.future, result)

    async def _write_batch(self, calls: list[_Append]) -> list[list[bool]]:
        staged: list[_Row] = []
        # Per message: the index of its staged row, or None when an earlier message of this
        # batch has the same (device_id, message_id) and so it is a duplicate already.
        slots: list[list[int | None]] = []
        first_seen: set[tuple[str, str]] = set()
        for call in calls:
            call_slots: list[int | None] = []
            for m in call.messages:
                if m.message_id is not None:
                    key = (m.device_id, m.message_id)
                    if key in first_seen:
                        call_slots.append(None)
                        continue
                    first_seen.add(key)
                call_slots.append(len(staged))
                staged.append(_staged_row(len(staged), m))
            slots.append(call_slots)
        async with self.db.transaction() as conn:
            inserted: set[tuple[str, str]] = set()
            if staged:
                await conn.copy_records_to_table(
                    _STAGING, records=staged, columns=("ord", *_STAGED_COLUMNS)
                )
                rows = await conn.fetch(_MOVE_STAGED)
                inserted = {(r[0], r[1]) for r in rows if r[1] is not None}
            # Observations of messages that landed only: a duplicate adds none.
            observations: list[_Row] = []
            for call, call_slots in zip(calls, slots, strict=True):
                landed = {
                    (m.device_id, to_us(m.enqueued_at)): slot is not None
                    and (m.message_id is None or (m.device_id, m.message_id) in inserted)
                    for m, slot in zip(call.messages, call_slots, strict=True)
                }
                observations.extend(
                    (o.account_id, o.entity_id, o.metric, to_us(o.ts), o.value)
                    for o in call.observations
                    if landed.get((o.entity_id, to_us(o.ts)), True)
                )
            if observations:
                await conn.copy_records_to_table(
                    "observation_sets", records=sets_of(observations), columns=_SET_COLUMNS
                )
                await conn.execute(
                    _UPSERT_LATEST, *zip(*newest_per_metric(observations), strict=True)
                )

        def is_new(m: TelemetryMessage, slot: int | None) -> bool:
            if slot is None:
                return False  # an earlier message of this batch had its id
            return m.message_id is None or (m.device_id, m.message_id) in inserted

        return [
            [is_new(m, slot) for m, slot in zip(call.messages, call_slots, strict=True)]
            for call, call_slots in zip(calls, slots, strict=True)
        ]
