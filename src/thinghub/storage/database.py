"""The database driver contract the SQL store runs on: atomic write units and reads.

A write unit is a list of steps executed atomically; the SQLite driver group-commits many
units in one transaction, the PostgreSQL driver runs each in its own transaction.

Reads are point reads (by key: what authentication and device login need) or `bulk` reads
(telemetry, event and observation queries that may scan many rows). A driver runs bulk reads
apart from point reads, so they can never take all the connections or threads point reads
need, stops them after its query timeout (raising `TimedOut`), and stops the statement in the
database when the awaiting task is cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["Database", "DuplicateKeyError", "Step"]

StepKind = Literal["exec", "each", "many", "append", "landed", "one", "all"]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a write unit.

    kind: exec -> rowcount; each -> the statement once per row of `params`, a rowcount each;
    many -> the same as one executemany (faster, no per-row counts, returns None);
    append -> `many` for a plain INSERT that no unique key can refuse (rows that only add):
    every row is stored or the step raises, as `many`; a driver may run it its cheapest way
    (SQLite: without a statement journal, see sqlite._append_all);
    landed -> `params` are (row, i) pairs: `many` with the rows whose i-th rowcount in the
    unit's first step (an `each`) is not 0, i.e. whose owner was stored (returns None);
    one -> the first row or None; all -> every row.
    """

    kind: StepKind
    sql: str
    params: Sequence[Any] = ()


class DuplicateKeyError(Exception):
    """A unique constraint refused the write."""


class Database(Protocol):
    dialect: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def write(self, steps: Sequence[Step]) -> list[Any]: ...
    async def fetch_all(
        self, sql: str, params: Sequence[Any] = (), *, bulk: bool = False
    ) -> list[tuple[Any, ...]]: ...
    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
