"""A throwaway PostgreSQL server for tests, from the Debian `postgresql` package's binaries.

`postgres_server()` yields a DSN. With THINGHUB_TEST_POSTGRES_DSN set it yields that instead
of starting anything. Otherwise it runs initdb into a temporary directory (as the `postgres`
system user when we are root, because initdb and postgres refuse to run as root), starts the
server on a free 127.0.0.1 port with a private socket directory, creates the `thinghub`
database, and stops the server and removes the directory on exit. There is no skip: missing
binaries are an error, because `make test` installs them (scripts/install-deps.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

__all__ = [
    "DSN_ENV",
    "PostgresUnavailableError",
    "create_database",
    "drop_database",
    "fetch",
    "find_bindir",
    "postgres_server",
]

DSN_ENV = "THINGHUB_TEST_POSTGRES_DSN"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 30
DATABASE = "thinghub"
SYSTEM_USER = "postgres"


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server could be started for the tests."""


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, pg_ctl and postgres."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists() and (bindir / "postgres").exists():
            version = bindir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bindir))
    if not candidates:
        raise PostgresUnavailableError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install the Debian "
            f"package (`make deps` runs scripts/install-deps.sh) or set {DSN_ENV}"
        )
    return max(candidates)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise PostgresUnavailableError(
            f"running as root but there is no {SYSTEM_USER!r} system user to run PostgreSQL as"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailableError("running as root but `runuser` is not installed")
    return [runuser, "-u", SYSTEM_USER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            _as_server_user(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresUnavailableError(f"{what} took longer than {COMMAND_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise PostgresUnavailableError(
            f"{what} failed with exit code {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )


def _wait_ready(port: int, deadline: float, log: Path) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    raise PostgresUnavailableError(
        f"PostgreSQL did not accept connections within {START_TIMEOUT_S} s:\n{text}"
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the DSN of a PostgreSQL database (`thinghub` on a throwaway server).

    Raises:
        PostgresUnavailableError: no binaries, or the server did not come up in time.
    """
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        yield dsn
        return
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="thinghub-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    started = False
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        port = _free_port()
        # Durability is not under test here: fsync and synchronous_commit off for speed.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            "pg_ctl start",
        )
        started = True
        _wait_ready(port, time.monotonic() + START_TIMEOUT_S, log)
        _run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                DATABASE,
            ],
            "createdb",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailableError):
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(STOP_TIMEOUT_S),
                        "stop",
                    ],
                    "pg_ctl stop",
                )
        shutil.rmtree(root, ignore_errors=True)


def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on a connection of its own and return its rows as dicts.

    On a thread of its own with its own event loop: callers may already be inside one
    (pytest-asyncio's) or be plain synchronous tests.
    """
    rows: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=COMMAND_TIMEOUT_S)
        try:
            rows.extend(dict(row) for row in await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="pg-fetch")
    thread.start()
    thread.join(COMMAND_TIMEOUT_S * 2)
    if thread.is_alive():
        raise PostgresUnavailableError(f"{sql!r} took longer than {COMMAND_TIMEOUT_S * 2} s")
    if errors:
        raise errors[0]
    return rows


def create_database(dsn: str, prefix: str) -> str:
    """CREATE DATABASE <prefix>_<random> on dsn's server; the new database's DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    fetch(dsn, f'CREATE DATABASE "{name}"')
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def drop_database(dsn: str) -> None:
    """DROP DATABASE of a DSN from create_database (connecting to the server's `postgres`)."""
    name = urlsplit(dsn).path.lstrip("/")
    fetch(
        urlsplit(dsn)._replace(path="/postgres").geturl(),
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


def main(argv: list[str]) -> int:
    """`python -m tests.pg ENV_NAME COMMAND...`: run COMMAND with ENV_NAME set to the DSN of a
    throwaway PostgreSQL server (e.g. the e2e suite on PostgreSQL, `make e2e-postgres`)."""
    if len(argv) < 2:
        print("usage: python -m tests.pg ENV_NAME COMMAND...", file=sys.stderr)
        return 2
    with postgres_server() as dsn:
        return subprocess.run(argv[1:], env={**os.environ, argv[0]: dsn}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
