"""MQTT benchmarks: thinghub's device listener against mosquitto, with the same load generator.

Theory of operation: the load generator is thinghub.simulator (our own codec, one asyncio
loop in this process, uvloop when installed), the same code against both brokers; every
device keeps at most 20 QoS 1 messages in flight. The reference is a mosquitto subprocess
(bench.mosquitto: TLS, password auth, no persistence), thinghub a real `thinghub serve` on a
fresh data directory (SQLite, zero config), both on ephemeral ports.

Scenarios:
    throughput  N devices (100, 1,000) connect over TLS (SAS tokens for thinghub, a password
                each for mosquitto), then publish QoS 1 telemetry as fast as PUBACKs allow for
                `duration_s` after a short warm-up; msgs/s = PUBACKs / (run + drain time),
                PUBACK latency p50/p99, and the CPU seconds both sides spent. Each thinghub
                point runs right after mosquitto's at the same device count, and its devices'
                stored telemetry must grow by at least the PUBACKs counted (acknowledged means
                committed).
    idle        10,000 devices connect and stay idle (keep-alive 60 s); the broker's VmRSS
                after minus before, per connection. Each broker is freshly started for it
                (thinghub after the devices are registered) and warmed with 100 connections
                first, so one-time costs are not counted per connection.
    methods     a few devices answering direct methods at once; N sequential
                `POST /v1/devices/{id}/method` over one keep-alive HTTP connection, round
                trip p50/p99 (thinghub only: mosquitto has no equivalent).

A run fails loudly (BenchError) when a device cannot connect, a message is refused or lost, or
a method call answers anything but 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench._table import text_table
from bench.http import BenchError, _ServerProcess, thinghub_server
from bench.mosquitto import mosquitto_server
from thinghub.security import sas
from thinghub.simulator import DeviceSpec, SimStats, SimulatedDevice, connect_all, run_devices

__all__ = [
    "IdleResult",
    "MethodResult",
    "MqttResults",
    "ThroughputResult",
    "run_mqtt",
]

T = TypeVar("T")

# The Azure device MQTT API version the SDK puts in its CONNECT username.
API_VERSION = "2021-04-12"
SAS_TTL_S = 3600
# Device registrations in flight at once; the HTTP face is not what is measured here.
REGISTER_CONCURRENCY = 8
# TLS handshakes in flight at once while connecting (run_devices' default).
CONNECT_CONCURRENCY = 100
WARM_CONNECTIONS = 100
# Well inside the 60 s keep-alive (the server drops a client after 1.5x): connecting 10,000
# devices can take longer than that, and the simulator itself sends no PINGREQ.
PING_INTERVAL_S = 20.0
# After the last CONNACK: let the server finish what connecting set off (state events, GC).
SETTLE_S = 3.0
METHOD_DEVICES = 4
METHOD_WARMUP_CALLS = 20
METHOD_TIMEOUT_S = 10
# Every file descriptor the run may hold: one per device connection, plus slack.
FD_SLACK = 512
COUNT_PAGE = 1000
# One scenario's whole budget: connecting, running, draining, checking.
SCENARIO_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """One throughput point. Latencies in milliseconds, CPU in seconds over the run."""

    server: str  # "mosquitto" or "thinghub"
    devices: int
    duration_s: float  # publishing plus draining the last PUBACKs
    sent: int
    acked: int
    msgs_per_s: float
    puback_p50_ms: float
    puback_p99_ms: float
    server_cpu_s: float
    client_cpu_s: float
    stored: int | None = None  # thinghub: telemetry rows added during the measured run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class IdleResult:
    """Broker memory with N idle TLS connections. RSS in KiB."""

    server: str
    connections: int
    connect_s: float
    rss_before_kib: int
    rss_after_kib: int
    kib_per_connection: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MethodResult:
    """Direct-method round trips through /v1, in milliseconds."""

    devices: int
    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MqttResults:
    throughput: list[ThroughputResult] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)
    methods: MethodResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "throughput": [r.to_json() for r in self.throughput],
            "idle": [r.to_json() for r in self.idle],
            "methods": None if self.methods is None else self.methods.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MqttResults:
        return cls(
            [ThroughputResult(**r) for r in raw.get("throughput", [])],
            [IdleResult(**r) for r in raw.get("idle", [])],
            MethodResult(**raw["methods"]) if raw.get("methods") else None,
        )

    def ratios(self) -> dict[str, float]:
        """thinghub over mosquitto: msgs/s per device count, and memory per connection."""
        out: dict[str, float] = {}
        ref = {r.devices: r for r in self.throughput if r.server == "mosquitto"}
        for r in self.throughput:
            if r.server == "thinghub" and r.devices in ref and ref[r.devices].msgs_per_s:
                out[f"msgs/s devices={r.devices}"] = r.msgs_per_s / ref[r.devices].msgs_per_s
        idle = {r.server: r for r in self.idle}
        if "thinghub" in idle and "mosquitto" in idle and idle["mosquitto"].kib_per_connection:
            out["KiB/connection"] = (
                idle["thinghub"].kib_per_connection / idle["mosquitto"].kib_per_connection
            )
        return out


# -- process measurements --------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3 of stat(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; servers started later
    inherit it. Returns the new soft limit.

    Raises:
        BenchError: even the hard limit is below `needed`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed * 2))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        raise BenchError(
            f"RLIMIT_NOFILE hard limit {hard} < {needed} file descriptors needed; "
            "raise it (ulimit -Hn) or pass a smaller --idle-devices"
        )
    return target


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one scenario on a fresh loop (uvloop when installed), within its time budget."""

    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            return await coro

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a thinghub dependency on Linux
        return asyncio.run(bounded())
    return uvloop.run(bounded())


