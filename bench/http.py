"""HTTP throughput benchmark: thinghub's device read and device ingest against bare routes.

Theory of operation: one run starts a real `thinghub serve` on a fresh data directory,
registers the devices through /v1, then starts the reference (bench.bare_app): bare Starlette
routes for the same two calls, served by thinghub's own HTTP server (its protocol class, limits
and uvicorn options), checking the same credentials and giving the same answers, byte for
byte. Both are subprocesses on ephemeral ports, driven by wrk. Exactly two ratios come out,
each thinghub point measured right after its reference at the same connection count, so the
background load of a shared machine mostly cancels:

    GET     GET /v1/devices/{id} with a bearer API token -> 200, the device object
            (bare: the token's SHA-256 checked, the same body from memory)
    ingest  POST /devices/{id}/messages/events?api-version=2020-09-30 with the device's SAS
            token (the Azure IoT Hub device REST call) -> 204 once the message is committed
            (bare: the SAS token verified, the body read and parsed, nothing stored)

With `rounds` > 1 the four points are measured that many times, and each ratio's median over
the rounds is the figure. Before measuring, each server answers each call once and the two
answers must be the same (status, headers but `date`, body). wrk's own CPU time (from the
rusage of the finished child) and the server's (from /proc) are recorded per point, as shares
of one core: wrk shares the machine's cores with the servers.

A run fails loudly (BenchError) on any non-2xx answer or socket error, and when thinghub stores
fewer telemetry messages than wrk saw acknowledged: acknowledged must mean persisted. Each
ingest run posts to its own fresh device so that count is exact; it may exceed the
acknowledgements by the requests wrk abandoned in flight when its time ran out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import signal
import statistics
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
    "cpu_ratios",
    "median_ratios",
    "ratios",
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
    round: int = 0  # which round of the run (see run_http)
    wrk_cpu: float | None = None  # wrk's CPU time over the point, in cores (1.0 = one core)
    server_cpu: float | None = None  # the server's, likewise
    server_us_per_request: float | None = None  # the server's CPU time per answer, in µs

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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    scenario: Scenario,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    body: str = INGEST_BODY,
    server_pid: int | None = None,
) -> WrkResult:
    """Run wrk once against a scenario and parse what it measured; with `server_pid`, the
    server's CPU share over the run too (wrk's is always measured).

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
    children_before = _children_cpu_s()
    server_before = None if server_pid is None else _cpu_s(server_pid)
    started = time.monotonic()
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=duration_s + WRK_TIMEOUT_S + 30,
    )
    elapsed = time.monotonic() - started
    # wrk is the only child reaped meanwhile (the servers run until the end of the run).
    wrk_cpu = (_children_cpu_s() - children_before) / elapsed
    server_cpu_s = None if server_before is None else _cpu_s(server_pid or 0) - server_before
    server_cpu = None if server_cpu_s is None else server_cpu_s / elapsed
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
        wrk_cpu=round(wrk_cpu, 3),
        server_cpu=None if server_cpu is None else round(server_cpu, 3),
        server_us_per_request=(
            None
            if server_cpu_s is None or not raw["requests"]
            else round(server_cpu_s / raw["requests"] * 1e6, 1)
        ),
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
def bare_server(work_dir: Path, config: dict[str, Any]) -> Iterator[_ServerProcess]:
    """The reference app (bench.bare_app) on an ephemeral port, answering from `config`."""
    server = _ServerProcess(
        "bare",
        [sys.executable, "-m", "bench.bare_app"],
        "bare ready ",
        env={**_clean_env(), "BENCH_BARE": json.dumps(config)},
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


def _same_answer(name: str, hub: httpx.Response, bare: httpx.Response) -> None:
    """The reference must answer what thinghub answers: status, headers but date, body."""

    def shown(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() != "date")
        return r.status_code, headers, r.content

    if shown(hub) != shown(bare):
        raise BenchError(f"{name}: the reference answers {shown(bare)}, thinghub {shown(hub)}")


def ratios(results: Sequence[WrkResult]) -> dict[tuple[str, int, int], float]:
    """thinghub req/s over the bare endpoint's: same method, connection count and round."""
    bare = {
        (r.method, r.connections, r.round): r.requests_per_s for r in results if r.server == "bare"
    }
    out: dict[tuple[str, int, int], float] = {}
    for r in results:
        ref = bare.get((r.method, r.connections, r.round))
        if ref:
            out[(r.scenario, r.connections, r.round)] = r.requests_per_s / ref
    return out


def cpu_ratios(results: Sequence[WrkResult]) -> dict[tuple[str, int, int], float]:
    """The bare server's CPU per answer over thinghub's (same call, connections and round):
    what the req/s ratio would be if both had a core to themselves. Steadier than req/s on a
    machine other work shares."""
    bare = {
        (r.method, r.connections, r.round): r.server_us_per_request
        for r in results
        if r.server == "bare"
    }
    out: dict[tuple[str, int, int], float] = {}
    for r in results:
        ref = bare.get((r.method, r.connections, r.round))
        if ref and r.server_us_per_request:
            out[(r.scenario, r.connections, r.round)] = ref / r.server_us_per_request
    return out


def median_ratios(
    results: Sequence[WrkResult], *, cpu: bool = False
) -> dict[tuple[str, int], float]:
    """Each thinghub scenario's ratio (`cpu`: its CPU ratio) at each connection count, the
    median over the rounds."""
    by_point: dict[tuple[str, int], list[float]] = {}
    for (scenario, conns, _round), value in (cpu_ratios if cpu else ratios)(results).items():
        if scenario.startswith("thinghub"):
            by_point.setdefault((scenario, conns), []).append(value)
    return {point: statistics.median(values) for point, values in by_point.items()}


def run_http(
    *,
    connections: Sequence[int],
    duration_s: float,
    threads: int,
    warmup_s: float,
    rounds: int = 1,
    progress: Callable[[str], None] = print,
) -> list[WrkResult]:
    """Run every scenario at every connection count, `rounds` times; see the module docstring.

    Returns:
        One WrkResult per (round, scenario, connections), in the order measured.

    Raises:
        BenchError: a server did not start, the answers differ, or a measurement is invalid.
    """
    results: list[WrkResult] = []
    admin_token = "adm_" + secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="thinghub-bench-") as tmp,
        thinghub_server(Path(tmp), admin_token) as hub,
        httpx.Client(
            base_url=hub.ready["http"]["url"],
            timeout=60,
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as api,
    ):
        url = hub.ready["http"]["url"]
        hub_hostname = hub.ready.get("hub_hostname", "localhost")
        reader = _create_device(api, "bench-read")
        reader_body = api.get(f"/v1/devices/{reader['id']}")
        # A fresh device for each warm-up and each measured ingest point, so the stored count
        # belongs to the measured run alone.
        points = [(r, c) for r in range(rounds) for c in connections]
        ingest_devices = {
            (r, c, kind): _create_device(api, f"bench-{kind}-r{r}-c{c}")
            for r, c in points
            for kind in ("warmup", "ingest")
        }
        config = {
            "token_sha256": hashlib.sha256(admin_token.encode()).hexdigest(),
            "devices": {reader["id"]: reader_body.text},
            "keys": {
                d["id"]: [
                    d["credentials"]["symmetricKey"]["primaryKey"],
                    d["credentials"]["symmetricKey"]["secondaryKey"],
                ]
                for d in ingest_devices.values()
            },
            "hub_hostname": hub_hostname,
        }
        with bare_server(Path(tmp), config) as bare:
            base = f"http://{bare.ready['host']}:{bare.ready['port']}"
            get_path = f"/v1/devices/{reader['id']}"
            bearer = f"Bearer {admin_token}"
            bare_get = Scenario("bare GET", "bare", "GET", base + get_path, bearer)
            hub_get = Scenario("thinghub GET", "thinghub", "GET", url + get_path, bearer)
            pids = {"bare": bare.pid, "thinghub": hub.pid}
            _check_answers(bare_get, hub_get, ingest_devices[(0, connections[0], "warmup")],
                           base, url, hub_hostname)  # fmt: skip

            def measure(
                scenario: Scenario, conns: int, round_: int, count_for: str | None = None
            ) -> None:
                result = run_wrk(
                    scenario,
                    connections=conns,
                    threads=threads,
                    duration_s=duration_s,
                    server_pid=pids[scenario.server],
                )
                result = WrkResult(**{**asdict(result), "round": round_})
                note = ""
                if count_for is not None:
                    stored = count_telemetry(api, count_for)
                    if stored < result.requests:
                        raise BenchError(
                            f"thinghub acknowledged {result.requests} messages but stored "
                            f"only {stored}: an acknowledged message was lost"
                        )
                    result = _with_stored(result, stored)
                    note = f"  (acked {result.requests}, stored {stored})"
                progress(
                    f"  {scenario.name:<14} c={conns:<4} {result.requests_per_s:>9.1f} req/s"
                    f"  p50 {result.latency_p50_ms:.2f} ms  p99 {result.latency_p99_ms:.2f} ms"
                    f"  cpu: server {result.server_cpu or 0:.2f}, wrk {result.wrk_cpu or 0:.2f}"
                    + note
                )
                results.append(result)

            def warm(scenario: Scenario, conns: int) -> None:
                if warmup_s > 0:
                    run_wrk(scenario, connections=conns, threads=threads, duration_s=warmup_s)

            # Each thinghub point runs right after its reference, so both see the same
            # background load; the ratio is taken within that pair.
            for round_, conns in points:
                if rounds > 1:
                    progress(f" round {round_ + 1} of {rounds}")
                warm(bare_get, conns)
                measure(bare_get, conns, round_)
                warm(hub_get, conns)
                measure(hub_get, conns, round_)

                warmup = ingest_devices[(round_, conns, "warmup")]
                device = ingest_devices[(round_, conns, "ingest")]
                bare_post = _ingest("bare POST", "bare", base, device, hub_hostname)
                warm(bare_post, conns)
                measure(bare_post, conns, round_)
                warm(_ingest("thinghub POST", "thinghub", url, warmup, hub_hostname), conns)
                hub_post = _ingest("thinghub POST", "thinghub", url, device, hub_hostname)
                measure(hub_post, conns, round_, count_for=device["id"])
    return results


