"""Shared pytest configuration: the session's PostgreSQL server (contract and e2e tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.pg import PostgresUnavailableError, postgres_server


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a database on a PostgreSQL server that lives for the session (tests/pg.py).

    Tests make databases of their own on it (tests.pg.create_database).
    """
    with contextlib.ExitStack() as stack:
        try:
            dsn = stack.enter_context(postgres_server())
        except PostgresUnavailableError as exc:
            pytest.fail(f"PostgreSQL for the tests: {exc}", pytrace=False)
        yield dsn
