"""Tests for thinghub.storage.sqlite's multi-row inserts: a "many" step of an INSERT of one
row of placeholders goes many rows a statement, with the result executemany gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from thinghub.storage.database import DuplicateKeyError, Step
from thinghub.storage.sqlite import MULTI_ROW_PARAMS, SqliteDatabase, _insert_many, _multi_row

UPSERT = (
    "INSERT INTO latest (k, ts, v) VALUES (?, ?, ?) "
    "ON CONFLICT (k) DO UPDATE SET ts = excluded.ts, v = excluded.v WHERE excluded.ts >= latest.ts"
)
SCHEMA = "CREATE TABLE latest (k TEXT PRIMARY KEY, ts INTEGER, v REAL)"


def rows(count: int) -> list[tuple[str, int, float]]:
    """Rows whose keys repeat (within one statement and across statements), with times
    that go back and forth, so the upsert's order and condition matter."""
    return [(f"k{i % 37}", (i * 7919) % 1000, float(i)) for i in range(count)]


def table(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT k, ts, v FROM latest ORDER BY k").fetchall()


@pytest.mark.parametrize("count", [0, 1, 2, MULTI_ROW_PARAMS // 3, 2500])
def test_an_upsert_many_rows_a_statement_ends_as_executemany_ends(count: int) -> None:
    plain, multi = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for conn in (plain, multi):
        conn.execute(SCHEMA)
    plain.executemany(UPSERT, rows(count))
    _insert_many(multi, UPSERT, rows(count))
    assert table(multi) == table(plain)
    assert len(table(multi)) == min(count, 37)


def test_only_an_insert_of_one_row_of_placeholders_is_rewritten() -> None:
    plan = _multi_row(UPSERT)
    assert plan is not None
    sql, per = plan
    assert per == MULTI_ROW_PARAMS // 3
    assert sql.count("?") == per * 3 <= MULTI_ROW_PARAMS
    assert sql.endswith(UPSERT[UPSERT.index(" ON CONFLICT") :])
    assert _multi_row("INSERT INTO t (a, b) SELECT ?, ? WHERE EXISTS (SELECT 1)") is None
    assert _multi_row("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET b = ?") is None
    assert _multi_row("INSERT INTO t (a, b) VALUES (?, 1)") is None
    assert _multi_row("UPDATE t SET a = ? WHERE b = ?") is None


async def test_a_failing_row_fails_its_unit_and_nothing_of_it_lands(tmp_path: Path) -> None:
    """A duplicate key in the middle of a multi-row statement fails the unit as executemany
    would: the unit's rows before it are rolled back too."""
    db = SqliteDatabase(tmp_path / "t.db")
    await db.start()
    try:
        await db.write([Step("exec", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", ())])
        bad = (
            [(i, "x") for i in range(1000)] + [(5, "again")] + [(i, "y") for i in range(1000, 1100)]
        )
        with pytest.raises(DuplicateKeyError, match="UNIQUE"):
            await db.write([Step("many", "INSERT INTO t (id, v) VALUES (?, ?)", bad)])
        good = [(i, "z") for i in range(1200)]
        await db.write([Step("many", "INSERT INTO t (id, v) VALUES (?, ?)", good)])
        assert await db.fetch_all("SELECT count(*), min(v), max(v) FROM t") == [(1200, "z", "z")]
    finally:
        await db.close()
