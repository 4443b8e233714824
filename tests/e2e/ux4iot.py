"""Helpers for the ux4iot e2e tests: keys, accounts, the REST API and a python-socketio
AsyncClient bound to a session (the second, independent Engine.IO v4 client)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import socketio

from tests.e2e.helpers_st import create_device, device_sas, post_telemetry
from tests.e2e.server import ServerProcess

UX = "/ux4iot"
KEY = "Shared-Access-Key"
SESSION = "sessionId"
WAIT_S = 15.0

Payload = dict[str, Any]


def create_key(server: ServerProcess, token: str | None = None, label: str = "") -> dict[str, Any]:
    """A new ux4iot key of the token's account (the admin token's: the default account)."""
    with server.client(token, verify=False) as api:
        response = api.post("/v1/ux4iot/keys", json={"label": label})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def other_account(server: ServerProcess, name: str) -> str:
    """Create an account with the CLI and return an admin token of it."""
    server.cli("account", "create", name, "--json")
    return server.cli("token", "create", "--quiet", "--role", "admin", "--account", name)


def new_device(server: ServerProcess, token: str | None = None, name: str = "ux") -> dict[str, Any]:
    with server.client(token, verify=False) as api:
        return create_device(api, name, "ux", "d")


def send_https(server: ServerProcess, device: dict[str, Any], body: Any) -> None:
    """Device telemetry over HTTPS ingest (IoT Hub's /devices/{id}/messages/events)."""
    response = post_telemetry(server.http_url, device["id"], body, device_sas(device))
    assert response.status_code == 204, response.text


class Ux:
    """The ux4iot REST API of one server with one key (sync; the tests' security backend)."""

    def __init__(self, base_url: str, key: str | None, prefix: str = UX) -> None:
        headers = {KEY: key} if key is not None else {}
        self.http = httpx.Client(
            base_url=base_url + prefix, headers=headers, timeout=30, verify=False
        )
        # What a browser sends: no key, the session's id where a call needs it.
        self.bare = httpx.Client(base_url=base_url + prefix, timeout=30, verify=False)

    def __enter__(self) -> Ux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.bare.close()

    def session(self) -> str:
        response = self.http.post(
            "/session", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["sessionId"])

    def grant(self, session_id: str, device_id: str, kind: str, **extra: Any) -> httpx.Response:
        body = {"sessionId": session_id, "deviceId": device_id, "type": kind, **extra}
        return self.http.put("/grants", json=body)

    def revoke(self, session_id: str, device_id: str, kind: str, **extra: Any) -> httpx.Response:
        body = {"sessionId": session_id, "deviceId": device_id, "type": kind, **extra}
        return self.http.request("DELETE", "/grants", json=body)

    def subscribe(
        self, session_id: str, device_id: str, kind: str, method: str = "PUT", **extra: Any
    ) -> httpx.Response:
        body = {"sessionId": session_id, "deviceId": device_id, "type": kind, **extra}
        return self.bare.request(method, "/subscription", json=body)

    def as_session(self, method: str, path: str, session_id: str, **kwargs: Any) -> httpx.Response:
        """A call carrying only the session's id (no key), as a browser makes it."""
        headers = {SESSION: session_id, **kwargs.pop("headers", {})}
        return self.bare.request(method, path, headers=headers, **kwargs)


class LiveSocket:
    """A python-socketio AsyncClient connected with `?sessionId=`; collects `data`."""

    def __init__(self, namespace: str = UX) -> None:
        self.namespace = namespace
        # Our own aiohttp session, closed by close(): python-socketio leaves the one it makes
        # open when the server ended the connection, and its garbage collection later raises
        # a ResourceWarning inside whichever test runs then.
        self.http = aiohttp.ClientSession()
        self.client = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.payloads: list[Payload] = []
        self.disconnects: list[Any] = []
        self._changed = asyncio.Event()
        self.client.on("data", self._on_data, namespace=namespace)
        self.client.on("disconnect", self._on_disconnect, namespace=namespace)

    async def _on_data(self, payload: Payload) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def _on_disconnect(self, *reason: Any) -> None:
        self.disconnects.append(reason)
        self._changed.set()

    async def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self.client.disconnect()
        finally:
            await self.http.close()

    async def wait(
        self, match: Callable[[Payload], bool], within: float = WAIT_S, what: str = "data"
    ) -> Payload:
        """The first payload (seen so far or arriving) that matches."""
        deadline = time.monotonic() + within
        while True:
            for payload in self.payloads:
                if match(payload):
                    return payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {within} s; got {self.payloads!r}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_disconnect(self, within: float = WAIT_S) -> None:
        deadline = time.monotonic() + within
        while not self.disconnects:
            left = deadline - time.monotonic()
            assert left > 0, "the server did not disconnect the socket"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)


@contextlib.asynccontextmanager
async def live_socket(
    base_url: str,
    session_id: str,
    *,
    namespace: str = UX,
    transports: tuple[str, ...] = ("websocket", "polling"),
) -> AsyncIterator[LiveSocket]:
    """Connect as the 4.x client does (`io(url?sessionId=…, {transports})`)."""
    live = LiveSocket(namespace)
    await live.client.connect(
        f"{base_url}/?sessionId={session_id}",
        namespaces=[namespace],
        transports=list(transports),
        wait_timeout=WAIT_S,
    )
    try:
        yield live
    finally:
        await live.close()


def telemetry_of(device_id: str, **values: Any) -> Callable[[Payload], bool]:
    """A `data` payload of this device's telemetry holding exactly `values`."""
    return lambda p: p.get("deviceId") == device_id and p.get("telemetry") == values
