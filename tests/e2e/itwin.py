"""Helpers for the iTwin face's e2e tests: the seed's own client code, and ways to make data.

`decodeOneJsonFrame` is the seed's TCP reader as printed (Python 2, strings), with `bytes`
in place of `str` so Python 3's socket.recv fits: one byte at a time, counting braces.
`SeedJsClient` is the seed's JavaScript sendRequest/onMessage logic (callbacks by request id,
nextId from authenticate) over a websocket-client connection, run by the test's thread.
"""

from __future__ import annotations

import json
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import websocket

from tests.e2e.helpers_st import device_sas, post_telemetry
from tests.e2e.server import ServerProcess

RECV_TIMEOUT_S = 20.0
WAIT_S = 20.0


def decodeOneJsonFrame(socket: socket.socket) -> bytes:  # noqa: N802 - the seed's name
    # Gets one JSON frame from the TCP stream
    # Extremely slow and not reliable, shown for example only
    frame = b""
    count = 0
    while True:
        byte = socket.recv(1)
        if byte == b"":
            raise ConnectionError("the server closed the connection")
        if byte == b"{":
            count = count + 1
        elif byte == b"}":
            count = count - 1
        frame = frame + byte
        if count == 0:
            return frame


def ws_url(server: ServerProcess) -> str:
    """The own WebSocket port (the seed's `wss://host:4201`, here plain)."""
    address = server.addresses["itwin_ws"]
    return f"ws://{address['host']}:{address['port']}"


def http_ws_url(server: ServerProcess) -> str:
    """The JSON-RPC WebSocket on the HTTP port."""
    return server.http_url.replace("http://", "ws://") + "/itwin/ws"


def tcp_address(server: ServerProcess) -> tuple[str, int]:
    address = server.addresses["itwin_tcp"]
    return str(address["host"]), int(address["port"])


def rpc(method: str, params: Any = None, request_id: Any = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if request_id is not None:
        message["id"] = request_id
    return json.dumps(message)


class Ws:
    """A websocket-client connection with JSON helpers and a deadline on every read."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.ws = websocket.create_connection(url, timeout=RECV_TIMEOUT_S)
        self.next_id = 1
        if token is not None:
            answer = self.call("authenticate", {"code": token}, request_id=0)
            assert answer["result"]["nextId"] == 1, answer

    def send(self, method: str, params: Any = None, request_id: Any = None) -> Any:
        if request_id is None:
            request_id = self.next_id
            self.next_id += 1
        self.ws.send(rpc(method, params, request_id))
        return request_id

    def recv(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv())
        return message

    def call(self, method: str, params: Any = None, request_id: Any = None) -> dict[str, Any]:
        """Send a request and return its (first) answer; pushes of other ids are skipped."""
        sent = self.send(method, params, request_id)
        return self.until_id(sent)

    def until_id(self, request_id: Any) -> dict[str, Any]:
        deadline = time.monotonic() + RECV_TIMEOUT_S
        while time.monotonic() < deadline:
            message = self.recv()
            if message.get("id") == request_id or str(message.get("id")) == str(request_id):
                return message
        raise TimeoutError(f"no answer to {request_id!r}")

    def stream(self, method: str, params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A streamed call's data chunks and its separate finished message."""
        sent = self.send(method, params)
        chunks = []
        while True:
            message = self.until_id(sent)
            if "error" in message:
                raise AssertionError(message)
            if message["result"].get("requestStatus") == "finished":
                return chunks, message
            chunks.append(message["result"])

    def close(self) -> None:
        self.ws.close()


def api_token(
    server: ServerProcess, role: str = "operator", project: str | None = None
) -> dict[str, Any]:
    """A new API token of the server's default account: {id, token, ...}."""
    with server.client() as api:
        body: dict[str, Any] = {"role": role, "label": "itwin"}
        if project is not None:
            body["project"] = project
        response = api.post("/v1/tokens", json=body)
        assert response.status_code == 201, response.text
        token: dict[str, Any] = response.json()
        return token


def register(api: httpx.Client, project: str, *, gateway: bool = False) -> dict[str, Any]:
    """A /v1 device in `project` (deployment `d`)."""
    response = api.post(
        "/v1/devices",
        json={
            "name": f"itwin-{uuid.uuid4().hex[:8]}",
            "project": project,
            "deployment": "d",
            "isIoTEdgeCapable": gateway,
        },
    )
    assert response.status_code == 200, response.text
    device: dict[str, Any] = response.json()
    return device


def send_telemetry(
    server: ServerProcess, device: dict[str, Any], body: Any, component: str | None = None
) -> None:
    """One device-to-cloud message over HTTPS (answered once stored), of a component."""
    headers = {} if component is None else {"iothub-app-$.sub": component}
    response = post_telemetry(
        server.http_url, device["id"], body, device_sas(device), headers=headers
    )
    assert response.status_code == 204, response.text


def node_id(device_id: str) -> str:
    return f"/thinghub/{device_id}/node"


def device_id(device_id: str) -> str:
    return f"/thinghub/{device_id}/node/device/{device_id}/device"


def sensor_id(device_id: str, component: str = "default") -> str:
    return f"/thinghub/{device_id}/node/device/{device_id}/device/{component}/sensor"


def bentley_id() -> int:
    """An id as Bentley's own client picks them (50,000 to 99,999,999)."""
    return random.randint(50_000, 99_999_999)


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class SeedJsClient:
    """The seed's JavaScript client logic ("Managing Connections"): `sendRequest` keeps a
    callback per request id and increments `nextId`; `onMessage` routes `result` and `error`
    (with an id) to the callback. Messages are pumped by `pump_until`."""

    def __init__(self, url: str) -> None:
        self.socket = websocket.create_connection(url, timeout=RECV_TIMEOUT_S)
        self.next_id = 0
        self.callbacks: dict[str, Callable[[Any], None]] = {}
        self.logged_errors: list[Any] = []

    def send_request(self, request: str, params: Any, callback: Callable[[Any], None]) -> int:
        request_id = self.next_id
        self.socket.send(
            json.dumps({"jsonrpc": "2.0", "method": request, "id": request_id, "params": params})
        )
        self.callbacks[str(request_id)] = callback  # JavaScript object keys are strings
        self.next_id += 1
        return request_id

    def on_message(self, message: str) -> None:
        response = json.loads(message)
        if "result" in response:
            self.callbacks[str(response["id"])](response["result"])
        elif "error" in response:
            if "id" in response and response["id"] is not None:
                self.callbacks[str(response["id"])](response["error"])
            else:
                self.logged_errors.append(response["error"])

    def pump_until(self, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("the expected callbacks did not run in time")
            self.on_message(self.socket.recv())

    def close(self) -> None:
        self.socket.close()
