"""A live fuzz of the ux4iot face: every JSON route (and the path parameters of the others)
gets seeded mutations of valid bodies for about 15 s from a few concurrent clients, while a
real MQTT device publishes QoS 1 telemetry every 50 ms and times each PUBACK.

Every answer must be one of the route's documented statuses in the face's error body (never
a 5xx, never a dropped connection), the monitoring device must get every PUBACK in time, the
server must log no traceback, and afterwards the face must still do its job (a session gets
live data). The seed is fixed: a failure names the route and the body, and repeats.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess, running
from tests.e2e.ux4iot import (
    KEY,
    SESSION,
    UX,
    Ux,
    create_key,
    live_socket,
    new_device,
    send_https,
    telemetry_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]

SEED = 20261204
FUZZ_S = 15.0
WORKERS = 4
REQUEST_TIMEOUT_S = 10.0
MONITOR_INTERVAL_S = 0.05
PUBACK_MAX_S = 3.0  # a stalled server takes seconds; a busy shared CI machine, milliseconds
# What each route may answer (docs/faces/ux4iot.md, "Errors"): never a 5xx.
ALLOWED = {200, 204, 400, 401, 403, 404, 405, 413, 429}
DIRECT_METHOD_ALLOWED = ALLOWED | {504}  # an offline device is 404; a silent one 504


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("ux4iot-fuzz"))) as proc:
        yield proc


@dataclass
class Monitor:
    """A well-behaved device: QoS 1 every 50 ms; every PUBACK's latency."""

    raw: RawDevice
    topic: str
    sent: dict[int, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            packet_id = self.raw.publish(self.topic, json.dumps({"n": n}).encode())
            assert packet_id is not None
            self.sent[packet_id] = time.monotonic()
            n += 1
            await asyncio.sleep(MONITOR_INTERVAL_S)
            self._collect()
        deadline = time.monotonic() + PUBACK_MAX_S
        while self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            self._collect()

    def _collect(self) -> None:
        now = time.monotonic()
        for packet_id in [p for p in self.sent if p in self.raw.acked]:
            self.latencies.append(now - self.sent.pop(packet_id))
            self.raw.acked.discard(packet_id)


# -- the generator ------------------------------------------------------------------------------

WEIRD: list[Any] = [
    None,
    True,
    0,
    -1,
    0.5,
    301,
    1e308,
    2**64,
    "",
    " ",
    "x" * 5000,
    "é\u0000\ud7ff",
    "../..",
    "a;b=c",
    [],
    [1, "a"],
    {},
    {"$": {"$": None}},
    "telemetry",
    "subscribeToTelemetry",
]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"d": value}
    return value


