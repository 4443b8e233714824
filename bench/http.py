"""HTTP throughput benchmark: thinghub's ingest and device read against a bare Starlette app.

Theory of operation: one run starts two servers as subprocesses on ephemeral ports, the
reference (bench.bare_app, a Starlette hello-world served with thinghub's uvicorn options) and
a real `thinghub serve` on a fresh data directory, and drives each with wrk. Every thinghub
figure is reported as a ratio to the bare endpoint of the same method measured in the same run
at the same connection count, right before it, so the figures compare across machines and the
background load of a shared CI box mostly cancels. wrk and the servers share the machine's
cores; nothing is pinned.

Scenarios, each after a short warm-up at the same connection count:
    bare GET        GET /hello                      -> 200 {"hello": "world"}
    bare POST       POST /ingest (JSON body)        -> 204, body read and dropped
    thinghub POST   POST /devices/{id}/messages/events?api-version=2020-09-30 with a SAS token
                    (the Azure IoT Hub device REST API) -> 204 once the message is committed
    thinghub GET    GET /v1/devices/{id} with a bearer API token -> 200, the device object

A run fails loudly (BenchError) on any non-2xx answer or socket error, and when thinghub stores
fewer telemetry messages than wrk saw acknowledged: acknowledged must mean persisted. Each
ingest run posts to its own fresh device so that count is exact; it may exceed the
acknowledgements by the requests wrk abandoned in flight when its time ran out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from thinghub.security import sas

__all__ = [
    "INGEST_BODY",
    "BenchError",
    "Scenario",
    "WrkResult",
    "run_http",
    "wrk_version",
]

WRK_DIR = Path(__file__).parent / "wrk"
REPO_ROOT = Path(__file__).resolve().parent.parent  # where `python -m bench.bare_app` resolves
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
INGEST_BODY = '{"temperature": 21.5}'
# The Azure device REST API version thinghub's ingest accepts (docs/devices.md).
API_VERSION = "2020-09-30"
# Long enough that no token expires during a run, short enough to be an honest device token.
SAS_TTL_S = 3600
# Page size when counting stored telemetry; thinghub's default page_max.
COUNT_PAGE = 1000
# wrk's own per-request timeout; a request slower than this counts as a timeout error.
WRK_TIMEOUT_S = 10


class BenchError(RuntimeError):
    """The benchmark could not run, or what it measured is not a valid result."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One wrk target: which server, which method, which URL and how to authenticate."""

    name: str
    server: str  # "bare" or "thinghub"
    method: str  # "GET" or "POST"
    url: str
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured. Latencies in milliseconds."""

    scenario: str
    server: str
    method: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    stored: int | None = None  # thinghub ingest only: telemetry messages found afterwards

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- wrk -------------------------------------------------------------------------------------

_RESULT_RE = re.compile(r"^BENCH_RESULT (\{.*\})$", re.MULTILINE)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_RPS_RE = re.compile(r"Requests/sec:\s*([0-9.]+)")


def wrk_version() -> str:
    """wrk's version line, e.g. `wrk debian/4.1.0-3+b2 [epoll]`."""
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BenchError("wrk is not installed: run `bash scripts/install-deps.sh bench`") from exc
    # wrk prints its version and then its usage, and exits 1.
    first = (out.stdout or out.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0].strip() if first else "wrk (unknown version)"


