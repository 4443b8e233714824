"""Alembic environment: runs the migrations on SQLite (sync) or PostgreSQL (asyncpg).

On PostgreSQL the migrations run in one transaction that first takes the advisory lock
MIGRATION_LOCK: when several nodes start at once, one migrates and the others wait, then find
the schema at head and do nothing.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
MIGRATION_LOCK = 0x7468696E67687562  # "thinghub": the advisory lock key of migrations


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if url.startswith("postgresql+asyncpg"):
    asyncio.run(_run_async())
else:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
    engine.dispose()