# -- devices ---------------------------------------------------------------------------------


async def _register(
    api: httpx.AsyncClient, count: int, project: str, hub_hostname: str
) -> list[DeviceSpec]:
    """Create `count` devices in a project of their own; their MQTT identities with SAS."""
    gate = asyncio.Semaphore(REGISTER_CONCURRENCY)
    expiry = int(time.time()) + SAS_TTL_S

    async def one(i: int) -> DeviceSpec:
        async with gate:
            r = await api.post(
                "/v1/devices",
                json={"name": f"{project}-{i}", "project": project, "deployment": project},
            )
        if r.status_code not in (200, 201):
            raise BenchError(f"POST /v1/devices: {r.status_code} {r.text}")
        device = r.json()
        did = device["id"]
        key = device["credentials"]["symmetricKey"]["primaryKey"]
        return DeviceSpec(
            did,
            f"{hub_hostname}/{did}/?api-version={API_VERSION}",
            sas.sign(key, f"{hub_hostname}/devices/{did}", expiry),
            f"devices/{did}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
            methods=True,
        )

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def _mosquitto_specs(prefix: str, count: int) -> list[DeviceSpec]:
    # No $iothub topics on mosquitto, so no method subscription (methods=False).
    return [
        DeviceSpec(
            f"{prefix}-{i}",
            f"{prefix}-{i}",
            secrets.token_urlsafe(16),
            f"devices/{prefix}-{i}/messages/events/",
            methods=False,
        )
        for i in range(count)
    ]


async def count_stored(api: httpx.AsyncClient, project: str) -> int:
    """How many telemetry messages thinghub holds for a project, paging /v1/telemetries."""
    total = 0
    params: dict[str, str | int] = {"projectID": project, "limit": COUNT_PAGE}
    while True:
        r = await api.get("/v1/telemetries", params=params)
        if r.status_code != 200:
            raise BenchError(f"GET /v1/telemetries: {r.status_code} {r.text}")
        items = r.json()
        total += len(items)
        cursor = r.headers.get("x-continuation-token")
        if not cursor or not items:
            return total
        params["continuationToken"] = cursor


