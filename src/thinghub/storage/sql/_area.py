"""What the SQL areas share: the database, writes that turn a duplicate key into Conflict,
newest-first paging, and deleting rows oldest first in batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from thinghub.domain.errors import Conflict
from thinghub.ports.store import EventQuery, Page, TelemetryQuery
from thinghub.storage.database import Database, DuplicateKeyError, Step
from thinghub.storage.sql._rows import END_US, decode_cursor, encode_cursor, to_us

__all__ = ["SqlArea", "account_term", "device_filter"]

T = TypeVar("T")


def account_term(device_id: str | None) -> str:
    """The account column as a query filtered by device should test it.

    `account_id || ''` is the same value, but no index can serve it, so the planner reads the
    device's own index (device_id, time) instead of walking every row of the account on
    (account_id, time) looking for the device's (which SQLite, without statistics, would
    otherwise pick for its order). Device ids are global, so the device picks few rows; the
    account test stays, for rows of an id another account held before.
    """
    return "account_id" if device_id is None else "account_id || ''"


def device_filter(
    sql: str, params: list[Any], column: str, device_id: str
) -> tuple[str, list[Any]]:
    """`column` is the device ("d/m": only that module) or, for "d", the device or a module of
    it: the keys from `d/` up to, not including, `d0` ('0' follows '/'), a range an index
    serves."""
    if "/" in device_id:
        return f"{sql} AND {column} = ?", [*params, device_id]
    return (
        f"{sql} AND ({column} = ? OR ({column} >= ? AND {column} < ?))",
        [*params, device_id, device_id + "/", device_id + "0"],
    )


class SqlArea:
    """One storage area over the shared Database driver (SQL written once, `?` placeholders,
    for SQLite and PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _write(self, *steps: Step, conflict: str | None = None) -> list[Any]:
        try:
            return await self.db.write(steps)
        except DuplicateKeyError as exc:
            raise Conflict(conflict or "already exists") from exc

    # -- newest-first pages (telemetry, events) ----------------------------------------------

    async def _page(
        self,
        sql: str,
        params: list[Any],
        query: TelemetryQuery | EventQuery,
        ts_column: str,
        ts_index: int,
        item: Callable[[Sequence[Any]], T],
    ) -> Page[T]:
        """Newest first, `query.limit` rows, and a cursor (time, id) when more remain."""
        sql, params = _scope_filters(sql, params, query, ts_column)
        sql += f" ORDER BY {ts_column} DESC, id DESC LIMIT ?"
        params.append(query.limit + 1)
        rows = await self.db.fetch_all(sql, params, bulk=True)
        cursor = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            cursor = encode_cursor(last[ts_index], last[0])
        return Page([item(r) for r in rows[: query.limit]], cursor)

    # -- deleting in batches (retention, one device's data) ----------------------------------
    # Rows go oldest first, `batch_rows` at a time, each batch its own write unit: the SQLite
    # writer is never held for more than one batch (ingest commits between batches), and on
    # PostgreSQL no transaction locks more than one batch of rows.

    async def _entities(self, table: str, device_id: str) -> list[str]:
        """The device and each module key (`device/module`) with rows in `table`, one index
        seek per key rather than a scan of the modules' rows."""
        if "/" in device_id:
            return [device_id]
        found = [device_id]
        low, above = device_id + "/", ">="
        while True:
            row = await self.db.fetch_one(
                f"SELECT min(device_id) FROM {table} WHERE device_id {above} ? AND device_id < ?",
                (low, device_id + "0"),
            )
            if row is None or row[0] is None:
                return found
            found.append(row[0])
            low, above = row[0], ">"

    async def _delete_batches(
        self, table: str, ts_column: str, where: str, params: list[Any], batch_rows: int
    ) -> int:
        """Delete the rows `where` ({ts} = `ts_column`) matches, oldest first.

        Each batch ends at the time of the batch_rows-th oldest row (found on an index that
        leads with the filter's equality columns and then the time), so it deletes that many
        rows plus any sharing its last microsecond; with fewer left, it deletes them all.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        match = where.format(ts=ts_column)
        sql = (
            f"DELETE FROM {table} WHERE {match} AND {ts_column} <= COALESCE("
            f"(SELECT {ts_column} FROM {table} WHERE {match} ORDER BY {ts_column} "
            "LIMIT 1 OFFSET ?), ?)"
        )
        total = 0
        while True:
            (deleted,) = await self._write(
                Step("exec", sql, (*params, *params, batch_rows - 1, END_US))
            )
            count = int(deleted)
            total += count
            if count < batch_rows:
                return total


def _scope_filters(
    sql: str, params: list[Any], query: TelemetryQuery | EventQuery, ts_column: str
) -> tuple[str, list[Any]]:
    for column, value in (("project", query.project), ("deployment", query.deployment)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    if query.device_id is not None:
        sql, params = device_filter(sql, params, "device_id", query.device_id)
    if query.since is not None:
        sql += f" AND {ts_column} >= ?"
        params.append(to_us(query.since))
    if query.until is not None:
        sql += f" AND {ts_column} <= ?"
        params.append(to_us(query.until))
    if query.cursor is not None:
        ts_us, row_id = decode_cursor(query.cursor)
        sql += f" AND ({ts_column} < ? OR ({ts_column} = ? AND id < ?))"
        params += [ts_us, ts_us, row_id]
    return sql, params