def run_wrk(
    scenario: Scenario,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    body: str = INGEST_BODY,
) -> WrkResult:
    """Run wrk once against a scenario and parse what it measured.

    Raises:
        BenchError: wrk failed, printed no result, or saw any non-2xx answer or socket error.
    """
    script = WRK_DIR / ("post.lua" if scenario.method == "POST" else "get.lua")
    env = {**os.environ, "BENCH_AUTHORIZATION": scenario.authorization or "", "BENCH_BODY": body}
    cmd = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        f"--script={script}",
        scenario.url,
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=duration_s + WRK_TIMEOUT_S + 30,
    )
    if out.returncode != 0:
        raise BenchError(f"{scenario.name}: wrk exited {out.returncode}: {out.stderr.strip()}")
    found = _RESULT_RE.search(out.stdout)
    if found is None:
        raise BenchError(f"{scenario.name}: no BENCH_RESULT line from wrk:\n{out.stdout}")
    raw = json.loads(found.group(1))
    errors = {k: int(v) for k, v in raw["errors"].items()}
    text_non_2xx = _NON_2XX_RE.search(out.stdout)
    non_2xx = int(text_non_2xx.group(1)) if text_non_2xx else 0
    if non_2xx != errors["status"]:
        raise BenchError(
            f"{scenario.name}: wrk's text says {non_2xx} non-2xx responses, its "
            f"done hook says {errors['status']}"
        )
    socket_errors = {k: v for k, v in errors.items() if k != "status"}
    if non_2xx or any(socket_errors.values()):
        raise BenchError(
            f"{scenario.name} at {connections} connections: {non_2xx} non-2xx/3xx "
            f"responses, socket errors {socket_errors}:\n{out.stdout}"
        )
    duration = raw["duration_us"] / 1e6
    rps = raw["requests"] / duration
    text_rps = _RPS_RE.search(out.stdout)
    if text_rps is not None and abs(float(text_rps.group(1)) - rps) > 0.01 * rps + 1:
        raise BenchError(f"{scenario.name}: wrk says {text_rps.group(1)} req/s, computed {rps}")
    lat = raw["latency_us"]
    return WrkResult(
        scenario=scenario.name,
        server=scenario.server,
        method=scenario.method,
        connections=connections,
        threads=threads,
        duration_s=round(duration, 3),
        requests=int(raw["requests"]),
        requests_per_s=round(rps, 1),
        latency_mean_ms=round(lat["mean"] / 1000, 3),
        latency_p50_ms=lat["p50"] / 1000,
        latency_p90_ms=lat["p90"] / 1000,
        latency_p99_ms=lat["p99"] / 1000,
        latency_max_ms=lat["max"] / 1000,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


# -- server subprocesses ---------------------------------------------------------------------


class _ServerProcess:
    """A server subprocess that prints `<prefix> {json}` once it listens; SIGTERM stops it."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        ready_prefix: str,
        *,
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.cmd = list(cmd)
        self.ready_prefix = ready_prefix
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.ready: dict[str, Any] = {}

    def start(self) -> None:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )
        log.close()
        lines: list[str] = []
        stdout = self.proc.stdout
        if stdout is None:
            raise BenchError(f"{self.name}: no stdout pipe")

        def read() -> None:
            # Keep draining stdout so the server never blocks on a full pipe.
            for line in stdout:
                if line.startswith(self.ready_prefix) and not lines:
                    lines.append(line)

        self._reader = threading.Thread(target=read, name=f"{self.name}.stdout", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not lines:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name} not ready in {START_TIMEOUT_S}s:\n{self.log()}")
            time.sleep(0.02)
        self.ready = json.loads(lines[0][len(self.ready_prefix) :])

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} is not running")
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-8000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
                    raise BenchError(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S}s") from None
        finally:
            if self._reader is not None:
                self._reader.join(5)  # at EOF once the process is gone
            if self.proc.stdout is not None and (
                self._reader is None or not self._reader.is_alive()
            ):
                self.proc.stdout.close()


def _clean_env() -> dict[str, str]:
    # Defaults only: no THINGHUB_* setting or config file from the caller's shell leaks in.
    return {k: v for k, v in os.environ.items() if not k.startswith("THINGHUB_")}


@contextlib.contextmanager
def bare_server(work_dir: Path) -> Iterator[_ServerProcess]:
    """The reference app (bench.bare_app) on an ephemeral port."""
    server = _ServerProcess(
        "bare",
        [sys.executable, "-m", "bench.bare_app"],
        "bare ready ",
        env=_clean_env(),
        log_path=work_dir / "bare.log",
        cwd=REPO_ROOT,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def thinghub_server(work_dir: Path, admin_token: str) -> Iterator[_ServerProcess]:
    """`thinghub serve` on ephemeral ports, fresh data directory, zero config otherwise."""
    data_dir = work_dir / "thinghub-data"
    env = {**_clean_env(), "THINGHUB_ADMIN_TOKEN": admin_token}
    cmd = [
        sys.executable,
        "-m",
        "thinghub",
        "serve",
        "--data-dir",
        str(data_dir),
        "--http-port",
        "0",
        "--mqtt-port",
        "0",
        "--itwin-ws-port",
        "0",
        "--itwin-tcp-port",
        "0",
    ]
    server = _ServerProcess(
        "thinghub", cmd, "thinghub ready ", env=env, log_path=work_dir / "thinghub.log"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- thinghub set-up and checks --------------------------------------------------------------


def _create_device(api: httpx.Client, name: str) -> dict[str, Any]:
    r = api.post(
        "/v1/devices",
        json={"name": name, "project": "bench", "deployment": "bench", "isIoTEdgeCapable": False},
    )
    if r.status_code not in (200, 201):
        raise BenchError(f"POST /v1/devices: {r.status_code} {r.text}")
    device: dict[str, Any] = r.json()
    return device


def _sas_for(device: dict[str, Any], hub_hostname: str) -> str:
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    return sas.sign(key, f"{hub_hostname}/devices/{device['id']}", int(time.time()) + SAS_TTL_S)


def count_telemetry(api: httpx.Client, device_id: str) -> int:
    """How many telemetry messages thinghub stored for a device, by paging /v1/telemetries."""
    total = 0
    params: dict[str, str | int] = {"deviceID": device_id, "limit": COUNT_PAGE}
    while True:
        r = api.get("/v1/telemetries", params=params)
        if r.status_code != 200:
            raise BenchError(f"GET /v1/telemetries: {r.status_code} {r.text}")
        items = r.json()
        if any(item.get("deviceID") != device_id for item in items):
            raise BenchError(f"GET /v1/telemetries?deviceID={device_id} returned other devices")
        total += len(items)
        cursor = r.headers.get("x-continuation-token")
        if not cursor or not items:
            return total
        params["continuationToken"] = cursor


# -- the run ---------------------------------------------------------------------------------


def run_http(
    *,
    connections: Sequence[int],
    duration_s: float,
    threads: int,
    warmup_s: float,
    progress: Callable[[str], None] = print,
) -> list[WrkResult]:
    """Run every scenario at every connection count; see the module docstring.

    Returns:
        One WrkResult per (scenario, connections), in the order measured.

    Raises:
        BenchError: a server did not start, or a measurement is invalid.
    """
    results: list[WrkResult] = []
    admin_token = "adm_" + secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="thinghub-bench-") as tmp,
        bare_server(Path(tmp)) as bare,
        thinghub_server(Path(tmp), admin_token) as hub,
        httpx.Client(
            base_url=hub.ready["http"]["url"],
            timeout=60,
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as api,
    ):
        base = f"http://{bare.ready['host']}:{bare.ready['port']}"
        url = hub.ready["http"]["url"]
        hub_hostname = hub.ready.get("hub_hostname", "localhost")
        reader = _create_device(api, "bench-read")
        bare_get = Scenario("bare GET", "bare", "GET", f"{base}/hello")
        bare_post = Scenario("bare POST", "bare", "POST", f"{base}/ingest")
        hub_get = Scenario(
            "thinghub GET",
            "thinghub",
            "GET",
            f"{url}/v1/devices/{reader['id']}",
            authorization=f"Bearer {admin_token}",
        )

        def measure(scenario: Scenario, conns: int, count_for: str | None = None) -> None:
            result = run_wrk(scenario, connections=conns, threads=threads, duration_s=duration_s)
            note = ""
            if count_for is not None:
                stored = count_telemetry(api, count_for)
                if stored < result.requests:
                    raise BenchError(
                        f"thinghub acknowledged {result.requests} messages but stored only "
                        f"{stored}: an acknowledged message was lost"
                    )
                result = _with_stored(result, stored)
                note = f"  (acked {result.requests}, stored {stored})"
            progress(
                f"  {scenario.name:<14} c={conns:<4} {result.requests_per_s:>9.1f} req/s"
                f"  p50 {result.latency_p50_ms:.2f} ms  p99 {result.latency_p99_ms:.2f} ms" + note
            )
            results.append(result)

        def warm(scenario: Scenario, conns: int) -> None:
            if warmup_s > 0:
                run_wrk(scenario, connections=conns, threads=threads, duration_s=warmup_s)

        # Each thinghub point runs right after its reference, so both see the same background
        # load; the ratio is taken within that pair.
        for conns in connections:
            warm(bare_get, conns)
            measure(bare_get, conns)
            warm(hub_get, conns)
            measure(hub_get, conns)

            warm(bare_post, conns)
            measure(bare_post, conns)
            # A fresh device for the warm-up and another for the measured run, so the stored
            # count belongs to the measured run alone.
            warm(_ingest(url, _create_device(api, f"bench-warmup-c{conns}"), hub_hostname), conns)
            device = _create_device(api, f"bench-ingest-c{conns}")
            measure(_ingest(url, device, hub_hostname), conns, count_for=device["id"])
    return results


def _ingest(url: str, device: dict[str, Any], hub_hostname: str) -> Scenario:
    return Scenario(
        "thinghub POST",
        "thinghub",
        "POST",
        f"{url}/devices/{device['id']}/messages/events?api-version={API_VERSION}",
        authorization=_sas_for(device, hub_hostname),
    )


def _with_stored(result: WrkResult, stored: int) -> WrkResult:
    return WrkResult(**{**asdict(result), "stored": stored})
