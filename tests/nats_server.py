"""A throwaway NATS server for tests, from the Debian `nats-server` package.

`NatsServer` runs `nats-server` with JetStream (thinghub keeps device ownership, node leases
and locks in JetStream key-value buckets) on a free 127.0.0.1 port, its storage in a temporary
directory, and stops it on exit. It can be restarted on the same port and storage (a NATS
restart mid-test). There is no skip: a missing binary is an error, because `make test`
installs it (scripts/install-deps.sh).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "NatsUnavailableError"]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class NatsUnavailableError(RuntimeError):
    """No nats-server could be started for the tests."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise NatsUnavailableError(
                "no nats-server on PATH: install the Debian package `nats-server` "
                "(`make deps` runs scripts/install-deps.sh)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "nats.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.workdir / "jetstream"),
                "-n",
                "thinghub-test",
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsUnavailableError(
                    f"nats-server exited with {self.proc.returncode}: "
                    + (self.workdir / "nats.log").read_text()[-2000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise NatsUnavailableError(f"nats-server did not listen on {self.port} in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
