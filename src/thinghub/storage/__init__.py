"""Storage adapters: SQL on SQLite (embedded default) or PostgreSQL (scale-out), one schema;
and an in-memory backend for fast tests. Each implements every area of `thinghub.ports.store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thinghub.ports.store import Stores

if TYPE_CHECKING:
    from thinghub.config import Settings

__all__ = ["open_stores"]


def open_stores(settings: Settings) -> Stores:
    """The configured backend, not yet started: SQLite in the data directory, or PostgreSQL."""
    from thinghub.storage.sql import sql_stores

    if settings.is_postgres:
        from thinghub.storage.postgres import PostgresDatabase, PostgresTelemetryStore

        db = PostgresDatabase(
            settings.database_url,
            batch_max=settings.batch_max_rows,
            query_pool_size=settings.query_readers,
            query_timeout_s=settings.query_timeout_s,
        )
        writer = PostgresTelemetryStore(db, flush_interval_s=settings.commit_interval_ms / 1000)
        return sql_stores(db, telemetry=writer)
    from thinghub.storage.sqlite import SqliteDatabase

    return sql_stores(
        SqliteDatabase(
            settings.data_dir / "thinghub.db",
            batch_max=settings.batch_max_rows,
            query_readers=settings.query_readers,
            query_timeout_s=settings.query_timeout_s,
        )
    )
