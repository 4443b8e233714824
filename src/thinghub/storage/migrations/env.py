"""Alembic environment: runs the migrations on SQLite (sync) or PostgreSQL (asyncpg).

On PostgreSQL the migrations run in one transaction that first takes the advisory lock
MIGRATION_LOCK: when several nodes start at once, one migrates and the others wait, then find
the schema at head and do nothing.
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.runtime.migration import MigrationInfo
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
MIGRATION_LOCK = 0x7468696E67687562  # "thinghub": the advisory lock key of migrations


def _run(connection: Connection) -> None:
    on_step = config.attributes.get("on_step")
    done: list[str] = []
    total = 0

    def applied(*, ctx: object, step: MigrationInfo, heads: object, run_args: object) -> None:
        done.append(str(step.up_revision_id or ""))
        if on_step is not None:
            on_step(len(done), total, done[-1])

    # Alembic calls each callback with keywords (ctx, step, heads, run_args); its type hint
    # says positional, hence the ignore.
    callbacks = (applied,) if on_step is not None else ()
    context.configure(
        connection=connection,
        target_metadata=None,
        render_as_batch=True,
        on_version_apply=callbacks,  # type: ignore[arg-type]
    )
    if on_step is not None:
        current = context.get_context().get_current_revision()
        total = sum(1 for _ in context.script.iterate_revisions("heads", current or "base"))
        if current is None:
            total = sum(1 for _ in context.script.walk_revisions())
        if total:
            on_step(0, total, "")
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