def _client_context(ca_file: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _check(stats: SimStats, server: str, devices: int) -> None:
    if stats.failed or stats.connected < devices:
        raise BenchError(
            f"{server}: {stats.connected}/{devices} devices connected, {stats.failed} failed: "
            + "; ".join(stats.errors[:5])
        )
    if stats.acked < stats.sent:
        raise BenchError(
            f"{server}: {stats.sent} sent but only {stats.acked} acknowledged: "
            + "; ".join(stats.errors[:5])
        )


# -- throughput ------------------------------------------------------------------------------


async def _throughput(
    server: str,
    specs: Sequence[DeviceSpec],
    host: str,
    port: int,
    ca_file: Path | str,
    pid: int,
    *,
    duration_s: float,
    warmup_s: float,
    stored: Callable[[], Awaitable[int]] | None = None,
) -> ThroughputResult:
    context = _client_context(ca_file)
    if warmup_s > 0:
        warm = await run_devices(specs, host, port, context, rate_per_s=0, duration_s=warmup_s)
        _check(warm, server, len(specs))
    before = None if stored is None else await stored()
    # run_devices calls on_progress first as the devices start publishing and last after the
    # final PUBACK: the CPU both sides spend in between is the measured window's.
    marks: list[tuple[float, float]] = []

    def mark(_: SimStats) -> None:
        now = (cpu_s(pid), _own_cpu_s())
        if len(marks) < 2:
            marks.append(now)
        else:
            marks[1] = now

    stats = await run_devices(
        specs, host, port, context, rate_per_s=0, duration_s=duration_s, on_progress=mark
    )
    _check(stats, server, len(specs))
    added = None
    if stored is not None and before is not None:
        added = await stored() - before
        if added < stats.acked:
            raise BenchError(
                f"thinghub acknowledged {stats.acked} messages but stored only {added}: "
                "an acknowledged message was lost"
            )
    (server0, client0), (server1, client1) = marks[0], marks[-1]
    return ThroughputResult(
        server=server,
        devices=len(specs),
        duration_s=round(stats.elapsed_s, 3),
        sent=stats.sent,
        acked=stats.acked,
        msgs_per_s=round(stats.acked / stats.elapsed_s, 1),
        puback_p50_ms=round((stats.percentile(0.50) or 0) * 1000, 3),
        puback_p99_ms=round((stats.percentile(0.99) or 0) * 1000, 3),
        server_cpu_s=round(server1 - server0, 2),
        client_cpu_s=round(client1 - client0, 2),
        stored=added,
    )


# -- idle connections ------------------------------------------------------------------------


async def _hold(
    specs: Sequence[DeviceSpec], host: str, port: int, ca_file: Path | str
) -> tuple[list[SimulatedDevice], SimStats, float]:
    """Connect every device and leave it idle. Returns the devices, stats and seconds taken."""
    context = _client_context(ca_file)
    stats = SimStats()
    devices = [SimulatedDevice(s, host, port, context, stats) for s in specs]
    start = time.perf_counter()
    await connect_all(devices, stats, CONNECT_CONCURRENCY)  # failures land in stats
    return devices, stats, time.perf_counter() - start


@contextlib.asynccontextmanager
async def _pinging(devices: Sequence[SimulatedDevice]) -> Any:
    """PINGREQ every idle device now and then while the block runs."""

    async def ping() -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            for device in devices:
                device.keep_alive()

    task = asyncio.create_task(ping(), name="bench.ping")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_all(devices: Sequence[SimulatedDevice]) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY * 5)

    async def close(device: SimulatedDevice) -> None:
        async with gate:
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(10):
                    await device.close()

    await asyncio.gather(*(close(d) for d in devices))


