"""Several nodes starting at once on one PostgreSQL database migrate it once (issue 14): the
migrations take an advisory lock, so the others wait and then find the schema at head."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.pg import create_database, drop_database, fetch
from thinghub.storage.migrate import upgrade

pytestmark = pytest.mark.postgres

NODES = 4


def test_nodes_starting_together_migrate_once(postgres_dsn: str) -> None:
    database = create_database(postgres_dsn, "thinghub_migrate")
    try:
        # Processes, as nodes are (Alembic's context is one per process).
        code = f"from thinghub.storage.migrate import upgrade; upgrade({database!r})"
        nodes = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
            for _ in range(NODES)
        ]
        for node in nodes:
            _, err = node.communicate(timeout=120)
            assert node.returncode == 0, err  # without the lock, CREATE TABLE races
        versions = fetch(database, "SELECT version_num FROM alembic_version")
        assert len(versions) == 1
        upgrade(database)  # at head: nothing to do, and no error
    finally:
        drop_database(database)
