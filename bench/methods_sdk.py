"""Direct-method round trips through `/v1` with the unmodified Azure IoT device SDK as device.

Theory of operation: a `thinghub serve` subprocess (fresh data directory, default settings);
one device registered through `/v1`, connected with `azure-iot-device` (paho-mqtt inside, Nagle
left on as the SDK leaves it) through the listener's HTTP CONNECT first line, answering every
method with 200 from its handler thread. Then N sequential `POST /v1/devices/{id}/method` over
one keep-alive HTTP connection (httpx), after a few warm-up calls; p50/p90/p99/max.

A stall of one delayed-ACK timeout (~40 ms on Linux) on a call shows in p50 when it hits every
call, so the figure is read against that: well under 40 ms means no call waits for a timer.

    python -m bench.methods_sdk --calls 300
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.http import BenchError, thinghub_server

__all__ = ["SdkMethodResult", "measure"]

WARMUP_CALLS = 20
METHOD_TIMEOUT_S = 10
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class SdkMethodResult:
    """Round trips in milliseconds."""

    calls: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _device_client(addresses: dict[str, Any], device: dict[str, Any]) -> Any:
    from azure.iot.device import IoTHubDeviceClient, ProxyOptions

    hub = addresses.get("hub_hostname") or "localhost"
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    return IoTHubDeviceClient.create_from_connection_string(
        f"HostName={hub};DeviceId={device['id']};SharedAccessKey={key}",
        server_verification_cert=Path(addresses["ca_file"]).read_text(),
        proxy_options=ProxyOptions(  # type: ignore[no-untyped-call]
            "HTTP", "127.0.0.1", int(addresses["mqtt"]["port"])
        ),
        connection_retry=False,
        keep_alive=60,
    )


def measure(calls: int) -> SdkMethodResult:
    """Start a server, connect one SDK device, time `calls` method round trips.

    Raises:
        BenchError: the device did not connect, or a call answered anything but 200.
    """
    from azure.iot.device import MethodResponse

    admin_token = "adm_" + secrets.token_urlsafe(24)
    with (
        tempfile.TemporaryDirectory(prefix="thinghub-methods-") as tmp,
        thinghub_server(Path(tmp), admin_token) as hub,
        httpx.Client(
            base_url=hub.ready["http"]["url"],
            timeout=60,
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as api,
    ):
        r = api.post(
            "/v1/devices", json={"name": "sdk-methods", "project": "bench", "deployment": "bench"}
        )
        if r.status_code not in (200, 201):
            raise BenchError(f"POST /v1/devices: {r.status_code} {r.text}")
        device = r.json()
        client = _device_client(hub.ready, device)

        def on_method(request: Any) -> None:
            client.send_method_response(
                MethodResponse.create_from_method_request(request, 200, {"ok": 1})
            )

        client.connect()
        try:
            client.on_method_request_received = on_method
            return _calls(api, device["id"], calls)
        finally:
            client.shutdown()


def _calls(api: httpx.Client, device_id: str, calls: int) -> SdkMethodResult:
    body = {"name": "ping", "responseTimeoutInSeconds": METHOD_TIMEOUT_S}
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    latencies: list[float] = []
    i = 0
    while len(latencies) < calls:
        start = time.perf_counter()
        r = api.post(f"/v1/devices/{device_id}/method", json=body)
        elapsed = time.perf_counter() - start
        if r.status_code == 404 and i == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the handler's subscription may not have arrived yet
            continue
        if r.status_code != 200 or r.headers.get("x-method-status") != "200":
            raise BenchError(f"method call: {r.status_code} {r.text}")
        i += 1
        if i > WARMUP_CALLS:
            latencies.append(elapsed * 1000)
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return SdkMethodResult(
        calls=calls,
        p50_ms=q(0.50),
        p90_ms=q(0.90),
        p99_ms=q(0.99),
        max_ms=round(ordered[-1], 3),
        mean_ms=round(statistics.fmean(ordered), 3),
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.methods_sdk", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    result = measure(args.calls)
    print(
        f"direct method via /v1, device = azure-iot-device: {result.calls} calls, "
        f"p50 {result.p50_ms:.1f} ms, p90 {result.p90_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"max {result.max_ms:.1f} ms; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