async def _idle(
    server: str,
    specs: Sequence[DeviceSpec],
    warm: Sequence[DeviceSpec],
    host: str,
    port: int,
    ca_file: Path | str,
    pid: int,
    progress: Callable[[str], None],
) -> IdleResult:
    warmed, stats, _ = await _hold(warm, host, port, ca_file)
    _check(stats, server, len(warm))
    await _close_all(warmed)
    await asyncio.sleep(SETTLE_S)
    before = rss_kib(pid)
    devices: list[SimulatedDevice] = []
    try:
        async with _pinging(devices):
            held, stats, connect_s = await _hold(specs, host, port, ca_file)
            devices.extend(held)
            _check(stats, server, len(specs))
            await asyncio.sleep(SETTLE_S)
            after = rss_kib(pid)
            progress(
                f"  {server:<9} idle  {len(specs):>6} connected in {connect_s:.1f} s, "
                f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB"
            )
    finally:
        await _close_all(devices)
    return IdleResult(
        server=server,
        connections=len(specs),
        connect_s=round(connect_s, 1),
        rss_before_kib=before,
        rss_after_kib=after,
        kib_per_connection=round((after - before) / len(specs), 2),
    )


# -- direct methods --------------------------------------------------------------------------


async def _methods(hub: _ServerProcess, api: httpx.AsyncClient, calls: int) -> MethodResult:
    hub_hostname = hub.ready.get("hub_hostname", "localhost")
    specs = await _register(api, METHOD_DEVICES, "bench-methods", hub_hostname)
    devices, stats, _ = await _hold(
        specs, "127.0.0.1", int(hub.ready["mqtt"]["port"]), hub.ready["ca_file"]
    )
    latencies: list[float] = []
    try:
        _check(stats, "thinghub", len(specs))
        body = {"name": "ping", "responseTimeoutInSeconds": METHOD_TIMEOUT_S}
        for i in range(METHOD_WARMUP_CALLS + calls):
            device_id = specs[i % len(specs)].client_id
            start = time.perf_counter()
            r = await api.post(f"/v1/devices/{device_id}/method", json=body)
            elapsed = time.perf_counter() - start
            if r.status_code != 200 or r.headers.get("x-method-status") != "200":
                raise BenchError(
                    f"POST /v1/devices/{device_id}/method: {r.status_code} "
                    f"(device status {r.headers.get('x-method-status')}) {r.text}"
                )
            if i >= METHOD_WARMUP_CALLS:
                latencies.append(elapsed * 1000)
    finally:
        await _close_all(devices)
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return MethodResult(
        devices=len(specs),
        calls=calls,
        p50_ms=q(0.50),
        p90_ms=q(0.90),
        p99_ms=q(0.99),
        max_ms=round(ordered[-1], 3),
        mean_ms=round(statistics.fmean(ordered), 3),
    )


# -- the run ---------------------------------------------------------------------------------


def _api(hub: _ServerProcess, admin_token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hub.ready["http"]["url"],
        timeout=60,
        headers={"Authorization": f"Bearer {admin_token}"},
    )


def _progress_line(r: ThroughputResult) -> str:
    stored = "" if r.stored is None else f"  (acked {r.acked}, stored {r.stored})"
    return (
        f"  {r.server:<9} n={r.devices:<5} {r.msgs_per_s:>9.1f} msg/s  "
        f"p50 {r.puback_p50_ms:.1f} ms  p99 {r.puback_p99_ms:.1f} ms  "
        f"CPU server {r.server_cpu_s:.1f} s, client {r.client_cpu_s:.1f} s{stored}"
    )


def run_mqtt(
    *,
    devices: Sequence[int],
    duration_s: float,
    warmup_s: float,
    idle_devices: int,
    method_calls: int,
    progress: Callable[[str], None] = print,
) -> MqttResults:
    """Run every MQTT scenario; see the module docstring. 0 idle devices or calls skips one.

    Raises:
        BenchError: a server did not start, or a measurement is invalid.
    """
    raise_fd_limit(max([idle_devices + WARM_CONNECTIONS, *devices]) + FD_SLACK)
    results = MqttResults()
    admin_token = "adm_" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="thinghub-bench-mqtt-") as tmp:
        work = Path(tmp)
        (work / "load").mkdir()
        (work / "idle").mkdir()
        if devices or method_calls:
            _throughput_and_methods(
                work / "load",
                admin_token,
                devices,
                duration_s,
                warmup_s,
                method_calls,
                results,
                progress,
            )
        if idle_devices:
            _idle_memory(work / "idle", admin_token, idle_devices, results, progress)
    return results