class Bodies:
    """Valid bodies of every route, mutated: fields dropped, retyped, added; whole bodies
    replaced by other JSON, broken JSON, deep JSON and large JSON."""

    def __init__(self, rng: random.Random, ids: dict[str, list[str]]) -> None:
        self.rng = rng
        self.ids = ids

    def pick(self, kind: str) -> str:
        return self.rng.choice(self.ids[kind])

    def grant(self) -> dict[str, Any]:
        kind = self.rng.choice(
            [
                "telemetry",
                "deviceTwin",
                "connectionState",
                "desiredProperties",
                "directMethod",
                "d2cMessages",
            ]
        )
        body: dict[str, Any] = {"sessionId": self.pick("session"), "deviceId": self.pick("device")}
        if self.rng.random() < 0.3:
            body["grantType"] = self.rng.choice(["subscribeToTelemetry", "invokeDirectMethod"])
        else:
            body["type"] = kind
        body["telemetryKey"] = self.rng.choice([None, "temp", "hum"])
        body["directMethodName"] = self.rng.choice([None, "reboot"])
        return body

    def subscription(self) -> dict[str, Any]:
        return {
            "sessionId": self.pick("session"),
            "deviceId": self.pick("device"),
            "type": self.rng.choice(["telemetry", "deviceTwin", "connectionState", "d2cMessages"]),
            "telemetryKey": self.rng.choice([None, "temp"]),
        }

    def bulk(self) -> Any:
        items = [self.subscription() for _ in range(self.rng.randint(0, 4))]
        if self.rng.random() < 0.05:
            items = items * 300  # over the 1,000-element bound
        if self.rng.random() < 0.5:
            return {
                "subscriptionRequests": [
                    {k: v for k, v in i.items() if k != "sessionId"} for i in items
                ]
            }
        return items

    def method(self) -> dict[str, Any]:
        params: dict[str, Any] = {"methodName": self.rng.choice(["reboot", "x" * 300, ""])}
        if self.rng.random() < 0.5:
            params["payload"] = self.rng.choice(WEIRD)
        if self.rng.random() < 0.5:
            params["responseTimeoutInSeconds"] = self.rng.choice([5, 4, 301, "5", None, 5.5])
        if self.rng.random() < 0.3:
            params["connectTimeoutInSeconds"] = self.rng.choice([0, 0.2, -1, 301, "1"])
        return {"deviceId": self.pick("device"), "methodParams": params}

    def patch(self) -> dict[str, Any]:
        patch = {self.rng.choice(["a", "$version", "", "b.c"]): self.rng.choice(WEIRD)}
        return {"deviceId": self.pick("device"), "desiredPropertyPatch": patch}

    def mutate(self, body: Any) -> bytes:
        """The body as bytes, often mutated."""
        roll = self.rng.random()
        if roll < 0.15:
            return json.dumps(body).encode()
        if roll < 0.25:
            return json.dumps(self.rng.choice(WEIRD)).encode()  # another JSON value entirely
        if roll < 0.32:
            text = json.dumps(body).encode()
            return text[: self.rng.randint(0, len(text))]  # truncated
        if roll < 0.36:
            return self.rng.choice([b"\xff\xfe\x00", b"{'a': 1}", b"[", b"null", b"nan", b" "])
        if roll < 0.40:
            return json.dumps(deep(self.rng.choice([63, 65, 200]))).encode()
        if roll < 0.42:
            return json.dumps({"sessionId": "s", "x": "y" * 1_000_000}).encode()
        if isinstance(body, dict) and body:
            mutated = dict(body)
            key = self.rng.choice(list(mutated))
            action = self.rng.random()
            if action < 0.3:
                del mutated[key]
            elif action < 0.8:
                mutated[key] = self.rng.choice(WEIRD)
            else:
                mutated[self.rng.choice(["extra", "__proto__", "type", "grantType"])] = (
                    self.rng.choice(WEIRD)
                )
            if (
                isinstance(mutated.get("methodParams"), dict)
                and mutated["methodParams"]
                and self.rng.random() < 0.5
            ):
                params = dict(mutated["methodParams"])
                params[self.rng.choice(list(params))] = self.rng.choice(WEIRD)
                mutated["methodParams"] = params
            return json.dumps(mutated).encode()
        if isinstance(body, list) and body:
            mutated_list = list(body)
            mutated_list[self.rng.randrange(len(mutated_list))] = self.rng.choice(WEIRD)
            return json.dumps(mutated_list).encode()
        return json.dumps(body).encode()

    def request(self) -> tuple[str, str, bytes | None, dict[str, str], set[int]]:
        """(method, path, body, headers, allowed statuses) of one fuzzed call."""
        key = {KEY: self.pick("key")}
        session = {SESSION: self.pick("session")}
        choice = self.rng.randrange(12)
        if choice == 0:
            return "PUT", "/grants", self.mutate(self.grant()), key, ALLOWED
        if choice == 1:
            return "DELETE", "/grants", self.mutate(self.grant()), key, ALLOWED
        if choice in (2, 3):
            method = "PUT" if choice == 2 else "DELETE"
            return method, "/subscription", self.mutate(self.subscription()), {}, ALLOWED
        if choice in (4, 5):
            method = "PUT" if choice == 4 else "DELETE"
            headers = session if self.rng.random() < 0.6 else {}
            return method, "/subscriptions", self.mutate(self.bulk()), headers, ALLOWED
        if choice == 6:
            headers = self.rng.choice([key, session, {}])
            return (
                "POST",
                "/directMethod",
                self.mutate(self.method()),
                headers,
                DIRECT_METHOD_ALLOWED,
            )
        if choice == 7:
            headers = self.rng.choice([key, session, {}])
            return (
                "PATCH",
                "/deviceTwinDesiredProperties",
                self.mutate(self.patch()),
                headers,
                ALLOWED,
            )
        if choice == 8:
            return (
                "POST",
                "/session",
                self.rng.choice([None, b"", self.mutate({"a": 1})]),
                {},
                {200},
            )
        segment = self.rng.choice(
            [self.pick("device"), "%00", "%2E%2E", "a%2Fb", "x" * 2000, "%ff"]
        )
        if choice == 9:
            path = self.rng.choice(
                ["/lastValue/{}", "/lastValue/{}/temp", "/deviceTwin/{}", "/connectionState/{}"]
            ).format(segment)
            return "GET", path, None, self.rng.choice([key, session, {}]), ALLOWED
        if choice == 10:
            level = self.rng.choice(["info", "LOUD", "%00", "x" * 300, "warn"])
            return "PUT", f"/logLevel/{level}", None, self.rng.choice([key, {}]), ALLOWED
        return "DELETE", f"/sessions/{segment}", None, self.rng.choice([key, {}]), ALLOWED


