"""Migrations 0008 and 0009 on SQLite and PostgreSQL, on a database with observation rows in
it (the 0007 schema): after the upgrade the store reads the same latest values and
observations (0009 moves the rows into observation sets: equal times of one metric kept
apart, every double exact), the purge deletes only the account's old rows, and a downgrade
gives back the same rows."""

from __future__ import annotations

import contextlib
import sqlite3

from tests.contract.conftest import _in_thread
from tests.contract.test_migrations import Database, database
from thinghub.domain.telemetry import Observation
from thinghub.storage.migrate import downgrade, upgrade

__all__ = ["database"]  # the fixture, shared with test_migrations

S = 1_000_000  # microseconds per second
# account, entity, metric, ts (s), value: two accounts, a module, equal times kept apart
OBSERVATIONS = [
    ("acc-1", "d1", "t", 100, 1.0),
    ("acc-1", "d1", "t", 200, 2.0),
    ("acc-1", "d1", "t", 200, 2.5),
    ("acc-1", "d1", "t", 300, 3.0),
    ("acc-1", "d1", "h", 150, 40.0),
    ("acc-1", "d1/m", "t", 120, 7.0),
    ("acc-2", "d2", "t", 100, 9.0),
    ("acc-2", "d2", "t", 400, 10.0),
    # doubles whose 15-digit text is another double
    ("acc-1", "d1", "x", 100, 0.1 + 0.2),
    ("acc-1", "d1", "x", 500, 5e-324),
    ("acc-1", "d1", "x", 500, 1.7976931348623157e308),
]


def _latest() -> dict[tuple[str, str], tuple[str, int, float]]:
    newest: dict[tuple[str, str], tuple[str, int, float]] = {}
    for account, entity, metric, ts, value in OBSERVATIONS:
        if (entity, metric) not in newest or ts >= newest[(entity, metric)][1]:
            newest[(entity, metric)] = (account, ts, value)
    return newest


def _fill(database: Database) -> None:
    marks = "?, ?, ?, ?, ?" if database.marker == "?" else "$1, $2, $3, $4, $5"
    for account, entity, metric, ts, value in OBSERVATIONS:
        database.run(
            f"INSERT INTO observations (account_id, entity_id, metric, ts, value) VALUES ({marks})",
            (account, entity, metric, ts * S, value),
        )
    for (entity, metric), (account, ts, value) in _latest().items():
        database.run(
            "INSERT INTO latest_observations (account_id, entity_id, metric, ts, value) "
            f"VALUES ({marks})",
            (account, entity, metric, ts * S, value),
        )


async def _read(database: Database) -> tuple[dict[str, Observation], list[Observation], int]:
    stores = database.stores()
    await stores.start()
    try:
        latest = await stores.telemetry.latest("acc-1", "d1")
        series = await stores.telemetry.observations("acc-1", "d1", "t", None, None, 10)
        streamed = [
            row
            async for page in stores.telemetry.stream_observations(
                "acc-1", "d1", "t", None, None, 2
            )
            for row in page
        ]
        # Rows of equal times come in no defined order: compare them sorted.
        return latest, sorted(series, key=lambda o: (-o.ts, o.value)), len(streamed)
    finally:
        await stores.close()


async def _purge(database: Database, account: str, before_s: float) -> list[Observation]:
    stores = database.stores()
    await stores.start()
    try:
        await stores.telemetry.purge(account, before_s, 1)
        out = []
        for acc, entity, metric in (("acc-1", "d1", "t"), ("acc-1", "d1", "h"),
                                    ("acc-1", "d1", "x"), ("acc-1", "d1/m", "t"),
                                    ("acc-2", "d2", "t")):  # fmt: skip
            out += await stores.telemetry.observations(acc, entity, metric, None, None, 10)
        latest = await stores.telemetry.latest("acc-1", "d1")
        assert set(latest) == {"t", "h", "x"}  # latest values stay
        return out
    finally:
        await stores.close()


def _raw(database: Database) -> list[tuple[str, str, str, int, float]]:
    """The observation rows as stored (0007's table), sorted."""
    rows = database.rows("SELECT account_id, entity_id, metric, ts, value FROM observations")
    return sorted(rows)  # type: ignore[arg-type]


def _sqlite_schema(url: str, name: str) -> str:
    path = url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return "" if row is None else str(row[0])


async def test_observations_survive_0008_and_0009_both_ways(database: Database) -> None:
    _in_thread(lambda: upgrade(database.url, "0007"))
    _fill(database)
    stored = _raw(database)
    assert stored == sorted((a, e, m, t * S, v) for a, e, m, t, v in OBSERVATIONS)
    _in_thread(lambda: upgrade(database.url))
    latest, series, streamed = await _read(database)
    assert {m: (o.ts, o.value) for m, o in latest.items()} == {
        "t": (300, 3.0), "h": (150, 40.0), "x": (500, 1.7976931348623157e308)
    }  # fmt: skip
    assert [(o.ts, o.value) for o in series] == [(300, 3.0), (200, 2.0), (200, 2.5), (100, 1.0)]
    assert streamed == 4  # both rows at 200 s, though a page holds two
    stores = database.stores()
    await stores.start()
    try:
        exact = await stores.telemetry.observations("acc-1", "d1", "x", None, None, 10)
        module = await stores.telemetry.observations("acc-1", "d1/m", "t", None, None, 10)
    finally:
        await stores.close()
    assert sorted(o.value for o in exact) == [5e-324, 0.1 + 0.2, 1.7976931348623157e308]
    assert [(o.ts, o.value) for o in module] == [(120, 7.0)]
    if database.marker == "?":
        assert "WITHOUT ROWID" in _sqlite_schema(database.url, "latest_observations")
        assert _sqlite_schema(database.url, "ix_observations_account") == ""
        assert _sqlite_schema(database.url, "observations") == ""
    _in_thread(lambda: downgrade(database.url, "0007"))
    assert _raw(database) == stored
    if database.marker == "?":
        assert "WITHOUT ROWID" not in _sqlite_schema(database.url, "latest_observations")
        assert _sqlite_schema(database.url, "ix_observations_account") != ""


async def test_purge_after_0009_takes_only_the_accounts_old_rows(database: Database) -> None:
    _in_thread(lambda: upgrade(database.url, "0007"))
    _fill(database)
    _in_thread(lambda: upgrade(database.url))
    left = await _purge(database, "acc-1", 200.5)
    assert sorted((o.account_id, o.entity_id, o.metric, o.ts) for o in left) == [
        ("acc-1", "d1", "t", 300),
        ("acc-1", "d1", "x", 500),
        ("acc-1", "d1", "x", 500),
        ("acc-2", "d2", "t", 100),  # another account's old row stays
        ("acc-2", "d2", "t", 400),
    ]