def _throughput_and_methods(
    work: Path,
    admin_token: str,
    devices: Sequence[int],
    duration_s: float,
    warmup_s: float,
    method_calls: int,
    results: MqttResults,
    progress: Callable[[str], None],
) -> None:
    # Passwords are random per call: build the specs once and give mosquitto the same ones.
    mosquitto_specs = {n: _mosquitto_specs(f"t{n}", n) for n in devices}
    users = {s.username: s.password or "" for specs in mosquitto_specs.values() for s in specs}
    with (
        mosquitto_server(work / "mosquitto", users) as broker,
        thinghub_server(work, admin_token) as hub,
    ):
        mqtt_port = int(hub.ready["mqtt"]["port"])
        hub_hostname = hub.ready.get("hub_hostname", "localhost")
        for n in devices:
            ref = _run(
                _throughput(
                    "mosquitto",
                    mosquitto_specs[n],
                    broker.host,
                    broker.port,
                    broker.ca_file,
                    broker.pid,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                )
            )
            progress(_progress_line(ref))
            results.throughput.append(ref)
            results.throughput.append(
                _run(
                    _hub_throughput(
                        hub, admin_token, n, mqtt_port, hub_hostname, duration_s, warmup_s
                    )
                )
            )
            progress(_progress_line(results.throughput[-1]))
        if method_calls:
            results.methods = _run(_hub_methods(hub, admin_token, method_calls))
            m = results.methods
            progress(
                f"  thinghub  methods {m.calls} calls  p50 {m.p50_ms:.2f} ms  "
                f"p99 {m.p99_ms:.2f} ms  max {m.max_ms:.2f} ms"
            )


async def _hub_throughput(
    hub: _ServerProcess,
    admin_token: str,
    n: int,
    mqtt_port: int,
    hub_hostname: str,
    duration_s: float,
    warmup_s: float,
) -> ThroughputResult:
    project = f"bench-mqtt-{n}"
    async with _api(hub, admin_token) as api:
        specs = await _register(api, n, project, hub_hostname)
        return await _throughput(
            "thinghub",
            specs,
            "127.0.0.1",
            mqtt_port,
            hub.ready["ca_file"],
            hub.pid,
            duration_s=duration_s,
            warmup_s=warmup_s,
            stored=lambda: count_stored(api, project),
        )


async def _hub_methods(hub: _ServerProcess, admin_token: str, calls: int) -> MethodResult:
    async with _api(hub, admin_token) as api:
        return await _methods(hub, api, calls)


def _idle_memory(
    work: Path,
    admin_token: str,
    count: int,
    results: MqttResults,
    progress: Callable[[str], None],
) -> None:
    warm = _mosquitto_specs("warm", WARM_CONNECTIONS)
    idle = _mosquitto_specs("idle", count)
    with mosquitto_server(
        work / "mosquitto", {s.username: s.password or "" for s in warm + idle}
    ) as broker:
        results.idle.append(
            _run(
                _idle(
                    "mosquitto",
                    idle,
                    warm,
                    broker.host,
                    broker.port,
                    broker.ca_file,
                    broker.pid,
                    progress,
                )
            )
        )
    # Register with one server, measure with a fresh one on the same data directory: the
    # registration traffic's garbage would otherwise be reused by the connections measured.
    with thinghub_server(work, admin_token) as hub:
        hub_hostname = hub.ready.get("hub_hostname", "localhost")

        async def register() -> tuple[list[DeviceSpec], list[DeviceSpec]]:
            async with _api(hub, admin_token) as api:
                return (
                    await _register(api, WARM_CONNECTIONS, "bench-warm", hub_hostname),
                    await _register(api, count, "bench-idle", hub_hostname),
                )

        start = time.perf_counter()
        hub_warm, hub_idle = _run(register())
        progress(
            f"  thinghub  registered {count + WARM_CONNECTIONS} devices in "
            f"{time.perf_counter() - start:.1f} s"
        )
    with thinghub_server(work, admin_token) as hub:
        results.idle.append(
            _run(
                _idle(
                    "thinghub",
                    hub_idle,
                    hub_warm,
                    "127.0.0.1",
                    int(hub.ready["mqtt"]["port"]),
                    hub.ready["ca_file"],
                    hub.pid,
                    progress,
                )
            )
        )


