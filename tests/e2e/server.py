"""A real `thinghub serve` subprocess on ephemeral ports, for black-box tests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

START_TIMEOUT_S = 60.0
# Set to a PostgreSQL DSN to run every e2e server on PostgreSQL (a database of its own per
# data directory, so a restart sees the same data): `make e2e-postgres` does.
POSTGRES_ENV = "THINGHUB_E2E_POSTGRES_DSN"
_DATABASES: dict[Path, str] = {}


def _database_for(data_dir: Path) -> str:
    from tests.pg import create_database

    if data_dir not in _DATABASES:
        _DATABASES[data_dir] = create_database(os.environ[POSTGRES_ENV], "thinghub_e2e")
    return _DATABASES[data_dir]


class ServerProcess:
    """Starts the server, reads its `thinghub ready {json}` line, stops it on demand."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        admin_token: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        """`data_dir` also holds the server's log. With `cwd`, the server runs there with no
        --data-dir, as a user's first `thinghub serve` does (data in `cwd/thinghub-data`)."""
        self.data_dir = data_dir
        self.cwd = cwd
        if "--database" in args:
            self.database: str | None = args[list(args).index("--database") + 1]
        elif os.environ.get(POSTGRES_ENV) and cwd is None:
            self.database = _database_for(data_dir)
            args = (*args, "--database", self.database)
        else:
            self.database = None  # SQLite in the data directory
        self.args = list(args)
        self.admin_token = admin_token or "adm_" + secrets.token_urlsafe(24)
        self.env = {**os.environ, "THINGHUB_ADMIN_TOKEN": self.admin_token, **(env or {})}
        self.env.pop("THINGHUB_CONFIG", None)
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: dict[str, Any] = {}
        self.log_path = data_dir / "server.log"
        self._lines: list[str] = []

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "thinghub",
            "serve",
            *(() if self.cwd else ("--data-dir", str(self.data_dir))),
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
            # Parallel servers never share the iTwin socket ports (4200, 4201 by default).
            "--itwin-ws-port",
            "0",
            "--itwin-tcp-port",
            "0",
            "--log-level",
            "info",
            *self.args,
        ]
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        ready: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            try:
                for line in self.proc.stdout:
                    self._lines.append(line)
                    if line.startswith("thinghub ready ") and not ready:
                        ready.append(line)
            except (ValueError, OSError):
                pass  # the pipe was closed by stop()/kill()

        threading.Thread(target=read, daemon=True).start()
        while not ready:
            if self.proc.poll() is not None:
                self._close_handles()
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready in {START_TIMEOUT_S}s:\n{self.log()}")
            time.sleep(0.02)
        self.addresses = json.loads(ready[0][len("thinghub ready ") :])
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-8000:]
        except OSError:
            return ""

    @property
    def http_url(self) -> str:
        return str(self.addresses["http"]["url"])

    @property
    def mqtt_port(self) -> int:
        return int(self.addresses["mqtt"]["port"])

    @property
    def ca_file(self) -> str:
        return str(self.addresses["ca_file"])

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.http_url, headers=headers, timeout=30, **kwargs)

    def cli(self, *args: str) -> str:
        """Run `thinghub <args> --data-dir <dir>` (on the server's database) and return its
        stdout."""
        database = ("--database", self.database) if self.database else ()
        out = subprocess.run(
            [sys.executable, "-m", "thinghub", *args, "--data-dir", str(self.data_dir), *database],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"thinghub {' '.join(args)} failed: {out.stderr}")
        return out.stdout.strip()

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._close_handles()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = self.log_path.read_text(errors="replace").splitlines()[-80:]
            raise AssertionError(
                f"the server did not stop within {timeout} s of SIGTERM; its log ends:\n"
                + "\n".join(tail)
            ) from None
        self._close_handles()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_handles()

    def _close_handles(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()


S = TypeVar("S", bound=ServerProcess)


@contextlib.contextmanager
def running(proc: S) -> Iterator[S]:
    """Start a server; on exit stop it and check it shut down cleanly, with no traceback."""
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"server exited {code} on SIGTERM:\n{proc.log()}"
    assert "Traceback" not in proc.log(), proc.log()
