"""Helpers to drive the real `azure-iot-device` SDK (and raw MQTT) against a test server.

How the SDK reaches an ephemeral port (it always dials 8883; docs/faces/device-mqtt.md): every
client goes through the listener's HTTP `CONNECT host:8883` proxy line, named with fake host names
that are in the server certificate's SANs (the proxy resolves them, so no DNS is needed), and trusts
the hub CA through `server_verification_cert` (PEM text). `connection_retry=False` makes refusals
surface at once instead of being retried.

Warnings: pyproject's filterwarnings ignore DeprecationWarning raised from azure.* and paho.*
and the "ssl.PROTOCOL_TLSv1_2 is deprecated" message. That is enough for the SDK's handler
API in-process (the thermostat script runs as a subprocess anyway), except for paho's socket
leaks: see `paho_socket_leaks`.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import gc
import hashlib
import hmac
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from azure.iot.device import (
    X509,
    IoTHubDeviceClient,
    IoTHubModuleClient,
    ProvisioningDeviceClient,
    ProxyOptions,
)

from tests.pg import fetch
from thinghub.mqtt import (
    ClientSession,
    Connacked,
    Publish,
    PublishReceived,
    SubackReceived,
    Will,
)

HUB_HOST = "hub.iothub.test"
DPS_HOST = "dps.iothub.test"
#: Arguments for `thinghub serve`: DPS assigns HUB_HOST; both names go into the SANs.
SERVER_ARGS = ("--hub-hostname", HUB_HOST, "--hostname", DPS_HOST)
THERMOSTAT_MODEL = "dtmi:com:example:Thermostat;1"
THERMOSTAT_SCRIPT = Path(__file__).with_name("thermostat_device.py")
DEFAULT_WAIT_S = 20.0

T = TypeVar("T")

#: paho-mqtt 1.6.1 leaks sockets: loop_start() replaces its wake-up socket pair without
#: closing the old one (connect() after disconnect() on one SDK client, every SAS renewal),
#: shutdown() leaves the pair open until the client is garbage-collected, and reconnect()
#: never closes a TLS socket whose handshake failed. With filterwarnings=error the
#: ResourceWarning fails whichever test the garbage collector happens to run in. Modules
#: using the SDK in-process apply this mark (only unclosed-socket warnings are ignored) and
#: `collect_sdk_garbage` after each test, so the leaks surface where the filter applies.
paho_socket_leaks = pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <(ssl\.SSLSocket|socket\.socket) fd="
    ":pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def collect_sdk_garbage() -> Iterator[None]:
    yield
    gc.collect()


# -- waiting -------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = DEFAULT_WAIT_S,
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


class Inbox:
    """A thread-safe list the SDK's handler threads append to; tests wait on it."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(
        self,
        match: Callable[[Any], bool] = lambda _: True,
        timeout: float = DEFAULT_WAIT_S,
        what: str = "an item",
    ) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.items:
                    if match(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got {self.items!r}")
                self._cond.wait(remaining)


# -- SAS -----------------------------------------------------------------------------------


def sign_sas(key_b64: str, resource_uri: str, expiry: int) -> str:
    """A SAS token exactly as the SDK builds one: the encoded URI is what is signed."""
    enc_uri = quote(resource_uri, safe="")
    digest = hmac.new(
        base64.b64decode(key_b64), f"{enc_uri}\n{expiry}".encode(), hashlib.sha256
    ).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={enc_uri}&sig={sig}&se={expiry}"


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """The group-enrollment device key: base64(HMAC-SHA256(b64decode(group key), reg id))."""
    digest = hmac.new(
        base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def primary_key(device: dict[str, Any]) -> str:
    return str(device["credentials"]["symmetricKey"]["primaryKey"])


# -- the test server, seen from a device ---------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how SDK clients reach one test server."""

    mqtt_port: int
    ca_file: str
    id_scope: str
    hub_host: str = HUB_HOST
    dps_host: str = DPS_HOST

    @classmethod
    def of(cls, addresses: dict[str, Any]) -> Target:
        return cls(
            int(addresses["mqtt"]["port"]),
            str(addresses["ca_file"]),
            str(addresses["id_scope"]),
            hub_host=str(addresses.get("hub_hostname") or HUB_HOST),
        )

    @property
    def ca_pem(self) -> str:
        return Path(self.ca_file).read_text()

    def proxy(self) -> ProxyOptions:
        return ProxyOptions("HTTP", "127.0.0.1", self.mqtt_port)

    def sdk_kwargs(self, **overrides: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "server_verification_cert": self.ca_pem,
            "proxy_options": self.proxy(),
            "connection_retry": False,
            "keep_alive": 30,
        }
        kwargs.update(overrides)
        return kwargs

    # SDK clients --------------------------------------------------------------------------

    def connection_string(self, device_id: str, key: str, module_id: str | None = None) -> str:
        text = f"HostName={self.hub_host};DeviceId={device_id};SharedAccessKey={key}"
        return text + (f";ModuleId={module_id}" if module_id else "")

    def device_client(
        self, device: dict[str, Any], *, key: str | None = None, **overrides: Any
    ) -> IoTHubDeviceClient:
        return IoTHubDeviceClient.create_from_connection_string(
            self.connection_string(device["id"], key or primary_key(device)),
            **self.sdk_kwargs(**overrides),
        )

    def module_client(
        self, gateway_id: str, module: dict[str, Any], **overrides: Any
    ) -> IoTHubModuleClient:
        return IoTHubModuleClient.create_from_connection_string(
            self.connection_string(gateway_id, primary_key(module), module["moduleId"]),
            **self.sdk_kwargs(**overrides),
        )

    def sastoken_client(self, token: str, **overrides: Any) -> IoTHubDeviceClient:
        return IoTHubDeviceClient.create_from_sastoken(token, **self.sdk_kwargs(**overrides))

    def x509_client(
        self, device_id: str, cert_file: Path, key_file: Path, **overrides: Any
    ) -> IoTHubDeviceClient:
        return IoTHubDeviceClient.create_from_x509_certificate(
            X509(str(cert_file), str(key_file)),
            hostname=self.hub_host,
            device_id=device_id,
            **self.sdk_kwargs(**overrides),
        )

    def provisioning_client(
        self, registration_id: str, key: str, **overrides: Any
    ) -> ProvisioningDeviceClient:
        kwargs = self.sdk_kwargs(**overrides)
        kwargs.pop("connection_retry", None)  # not a provisioning option
        return ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=self.dps_host,
            registration_id=registration_id,
            id_scope=self.id_scope,
            symmetric_key=key,
            **kwargs,
        )

    def hub_sas(self, device_id: str, key: str, expiry: int, module_id: str | None = None) -> str:
        uri = f"{self.hub_host}/devices/{device_id}"
        return sign_sas(key, f"{uri}/modules/{module_id}" if module_id else uri, expiry)

    def hub_username(self, device_id: str, module_id: str | None = None) -> str:
        client = f"{device_id}/{module_id}" if module_id else device_id
        return f"{self.hub_host}/{client}/?api-version=2021-04-12"

    # the thermostat sample, as a subprocess -------------------------------------------------

    def thermostat_env(
        self, registration_id: str, key: str, *, interval_s: float = 1.0
    ) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("no_proxy", "mqtt_proxy", "http_proxy", "https_proxy", "all_proxy")
        }
        env.update(
            {
                "IOTHUB_DEVICE_SECURITY_TYPE": "DPS",
                "IOTHUB_DEVICE_DPS_ID_SCOPE": self.id_scope,
                "IOTHUB_DEVICE_DPS_DEVICE_ID": registration_id,
                "IOTHUB_DEVICE_DPS_DEVICE_KEY": key,
                "IOTHUB_DEVICE_DPS_ENDPOINT": self.dps_host,
                "SSL_CERT_FILE": self.ca_file,
                "MQTT_PROXY": f"http://127.0.0.1:{self.mqtt_port}",
                "THERMOSTAT_INTERVAL_S": str(interval_s),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env


@contextlib.contextmanager
def connected(client: Any) -> Iterator[Any]:
    """connect() on entry; shutdown() on exit, whatever happened."""
    try:
        client.connect()
        yield client
    finally:
        client.shutdown()


@contextlib.contextmanager
def closing_client(client: Any) -> Iterator[Any]:
    """shutdown() on exit (for clients whose connect is expected to fail)."""
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.shutdown()


# -- /v1 polling -----------------------------------------------------------------------------


def telemetries(api: httpx.Client, device_id: str) -> list[dict[str, Any]]:
    response = api.get("/v1/telemetries", params={"deviceID": device_id, "limit": 500})
    assert response.status_code == 200, response.text
    return list(response.json())


STORED_COLUMNS = (
    "body, properties, message_id, correlation_id, content_type, content_encoding FROM telemetry"
)


def stored_telemetry(server: Any, device_id: str) -> list[dict[str, Any]]:
    """Telemetry rows as stored (no API exposes the decoded property bag; the DB does)."""
    if server.database:  # PostgreSQL
        sql = f"SELECT {STORED_COLUMNS} WHERE device_id = $1 ORDER BY id"
        return fetch(server.database, sql, device_id)
    db = Path(server.addresses["data_dir"]) / "thinghub.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT {STORED_COLUMNS} WHERE device_id = ? ORDER BY id",
            (device_id,),
        )
        out = [dict(row) for row in rows]
    conn.close()
    return out


def events(
    api: httpx.Client, device_id: str, event_type: str | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"deviceID": device_id, "limit": 500}
    if event_type:
        params["eventType"] = event_type
    response = api.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def connection_states(api: httpx.Client, device_id: str) -> list[str]:
    """The device's connection_state_event states, oldest first."""
    found = events(api, device_id, "connection_state_event")
    found.sort(key=lambda e: e["body"]["sequenceNumber"])
    return [e["body"]["state"] for e in found]


def wait_telemetry(
    api: httpx.Client,
    device_id: str,
    match: Callable[[dict[str, Any]], bool],
    timeout: float = DEFAULT_WAIT_S,
    what: str = "telemetry",
) -> dict[str, Any]:
    return wait_for(
        lambda: next((t for t in telemetries(api, device_id) if match(t)), None),
        timeout,
        what=f"{what} of {device_id}",
    )


def wait_event(
    api: httpx.Client,
    device_id: str,
    event_type: str,
    match: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = DEFAULT_WAIT_S,
) -> dict[str, Any]:
    return wait_for(
        lambda: next((e for e in events(api, device_id, event_type) if match(e)), None),
        timeout,
        what=f"{event_type} of {device_id}",
    )


def wait_connection_state(
    api: httpx.Client, device_id: str, state: str, timeout: float = DEFAULT_WAIT_S
) -> dict[str, Any]:
    return wait_event(
        api, device_id, "connection_state_event", lambda e: e["body"]["state"] == state, timeout
    )


def reported_change(
    api: httpx.Client, device_id: str, key: str, timeout: float = DEFAULT_WAIT_S
) -> dict[str, Any]:
    """The first change_event whose reported section carries `key`."""
    return wait_event(
        api,
        device_id,
        "change_event",
        lambda e: key in e["body"].get("properties", {}).get("reported", {}),
        timeout,
    )


# -- raw MQTT with the project's own codec, through the proxy line ------------------------


class RawClient:
    """A blocking MQTT client over TLS (after the proxy CONNECT line), using ClientSession.

    For what the SDK cannot do: publish or subscribe on arbitrary topics.
    """

    def __init__(
        self,
        target: Target,
        *,
        server_name: str | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        name = server_name or target.hub_host
        raw = socket.create_connection(("127.0.0.1", target.mqtt_port), timeout=10)
        raw.sendall(f"CONNECT {name}:8883 HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = raw.recv(1)
            if not chunk:
                raise ConnectionError("proxy line refused")
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context(cadata=target.ca_pem)
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        self.sock = context.wrap_socket(raw, server_hostname=name)
        self.session = ClientSession()
        self.events: collections.deque[Any] = collections.deque()
        self.closed = threading.Event()

    # One thread only: an OpenSSL connection must not be read and written concurrently, and
    # a socket closed under another thread's blocking recv() sends no FIN until it returns.

    def _pump(self, timeout: float) -> None:
        """Read what arrives within `timeout` (at least one chunk, or EOF, or nothing)."""
        if self.closed.is_set():
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except (OSError, ValueError):
            data = b""
        if not data:
            self.closed.set()
            return
        self.session.receive_data(data)
        while (event := self.session.next_event()) is not None:
            self.events.append(event)
        self._flush()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self.sock.settimeout(10)
            self.sock.sendall(data)

    def next_event(self, kind: type[T], timeout: float = 10.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            while self.events:
                event = self.events.popleft()
                if isinstance(event, kind):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed.is_set():
                raise AssertionError(f"no {kind.__name__} within {timeout:g} s")
            self._pump(remaining)

    def connect(
        self,
        client_id: str,
        username: str,
        password: str | None,
        *,
        clean: bool = False,
        will: Will | None = None,
    ) -> Connacked:
        self.session.connect(
            client_id, username, None if password is None else password.encode(), 30, clean, will
        )
        self._flush()
        return self.next_event(Connacked)

    def publishes(self, within: float) -> list[Publish]:
        """Every PUBLISH that arrives within `within` seconds (other events are dropped)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not self.closed.is_set():
            self._pump(deadline - time.monotonic())
        found = [e.publish for e in self.events if isinstance(e, PublishReceived)]
        self.events.clear()
        return found

    def disconnect(self) -> None:
        """DISCONNECT, then close the socket (the clean way out: no Will).

        Waits for the server to close first: closing with unread bytes (a TLS session
        ticket) sends a reset, which can make the server drop the DISCONNECT unread.
        """
        self.session.disconnect()
        self._flush()
        self.wait_closed(10)
        self.close()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.session.publish(topic, payload, qos)
        self._flush()

    def subscribe(self, topic_filter: str) -> None:
        self.session.subscribe([(topic_filter, 1)])
        self._flush()

    def wait_suback(self, timeout: float = 10.0) -> SubackReceived:
        return self.next_event(SubackReceived, timeout)

    def wait_publish(self, timeout: float = 10.0) -> PublishReceived:
        return self.next_event(PublishReceived, timeout)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed.is_set() and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        return self.closed.is_set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the thermostat script -----------------------------------------------------------------


class ThermostatProcess:
    """tests/e2e/thermostat_device.py as a subprocess: stdin kept open, stdout collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(THERMOSTAT_SCRIPT)],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(
        self, match: Callable[[str], bool] | str, timeout: float = DEFAULT_WAIT_S, after: int = 0
    ) -> tuple[int, str]:
        """The first output line (index >= after) that matches; fail on timeout or exit."""
        test = (lambda line: match in line) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index in range(after, len(self.lines)):
                    if test(self.lines[index]):
                        return index, self.lines[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"thermostat never printed {match!r} (exit {self.proc.poll()}):\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.5))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def quit(self, timeout: float = DEFAULT_WAIT_S) -> int:
        self.send("Q\n")
        code = self.proc.wait(timeout)
        # The process has exited; let the reader take its last lines (stdout hits EOF now).
        self._reader.join(timeout)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def method_report(response: httpx.Response) -> dict[str, Any]:
    """The getMaxMinReport result as the seed shows it: an object.

    The device sends a JSON string holding the report (double-encoded, spec §8); /v1 unwraps
    a string holding a JSON object.
    """
    report = response.json()
    assert isinstance(report, dict), report
    return report