# -- the report ------------------------------------------------------------------------------

MQTT_START = "<!-- bench:mqtt:start (generated by `python -m bench.run`; do not edit) -->"
MQTT_END = "<!-- bench:mqtt:end -->"
# The goals of the MQTT benchmark.
TARGET_RATIO = 0.5
TARGET_KIB_PER_CONNECTION = 10.0
TARGET_METHOD_P99_MS = 10.0
HEADER = ["scenario", "thinghub", "mosquitto", "thinghub / mosquitto", "target"]


def _by(
    results: MqttResults,
) -> tuple[dict[tuple[str, int], ThroughputResult], dict[str, IdleResult]]:
    return (
        {(r.server, r.devices): r for r in results.throughput},
        {r.server: r for r in results.idle},
    )


def table_rows(results: MqttResults) -> list[list[str]]:
    """One row per figure: scenario, thinghub, mosquitto, ratio, target."""
    tput, idle = _by(results)
    rows: list[list[str]] = []
    for n in sorted({r.devices for r in results.throughput}):
        hub, ref = tput.get(("thinghub", n)), tput.get(("mosquitto", n))
        both = hub is not None and ref is not None
        rows.append(
            [
                f"QoS 1 telemetry over TLS, {n:,} devices: msg/s",
                f"{hub.msgs_per_s:,.0f}" if hub else "-",
                f"{ref.msgs_per_s:,.0f}" if ref else "-",
                f"{hub.msgs_per_s / ref.msgs_per_s:.2f}x"
                if hub and ref and ref.msgs_per_s
                else "-",
                f">= {TARGET_RATIO}x",
            ]
        )
        rows.append(
            [
                f"PUBACK p50 / p99, {n:,} devices",
                f"{hub.puback_p50_ms:,.0f} / {hub.puback_p99_ms:,.0f} ms" if hub else "-",
                f"{ref.puback_p50_ms:,.0f} / {ref.puback_p99_ms:,.0f} ms" if ref else "-",
                "",
                "",
            ]
        )
        hub_cpu, ref_cpu = _cpu_per_msg_us(hub), _cpu_per_msg_us(ref)
        rows.append(
            [
                f"broker CPU per message, {n:,} devices",
                f"{hub_cpu:,.0f} µs" if hub_cpu else "-",
                f"{ref_cpu:,.0f} µs" if ref_cpu else "-",
                f"{hub_cpu / ref_cpu:.1f}x" if both and hub_cpu and ref_cpu else "-",
                "",
            ]
        )
    if idle:
        hub_i, ref_i = idle.get("thinghub"), idle.get("mosquitto")
        count = max(r.connections for r in idle.values())
        rows.append(
            [
                f"RSS per idle TLS connection, {count:,} devices",
                f"{hub_i.kib_per_connection:.1f} KiB" if hub_i else "-",
                f"{ref_i.kib_per_connection:.1f} KiB" if ref_i else "-",
                f"{hub_i.kib_per_connection / ref_i.kib_per_connection:.1f}x"
                if hub_i and ref_i and ref_i.kib_per_connection
                else "-",
                f"<= {TARGET_KIB_PER_CONNECTION:g} KiB",
            ]
        )
    if results.methods is not None:
        m = results.methods
        rows.append(
            [
                f"direct method round trip via /v1, p50 / p99 ({m.calls} calls)",
                f"{m.p50_ms:.1f} / {m.p99_ms:.1f} ms",
                "-",
                "-",
                f"p99 <= {TARGET_METHOD_P99_MS:g} ms",
            ]
        )
    return rows


