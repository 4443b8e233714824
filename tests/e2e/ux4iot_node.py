"""Run the real ux4iot Node clients (tests/e2e/ux4iot_client) from pytest.

`ensure_node_modules()` installs the pinned npm packages from the lockfile (`npm ci`) when
they are missing; `NodeDriver` runs driver_v2.js (ux4iot-react 2.0.2's Ux4iot class) or
driver_v4.js (the 4.x protocol over socket.io-client 4 + axios) as a subprocess with a
deadline, sends it JSON commands on stdin and hands back its JSON lines:

    with NodeDriver("v2", {"connectionString": cs, "timeoutMs": 30_000}) as drv:
        drv.expect(lambda e: e["event"] == "state" and e["connected"])
        drv.send({"cmd": "subscribeTelemetry", "deviceId": dev, "telemetryKey": "t"})
        line = drv.expect(lambda e: e["event"] == "telemetry", timeout=10)

Node and npm come from Debian (scripts/install-deps.sh installs them when missing).
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CLIENT_DIR = Path(__file__).resolve().parent / "ux4iot_client"
DRIVERS = {"v2": CLIENT_DIR / "driver_v2.js", "v4": CLIENT_DIR / "driver_v4.js"}
# What the drivers require; a folder missing any of them is installed again.
REQUIRED = (
    "ux4iot-react/lib/Ux4iot.js",
    "socket.io-client/package.json",
    "axios/package.json",
)
NPM_CI_TIMEOUT_S = 300.0  # a cold cache downloads ~100 packages
DEFAULT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

_install_lock = threading.Lock()

Line = dict[str, Any]


def node_binary() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise RuntimeError("node is not installed: run scripts/install-deps.sh")
    return node


def ensure_node_modules() -> Path:
    """Install the pinned packages with `npm ci` unless they are there; the client folder.

    Raises:
        RuntimeError: npm is missing, fails, or takes longer than NPM_CI_TIMEOUT_S.
    """
    modules = CLIENT_DIR / "node_modules"
    with _install_lock:
        if all((modules / item).exists() for item in REQUIRED):
            return CLIENT_DIR
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not installed: run scripts/install-deps.sh")
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=CLIENT_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"npm ci took longer than {NPM_CI_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            raise RuntimeError(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        missing = [item for item in REQUIRED if not (modules / item).exists()]
        if missing:
            raise RuntimeError(f"npm ci left out {missing}")
    return CLIENT_DIR


class NodeDriver:
    """One driver process. Lines are parsed as they come; `expect` waits for one with a
    deadline, `lines` holds every line seen so far (for assertions on order)."""

    def __init__(self, version: str, scenario: dict[str, Any]) -> None:
        if version not in DRIVERS:
            raise ValueError(f"version must be one of {sorted(DRIVERS)}, got {version!r}")
        if "timeoutMs" not in scenario:
            raise ValueError("the scenario needs timeoutMs: the driver must end by itself")
        self.version = version
        self.scenario = scenario
        self.lines: list[Line] = []
        self._queue: queue.Queue[Line | None] = queue.Queue()
        self._cursor = 0
        self._stderr: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> NodeDriver:
        ensure_node_modules()
        self._proc = subprocess.Popen(
            [node_binary(), str(DRIVERS[self.version]), json.dumps(self.scenario)],
            cwd=CLIENT_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it -------------------------------------------------------------------------

    def send(self, command: dict[str, Any]) -> None:
        proc = self._running()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()

    def expect(self, predicate: Callable[[Line], bool], timeout: float = DEFAULT_TIMEOUT_S) -> Line:
        """The next line (after the last one `expect` returned) that satisfies `predicate`.

        Raises:
            AssertionError: none within `timeout` seconds, or the driver ended first; the
                message holds every line and the driver's stderr.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if predicate(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout} s\n{self.transcript()}")
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                if self._cursor >= len(self.lines):
                    raise AssertionError(f"the driver ended\n{self.transcript()}")
                continue
            self.lines.append(item)

    def event(self, name: str, timeout: float = DEFAULT_TIMEOUT_S, **fields: Any) -> Line:
        """`expect` a line with this `event` whose top-level fields equal `fields`."""
        return self.expect(
            lambda line: (
                line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
            ),
            timeout,
        )

    def drain(self) -> list[Line]:
        """Every line that has arrived so far, without waiting (also moves the cursor)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.lines.append(item)
        self._cursor = len(self.lines)
        return list(self.lines)

    def transcript(self) -> str:
        self.drain_nowait()
        out = [json.dumps(line) for line in self.lines]
        return "stdout:\n  " + "\n  ".join(out) + "\nstderr:\n  " + "  ".join(self._stderr[-50:])

    def drain_nowait(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.lines.append(item)

    def iter_lines(self, timeout: float) -> Iterator[Line]:
        """Yield lines as they come until the driver exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if item is None:
                return
            self.lines.append(item)
            self._cursor = len(self.lines)
            yield item

    # -- ending it -----------------------------------------------------------------------------

    def stop(self) -> int | None:
        """Ask it to exit, then end it if it does not; its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"cmd": "exit"})
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        return proc.returncode

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise RuntimeError("use NodeDriver as a context manager")
        return self._proc

    def _read_stdout(self) -> None:
        proc = self._running()
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for raw in proc.stdout:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    self._queue.put(json.loads(raw))
                except json.JSONDecodeError:
                    self._queue.put({"event": "unparsed", "text": raw})
        self._queue.put(None)

    def _read_stderr(self) -> None:
        proc = self._running()
        assert proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for raw in proc.stderr:
                self._stderr.append(raw)
