"""Abuse of the iTwin face's parsers on a live server, while a well-behaved device watches.

Seeded generators mutate valid JSON-RPC requests (byte flips, cuts, splices, wrong types,
deep nesting, huge and odd values) and send them over the WebSocket port, the plain TCP port
and the REST bodies. Meanwhile a real MQTT device publishes QoS 1 telemetry every 50 ms and
times each PUBACK. Afterwards:

- no answer was an internal error (-32603, or an HTTP 5xx), every error had the face's shape;
- a WebSocket was never closed by a bad request, and still answers a `time` request;
- the server is alive, answers fresh connections on every port, and logged no traceback;
- the watching device stayed connected and every message was acknowledged in time.

A failure names the generator's seed and case, so it repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websocket

from tests.e2e.helpers_st import create_device
from tests.e2e.itwin import (
    RECV_TIMEOUT_S,
    api_token,
    register,
    rpc,
    send_telemetry,
    sensor_id,
    tcp_address,
    ws_url,
)
from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

SEED = 20261205
CASES = 400  # per transport; about a second or two each here
PUBACK_MAX_S = 3.0  # what must be caught is a stall (seconds), not a slower machine
MONITOR_INTERVAL_S = 0.05
INTERNAL_ERROR = -32603


def valid_requests(sensor: str) -> list[dict[str, Any]]:
    """Requests the generators start from: every method, with plausible params."""
    data = {"sensor": sensor, "metric": "T", "unit": "F", "startDate": "2020-01-01T00:00:00Z"}
    return [
        {"jsonrpc": "2.0", "method": "time", "id": 1},
        {"jsonrpc": "2.0", "method": "help", "id": "2"},
        {"jsonrpc": "2.0", "method": "getSensors", "id": 3, "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getNodes", "id": 4, "params": {"projectIds": ["p"]}},
        {"jsonrpc": "2.0", "method": "getMetrics", "id": 5, "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getUnits", "id": 6, "params": {"metrics": ["T", "dx"]}},
        {"jsonrpc": "2.0", "method": "getData", "id": 7, "params": data},
        {"jsonrpc": "2.0", "method": "getData", "id": 8,
         "params": {**data, "metric": "dT", "params": {"dt": {"value": 60}}, "limit": "last"}},
        {"jsonrpc": "2.0", "method": "getObservationsSummary", "id": 9,
         "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getRawMetrics", "id": 10, "params": {"types": ["X"]}},
        {"jsonrpc": "2.0", "method": "uploadData", "id": 11, "params": {"data": [
            {"sensorId": sensor, "timestamp": "2024-01-01T00:00:00Z", "values": {"T": 1.5}}]}},
        {"jsonrpc": "2.0", "method": "createSensor", "id": 12, "params": {
            "sensor": "/fz/A/node/d/B/device/s/sensor", "type": "X", "props": {"NAME": "n"}}},
        {"jsonrpc": "2.0", "method": "updateSensor", "id": 13,
         "params": {"sensor": sensor, "props": {"NAME": "fuzzed"}}},
        {"jsonrpc": "2.0", "method": "unsubscribeData", "id": 14, "params": {"id": 99}},
    ]  # fmt: skip


ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2**63, -(2**70), 1e308, -0.0, "", "x" * 5000, "\u0000", "\ud800"[:0] + "é",
    [], {}, [[[[[]]]]], {"a": {"b": {"c": {}}}}, "/thinghub/x/node", "2024-13-45T99:99:99Z",
    {"value": "nope"}, ["a"] * 2000,
]  # fmt: skip


def mutate(rng: random.Random, base: dict[str, Any]) -> bytes:
    """One malformed or odd request, from `base`."""
    choice = rng.randrange(9)
    request = json.loads(json.dumps(base))
    if choice == 0:  # a param or member of the wrong type or value
        target = request if rng.random() < 0.4 else request.setdefault("params", {})
        if isinstance(target, dict) and target:
            target[rng.choice(list(target))] = rng.choice(ODD_VALUES)
        return json.dumps(request).encode()
    if choice == 1:  # an extra member anywhere
        request[rng.choice(["params", "id", "method", "x"])] = rng.choice(ODD_VALUES)
        return json.dumps(request).encode()
    if choice == 2:  # deep nesting in params
        depth = rng.choice([10, 60, 70, 200, 5000])
        request["params"] = json.loads("[" * min(depth, 900) + "]" * min(depth, 900))
        return json.dumps(request).encode()
    text = json.dumps(request).encode()
    if choice == 3:  # flipped bytes
        raw = bytearray(text)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if choice == 4:  # cut short, then closed
        return text[: rng.randrange(1, len(text))] + b"}"
    if choice == 5:  # a different method name
        request["method"] = rng.choice(["", "getdata", "x" * 300, "__init__", "authenticate"])
        return json.dumps(request).encode()
    if choice == 6:  # not an object
        return rng.choice([b"[]", b"[1,2]", b'"str"', b"null", b"{}", b'{"jsonrpc":"2.0"}'])
    if choice == 7:  # braces inside strings, escapes
        request.setdefault("params", {})["props"] = {"NAME": '}{"}\\"{' * rng.randint(1, 50)}
        return json.dumps(request).encode()
    return text  # a valid one now and then


class Monitor:
    """A real device publishing QoS 1 telemetry on a thread, timing each PUBACK."""

    def __init__(self, server: ServerProcess, device: dict[str, Any]) -> None:
        self.server = server
        self.device = device
        self.latencies: list[float] = []
        self.lost: list[int] = []
        self.stop = threading.Event()
        self.closed = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        raw = RawDevice(self.server.mqtt_port, self.server.ca_file)
        username, password = credentials(self.device)
        assert await raw.connect(self.device["id"], username, password) == 0
        topic = f"devices/{self.device['id']}/messages/events/"
        try:
            while not self.stop.is_set():
                sent = time.monotonic()
                packet_id = raw.publish(topic, b'{"watch": 1}', 1)
                assert packet_id is not None
                while packet_id not in raw.acked and time.monotonic() - sent < PUBACK_MAX_S:
                    if raw.closed.is_set():
                        self.closed = True
                        return
                    await asyncio.sleep(0.002)
                if packet_id in raw.acked:
                    self.latencies.append(time.monotonic() - sent)
                else:
                    self.lost.append(packet_id)
                await asyncio.sleep(MONITOR_INTERVAL_S)
        finally:
            await raw.close()

    def check(self) -> None:
        assert not self.closed, "the watching device was disconnected"
        assert not self.lost, f"{len(self.lost)} messages got no PUBACK within {PUBACK_MAX_S} s"
        assert self.latencies, "the monitor never ran"


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> dict[str, Any]:
    with server.client() as api:
        device = register(api, "fuzz")
    send_telemetry(server, device, {"T": 20.0})
    return {"device": device, "sensor": sensor_id(device["id"])}


@pytest.fixture
def monitor(server: ServerProcess) -> Iterator[Monitor]:
    with server.client() as api:
        device = create_device(api, "watcher", "watchers", "d")
    with Monitor(server, device) as running_monitor:
        yield running_monitor
    running_monitor.check()


def check_message(message: Any, case: str) -> None:
    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", case
    if "error" in message:
        error = message["error"]
        assert set(error) == {"code", "message"}, case
        assert isinstance(error["code"], int) and isinstance(error["message"], str), case
        assert error["code"] != INTERNAL_ERROR, (case, error)
    else:
        assert "result" in message, case


def test_fuzzed_websocket_requests_never_crash_or_close(
    server: ServerProcess, target: dict[str, Any], monitor: Monitor
) -> None:
    rng = random.Random(SEED)
    bases = valid_requests(target["sensor"])
    ws = websocket.create_connection(ws_url(server), timeout=RECV_TIMEOUT_S)
    try:
        ws.send(rpc("authenticate", {"code": server.admin_token}, 0))
        assert "result" in json.loads(ws.recv())
        for case in range(CASES):
            payload = mutate(rng, rng.choice(bases))
            label = f"seed {SEED} case {case}: {payload[:120]!r}"
            if rng.random() < 0.2:
                ws.send_binary(payload)
            else:
                ws.send(payload.decode("utf-8", "replace"))
            # A fence after each: every answer before it is this case's.
            ws.send(rpc("time", {}, "fence"))
            while True:
                message = json.loads(ws.recv())
                check_message(message, label)
                if message.get("id") == "fence" and "result" in message:
                    break
    finally:
        ws.close()


def test_fuzzed_tcp_streams_never_crash(
    server: ServerProcess, target: dict[str, Any], monitor: Monitor
) -> None:
    rng = random.Random(SEED + 1)
    bases = valid_requests(target["sensor"])
    for case in range(CASES // 4):
        s = socket.create_connection(tcp_address(server), timeout=RECV_TIMEOUT_S)
        try:
            stream = rpc("authenticate", {"code": server.admin_token}, 0).encode()
            stream += b"".join(mutate(rng, rng.choice(bases)) for _ in range(4))
            stream += rpc("time", {}, "fence").encode()
            cut = rng.randrange(1, len(stream))
            # The server may close first (bytes that are no JSON: -32700, then no resync).
            with contextlib.suppress(OSError):
                s.sendall(stream[:cut])
                s.sendall(stream[cut:])
                s.shutdown(socket.SHUT_WR)  # then the server answers what it can and closes
            data = b""
            with contextlib.suppress(ConnectionResetError):
                while part := s.recv(65536):
                    data += part
        finally:
            s.close()
        label = f"seed {SEED + 1} case {case}"
        text = data.decode("utf-8")
        at = 0
        while at < len(text):
            message, at = _next(text, at)
            check_message(message, label)


def _next(text: str, at: int) -> tuple[Any, int]:
    """One JSON object of the server's TCP replies: they follow each other with nothing in
    between (a character that is not `{` would be a framing bug)."""
    assert text[at : at + 1] == "{", text[at : at + 40]
    value, end = json.JSONDecoder().raw_decode(text, at)
    return value, end


def test_fuzzed_rest_bodies_get_the_seed_shapes(
    server: ServerProcess, target: dict[str, Any], monitor: Monitor
) -> None:
    rng = random.Random(SEED + 2)
    token = api_token(server)["token"]
    upload = {"observations": [{"sensorId": target["sensor"], "timestamp": "2024-01-01T00:00:00Z",
                                "values": {"T": 1.0}}]}  # fmt: skip
    integration = {"integration": {"changeState": "new", "devices": [{"changeState": "new",
                   "props": {"INTEGRATION_ID": "IMPORT_DEVICE_SDE", "NAME": "d"}}]}}  # fmt: skip
    routes = [("/data/upload", upload), ("/integrations/integrate", integration),
              ("/sensors/metrics", {"ids": [target["sensor"]]})]  # fmt: skip
    with httpx.Client(
        base_url=f"{server.http_url}/itwin/api",
        headers={"Authorization": f"ApiKey {token}", "Content-Type": "application/json"},
        timeout=30,
    ) as api:
        for case in range(CASES // 2):
            path, body = rng.choice(routes)
            payload = mutate(rng, body)
            response = api.post(path, content=payload, params={"projectIds": "fuzz"})
            label = f"seed {SEED + 2} case {case}: {path} {payload[:120]!r}"
            assert response.status_code < 500, label
            shape = response.json()
            if response.status_code >= 400:
                assert "errors" in shape or set(shape.get("error", {})) == {"code", "message"}, (
                    label,
                    shape,
                )


def test_the_server_is_whole_after_the_fuzz(server: ServerProcess, target: dict[str, Any]) -> None:
    for url in (ws_url(server),):
        ws = websocket.create_connection(url, timeout=RECV_TIMEOUT_S)
        ws.send(rpc("authenticate", {"code": server.admin_token}, 0))
        assert json.loads(ws.recv())["result"] == {"nextId": 1}
        ws.close()
    with contextlib.closing(socket.create_connection(tcp_address(server), timeout=10)) as s:
        s.sendall(rpc("time", {}, 1).encode())
        assert b'"code":-32001' in s.recv(4096)  # answered: authenticate first
    log = server.log_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log