def _cpu_per_msg_us(r: ThroughputResult | None) -> float | None:
    if r is None or not r.acked:
        return None
    return r.server_cpu_s / r.acked * 1e6


def _load_notes(results: MqttResults) -> list[str]:
    """Who was busy: each side's CPUs used during a throughput point, connect times."""
    notes = []
    for r in sorted(results.throughput, key=lambda r: (r.devices, r.server)):
        if r.duration_s:
            notes.append(
                f"{r.server} at {r.devices:,} devices: broker {r.server_cpu_s / r.duration_s:.2f}, "
                f"load generator {r.client_cpu_s / r.duration_s:.2f}"
            )
    return notes


def format_table(results: MqttResults) -> str:
    return text_table(HEADER, table_rows(results))


def goal_misses(results: MqttResults) -> list[str]:
    """Each figure below its goal, in words."""
    misses = []
    for key, value in sorted(results.ratios().items()):
        if key.startswith("msgs/s") and value < TARGET_RATIO:
            devices = int(key.partition("=")[2])
            misses.append(f"telemetry at {devices:,} devices ({value:.2f}x mosquitto)")
    for r in results.idle:
        if r.server == "thinghub" and r.kib_per_connection > TARGET_KIB_PER_CONNECTION:
            misses.append(f"{r.kib_per_connection:.1f} KiB per idle connection")
    m = results.methods
    if m is not None and m.p99_ms > TARGET_METHOD_P99_MS:
        misses.append(f"direct-method p99 {m.p99_ms:.1f} ms")
    return misses


def markdown_section(results: MqttResults, machine: dict[str, Any], params: dict[str, Any]) -> str:
    tput, _ = _by(results)
    stored = [
        f"{n:,} devices: {r.acked:,} acknowledged, {r.stored:,} stored"
        for (server, n), r in sorted(tput.items())
        if server == "thinghub" and r.stored is not None
    ]
    misses = goal_misses(results)
    goal = (
        "**Below the goals:** " + "; ".join(misses) + "."
        if misses
        else "Every figure meets its goal."
    )
    lines = [
        MQTT_START,
        "",
        f"Measured {machine['date']} on {machine['nproc']} CPUs ({machine['cpu']}), "
        f"{machine['os']}, Python {machine['python']}, {machine.get('mosquitto', 'mosquitto')}, "
        f"thinghub {machine['thinghub']} at {machine['commit']}; 1-minute load average "
        f"{machine['load_avg_1m']:g} at the start and {machine.get('load_avg_1m_end', '?')} at "
        "the end (anything above 0 is other work competing for the same CPUs). "
        f"Throughput points ran {params['duration_s']:g} s after a {params['warmup_s']:g} s "
        "warm-up; **the load generator (one Python process) and the broker share these CPUs**.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in table_rows(results)),
        "",
    ]
    if stored:
        lines += [
            "Every device connected and every message was acknowledged. Telemetry thinghub "
            "stored during each measured run (`GET /v1/telemetries?projectID=`), against the "
            "PUBACKs counted: " + "; ".join(stored) + ".",
            "",
        ]
    notes = _load_notes(results)
    if notes:
        lines += [
            "CPUs in use (CPU seconds per second) during each throughput point: "
            + "; ".join(notes)
            + ". Against mosquitto the load generator is the busier side, so mosquitto's "
            "figures are a floor of what it can do and the ratios a ceiling of thinghub's; "
            "broker CPU per message compares the two without that limit.",
            "",
        ]
    if results.idle:
        lines += [
            "Idle connections: "
            + "; ".join(
                f"{r.server} {r.rss_before_kib / 1024:.0f} → {r.rss_after_kib / 1024:.0f} MiB "
                f"with {r.connections:,} connected in {r.connect_s:g} s"
                for r in results.idle
            )
            + ".",
            "",
        ]
    lines += [goal, "", MQTT_END]
    return "\n".join(lines)
