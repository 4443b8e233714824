"""Schema migrations: Alembic, run programmatically at start-up (upgrade to head)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["sqlalchemy_url", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(database_url: str) -> str:
    """Turn our URL (sqlite:///path, postgresql://...) into SQLAlchemy's driver form."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url[len(prefix) :]
    return database_url


def upgrade(database_url: str) -> None:
    """Bring the schema to the newest revision (blocking; call it off the event loop)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(config, "head")
