"""MQTT ingest measured with a C load generator: thinghub and mosquitto in the same run.

Theory of operation: `bench/mqttload/mqttload.c` (one thread, epoll, OpenSSL) is built into
`build/mqttload` when missing or older than its source. For each point, N devices connect over
TLS with a credential each (`--creds`: SAS tokens for thinghub, a password each for mosquitto)
and publish M QoS 1 telemetry messages as fast as a window of in-flight messages allows; the
generator prints one JSON result (msgs/s, PUBACK percentiles). mosquitto (bench.mosquitto: TLS,
a password file, no persistence) runs first, thinghub (`thinghub serve`, fresh SQLite data
directory, default settings) right after, so both see the same background load.

CPU: each server's CPU seconds (/proc/<pid>/stat) and the generator's are taken when the
generator says every device is connected and again when it exits, so connection set-up is not
in the per-message figure. A point whose generator used more than GENERATOR_BOUND_SHARE of a
core is marked generator-bound: its msgs/s then says more about the generator than about the
broker, and no ratio is reported for it (broker CPU per message still compares the two).

thinghub's stored telemetry for the run's devices must grow by at least the PUBACKs counted
(acknowledged means committed), or the run fails (BenchError).

    python -m bench.device_load                      # 100 x 2000 and 1000 x 200, both brokers
    python -m bench.device_load --points 100x500 --only thinghub   # a quick look
    python -m bench.device_load --rate 2000 --points 100x600       # PUBACK latency, steady rate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.http import BenchError, _ServerProcess, thinghub_server
from bench.mosquitto import mosquitto_server
from bench.mqtt import _register, count_stored, cpu_s, raise_fd_limit, rss_kib

__all__ = [
    "GENERATOR_BOUND_SHARE",
    "LoadResult",
    "build_generator",
    "run_generator",
    "run_points",
]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "mqttload" / "mqttload.c"
BINARY = ROOT / "build" / "mqttload"
#: A generator above this share of one core may be what limits the rate.
GENERATOR_BOUND_SHARE = 0.5
#: In-flight QoS 1 messages per device (mosquitto's max_inflight_messages in bench.mosquitto).
WINDOW = 20
#: The generator's own bound on one run (connect + publish), seconds.
RUN_TIMEOUT_S = 120
CONNECTED_MARK = "mqttload: connected "
_TICKS = os.sysconf("SC_CLK_TCK")
#: After the last idle client connected: let the server finish what connecting set off.
IDLE_SETTLE_S = 1.0
#: Connections made and closed before an idle measurement, so one-time costs are not counted.
IDLE_WARM_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One point. CPU in seconds over the publishing phase; latencies in microseconds."""

    server: str
    devices: int
    msgs_per_device: int
    rate: float  # requested total msgs/s, 0 = as fast as PUBACKs allow
    acked: int
    publish_s: float
    msgs_per_s: float
    puback_p50_us: int
    puback_p99_us: int
    connect_s: float
    server_cpu_s: float
    generator_cpu_s: float
    stored: int | None = None  # thinghub: telemetry added by the run
    # The server's CPU seconds by thread over the same window: the main thread (the event
    # loop) first, then the others, most first (thinghub: the SQLite writer, checkpointer).
    thread_cpu_s: list[float] = field(default_factory=list)

    @property
    def threads_us_per_msg(self) -> str:
        """Per-thread µs per message, e.g. "loop 18.1 + 14.2 + 2.0"."""
        if not self.acked or not self.thread_cpu_s:
            return ""
        parts = [f"{cpu / self.acked * 1e6:.1f}" for cpu in self.thread_cpu_s if cpu > 0]
        return "loop " + " + ".join(parts) if parts else ""

    @property
    def server_cpu_us_per_msg(self) -> float:
        return self.server_cpu_s / self.acked * 1e6 if self.acked else 0.0

    @property
    def generator_share(self) -> float:
        return self.generator_cpu_s / self.publish_s if self.publish_s else 0.0

    @property
    def generator_bound(self) -> bool:
        return self.generator_share > GENERATOR_BOUND_SHARE

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["server_cpu_us_per_msg"] = round(self.server_cpu_us_per_msg, 2)
        out["generator_share"] = round(self.generator_share, 3)
        out["generator_bound"] = self.generator_bound
        return out


