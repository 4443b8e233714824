"""Cluster benchmark: the same MQTT load on one node and on two, and a direct method's round
trip within one node and across two nodes.

Theory of operation: a throwaway PostgreSQL (tests.pg) and nats-server (tests.nats_server),
two `thinghub serve` nodes on them (`--bus`, the second with a copy of the first's CA). A few
simulated devices (thinghub.simulator, answering every method with 200) connect to node A.
The same sequence of `POST /v1/devices/{id}/method` calls (one keep-alive HTTP connection,
after a warm-up) is made first to node A, which holds the devices (the local path), then to
node B, which routes each call over NATS to node A (request/reply) and back. The difference is
the cost of the NATS hop. A run fails loudly (BenchError) on any answer but 200.

The MQTT part drives the C load generator (bench.device_load: QoS 1, TLS, per-device SAS
credentials) at node A alone, then with node B started at A and B at once, half the devices
each, the same total. Server CPU is each node's own CPU from "all connected" to the
generator's exit, summed over the nodes; msgs/s is the total acknowledged over the longest
publishing time. Every message travels on NATS (each node publishes its live events and
every node receives them), so the comparison shows whether CPU per message grows with the
second node. Any acknowledged message not stored fails the run.

    python -m bench.cluster                 # 500 calls each way, 100 devices x 500 msgs
    python -m bench.cluster --calls 100 --mqtt-msgs 100   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tests.nats_server import NatsServer
from tests.pg import create_database, postgres_server

from bench.device_load import LoadResult, build_generator, thinghub_point
from bench.http import BenchError, _clean_env, _ServerProcess
from bench.mqtt import (
    METHOD_DEVICES,
    METHOD_TIMEOUT_S,
    METHOD_WARMUP_CALLS,
    _close_all,
    _hold,
    _register,
)

__all__ = ["main"]


def _node(work: Path, name: str, database: str, bus: str, token: str) -> _ServerProcess:
    data_dir = work / name
    cmd = [
        sys.executable, "-m", "thinghub", "serve", "--data-dir", str(data_dir),
        "--http-port", "0", "--mqtt-port", "0",
        "--itwin-ws-port", "0", "--itwin-tcp-port", "0",
        "--database", database, "--bus", bus, "--node-id", name,
    ]  # fmt: skip
    env = {**_clean_env(), "THINGHUB_ADMIN_TOKEN": token}
    return _ServerProcess(name, cmd, "thinghub ready ", env=env, log_path=work / f"{name}.log")


async def _calls(url: str, token: str, device_ids: list[str], calls: int) -> list[float]:
    body = {"name": "ping", "responseTimeoutInSeconds": METHOD_TIMEOUT_S}
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        for i in range(METHOD_WARMUP_CALLS + calls):
            device_id = device_ids[i % len(device_ids)]
            start = time.perf_counter()
            r = await api.post(f"/v1/devices/{device_id}/method", json=body)
            elapsed = time.perf_counter() - start
            if r.status_code != 200 or r.headers.get("x-method-status") != "200":
                raise BenchError(f"method via {url}: {r.status_code} {r.text}")
            if i >= METHOD_WARMUP_CALLS:
                latencies.append(elapsed * 1000)
    return latencies


def _summary(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return (
        f"| {name} | {len(ordered)} | {q(0.5):.2f} | {q(0.9):.2f} | {q(0.99):.2f} "
        f"| {statistics.fmean(ordered):.2f} |"
    )


async def _run(a: _ServerProcess, b: _ServerProcess, token: str, calls: int) -> None:
    hub_hostname = a.ready.get("hub_hostname", "localhost")
    async with httpx.AsyncClient(
        base_url=a.ready["http"]["url"], timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        specs = await _register(api, METHOD_DEVICES, "bench-cluster", hub_hostname)
    devices, _, _ = await _hold(
        specs, "127.0.0.1", int(a.ready["mqtt"]["port"]), a.ready["ca_file"]
    )
    try:
        ids = [spec.client_id for spec in specs]
        local = await _calls(a.ready["http"]["url"], token, ids, calls)
        remote = await _calls(b.ready["http"]["url"], token, ids, calls)
    finally:
        await _close_all(devices)
    print("| path | calls | p50 ms | p90 ms | p99 ms | mean ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(_summary("node A, which holds the devices", local))
    print(_summary("node B, over NATS to node A", remote))


def _mqtt_point(
    nodes: Sequence[_ServerProcess], token: str, work: Path, devices: int, msgs: int
) -> str:
    """The same load split over `nodes` (each its own generator); one Markdown table row."""
    binary = build_generator()
    share = devices // len(nodes)
    with ThreadPoolExecutor(len(nodes)) as pool:
        runs = [pool.submit(thinghub_point, binary, n, token, work, share, msgs) for n in nodes]
        results: list[LoadResult] = [run.result() for run in runs]
    acked = sum(r.acked for r in results)
    stored = sum(r.stored or 0 for r in results)
    wall = max(r.publish_s for r in results)
    server_cpu = sum(r.server_cpu_s for r in results)
    generator_cpu = sum(r.generator_cpu_s for r in results)
    return (
        f"| {len(nodes)} | {share * len(nodes)} x {msgs} | {acked:,} | {stored:,} "
        f"| {acked / wall:,.0f} | {server_cpu / acked * 1e6:.1f} | {generator_cpu / wall:.0%} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--mqtt-devices", type=int, default=100, help="0 skips the MQTT part")
    parser.add_argument("--mqtt-msgs", type=int, default=500, help="messages per device")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="thinghub-bench-cluster-"))
    token = "adm_" + secrets.token_urlsafe(24)
    nodes: list[_ServerProcess] = []
    try:
        with postgres_server() as dsn, NatsServer(work / "nats") as nats:
            database = create_database(dsn, "thinghub_bench_cluster")
            a = _node(work, "node-a", database, nats.url, token)
            a.start()
            nodes.append(a)
            rows = []
            if args.mqtt_devices:
                rows.append(_mqtt_point([a], token, work, args.mqtt_devices, args.mqtt_msgs))
            shutil.copytree(work / "node-a" / "certs", work / "node-b" / "certs")
            b = _node(work, "node-b", database, nats.url, token)
            b.start()
            nodes.append(b)
            if args.mqtt_devices:
                rows.append(_mqtt_point([a, b], token, work, args.mqtt_devices, args.mqtt_msgs))
                print("| nodes | devices x msgs | acknowledged | stored | msgs/s "
                      "| server CPU µs/msg (all nodes) | load generator CPU |")  # fmt: skip
                print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
                print("\n".join(rows))
            asyncio.run(_run(a, b, token, args.calls))
            for node in reversed(nodes):
                node.stop()
            nodes.clear()
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
