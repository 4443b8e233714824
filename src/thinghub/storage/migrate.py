"""Schema migrations: Alembic, run programmatically at start-up (upgrade to head)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["MigrationStep", "downgrade", "sqlalchemy_url", "upgrade"]

# Told after each migration: (revisions done, revisions to do in all, the one just done).
MigrationStep = Callable[[int, int, str], None]

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(database_url: str) -> str:
    """Turn our URL (sqlite:///path, postgresql://...) into SQLAlchemy's driver form."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url[len(prefix) :]
    return database_url


def _config(database_url: str, on_step: MigrationStep | None = None) -> Config:
    config = Config()
    config.attributes["on_step"] = on_step
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(
    database_url: str, revision: str = "head", *, on_step: MigrationStep | None = None
) -> None:
    """Bring the schema to `revision`, by default the newest (blocking; call it off the event
    loop).

    `on_step` is called once before the first migration (0 done) and after each one, with
    how many of how many are done, so a command can show progress; nothing to do: no call.
    """
    command.upgrade(_config(database_url, on_step), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the schema back to `revision` (blocking; for tests of the migrations and for
    going back to an older release)."""
    command.downgrade(_config(database_url), revision)
