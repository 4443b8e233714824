"""An Ioto agent replayed step by step for e2e tests: its HTTP calls and its MQTT session.

The Embedthis Ioto agent is C and no registry carries it, so these helpers send what it sends:
every HTTP call a POST with JSON and `Authorization: bearer <token>` (lower-case), device
calls under `{api}/tok/...`; MQTT 3.1.1 over TLS with the provisioned client certificate,
client id = device id, no user name, clean session 0, QoS 1, the three wildcard
subscriptions, and publishes to `$aws/rules/IotoDevice/ioto/service/{id}/...`.

The MQTT client is paho-mqtt (a test-only dependency), so the server's own codec is not the
one checking itself.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt  # type: ignore[import-untyped]

from tests.e2e.server import ServerProcess

DEADLINE_S = 20.0
RULES = "$aws/rules/IotoDevice"
EPOCH_ISO = "1970-01-01T00:00:00.000Z"


def new_id(prefix: str = "IOTO") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


def create_product(admin: httpx.Client, name: str) -> dict[str, Any]:
    response = admin.post("/v1/ioto/products", json={"name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"bearer {token}", "Content-Type": "application/json"}


@dataclass
class Agent:
    """One device's agent state: what device.json5 holds and what provision.json5 collects."""

    server: ServerProcess
    product_token: str
    device_id: str = field(default_factory=new_id)
    provision: dict[str, Any] = field(default_factory=dict)
    certs_dir: Path | None = None

    @property
    def builder(self) -> str:
        return f"{self.server.http_url}/ioto/api"

    def register(self, **extra: Any) -> httpx.Response:
        """`{builder}/device/register` with device.json5 + `created`, as the agent sends it."""
        body = {
            "id": self.device_id,
            "product": self.product_token,
            "name": "test device",
            "description": "e2e",
            "model": "sim",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            **extra,
        }
        response = httpx.post(
            f"{self.builder}/device/register",
            content=json.dumps(body),
            headers=bearer(self.product_token),
            timeout=DEADLINE_S,
        )
        if response.status_code == 200 and len(response.json()) >= 3:
            self.provision.update(response.json())
        return response

    def call(self, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        """A device call `{api}/tok{path}` with the device token (or `token`)."""
        api = self.provision.get("api", self.builder)
        return httpx.post(
            f"{api}/tok{path}",
            content=b"" if body is None else body if isinstance(body, bytes) else json.dumps(body),
            headers=bearer(token or self.provision["token"]),
            timeout=DEADLINE_S,
        )

    def provision_cert(self, directory: Path) -> dict[str, Any]:
        """`{api}/tok/device/provision`, saving the certificate and key as the agent does."""
        response = self.call("/device/provision", {"id": self.device_id})
        assert response.status_code == 200, response.text
        answer = dict(response.json())
        assert "certificate" in answer and "key" in answer, answer
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "device.crt").write_text(answer["certificate"])
        (directory / "device.key").write_text(answer["key"])
        self.certs_dir = directory
        self.provision.update(answer)
        return answer

    def mqtt(self) -> AgentMqtt:
        assert self.certs_dir is not None, "provision first"
        return AgentMqtt(
            self.device_id,
            host=self.provision["endpoint"],
            port=int(self.provision["port"]),
            ca_file=self.server.ca_file,
            cert=self.certs_dir / "device.crt",
            key=self.certs_dir / "device.key",
        )


class AgentMqtt:
    """The agent's MQTT side on paho: TLS with the client certificate, clean session 0."""

    def __init__(
        self, device_id: str, *, host: str, port: int, ca_file: str, cert: Path, key: Path
    ) -> None:
        self.device_id = device_id
        self.host = host
        self.port = port
        context = ssl.create_default_context(cafile=ca_file)
        context.load_cert_chain(str(cert), str(key))
        context.set_alpn_protocols(["x-amzn-mqtt-ca"])
        self.client = mqtt.Client(client_id=device_id, clean_session=False, protocol=mqtt.MQTTv311)
        self.client.tls_set_context(context)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.subacks: dict[int, tuple[int, ...]] = {}
        self.published: dict[int, threading.Event] = {}
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self.seen: list[tuple[str, bytes]] = []

    # paho callbacks (its network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: int) -> None:
        self.connack.put(rc)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, granted: Any) -> None:
        with self._lock:
            self.subacks[mid] = tuple(granted)

    def _on_publish(self, client: Any, userdata: Any, mid: int) -> None:
        with self._lock:
            self.published.setdefault(mid, threading.Event()).set()

    def _on_disconnect(self, client: Any, userdata: Any, rc: int) -> None:
        self.disconnected.set()

    # the agent's steps
    def connect(self) -> int:
        """Connect (keep-alive 1200 s, as the agent) and answer the CONNACK return code."""
        self.disconnected.clear()
        self.client.connect(self.host, self.port, keepalive=1200)
        self.client.loop_start()
        try:
            return self.connack.get(timeout=DEADLINE_S)
        except queue.Empty:
            raise AssertionError("no CONNACK") from None

    def subscribe(self, *filters: str) -> tuple[int, ...]:
        result, mid = self.client.subscribe([(f, 1) for f in filters])
        assert result == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self.subacks:
                    return self.subacks[mid]
            time.sleep(0.01)
        raise AssertionError(f"no SUBACK for {filters}")

    def subscribe_agent(self, account_id: str) -> tuple[int, ...]:
        return self.subscribe(
            f"ioto/device/{self.device_id}/#", "ioto/account/all/#", f"ioto/account/{account_id}/#"
        )

    def publish(self, topic: str, body: Any, *, wait: bool = True, qos: int = 1) -> int:
        """Publish (QoS 1, as the agent does); with `wait`, until the PUBACK."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        info = self.client.publish(topic, payload, qos=qos)
        if wait:
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                with self._lock:
                    event = self.published.get(info.mid)
                if event is not None and event.is_set():
                    return int(info.mid)
                time.sleep(0.01)
            raise AssertionError(f"no PUBACK for {topic}")
        return int(info.mid)

    def service(self, path: str, body: Any) -> int:
        """A device → cloud publish under the rules prefix, e.g. `db/syncDown`."""
        return self.publish(f"{RULES}/ioto/service/{self.device_id}/{path}", body)

    def expect(self, topic: str, timeout: float = DEADLINE_S) -> bytes:
        """The next message on `topic` (others received meanwhile are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing on {topic} in {timeout} s")
            try:
                got, payload = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if got == topic:
                return payload
            self.seen.append((got, payload))

    def expect_json(self, topic: str, timeout: float = DEADLINE_S) -> Any:
        return json.loads(self.expect(topic, timeout))

    def __enter__(self) -> AgentMqtt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def sync_down(self, since: str = EPOCH_ISO) -> dict[str, Any]:
        """The agent's start-up handshake: syncDown, then wait for SYNCDOWN."""
        self.service("db/syncDown", {"timestamp": since})
        return dict(self.expect_json(f"ioto/device/{self.device_id}/sync/SYNCDOWN"))


def claimed_agent(
    server: ServerProcess, user: httpx.Client, product_token: str, directory: Path
) -> Agent:
    """A device registered, claimed by `user`'s account, registered again and provisioned."""
    agent = Agent(server, product_token)
    assert len(agent.register().json()) == 2
    response = user.post("/ioto/api/device/claim", json={"id": agent.device_id})
    assert response.status_code == 200, response.text
    assert "token" in agent.register().json()
    agent.provision_cert(directory / agent.device_id)
    return agent
