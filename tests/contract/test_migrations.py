"""Migration 0005 on SQLite and PostgreSQL: IoT Central App Builder tokens stored before the
core role `builder` existed (role operator, the App Builder role id as face role) become
builders; nothing else changes; a downgrade turns builders back into operators; and a row the
migration missed still reads as a builder."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import _in_thread
from tests.pg import create_database, drop_database, fetch
from thinghub.domain.model import Role
from thinghub.domain.roles import CENTRAL_BUILDER_ROLE_ID
from thinghub.ports import Stores
from thinghub.storage.migrate import downgrade, upgrade
from thinghub.storage.postgres import PostgresDatabase
from thinghub.storage.sql import sql_stores
from thinghub.storage.sqlite import SqliteDatabase

OPERATOR_ID = "ae2c9854-393b-4f97-8c42-479d70ce626e"
INSERT_TOKEN = (
    "INSERT INTO api_tokens (id, account_id, secret_hash, role, label, face, face_role, "
    "created_at, expires_at, project) VALUES ({})"
)
# id, role, face, face_role: what each row is before the migration
ROWS = [
    ("central-builder", "operator", "central", CENTRAL_BUILDER_ROLE_ID),
    ("central-operator", "operator", "central", OPERATOR_ID),
    ("v1-operator", "operator", "st", None),
    ("v1-admin", "admin", "st", None),
]


class Database:
    """One backend's database: run SQL on it, migrate it, open stores on it."""

    def __init__(self, url: str, run: Callable[[str, tuple[Any, ...]], None], marker: str):
        self.url = url
        self.run = run
        self.marker = marker  # the driver's placeholder style: "?" or "$"

    def insert_token(self, token_id: str, role: str, face: str, face_role: str | None) -> None:
        if self.marker == "?":
            marks = ", ".join("?" * 10)
        else:
            marks = ", ".join(f"${n}" for n in range(1, 11))
        values = (token_id, "acc-1", f"hash-{token_id}", role, "", face, face_role, 1, None, None)
        self.run(INSERT_TOKEN.format(marks), values)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a query without parameters, read straight from the database."""
        if self.marker == "?":
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return [tuple(r) for r in conn.execute(sql)]
        return [tuple(r.values()) for r in fetch(self.url, sql)]

    def stores(self) -> Stores:
        if self.marker == "?":
            return sql_stores(SqliteDatabase(Path(self.url.removeprefix("sqlite:///"))))
        return sql_stores(PostgresDatabase(self.url))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        path = tmp_path / "thinghub.db"

        def run_sqlite(sql: str, args: tuple[Any, ...]) -> None:
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(sql, args)

        yield Database(f"sqlite:///{path}", run_sqlite, "?")
        return
    url = create_database(request.getfixturevalue("postgres_dsn"), "thinghub_migration")

    def run_postgres(sql: str, args: tuple[Any, ...]) -> None:
        fetch(url, sql, *args)

    try:
        yield Database(url, run_postgres, "$")
    finally:
        drop_database(url)


async def roles_of(database: Database, *token_ids: str) -> list[Role]:
    stores = database.stores()
    await stores.start()
    try:
        tokens = [await stores.credentials.get_token("acc-1", t) for t in token_ids]
    finally:
        await stores.close()
    assert all(t is not None for t in tokens)
    return [t.role for t in tokens if t is not None]


async def test_central_builder_tokens_become_builders(database: Database) -> None:
    _in_thread(lambda: upgrade(database.url, "0004"))
    for row in ROWS:
        database.insert_token(*row)
    _in_thread(lambda: upgrade(database.url))
    ids = [row[0] for row in ROWS]
    assert await roles_of(database, *ids) == [Role.BUILDER, Role.OPERATOR, Role.OPERATOR,
                                              Role.ADMIN]  # fmt: skip
    # A builder made on /v1 after the migration, then back to 0004: builders are operators.
    database.insert_token("v1-builder", "builder", "st", None)
    _in_thread(lambda: downgrade(database.url, "0004"))
    database.insert_token("late-builder", "operator", "central", CENTRAL_BUILDER_ROLE_ID)
    # A row the migration never saw (written by an older node) still reads as a builder.
    assert await roles_of(database, "v1-builder", "late-builder", "central-builder") == [
        Role.OPERATOR,
        Role.BUILDER,
        Role.BUILDER,
    ]