def _check_answers(
    bare_get: Scenario,
    hub_get: Scenario,
    device: dict[str, Any],
    bare_base: str,
    hub_base: str,
    hub_hostname: str,
) -> None:
    """Both servers give the same answers to the measured calls (the ingest on `device`, a
    warm-up device: what it stores is not counted)."""
    with httpx.Client(timeout=30) as client:

        def call(scenario: Scenario) -> httpx.Response:
            headers = {"Authorization": scenario.authorization or ""}
            if scenario.method == "GET":
                return client.get(scenario.url, headers=headers)
            headers["Content-Type"] = "application/json"
            return client.post(scenario.url, headers=headers, content=INGEST_BODY)

        _same_answer("GET", call(hub_get), call(bare_get))
        hub_post = _ingest("thinghub POST", "thinghub", hub_base, device, hub_hostname)
        bare_post = _ingest("bare POST", "bare", bare_base, device, hub_hostname)
        _same_answer("ingest", call(hub_post), call(bare_post))
        wrong = Scenario("GET", "", "GET", hub_get.url, "Bearer thk_not-a-token")
        _same_answer(
            "GET with an unknown token",
            call(wrong),
            call(Scenario("GET", "", "GET", bare_get.url, wrong.authorization)),
        )


def _ingest(
    name: str, server: str, base: str, device: dict[str, Any], hub_hostname: str
) -> Scenario:
    return Scenario(
        name,
        server,
        "POST",
        f"{base}/devices/{device['id']}/messages/events?api-version={API_VERSION}",
        authorization=_sas_for(device, hub_hostname),
    )


def _with_stored(result: WrkResult, stored: int) -> WrkResult:
    return WrkResult(**{**asdict(result), "stored": stored})