def build_generator() -> Path:
    """build/mqttload from bench/mqttload/mqttload.c, rebuilt when the source is newer.

    Raises:
        BenchError: no C compiler, or the build failed (it needs libssl-dev).
    """
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc) to build the load generator: install gcc")
    BINARY.parent.mkdir(exist_ok=True)
    out = subprocess.run(
        [cc, "-O2", "-o", str(BINARY), str(SOURCE), "-lssl", "-lcrypto"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"building mqttload failed (needs libssl-dev):\n{out.stderr}")
    return BINARY


def run_generator(
    binary: Path,
    *,
    server: str,
    server_pid: int,
    port: int,
    ca_file: Path | str,
    creds: Path,
    devices: int,
    msgs: int,
    rate: float = 0,
) -> LoadResult:
    """One mqttload run against a broker; CPU measured from "all connected" to exit.

    Raises:
        BenchError: a device did not connect, a message was not acknowledged, or the
            generator failed.
    """
    cmd = [
        str(binary),
        "-p",
        str(port),
        "-c",
        str(devices),
        "-m",
        str(msgs),
        "-q",
        "1",
        "-w",
        str(WINDOW),
        "--cafile",
        str(ca_file),
        "--creds",
        str(creds),
        "-T",
        str(RUN_TIMEOUT_S),
        "--json",
    ]
    if rate > 0:
        cmd += ["-R", str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    threads_before: dict[int, float] = {}
    errors: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(CONNECTED_MARK) and "server" not in marks:
                marks["server"] = cpu_s(server_pid)
                marks["generator"] = cpu_s(proc.pid)
                threads_before.update(thread_cpu_s(server_pid))
            elif len(errors) < 10:
                errors.append(line.rstrip())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    server_after = cpu_s(server_pid)
    threads_after = thread_cpu_s(server_pid)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join(5)
    proc.stdout.close()
    proc.stderr.close()  # type: ignore[union-attr]
    generator_total = usage.ru_utime + usage.ru_stime
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines or "server" not in marks:
        raise BenchError(f"{server}: mqttload gave no result:\n{stdout}\n" + "\n".join(errors))
    raw = json.loads(lines[-1])
    if proc.returncode != 0 or raw["failed"] or raw["closed"] or raw["acked"] < raw["sent"]:
        raise BenchError(
            f"{server}: mqttload exit {proc.returncode}: connected {raw['connected']}, failed "
            f"{raw['failed']}, closed {raw['closed']}, sent {raw['sent']}, acked {raw['acked']}"
            + "\n".join(errors)
        )
    return LoadResult(
        server=server,
        devices=devices,
        msgs_per_device=msgs,
        rate=rate,
        acked=raw["acked"],
        publish_s=raw["pub_s"],
        msgs_per_s=raw["pub_rate"],
        puback_p50_us=raw["ack_p50_us"],
        puback_p99_us=raw["ack_p99_us"],
        connect_s=raw["connect_s"],
        server_cpu_s=round(server_after - marks["server"], 3),
        generator_cpu_s=round(generator_total - marks["generator"], 3),
        thread_cpu_s=_by_thread(server_pid, threads_before, threads_after),
    )


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User plus system CPU seconds of each thread of a process, by thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _by_thread(pid: int, before: dict[int, float], after: dict[int, float]) -> list[float]:
    """The main thread's CPU over the window, then the other threads', most first."""
    spent = {tid: round(cpu - before.get(tid, 0.0), 3) for tid, cpu in after.items()}
    main = spent.pop(pid, 0.0)
    return [main, *sorted(spent.values(), reverse=True)[:3]]


def _write_creds(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    path.write_text("".join(f"{c}\t{u}\t{p}\n" for c, u, p in rows))
    path.chmod(0o600)
    return path


def _mosquitto_point(binary: Path, work: Path, devices: int, msgs: int, rate: float) -> LoadResult:
    prefix = "mq" + secrets.token_hex(3)
    rows = [(f"{prefix}-{i}", f"{prefix}-{i}", secrets.token_urlsafe(12)) for i in range(devices)]
    with mosquitto_server(work / f"mosquitto-{devices}", {u: p for _, u, p in rows}) as broker:
        creds = _write_creds(work / f"mosquitto-{devices}.tsv", rows)
        return run_generator(
            binary,
            server="mosquitto",
            server_pid=broker.pid,
            port=broker.port,
            ca_file=broker.ca_file,
            creds=creds,
            devices=devices,
            msgs=msgs,
            rate=rate,
        )


def register_thinghub(
    hub: _ServerProcess, admin_token: str, work: Path, devices: int
) -> tuple[str, Path]:
    """`devices` new devices in a project of their own; (project, their --creds file)."""
    project = "load" + secrets.token_hex(3)
    hub_hostname = hub.ready.get("hub_hostname", "localhost")

    async def register() -> Any:
        async with _api(hub, admin_token) as api:
            return await _register(api, devices, project, hub_hostname)

    specs = asyncio.run(register())
    rows = [(s.client_id, s.username, s.password) for s in specs]
    return project, _write_creds(work / f"{project}.tsv", rows)


def _api(hub: _ServerProcess, admin_token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hub.ready["http"]["url"],
        timeout=60,
        headers={"Authorization": f"Bearer {admin_token}"},
    )


def stored_count(hub: _ServerProcess, admin_token: str, project: str) -> int:
    async def count() -> int:
        async with _api(hub, admin_token) as api:
            return await count_stored(api, project)

    return asyncio.run(count())


def thinghub_point(
    binary: Path,
    hub: _ServerProcess,
    admin_token: str,
    work: Path,
    devices: int,
    msgs: int,
    rate: float = 0,
) -> LoadResult:
    """One point on a running thinghub: register the devices, load, check the store."""
    project, creds = register_thinghub(hub, admin_token, work, devices)
    assert hub.proc is not None
    result = run_generator(
        binary,
        server="thinghub",
        server_pid=hub.proc.pid,
        port=int(hub.ready["mqtt"]["port"]),
        ca_file=hub.ready["ca_file"],
        creds=creds,
        devices=devices,
        msgs=msgs,
        rate=rate,
    )
    stored = stored_count(hub, admin_token, project)
    if stored < result.acked:
        raise BenchError(
            f"thinghub acknowledged {result.acked} messages but stored {stored}: "
            "an acknowledged message was lost"
        )
    return LoadResult(**{**asdict(result), "stored": stored})


@dataclass(frozen=True, slots=True)
class IdleResult:
    """Server memory with N idle TLS connections (mqttload -I), after a warm-up."""

    server: str
    connections: int
    connect_s: float
    rss_before_kib: int
    rss_after_kib: int

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.connections


def hold_idle(
    binary: Path,
    *,
    server: str,
    server_pid: int,
    port: int,
    ca_file: Path | str,
    creds: Path,
    devices: int,
    work: Path,
) -> IdleResult:
    """Connect `devices` clients, read the server's VmRSS once all are connected and
    settled, disconnect them. The caller warms the server first.

    Raises:
        BenchError: a client did not connect in time.
    """
    ready = work / f"ready-{secrets.token_hex(4)}"
    before = rss_kib(server_pid)
    log_path = work / f"{ready.name}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "-p",
                str(port),
                "-c",
                str(devices),
                "-I",
                str(RUN_TIMEOUT_S),
                "--ready-file",
                str(ready),
                "--cafile",
                str(ca_file),
                "--creds",
                str(creds),
                "-T",
                str(RUN_TIMEOUT_S),
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        # mqttload writes "N\n" to the ready file once every client is connected (or failed).
        while not (ready.exists() and ready.read_text().endswith("\n")):
            if proc.poll() is not None or time.monotonic() - started > RUN_TIMEOUT_S:
                raise BenchError(
                    f"{server}: idle clients did not connect (exit {proc.returncode}): "
                    + log_path.read_text()[-2000:]
                )
            time.sleep(0.05)
        connect_s = time.monotonic() - started
        connected = int(ready.read_text())
        if connected < devices:
            raise BenchError(f"{server}: {connected}/{devices} idle clients connected")
        time.sleep(IDLE_SETTLE_S)
        after = rss_kib(server_pid)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    return IdleResult(server, devices, round(connect_s, 2), before, after)


def run_points(
    points: Sequence[tuple[int, int]], *, rate: float = 0, only: str | None = None
) -> list[LoadResult]:
    """mosquitto then thinghub at each (devices, messages per device)."""
    binary = build_generator()
    raise_fd_limit(max(d for d, _ in points) + 512)
    admin_token = "adm_" + secrets.token_urlsafe(24)
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="thinghub-load-") as tmp:
        work = Path(tmp)
        with thinghub_server(work, admin_token) as hub:
            for devices, msgs in points:
                if only in (None, "mosquitto"):
                    results.append(_mosquitto_point(binary, work, devices, msgs, rate))
                    print(_line(results[-1]), flush=True)
                if only in (None, "thinghub"):
                    results.append(
                        thinghub_point(binary, hub, admin_token, work, devices, msgs, rate)
                    )
                    print(_line(results[-1]), flush=True)
    return results


def run_idle(connections: int, warm: int = IDLE_WARM_CONNECTIONS) -> list[IdleResult]:
    """RSS per idle TLS connection and connects per second: mosquitto, then thinghub."""
    binary = build_generator()
    raise_fd_limit(connections + warm + 512)
    admin_token = "adm_" + secrets.token_urlsafe(24)
    out: list[IdleResult] = []
    with tempfile.TemporaryDirectory(prefix="thinghub-idle-") as tmp:
        work = Path(tmp)
        rows = [(f"idle-{i}", f"idle-{i}", secrets.token_urlsafe(12)) for i in range(connections)]
        warm_rows = [(f"warm-{i}", f"warm-{i}", secrets.token_urlsafe(12)) for i in range(warm)]
        users = {u: p for _, u, p in rows + warm_rows}
        with mosquitto_server(work / "mosquitto-idle", users) as broker:
            where: dict[str, Any] = {
                "server": "mosquitto",
                "server_pid": broker.pid,
                "port": broker.port,
                "ca_file": broker.ca_file,
                "work": work,
            }
            hold_idle(binary, creds=_write_creds(work / "mw.tsv", warm_rows), devices=warm, **where)
            creds = _write_creds(work / "mi.tsv", rows)
            out.append(hold_idle(binary, creds=creds, devices=connections, **where))
        with thinghub_server(work, admin_token) as hub:
            assert hub.proc is not None
            where = {
                "server": "thinghub",
                "server_pid": hub.proc.pid,
                "port": int(hub.ready["mqtt"]["port"]),
                "ca_file": hub.ready["ca_file"],
                "work": work,
            }
            _, warm_creds = register_thinghub(hub, admin_token, work, warm)
            _, creds = register_thinghub(hub, admin_token, work, connections)
            hold_idle(binary, creds=warm_creds, devices=warm, **where)
            out.append(hold_idle(binary, creds=creds, devices=connections, **where))
    return out


def _line(r: LoadResult) -> str:
    bound = "  GENERATOR-BOUND" if r.generator_bound else ""
    stored = "" if r.stored is None else f"  stored {r.stored}/{r.acked}"
    return (
        f"{r.server:<9} {r.devices:>5} x {r.msgs_per_device:<5} {r.msgs_per_s:>9,.0f} msgs/s  "
        f"server {r.server_cpu_us_per_msg:6.1f} µs/msg  generator {r.generator_share:4.0%} "
        f"of a core  PUBACK p50 {r.puback_p50_us} µs p99 {r.puback_p99_us} µs{bound}{stored}"
        + (f"  ({r.threads_us_per_msg} µs/msg)" if r.server == "thinghub" else "")
    )


def summary(results: Sequence[LoadResult]) -> list[str]:
    """thinghub / mosquitto per point: msgs/s (unless either is generator-bound), CPU/msg."""
    out = []
    ref = {(r.devices, r.msgs_per_device): r for r in results if r.server == "mosquitto"}
    for r in results:
        m = ref.get((r.devices, r.msgs_per_device))
        if r.server != "thinghub" or m is None:
            continue
        rate = (
            "not a ratio: thinghub's generator-bound"
            if r.generator_bound
            else f"{r.msgs_per_s / m.msgs_per_s:.3f}x msgs/s"
        )
        cpu = r.server_cpu_us_per_msg / m.server_cpu_us_per_msg if m.server_cpu_s else 0
        mbound = " (mosquitto generator-bound: a floor)" if m.generator_bound else ""
        out.append(f"{r.devices} devices: {rate}{mbound}; server CPU/msg {cpu:.1f}x mosquitto's")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_load", description=__doc__)
    parser.add_argument("--points", default="100x2000,1000x200", help="DEVICESxMSGS,...")
    parser.add_argument("--rate", type=float, default=0, help="total msgs/s (0: flat out)")
    parser.add_argument("--only", choices=["thinghub", "mosquitto"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--idle", type=int, default=0, help="only: RSS per N idle connections")
    args = parser.parse_args(argv)
    if args.idle:
        load0 = os.getloadavg()[0]
        for r in run_idle(args.idle):
            print(
                f"{r.server:<9} {r.connections} idle TLS connections: "
                f"{r.kib_per_connection:.1f} KiB each "
                f"({r.rss_before_kib / 1024:.0f} -> {r.rss_after_kib / 1024:.0f} MiB), "
                f"connected in {r.connect_s:.1f} s ({r.connections / r.connect_s:,.0f}/s)"
            )
        print(f"1-minute load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
        return 0
    points = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]
    load0 = os.getloadavg()[0]
    started = time.time()
    results = run_points([(d, m) for d, m in points], rate=args.rate, only=args.only)
    load1 = os.getloadavg()[0]
    for line in summary(results):
        print(line)
    print(f"1-minute load average {load0:.2f} at the start, {load1:.2f} at the end")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started,
                    "load_average": [load0, load1],
                    "results": [r.to_json() for r in results],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