async def test_fuzzing_every_json_route_leaves_the_server_whole(server: ServerProcess) -> None:
    key = create_key(server)["key"]
    devices = [new_device(server, name=f"fuzz{i}") for i in range(2)]
    monitored = new_device(server, name="monitor")
    with Ux(server.http_url, key) as ux:
        sessions = [ux.session() for _ in range(3)]
        for session in sessions[:2]:
            assert ux.grant(session, devices[0]["id"], "telemetry").status_code == 204
    ids = {
        "key": [key, "wrong-key", ""],
        "session": [*sessions, "no-such-session", ""],
        "device": [d["id"] for d in devices] + ["no-such-device", ""],
    }
    bodies = Bodies(random.Random(SEED), ids)
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(monitored)
    assert await raw.connect(monitored["id"], username, password) == 0
    monitor = Monitor(raw, f"devices/{monitored['id']}/messages/events/")
    stop = asyncio.Event()
    failures: list[str] = []
    counts: dict[int, int] = {}

    async def fuzz(http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + FUZZ_S
        while time.monotonic() < deadline:
            method, path, body, headers, allowed = bodies.request()
            what = f"{method} {path} {body[:200] if body else body!r} {headers}"
            try:
                response = await http.request(method, path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                failures.append(f"{what}: {exc!r}")
                continue
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            if response.status_code not in allowed:
                failures.append(f"{what}: {response.status_code} {response.text[:300]}")
            elif response.status_code >= 400:
                error = response.json().get("error", {})
                if not (isinstance(error, dict) and error.get("code") and error.get("message")):
                    failures.append(f"{what}: not the error body: {response.text[:300]}")

    watching = asyncio.create_task(monitor.run(stop))
    try:
        async with httpx.AsyncClient(
            base_url=server.http_url + UX, timeout=REQUEST_TIMEOUT_S
        ) as http:
            await asyncio.gather(*(fuzz(http) for _ in range(WORKERS)))
    finally:
        stop.set()
        await watching
        await raw.close()
    assert not failures, "\n".join(failures[:20])
    assert sum(counts.values()) > 200, counts  # it really fuzzed
    assert not monitor.sent, f"{len(monitor.sent)} telemetry messages never got a PUBACK"
    assert len(monitor.latencies) > 0.5 * FUZZ_S / MONITOR_INTERVAL_S
    assert max(monitor.latencies) < PUBACK_MAX_S, max(monitor.latencies)
    assert "Traceback" not in server.log()
    # and the face still does its job
    with Ux(server.http_url, key) as ux:
        session = ux.session()
        async with live_socket(server.http_url, session) as live:
            assert ux.grant(session, devices[1]["id"], "telemetry").status_code == 204
            assert ux.subscribe(session, devices[1]["id"], "telemetry").status_code == 204
            send_https(server, devices[1], {"after": "fuzz"})
            await live.wait(telemetry_of(devices[1]["id"], after="fuzz"))
