"""The memory backend's tables: plain dicts of rows, shared by every area of one backend.

Rows are the SQL backends' tuples (storage/sql/_rows.py: microsecond times, JSON text), so
the memory backend answers exactly as they do: times at microsecond precision, JSON bodies
copied (a caller changing what it got changes nothing stored), old bodies too deep to render
read back as their text. Every method runs without awaiting, so each is atomic on the event
loop, as a write unit is in a database.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from thinghub.domain.errors import Conflict
from thinghub.ports.store import EventQuery, Page, TelemetryQuery
from thinghub.storage.sql._rows import decode_cursor, encode_cursor, to_us

__all__ = [
    "MemoryArea",
    "Row",
    "Tables",
    "check_batch_rows",
    "matches_device",
    "not_null",
    "page",
    "unique",
]

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass
class Tables:
    """One database's worth of rows, keyed as the SQL tables are (primary keys)."""

    accounts: dict[str, Row] = field(default_factory=dict)  # id -> ACCOUNT_COLUMNS
    users: dict[str, Row] = field(default_factory=dict)  # id -> USER_COLUMNS
    tokens: dict[tuple[str, str], Row] = field(default_factory=dict)  # (account, id) -> TOKEN
    projects: dict[tuple[str, str], int] = field(default_factory=dict)  # -> created_at (µs)
    deployments: dict[tuple[str, str, str], int] = field(default_factory=dict)
    devices: dict[str, Row] = field(default_factory=dict)  # id -> DEVICE_COLUMNS
    twins: dict[str, Row] = field(default_factory=dict)  # (device_id, version, desired, reported)
    telemetry: dict[int, Row] = field(default_factory=dict)  # id -> TELEMETRY_COLUMNS
    message_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # -> telemetry id
    observations: dict[int, Row] = field(default_factory=dict)  # (account, entity, metric, ts, v)
    latest: dict[tuple[str, str], Row] = field(default_factory=dict)  # -> (account, ts, value)
    events: dict[int, Row] = field(default_factory=dict)  # id -> event row
    commands: dict[str, Row] = field(default_factory=dict)  # id -> COMMAND_COLUMNS
    c2d: dict[str, Row] = field(default_factory=dict)  # id -> c2d row
    sessions: dict[str, str] = field(default_factory=dict)  # client id -> JSON text
    documents: dict[tuple[str, str, str], Row] = field(default_factory=dict)  # -> (body, µs)
    products: dict[str, Row] = field(default_factory=dict)  # id -> PRODUCT_COLUMNS
    registrations: dict[str, Row] = field(default_factory=dict)  # id -> REGISTRATION_COLUMNS
    files: dict[tuple[str, str], Row] = field(default_factory=dict)  # (account, key) -> FILE
    console_sessions: dict[str, Row] = field(default_factory=dict)  # key -> console session
    console_failures: dict[str, set[int]] = field(default_factory=dict)  # key -> times (µs)
    # Row ids, increasing per table as SQL's serial columns do.
    telemetry_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    observation_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


class MemoryArea:
    """One storage area over the shared tables."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables


def unique(taken: bool, message: str | None = None) -> None:
    """A unique key a database would refuse: Conflict, as the SQL areas raise."""
    if taken:
        raise Conflict(message or "already exists")


def not_null(table: str, row: Row, columns: dict[str, int]) -> None:
    """A NOT NULL column a database would refuse: the write fails (programmer misuse)."""
    for name, index in columns.items():
        if row[index] is None:
            raise ValueError(f"{table}.{name} may not be null")


def check_batch_rows(batch_rows: int) -> None:
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")


def matches_device(device_id: str, wanted: str) -> bool:
    """`wanted` "d/m" is that module only; "d" is the device and its modules ("d/...")."""
    if "/" in wanted:
        return device_id == wanted
    return device_id == wanted or device_id.startswith(wanted + "/")


def page(
    rows: Iterable[tuple[int, Row]],
    query: TelemetryQuery | EventQuery,
    ts_index: int,
    item: Callable[[Row], T],
) -> Page[T]:
    """Newest first (time, then id), `query.limit` items, and a cursor when more remain.

    `rows` are (id, row) of the query's account; a row starts (account_id, device_id,
    project, deployment) and has its time (µs) at `ts_index`.
    """
    after = None if query.cursor is None else decode_cursor(query.cursor)
    since = None if query.since is None else to_us(query.since)
    until = None if query.until is None else to_us(query.until)

    def wanted(row_id: int, row: Row) -> bool:
        ts = row[ts_index]
        return (
            (query.project is None or row[2] == query.project)
            and (query.deployment is None or row[3] == query.deployment)
            and (query.device_id is None or matches_device(row[1], query.device_id))
            and (since is None or ts >= since)
            and (until is None or ts <= until)
            and (after is None or (ts, row_id) < after)
        )

    found: Sequence[tuple[int, Row]] = sorted(
        ((row_id, row) for row_id, row in rows if wanted(row_id, row)),
        key=lambda found: (found[1][ts_index], found[0]),
        reverse=True,
    )[: query.limit + 1]
    cursor = None
    if len(found) > query.limit:
        last_id, last = found[query.limit - 1]
        cursor = encode_cursor(last[ts_index], last_id)
    return Page([item(row) for _, row in found[: query.limit]], cursor)
