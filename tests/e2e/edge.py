"""A real `thinghub edge` subprocess and a pseudo-terminal instrument, for black-box tests."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import ServerProcess

START_TIMEOUT_S = 30.0


class Instrument:
    """The far end of a serial line: a pty master; the edge opens the slave's path."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        # Keep the slave open here too: a pty whose every slave fd is closed hangs up (EIO).

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_exactly(self, size: int, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        out = b""
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"instrument got {out!r}, expected {size} bytes")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                out += os.read(self.master, size - len(out))
        return out

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def gateway_with_module(client: httpx.Client, module: str = "port1") -> dict[str, Any]:
    """A gateway (isIoTEdgeCapable) with one module, made on /v1 as an operator would."""
    response = client.post(
        "/v1/devices",
        json={
            "name": "edge gateway",
            "project": "edge_project",
            "deployment": "edge_deployment",
            "isIoTEdgeCapable": True,
        },
    )
    assert response.status_code == 200, response.text
    gateway = response.json()
    response = client.post(f"/v1/devices/{gateway['id']}/modules", json={"moduleId": module})
    assert response.status_code == 200, response.text
    return {
        "id": gateway["id"],
        "key": gateway["credentials"]["symmetricKey"]["primaryKey"],
        "module": module,
        "module_key": response.json()["credentials"]["symmetricKey"]["primaryKey"],
    }


def edge_toml(instrument: Instrument, gateway: dict[str, Any], extra: str = "") -> str:
    return f"""
[board]
kind = "simulated"

[cloud]
reconnect_max_s = 1

[ports.1]
COMM_TYPE = "RS232"
DEVICE = "{instrument.path}"
BAUD_RATE = 9600
DELIMITERS_HEX = ["0D0A"]
REGEX = '^T=(?P<temperature>-?[0-9.]+)(?: H=(?P<humidity>[0-9.]+))?'
MODULE = "{gateway["module"]}"
MODULE_KEY = "{gateway["module_key"]}"
{extra}
"""


class EdgeProcess:
    """`python -m thinghub edge` connected to a cloud; reads its ready line."""

    def __init__(
        self,
        work: Path,
        cloud: ServerProcess,
        gateway: dict[str, Any],
        toml: str,
        *args: str,
        mqtt_port: int | None = None,
        use_connection_string: bool = True,
    ) -> None:
        self.work = work
        self.cloud = cloud
        self.gateway = gateway
        self.toml = toml
        self.args = args
        self.mqtt_port = mqtt_port or cloud.mqtt_port
        self.use_connection_string = use_connection_string
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: dict[str, Any] = {}
        self.log_path = work / "edge.log"

    def start(self) -> EdgeProcess:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "edge.toml").write_text(self.toml)
        connection = (
            f"HostName=localhost;DeviceId={self.gateway['id']};"
            f"SharedAccessKey={self.gateway['key']}"
        )
        env = dict(os.environ)
        if self.use_connection_string:
            env["THINGHUB_EDGE_CONNECTION_STRING"] = connection
        cmd = [
            sys.executable, "-m", "thinghub", "edge",
            "--cloud", f"mqtts://127.0.0.1:{self.mqtt_port}",
            "--cloud-ca", self.cloud.ca_file,
            "--listen", "127.0.0.1:0",
            "--config", str(self.work / "edge.toml"),
            "--data-dir", str(self.work / "data"),
            "--log-level", "info",
            *self.args,
        ]  # fmt: skip
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        ready: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            try:
                for line in self.proc.stdout:
                    if line.startswith("thinghub-edge ready ") and not ready:
                        ready.append(line)
            except (ValueError, OSError):
                pass

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready:
            if self.proc.poll() is not None:
                self._close()
                raise RuntimeError(f"edge exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"edge not ready in {START_TIMEOUT_S}s:\n{self.log()}")
            time.sleep(0.02)
        self.addresses = json.loads(ready[0][len("thinghub-edge ready ") :])
        return self

    @property
    def url(self) -> str:
        return str(self.addresses["http"]["url"])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def status(self) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.get("/api/status").json())

    def wait_status(self, check: Any, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"edge status never matched: {status}\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-6000:]
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._close()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()


def telemetry_bodies(
    cloud: ServerProcess, gateway_id: str, module: str, expected: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The module's telemetry bodies on /v1, oldest first, once there are `expected` of them."""
    deadline = time.monotonic() + timeout_s
    with cloud.client() as client:
        while True:
            rows: list[dict[str, Any]] = []
            params: dict[str, Any] = {"deviceID": gateway_id, "moduleID": module, "limit": 1000}
            while True:  # newest first, 1000 a page
                response = client.get("/v1/telemetries", params=params)
                assert response.status_code == 200, response.text
                rows += response.json()
                token = response.headers.get("x-continuation-token")
                if not token:
                    break
                params["continuationToken"] = token
            if len(rows) >= expected:
                return [row["body"] for row in reversed(rows)]
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(rows)} of {expected} messages on /v1: {rows[:3]}")
            time.sleep(0.1)
