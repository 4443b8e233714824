"""The standing abuse suite (issue 7): fuzz every JSON parser and the MQTT codec on a live
server, then several attacks at once, while a well-behaved device and an HTTP client watch.

Each attack runs under `watched`: a `Monitor` (a real MQTT device publishing QoS 1 every 50 ms
and timing each PUBACK), a `Prober` (`GET /healthz` and an authenticated `/v1` GET on fresh
connections every 250 ms) and an `RssSampler` (the server's VmRSS every 50 ms); afterwards the
server must be alive, the monitor must have stayed connected with every message acknowledged
and stored within the latency bounds below, every probe must have been answered in time, RSS
must have stayed within its bound, and the server must have logged no traceback and no ERROR
line. Inputs come from seeded generators (tests/e2e/abuse.py): a failure names the attack, and
the same seed repeats it. What the fuzz found has a plain regression test each (between the
fuzz tests), and a unit or contract test next to the fix.

The module's server is shared by the fuzz tests (they use devices of their own); the last
test starts its own, to end it with SIGTERM.

Bounds. On an idle 2-core machine the monitor's PUBACKs take a few milliseconds and the
probes tens of milliseconds; the bounds are set one to two orders of magnitude above that,
because this suite runs on shared CI machines next to other work, and what they must catch
is a server that stalls (seconds: issue 7 saw 6.8-32 s) or balloons (gigabytes), not one
that is 100 ms slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

from tests.e2e.abuse import (
    BAD_PROXY_LINES,
    PROXY_LINES,
    AttackLoop,
    BodyAttack,
    Flooder,
    Monitor,
    Prober,
    RssSampler,
    assert_alive,
    assert_clean,
    connect_packets,
    crafted_packets,
    is_central_error,
    is_hub_error,
    is_itwin_error,
    is_json_rpc_error,
    is_oauth_error,
    is_st_error,
    json_attack,
    log_since,
    log_size,
    mutate,
    open_tls,
    raise_fd_limit,
    served_within,
)
from tests.e2e.helpers_st import (
    API_VERSION,
    client,
    create_device,
    device_sas,
    events_path,
    sas_token,
)
from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess, running
from thinghub.mqtt import ClientSession, Connacked, Publish, Subscribe, encode

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]

SEED = 20261204
REQUESTS_PER_FACE = {"st": 600, "oauth": 300, "central": 600, "ingest": 600, "itwin": 600}
ITWIN_SOCKET_REQUESTS = {"websocket": 600, "tcp": 200}  # the TCP ones, a connection each
FUZZ_THREADS = 4
# The monitor's 99th percentile PUBACK latency: the stalls fixed were 7-32 s, and 2 s leaves
# room for a busy CI machine.
PUBACK_P99_S = 2.0
PUBACK_MAX_S = 3.0  # and its worst
PROBE_MAX_S = 3.0  # the worst time for /healthz plus an authenticated /v1 GET
RSS_GROWTH_MAX_MIB = 150
# All the attacks at once hold more at the same moment: a password hash (64 MiB while it runs,
# docs/limits.md), about 700 slowloris connections' buffers, the flood's batches and 4 MiB
# bodies. Measured +92 to +117 MiB here; the bound leaves room for a busier machine and still
# fails a server that buffers a flood or a header (issue 7: gigabytes).
SIEGE_RSS_GROWTH_MAX_MIB = 200
CONNECT_MAX_S = 3.0  # a fresh device's CONNACK and first PUBACK after the attacks
MONITOR_INTERVAL_S = 0.05


# -- the server and its cast ---------------------------------------------------------------------


@dataclass
class Cast:
    """Devices the fuzz aims at (never the monitor's: a disabled or deleted target is fine)."""

    target: dict[str, Any]  # a /v1 device
    gateway: dict[str, Any]  # a /v1 gateway with module m1
    central_target: str  # an IoT Central device with a template
    template: str
    plain: dict[str, Any]  # HTTPS ingest, no template
    templated: dict[str, Any]  # HTTPS ingest, with the template


def template(template_id: str) -> dict[str, Any]:
    return {
        "@id": template_id,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "fuzz target",
        "capabilityModel": {
            "@id": f"{template_id}:model",
            "@type": "Interface",
            "contents": [
                {"@type": "Telemetry", "name": "x", "schema": "double"},
                {"@type": "Property", "name": "setPoint", "schema": "double", "writable": True},
                {
                    "@type": "Command",
                    "name": "reboot",
                    "request": {"name": "delay", "schema": "integer"},
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # running() also checks, at the end, that the server stops cleanly with no traceback.
    with running(ServerProcess(tmp_path_factory.mktemp("thinghub-abuse-fuzz"))) as proc:
        yield proc


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as c:
        yield c


@pytest.fixture(scope="module")
def cast(server: ServerProcess) -> Cast:
    with client(server) as api:
        target = create_device(api, "fuzz target", "fuzz", "d")
        gateway = create_device(api, "fuzz gateway", "fuzz", "d", gateway=True)
        made = api.post(f"/v1/devices/{gateway['id']}/modules", json={"moduleId": "m1"})
        assert made.status_code == 200, made.text
        plain = create_device(api, "fuzz ingest", "fuzz", "d")
    central = httpx.Client(
        base_url=f"{server.http_url}/central/api",
        headers={"Authorization": server.admin_token},
        timeout=30,
        verify=False,
    )
    with central:
        tid = "fuzz-template"
        assert central.put(f"/deviceTemplates/{tid}", json=template(tid)).status_code == 200
        for device_id in ("fuzz-central", "fuzz-templated"):
            made = central.put(f"/devices/{device_id}", json={"template": tid})
            assert made.status_code == 200, made.text
        key = central.get("/devices/fuzz-templated/credentials").json()["symmetricKey"]
    templated = {"id": "fuzz-templated", "credentials": {"symmetricKey": key}}
    return Cast(target, gateway, "fuzz-central", tid, plain, templated)


def fresh_device(api: httpx.Client, name: str) -> dict[str, Any]:
    return create_device(api, name, "watchers", "d")


@contextlib.contextmanager
def watched(
    server: ServerProcess, api: httpx.Client, rss_max_mib: float = RSS_GROWTH_MAX_MIB
) -> Iterator[tuple[Monitor, Prober, RssSampler]]:
    """The monitor, the prober and the RSS sampler around an attack; then the checks that do
    not depend on the attack (alive, served, stored, bounded, a clean log)."""
    offset = log_size(server)
    watcher = fresh_device(api, "monitor")
    with (
        RssSampler(server) as rss,
        Monitor(server, watcher, MONITOR_INTERVAL_S) as monitor,
        Prober(server, watcher["id"]) as prober,
    ):
        start = time.monotonic()
        yield monitor, prober, rss
        took = time.monotonic() - start
    print(f"\n  {took:.1f} s; {monitor}; {prober}; {rss}")
    assert_alive(server)
    monitor.assert_served(
        p99_s=PUBACK_P99_S, max_s=PUBACK_MAX_S, min_sent=int(took / MONITOR_INTERVAL_S / 2)
    )
    monitor.assert_stored(api)
    prober.assert_served(PROBE_MAX_S)
    assert rss.growth_mib < rss_max_mib, str(rss)
    assert_clean(log_since(server, offset))


# -- 1. every face's JSON parser -----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {target}, {gateway}, {central}, {template}: the cast; {new}: a fresh id
    base: dict[str, Any]  # a valid body


ST_ROUTES = [
    Route(
        "POST",
        "/v1/devices",
        {"name": "fuzz", "project": "fuzz", "deployment": "d", "isIoTEdgeCapable": False},
    ),
    Route(
        "PUT",
        "/v1/devices/{target}",
        {
            "properties": {"setPoint": 21},
            "name": "n",
            "tags": {"name": "t"},
            "provisioningStatus": "enabled",
        },
    ),
    Route(
        "POST",
        "/v1/devices/{target}/method",
        {"name": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 5},
    ),
    Route(
        "POST",
        "/v1/devices/{target}/messages",
        {"body": {"a": 1}, "properties": {"k": "v"}, "ttlInSeconds": 60},
    ),
    Route("POST", "/v1/devices/{gateway}/modules", {"moduleId": "{new}"}),
    Route("PUT", "/v1/devices/{gateway}/modules/m1", {"properties": {"a": 1}}),
    Route("POST", "/v1/devices/{gateway}/modules/m1/method", {"name": "m", "payload": [1, "a"]}),
    Route("POST", "/v1/tokens", {"role": "viewer", "label": "fuzz", "project": "fuzz"}),
    Route(
        "POST", "/v1/users", {"username": "{new}", "password": "correct horse", "role": "viewer"}
    ),
    Route(
        "POST",
        "/v1/enrollmentGroups",
        {"enrollmentGroupId": "{new}", "project": "fuzz", "deployment": "d"},
    ),
    Route("PUT", "/v1/account/retention", {"telemetryDays": 30, "eventsDays": None}),
]
OAUTH_ROUTES = [
    Route(
        "POST",
        "/v1/auth/token",
        {"grant_type": "password", "username": "nobody", "password": "wrong password"},
    ),
    Route(
        "POST",
        "/v1/auth/token",
        {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
    ),
]
CENTRAL_ROUTES = [
    Route(
        "PUT",
        "/central/api/devices/{new}",
        {"displayName": "fuzz", "simulated": False, "enabled": True},
    ),
    Route(
        "PATCH",
        "/central/api/devices/{central}",
        {"displayName": "d", "enabled": True, "simulated": False},
    ),
    Route("POST", "/central/api/devices/{central}/telemetry", {"x": 1.5}),
    # IoT Central's envelope: sent and waited for (the device is offline; connectionTimeout 0
    # answers at once, 201 Expired).
    Route(
        "POST",
        "/central/api/devices/{central}/commands/reboot",
        {"request": {"delay": 1}, "responseTimeout": 30, "connectionTimeout": 0},
    ),
    Route("POST", "/central/api/devices/{central}/commands/reboot", {"delay": 1}),
    Route("POST", "/central/api/devices/{central}/components/c1/commands/reboot", {"delay": 1}),
    Route("PATCH", "/central/api/devices/{central}/properties/setPoint", {"value": 21.5}),
    Route("PUT", "/central/api/deviceTemplates/{new}", template("placeholder")),
    Route("PATCH", "/central/api/deviceTemplates/{template}", {"displayName": "renamed"}),
    Route(
        "PUT",
        "/central/api/apiTokens/{new}",
        {"roles": [{"role": "operator"}], "expiry": "2030-01-01T00:00:00Z"},
    ),
]
# The iTwin REST face and Sensor Data Service; {sensor} is the fuzz target's default sensor.
ITWIN_ROUTES = [
    Route(
        "POST",
        "/itwin/api/data/upload",
        {"observations": [{"sensorId": "{sensor}", "timestamp": "2024-02-20T04:35:23.653Z",
                           "values": {"T": 21.5, "P": 101325}}]},
    ),
    Route(
        "POST",
        "/itwin/api/integrations/integrate?projectIds=fuzz",
        {"integration": {"changeState": "new", "devices": [{"changeState": "new", "refId": "{new}",
         "props": {"INTEGRATION_ID": "IMPORT_DEVICE_SDE", "NAME": "fuzz"}, "sensors": [
            {"changeState": "new", "props": {"INTEGRATION_ID": "GENERIC_SENSOR_SDE",
             "UNKNOWN_METRICS": {"0": "a"}, "UNKNOWN_UNITS": {"0": "mm"}}}]}]}},
    ),
    Route("POST", "/itwin/api/sensors/metrics?filters=raw", {"ids": ["{sensor}"]}),
]  # fmt: skip
INGEST_ROUTES = [
    Route("POST", "{plain}", {"temperature": 21.5, "humidity": 40}),
    Route("POST", "{templated}", {"x": 1.5}),
]
INGEST_CONTENT_HEADERS = [
    "application/json",
    "text/plain",
    "application/octet-stream",
    "application/json; charset=utf-16",
    "",
    "é",
    "x" * 2000,
]
INGEST_ENCODINGS = ["utf-8", "utf-16", "gzip", "", "utf-32", "é"]

# Header values stay within what HTTP allows (bytes that are not HTTP get the listener's own
# plain-text 400 before any face sees them; tests/e2e/test_abuse_http.py covers that layer);
# they are sent as UTF-8.
BAD_AUTH = [None, "Bearer", "Bearer nope", "Basic Zm9vOmJhcg==", "SharedAccessSignature sr=x", "é"]


@dataclass
class Sent:
    """What one fuzz run sent and what came back."""

    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # ingest: 204s per device id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass(frozen=True)
class Face:
    name: str
    routes: list[Route]
    allowed: frozenset[int]  # error statuses it may answer
    is_error: Callable[[Any], bool]


FACES = [
    Face("st", ST_ROUTES, frozenset({400, 401, 403, 404, 409, 413}), is_st_error),
    Face("oauth", OAUTH_ROUTES, frozenset({400, 401, 413}), is_oauth_error),
    Face("central", CENTRAL_ROUTES, frozenset({400, 401, 403, 404, 409, 413}), is_central_error),
    Face("ingest", INGEST_ROUTES, frozenset({400, 401, 413}), is_hub_error),
    Face("itwin", ITWIN_ROUTES, frozenset({400, 401, 403, 404, 409, 413, 422}), is_itwin_error),
]


def _fill(value: Any, new: str, placeholder: str = "{new}") -> Any:
    if isinstance(value, str):
        return value.replace(placeholder, new)
    if isinstance(value, dict):
        return {k: _fill(v, new, placeholder) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, new, placeholder) for v in value]
    return value


def target_sensor(cast: Cast) -> str:
    """The fuzz target's default sensor on the iTwin face."""
    target = cast.target["id"]
    return f"/thinghub/{target}/node/device/{target}/device/default/sensor"


@dataclass(frozen=True)
class FuzzRequest:
    route: Route
    url: str
    attack: BodyAttack
    headers: dict[str, str]
    authenticated: bool
    device_id: str | None  # ingest: whose message

    @property
    def raw_headers(self) -> dict[str, bytes]:
        return {k: v.encode() for k, v in self.headers.items()}

    def __str__(self) -> str:
        auth = "" if self.authenticated else f" (auth {self.headers.get('Authorization')!r})"
        return f"{self.route.method} {self.url}{auth} {self.attack}"


def plan(face: Face, cast: Cast, server: ServerProcess, count: int, seed: str) -> list[FuzzRequest]:
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        route = rng.choice(face.routes)
        new = f"fz-{rng.randrange(16**10):010x}"
        base = _fill(_fill(route.base, new), target_sensor(cast), "{sensor}")
        if "deviceTemplates/{new}" in route.path:
            base = template(new)
        attack = json_attack(rng, base)
        headers: dict[str, str] = {}
        if attack.content_type is not None:
            headers["Content-Type"] = attack.content_type
        device_id = None
        if face.name == "ingest":
            device = cast.plain if route.path == "{plain}" else cast.templated
            device_id = device["id"]
            url = f"{server.http_url}{events_path(device_id)}?api-version={API_VERSION}"
            auth: str | None = device_sas(device)
            if rng.random() < 0.3:
                headers["iothub-contenttype"] = rng.choice(INGEST_CONTENT_HEADERS)
            if rng.random() < 0.2:
                headers["iothub-contentencoding"] = rng.choice(INGEST_ENCODINGS)
            if rng.random() < 0.2:
                name = rng.choice(["a", "$.sub", "%C3%A9", "x" * 200])
                headers["iothub-app-" + name] = rng.choice(["v", "", "é", "\u20ac"])
        else:
            url = server.http_url + route.path.format(
                target=cast.target["id"],
                gateway=cast.gateway["id"],
                central=cast.central_target,
                template=cast.template,
                new=new,
            )
            auth = None if face.name == "oauth" else f"Bearer {server.admin_token}"
            if face.name == "central" and rng.random() < 0.5:
                auth = server.admin_token  # IoT Central sends the token bare
            if face.name == "itwin" and rng.random() < 0.5:
                auth = f"ApiKey {server.admin_token}"  # the iTwin REST API's own scheme
        authenticated = True
        if face.name != "oauth" and rng.random() < 0.08:
            auth, authenticated = rng.choice(BAD_AUTH), False
        if auth is not None:
            headers["Authorization"] = auth
        requests.append(FuzzRequest(route, url, attack, headers, authenticated, device_id))
    return requests


def check(face: Face, request: FuzzRequest, response: httpx.Response, sent: Sent) -> None:
    status = response.status_code
    sent.count(status)

    def problem(why: str) -> None:
        with sent.lock:
            sent.problems.append(f"{why}: {request} -> {status} {response.text[:300]!r}")

    if status >= 500:
        problem("a server error")
        return
    if not request.authenticated and status != 401:
        problem("no valid credentials, yet not 401")
    if status < 400:
        if request.device_id is not None and status == 204:
            with sent.lock:
                sent.accepted[request.device_id] = sent.accepted.get(request.device_id, 0) + 1
        return
    if status not in face.allowed:
        problem(f"{status} is not one of this face's errors")
    if not response.headers.get("content-type", "").startswith("application/json"):
        problem("an error that is not JSON")
        return
    try:
        body = response.json()
    except ValueError:
        problem("an error body that does not parse")
        return
    if not face.is_error(body):
        problem(f"not the {face.name} error shape")
    elif face.name == "central" and body["error"]["requestId"] != response.headers.get(
        "x-ms-request-id"
    ):
        problem("requestId differs from x-ms-request-id")


def fuzz(face: Face, requests: list[FuzzRequest]) -> Sent:
    """Send every request from FUZZ_THREADS threads, each with its own keep-alive client."""
    sent = Sent()
    local = threading.local()
    clients: list[httpx.Client] = []

    def http() -> httpx.Client:
        if getattr(local, "client", None) is None:
            local.client = httpx.Client(timeout=30, verify=False)
            with sent.lock:
                clients.append(local.client)
        return local.client

    def send(request: FuzzRequest) -> None:
        try:
            response = http().request(
                request.route.method,
                request.url,
                content=request.attack.body,
                headers=request.raw_headers,
            )
        except httpx.HTTPError as exc:
            with sent.lock:
                sent.problems.append(f"no answer ({exc!r}): {request}")
            local.client = None  # start over on a new connection
            return
        check(face, request, response, sent)

    try:
        with ThreadPoolExecutor(FUZZ_THREADS) as pool:
            list(pool.map(send, requests))
    finally:
        for c in clients:
            c.close()
    return sent


def telemetry_count(api: httpx.Client, device_id: str) -> int:
    response = api.get("/v1/telemetries", params={"deviceID": device_id, "limit": 1000})
    assert response.status_code == 200, response.text
    return len(response.json())


@pytest.mark.parametrize("face", FACES, ids=[f.name for f in FACES])
def test_json_fuzz_gets_the_faces_error_shapes_and_leaves_others_served(
    server: ServerProcess, api: httpx.Client, cast: Cast, face: Face
) -> None:
    requests = plan(face, cast, server, REQUESTS_PER_FACE[face.name], f"{SEED}-{face.name}")
    before = {d["id"]: telemetry_count(api, d["id"]) for d in (cast.plain, cast.templated)}
    with watched(server, api):
        started = time.monotonic()
        sent = fuzz(face, requests)
        took = time.monotonic() - started
    print(
        f"  {face.name}: {len(requests)} requests in {took:.1f} s, {sorted(sent.statuses.items())}"
    )
    assert not sent.problems, "\n".join(sent.problems[:20])
    # The fuzz reached past the parsers: some bodies were taken (or, on the token endpoint,
    # whose credentials are all wrong, judged as credentials), some refused as malformed.
    assert any(s < 300 for s in sent.statuses) or face.name == "oauth", sent.statuses
    assert 400 in sent.statuses and 401 in sent.statuses, sent.statuses
    if face.name == "ingest":  # every 204 is a stored message
        for device_id, count in before.items():
            assert telemetry_count(api, device_id) == count + sent.accepted.get(device_id, 0)
    if face.name == "st":
        reset = api.put("/v1/account/retention", json={"telemetryDays": None, "eventsDays": None})
        assert reset.status_code == 200, reset.text


# -- the iTwin socket API's JSON-RPC parsers ---------------------------------------------------


def itwin_requests(sensor: str) -> list[dict[str, Any]]:
    """Valid requests of every kind the iTwin socket API takes, to fuzz from."""
    data = {"sensor": sensor, "metric": "T", "unit": "F", "startDate": "2020-01-01T00:00:00Z"}
    return [
        {"jsonrpc": "2.0", "method": "time", "id": 1, "params": {"projectIds": ["fuzz"]}},
        {"jsonrpc": "2.0", "method": "help", "id": "2"},
        {"jsonrpc": "2.0", "method": "getSensors", "id": 3, "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getNodes", "id": 4, "params": {"nodes": []}},
        {"jsonrpc": "2.0", "method": "getMetrics", "id": 5, "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getUnits", "id": 6, "params": {"metrics": ["T", "dx"]}},
        {"jsonrpc": "2.0", "method": "getData", "id": 7, "params": data},
        {"jsonrpc": "2.0", "method": "getData", "id": 8, "params": {**data, "metric": "dT",
         "params": {"dt": {"value": 60}, "ZERO_DATE": {"value": "2020-01-01T00:00:00Z"}},
         "limit": {"function": "last", "params": {"size": 1}}}},
        {"jsonrpc": "2.0", "method": "getObservations", "id": 9, "params": {"sensor": sensor}},
        {"jsonrpc": "2.0", "method": "getObservationsSummary", "id": 10,
         "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "getRawMetrics", "id": 11,
         "params": {"types": ["GENERIC_SENSOR_SDE"]}},
        {"jsonrpc": "2.0", "method": "uploadData", "id": 12, "params": {"data": [
            {"sensorId": sensor, "timestamp": "2024-01-01T00:00:00Z", "values": {"T": 1.5}}]}},
        {"jsonrpc": "2.0", "method": "createSensor", "id": 13, "params": {
            "sensor": "/fz/A/node/d/B/device/s/sensor", "type": "X", "props": {"NAME": "n"}}},
        {"jsonrpc": "2.0", "method": "updateSensor", "id": 14,
         "params": {"sensor": sensor, "props": {"NAME": "fuzzed"}}},
        {"jsonrpc": "2.0", "method": "subscribeSensors", "id": 15,
         "params": {"sensors": [sensor]}},
        {"jsonrpc": "2.0", "method": "unsubscribeData", "id": 16, "params": {"id": 99}},
    ]  # fmt: skip


def _itwin_answers(messages: list[Any], case: str, problems: list[str]) -> None:
    for message in messages:
        if isinstance(message, dict) and "result" in message and message.get("jsonrpc") == "2.0":
            continue
        if not is_json_rpc_error(message):
            problems.append(f"{case}: {str(message)[:300]}")


def _itwin_websocket(server: ServerProcess, sensor: str, count: int, seed: str) -> list[str]:
    """One connection: every attack, each followed by a `time` fence; every message before
    the fence is an answer of the right shape, and the connection is never closed."""
    rng = random.Random(seed)
    bases = itwin_requests(sensor)
    problems: list[str] = []
    address = server.addresses["itwin_ws"]
    ws = websocket.create_connection(f"ws://{address['host']}:{address['port']}", timeout=30)
    try:
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "authenticate", "id": 0,
                            "params": {"code": server.admin_token}}))  # fmt: skip
        assert "result" in json.loads(ws.recv())
        for case in range(count):
            attack = json_attack(rng, rng.choice(bases))
            label = f"seed {seed} case {case}: {attack}"
            ws.send_binary(attack.body)  # bytes that are no UTF-8 text may not go as text
            ws.send(json.dumps({"jsonrpc": "2.0", "method": "time", "id": "fence"}))
            messages = []
            while True:
                message = json.loads(ws.recv())
                if isinstance(message, dict) and message.get("id") == "fence":
                    break
                messages.append(message)
            _itwin_answers(messages, label, problems)
    finally:
        ws.close()
    return problems


def _itwin_tcp(server: ServerProcess, sensor: str, count: int, seed: str) -> list[str]:
    """A connection per attack, written in two parts: answers with nothing between them,
    each of the right shape; after bytes that are no JSON, an error and the end."""
    rng = random.Random(seed)
    bases = itwin_requests(sensor)
    problems: list[str] = []
    address = server.addresses["itwin_tcp"]
    for case in range(count):
        attack = json_attack(rng, rng.choice(bases))
        label = f"seed {seed} case {case}: {attack}"
        stream = json.dumps({"jsonrpc": "2.0", "method": "authenticate", "id": 0,
                             "params": {"code": server.admin_token}}).encode()  # fmt: skip
        stream += attack.body + b'{"jsonrpc":"2.0","method":"time","id":"fence"}'
        cut = rng.randrange(1, len(stream))
        data = b""
        with contextlib.closing(
            socket.create_connection((address["host"], address["port"]), timeout=30)
        ) as s:
            with contextlib.suppress(OSError):  # the server may close first (no resync)
                s.sendall(stream[:cut])
                s.sendall(stream[cut:])
                s.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):
                while part := s.recv(65536):
                    data += part
        text, at, messages = data.decode("utf-8", "replace"), 0, []
        while at < len(text):
            if text[at] != "{":
                problems.append(f"{label}: bytes between answers: {text[at : at + 40]!r}")
                break
            message, at = json.JSONDecoder().raw_decode(text, at)
            messages.append(message)
        _itwin_answers(messages, label, problems)
    return problems


@pytest.mark.parametrize("transport", ["websocket", "tcp"])
def test_itwin_json_rpc_fuzz_gets_json_rpc_errors_and_leaves_others_served(
    server: ServerProcess, api: httpx.Client, cast: Cast, transport: str
) -> None:
    count, seed = ITWIN_SOCKET_REQUESTS[transport], f"{SEED}-itwin-{transport}"
    run = _itwin_websocket if transport == "websocket" else _itwin_tcp
    with watched(server, api):
        started = time.monotonic()
        problems = run(server, target_sensor(cast), count, seed)
        took = time.monotonic() - started
    print(f"  itwin {transport}: {count} requests in {took:.1f} s")
    assert not problems, "\n".join(problems[:20])


# -- what the fuzz found: one regression test each ---------------------------------------------


def test_telemetry_that_is_a_json_string_with_a_lone_surrogate_is_stored_as_text(
    server: ServerProcess, api: httpx.Client
) -> None:
    """`"\\ud800"` is valid JSON (RFC 8259 allows the escape) that has no UTF-8 form: Python's
    json.loads makes it a string nothing can store. It was a 500 with a traceback over HTTPS,
    and over MQTT the message was never acknowledged and the connection closed, so the SDK
    resent it for ever. Now it is kept as its text, like other JSON that cannot be stored."""
    offset = log_size(server)
    device = fresh_device(api, "surrogate")
    bodies = [b'"\\ud800"', b'"a\\udc00b"']
    for body in bodies:
        response = httpx.post(
            f"{server.http_url}{events_path(device['id'])}",
            params={"api-version": API_VERSION},
            content=body,
            headers={"Authorization": device_sas(device), "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 204, response.text

    async def over_mqtt() -> None:
        raw = RawDevice(server.mqtt_port, server.ca_file)
        username, password = credentials(device)
        assert await raw.connect(device["id"], username, password, clean=True) == 0
        try:
            for body in bodies:
                packet_id = raw.publish(f"devices/{device['id']}/messages/events/", body, 1)
                async with asyncio.timeout(10):
                    while packet_id not in raw.acked and not raw.closed.is_set():
                        await asyncio.sleep(0.005)
                assert packet_id in raw.acked, "closed instead of a PUBACK"
        finally:
            await raw.close()

    asyncio.run(over_mqtt())
    listed = api.get("/v1/telemetries", params={"deviceID": device["id"]}).json()
    assert sorted(t["body"] for t in listed) == sorted(b.decode() for b in bodies * 2)
    assert_clean(log_since(server, offset))


@pytest.mark.parametrize(
    ("path", "is_error"),
    [("/v1/devices", is_st_error), ("/central/api/devices/fz-utf8", is_central_error)],
    ids=["st", "central"],
)
def test_a_body_that_is_not_utf8_is_judged_after_the_credentials(
    server: ServerProcess, path: str, is_error: Callable[[Any], bool]
) -> None:
    """FastAPI's own 400 for a body its JSON parser cannot decode ("There was an error parsing
    the body", no field) answered callers without valid credentials, before the 401 every
    other malformed body gets (found by the fuzz above with a bad Authorization header)."""
    body = b'{"name": "\xb1"}'
    method = "POST" if path.startswith("/v1") else "PUT"
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        for auth in (None, "Bearer nope"):
            headers = {"Content-Type": "application/json"} | (
                {"Authorization": auth} if auth else {}
            )
            response = http.request(method, path, content=body, headers=headers)
            assert response.status_code == 401, response.text
            assert is_error(response.json()), response.text
        good = {"Content-Type": "application/json", "Authorization": f"Bearer {server.admin_token}"}
        response = http.request(method, path, content=body, headers=good)
    assert response.status_code == 400, response.text
    assert is_error(response.json()), response.text
    assert response.json()["error"]["message"] == "the body is not valid JSON"


def test_concurrent_password_logins_take_one_hash_of_memory(server: ServerProcess) -> None:
    """Each argon2id hash takes 64 MiB. Unauthenticated password grants were hashed on every
    thread of the default executor at once: 4 clients took this server from 108 to 351 MiB
    (found by the OAuth fuzz above). Now hashes run one at a time, so memory holds one."""

    def login(n: int) -> int:
        with httpx.Client(base_url=server.http_url, timeout=60) as anonymous:
            for _ in range(2):
                response = anonymous.post(
                    "/v1/auth/token",
                    data={"grant_type": "password", "username": f"nobody-{n}", "password": "x" * 8},
                )
                assert response.status_code == 400, response.text
                assert response.json()["error"] == "invalid_grant"
        return n

    with RssSampler(server, period_s=0.01) as rss, ThreadPoolExecutor(8) as pool:
        list(pool.map(login, range(8)))
    print(f"\n  16 password logins, 8 at a time: {rss}")
    assert rss.growth_mib < 100, str(rss)  # one hash (64 MiB), not one per thread


def ingest_with(
    server: ServerProcess, device: dict[str, Any], body: bytes, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}{events_path(device['id'])}",
        params={"api-version": API_VERSION},
        content=body,
        headers={"Authorization": device_sas(device), "Content-Type": "application/json"}
        | {k.replace("_", "-"): v for k, v in headers.items()},
        timeout=30,
    )


async def connected(server: ServerProcess, device: dict[str, Any]) -> RawDevice:
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(device)
    assert await raw.connect(device["id"], username, password, clean=True) == 0
    return raw


async def acked(raw: RawDevice, topic: str, body: bytes) -> bool:
    """Publish QoS 1: True on its PUBACK, False when the connection closes instead."""
    packet_id = raw.publish(topic, body, 1)
    async with asyncio.timeout(10):
        while packet_id not in raw.acked and not raw.closed.is_set():
            await asyncio.sleep(0.002)
    return packet_id in raw.acked


def test_system_properties_the_store_cannot_keep_refuse_the_message(
    server: ServerProcess, api: httpx.Client
) -> None:
    """A content type over 128 characters, a message id over 256 or holding NUL failed the
    database write on PostgreSQL: a 500 and a traceback over HTTPS; over MQTT no PUBACK, an
    ERROR and a closed connection, so the SDK resent the message for ever. Now they are refused
    before anything is queued, on both stores: 400 over HTTPS, and over MQTT the connection is
    closed as for any refused telemetry (as for one over 256 KiB)."""
    offset = log_size(server)
    device = fresh_device(api, "long properties")
    for headers in (
        {"iothub_contenttype": "t" * 129},
        {"iothub_messageid": "m" * 257},
        {"iothub_contentencoding": "e" * 65},
        {"iothub_app_$.sub": "c" * 129},
    ):
        response = ingest_with(server, device, b"{}", **headers)
        assert response.status_code == 400, response.text
        assert is_hub_error(response.json()), response.text
    assert ingest_with(server, device, b"{}", iothub_messageid="m" * 256).status_code == 204

    async def over_mqtt() -> None:
        topic = f"devices/{device['id']}/messages/events/"
        for bag in ("%24.mid=a%00b", "%24.ct=" + "t" * 129, "%24.cid=" + "c" * 257):
            raw = await connected(server, device)
            try:
                assert not await acked(raw, topic + bag, b"{}"), bag
            finally:
                await raw.close()
        raw = await connected(server, device)
        try:
            assert await acked(raw, topic + "%24.mid=fine", b"{}")
        finally:
            await raw.close()

    asyncio.run(over_mqtt())
    assert telemetry_count(api, device["id"]) == 2
    log = log_since(server, offset)
    assert "telemetry refused: messageId holds the NUL character (U+0000)" in log
    assert_clean(log)


def test_fields_whose_names_the_store_cannot_keep_are_stored_without_observations(
    server: ServerProcess, api: httpx.Client
) -> None:
    """A numeric field named with more than 256 characters, or with NUL, failed the whole
    message's write on PostgreSQL (its observation could not be stored)."""
    offset = log_size(server)
    device = fresh_device(api, "odd metric names")
    body = json.dumps({"x" * 300: 1, "a\u0000b": 2, "ok": 3}).encode()
    assert ingest_with(server, device, body).status_code == 204

    async def over_mqtt() -> None:
        raw = await connected(server, device)
        try:
            assert await acked(raw, f"devices/{device['id']}/messages/events/", body)
        finally:
            await raw.close()

    asyncio.run(over_mqtt())
    assert telemetry_count(api, device["id"]) == 2
    assert_clean(log_since(server, offset))


def test_unstorable_method_answers_reach_the_caller_as_text(
    server: ServerProcess, api: httpx.Client
) -> None:
    """A device's answer holding a lone surrogate or an integer past 64 bits was parsed by
    json.loads: the /v1 caller got a 500 with a traceback, and an IoT Central command's result
    could not be saved (ERROR, the command never completed). Now such an answer is its text."""
    offset = log_size(server)
    device = fresh_device(api, "odd answers")
    # (answer, what the caller gets): orjson reads an integer past 64 bits as a float.
    answers = [
        (b'"\\ud800"', '"\\ud800"'),
        (b"18446744073709551616", 18446744073709551616.0),
        (b'{"n": NaN}', '{"n": NaN}'),
    ]

    async def scenario() -> None:
        raw = await connected(server, device)
        try:
            auth = {"Authorization": f"Bearer {server.admin_token}"}
            async with httpx.AsyncClient(
                base_url=server.http_url, headers=auth, timeout=30
            ) as http:
                await raw.subscribe("$iothub/methods/POST/#")
                for answer, expected in answers:
                    for central in (False, True):
                        if central:
                            path = f"/central/api/devices/{device['id']}/commands/reboot"
                            calling = asyncio.ensure_future(http.post(path, json={}))
                        else:
                            path = f"/v1/devices/{device['id']}/method"
                            calling = asyncio.ensure_future(http.post(path, json={"name": "m"}))
                        async with asyncio.timeout(10):
                            while not raw.received:
                                await asyncio.sleep(0.002)
                        rid = raw.received.pop(0).topic.rsplit("$rid=", 1)[1]
                        raw.publish(f"$iothub/methods/res/200/?$rid={rid}", answer, 0)
                        response = await calling
                        assert response.status_code == 200, response.text
                        if not central:
                            assert response.json() == expected
                            continue
                        status = f"{path.rsplit('/', 1)[0]}/{response.json()['commandId']}/status"
                        async with asyncio.timeout(10):
                            settled = (await http.get(status)).json()
                            while settled["status"] == "Pending":
                                await asyncio.sleep(0.02)
                                settled = (await http.get(status)).json()
                        assert settled["status"] == "Completed", settled
        finally:
            await raw.close()

    asyncio.run(scenario())
    assert_clean(log_since(server, offset))


def test_a_dps_model_id_with_a_lone_surrogate_is_a_dps_400_and_writes_go_on(
    server: ServerProcess, api: httpx.Client
) -> None:
    """`{"payload": {"modelId": "\\ud800"}}` in a DPS register request reached the database:
    on SQLite it ended the writer thread, after which no write of any device ever finished; on
    PostgreSQL the connection failed with a traceback. Now the body is refused as JSON that
    cannot be stored (400004), and the SQLite writer survives a value it cannot bind."""
    offset = log_size(server)
    device = fresh_device(api, "dps surrogate")
    bystander = fresh_device(api, "dps bystander")
    scope, reg = device["idScope"], device["id"]
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    password = sas_token(key, f"{scope}/registrations/{reg}", int(time.time()) + 600)

    async def scenario() -> None:
        raw = RawDevice(server.mqtt_port, server.ca_file)
        username = f"{scope}/registrations/{reg}/api-version=2019-03-31"
        assert await raw.connect(reg, username, password, clean=True) == 0
        try:
            await raw.subscribe("$dps/registrations/res/#")
            for rid, model in enumerate((b'"\\ud800"', b'"dtmi:fuzz:ok;1"')):
                body = b'{"registrationId": "%s", "payload": {"modelId": %s}}' % (
                    reg.encode(),
                    model,
                )
                raw.publish(f"$dps/registrations/PUT/iotdps-register/?$rid={rid}", body, 0)
                async with asyncio.timeout(10):
                    while not raw.received:
                        await asyncio.sleep(0.002)
                answer = raw.received.pop(0)
                if rid == 0:
                    assert answer.topic == "$dps/registrations/res/400/?$rid=0", answer.topic
                    assert json.loads(answer.payload)["errorCode"] == 400004
                else:
                    assert answer.topic.startswith("$dps/registrations/res/202/?$rid=1")
        finally:
            await raw.close()
        other = await connected(server, bystander)
        try:
            assert await acked(other, f"devices/{bystander['id']}/messages/events/", b"{}")
        finally:
            await other.close()

    asyncio.run(scenario())
    assert api.get(f"/v1/devices/{device['id']}").status_code == 200
    assert_clean(log_since(server, offset))


def test_a_c2d_property_name_with_a_lone_surrogate_is_a_400(
    server: ServerProcess, api: httpx.Client
) -> None:
    """pydantic let the key through; serializing it for the store was a 500."""
    device = fresh_device(api, "c2d key")
    response = api.post(
        f"/v1/devices/{device['id']}/messages",
        content=b'{"body": 1, "properties": {"\\ud800": "v"}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "properties", response.text


# -- 2. the MQTT codec on the live listener ------------------------------------------------------

MQTT_CONCURRENCY = 8
READ_S = 1.0  # how long an attacker waits for an answer before it closes


@dataclass
class MqttTally:
    connections: int = 0
    closed_by_server: int = 0
    handshake_failed: int = 0
    problems: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # JSON payloads: PUBACKs per device


async def _drain(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, bool]:
    """What the server sends within `seconds`, and whether it closed the connection."""
    got = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, ssl.SSLError, OSError):
                    return got, True
                if not data:
                    return got, True
                got += data
    return got, False


async def _send_raw(
    server: ServerProcess, data: bytes, tally: MqttTally, *, proxy: bytes | None = None
) -> bytes:
    """One TLS connection (through the proxy line when given) that writes `data`."""
    tally.connections += 1
    try:
        reader, writer = await open_tls(server, proxy)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
        tally.handshake_failed += 1
        tally.problems.append(f"TLS failed ({exc!r})")  # the listener must always take TLS
        return b""
    try:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            writer.write(data)
            await writer.drain()
        got, closed = await _drain(reader, READ_S)
        tally.closed_by_server += closed
        return got
    finally:
        writer.transport.abort()


async def _plain_tcp(server: ServerProcess, data: bytes, tally: MqttTally) -> bytes:
    tally.connections += 1
    reader, writer = await asyncio.open_connection("127.0.0.1", server.mqtt_port)
    try:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(data)
            await writer.drain()
        got, closed = await _drain(reader, READ_S)
        tally.closed_by_server += closed
        return got
    finally:
        writer.transport.abort()


async def _session(
    server: ServerProcess, device: dict[str, Any], *, username: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientSession]:
    reader, writer = await open_tls(server)
    session = ClientSession()
    user, password = credentials(device)
    session.connect(device["id"], username or user, password.encode(), 60, True)
    writer.write(session.data_to_send())
    async with asyncio.timeout(10):
        while True:
            data = await reader.read(65536)
            assert data, "closed before CONNACK"
            session.receive_data(data)
            event = session.next_event()
            if isinstance(event, Connacked):
                assert event.return_code == 0, event
                return reader, writer, session


async def _json_payloads(
    server: ServerProcess, device: dict[str, Any], bodies: list[bytes], tally: MqttTally
) -> None:
    """A device's JSON payload fuzz: telemetry (QoS 1, each must be acknowledged, as IoT Hub
    takes any bytes) and reported-property patches (each must be answered); the connection
    must stay open throughout."""
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(device)
    tally.connections += 1
    assert await raw.connect(device["id"], username, password, clean=True) == 0
    try:
        await raw.subscribe("$iothub/twin/res/#")
        topic = f"devices/{device['id']}/messages/events/"
        for rid, body in enumerate(bodies):
            packet_id = raw.publish(topic, body, 1)
            raw.publish(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", body, 0)
            async with asyncio.timeout(10):
                while not raw.closed.is_set() and not (
                    packet_id in raw.acked
                    and any(
                        p.topic.endswith(f"?$rid={rid}") or f"?$rid={rid}&" in p.topic
                        for p in raw.received
                    )
                ):
                    await asyncio.sleep(0.002)
            if raw.closed.is_set():
                tally.problems.append(f"JSON payload closed the connection: {body[:120]!r}")
                return
            raw.received.clear()
            tally.acked[device["id"]] = tally.acked.get(device["id"], 0) + 1
    finally:
        await raw.close()


async def _dps_payloads(
    server: ServerProcess, device: dict[str, Any], bodies: list[bytes], tally: MqttTally
) -> None:
    """DPS register requests with fuzzed bodies: each answered, the connection kept."""
    scope, reg = device["idScope"], device["id"]
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    password = sas_token(key, f"{scope}/registrations/{reg}", int(time.time()) + 600)
    raw = RawDevice(server.mqtt_port, server.ca_file)
    tally.connections += 1
    username = f"{scope}/registrations/{reg}/api-version=2019-03-31"
    assert await raw.connect(reg, username, password, clean=True) == 0
    try:
        await raw.subscribe("$dps/registrations/res/#")
        for rid, body in enumerate(bodies):
            raw.publish(f"$dps/registrations/PUT/iotdps-register/?$rid={rid}", body, 0)
            async with asyncio.timeout(10):
                while not raw.closed.is_set() and not any(
                    f"?$rid={rid}" in p.topic for p in raw.received
                ):
                    await asyncio.sleep(0.002)
            if raw.closed.is_set():
                tally.problems.append(f"a DPS body closed the connection: {body[:120]!r}")
                return
            raw.received.clear()
    finally:
        await raw.close()


async def _method_answers(
    server: ServerProcess, device: dict[str, Any], bodies: list[bytes], tally: MqttTally
) -> None:
    """A device answering direct methods (/v1) and commands (IoT Central) with fuzzed bodies:
    the caller always gets a 200 with JSON, and a command's status settles."""
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(device)
    tally.connections += 1
    assert await raw.connect(device["id"], username, password, clean=True) == 0
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    api = httpx.AsyncClient(base_url=server.http_url, headers=auth, timeout=30, verify=False)
    try:
        await raw.subscribe("$iothub/methods/POST/#")
        for n, body in enumerate(bodies):
            central = n % 2 == 1
            if central:
                path = f"/central/api/devices/{device['id']}/commands/m{n}"
                call = api.post(path, json={})
            else:
                path = f"/v1/devices/{device['id']}/method"
                call = api.post(path, json={"name": f"m{n}"})
            calling = asyncio.ensure_future(call)
            async with asyncio.timeout(10):
                while not raw.received and not raw.closed.is_set():
                    await asyncio.sleep(0.002)
            if raw.closed.is_set():
                tally.problems.append(f"closed while waiting for method m{n}")
                return
            rid = raw.received.pop(0).topic.rsplit("$rid=", 1)[1]
            raw.publish(f"$iothub/methods/res/200/?$rid={rid}", body, 0)
            response = await calling
            if response.status_code != 200:
                tally.problems.append(f"{path} answered {body[:80]!r}: {response.text[:200]}")
                continue
            if central:
                status = f"{path.rsplit('/', 1)[0]}/{response.json()['commandId']}/status"
                async with asyncio.timeout(10):
                    while (settled := await api.get(status)).status_code == 200:
                        if settled.json()["status"] != "Pending":
                            break
                        await asyncio.sleep(0.02)
                if settled.status_code != 200 or settled.json()["status"] != "Completed":
                    tally.problems.append(f"command answered {body[:80]!r}: {settled.text[:200]}")
            else:
                response.json()  # JSON, whatever the device sent
    finally:
        await api.aclose()
        await raw.close()


async def _fragmented(server: ServerProcess, device: dict[str, Any], tally: MqttTally) -> None:
    """A valid CONNECT and PUBLISH written one byte at a time: still acknowledged."""
    tally.connections += 1
    reader, writer = await open_tls(server)
    try:
        username, password = credentials(device)
        session = ClientSession()
        session.connect(device["id"], username, password.encode(), 60, True)
        data = session.data_to_send()
        data += encode(
            Publish(f"devices/{device['id']}/messages/events/", b'{"f": 1}', 1, packet_id=5)
        )
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
        got, _ = await _drain(reader, 0.5)
        deadline = time.monotonic() + 10
        while b"\x40\x02\x00\x05" not in got and time.monotonic() < deadline:
            more, closed = await _drain(reader, 0.2)
            got += more
            if closed:
                break
        if not got.startswith(b"\x20\x02\x00\x00") or b"\x40\x02\x00\x05" not in got:
            tally.problems.append(f"a byte-at-a-time CONNECT + PUBLISH got {got[:40]!r}")
    finally:
        writer.transport.abort()


def mqtt_plan(
    rng: random.Random, victims: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any], bytes, bytes | None]]:
    """(kind, victim, bytes to write after TLS, proxy line or None) for each connection."""
    out = []
    for n in range(360):
        victim = victims[n % len(victims)]
        username, password = credentials(victim)
        connect = encode_connect(victim)
        valid = [
            connect,
            encode(
                Publish(f"devices/{victim['id']}/messages/events/", b'{"t": 1}', 1, packet_id=7)
            ),
            encode(Subscribe(3, (("$iothub/methods/POST/#", 1),))),
            encode(Publish("$iothub/twin/GET/?$rid=1", b"", 0)),
        ]
        crafted = crafted_packets(victim["id"])
        match n % 9:
            case 0:
                kind, data = "random bytes", rng.randbytes(rng.randint(1, 400))
            case 1:
                kind, data = "mutated packet", mutate(rng, rng.choice(valid))
            case 2:
                kind, data = "crafted packet", rng.choice(crafted)
            case 3:
                kind, data = "CONNECT + crafted", connect + rng.choice(crafted)
            case 4:
                kind, data = "CONNECT + mutated", connect + mutate(rng, rng.choice(valid[1:]))
            case 5:
                kind, data = "CONNECT + random", connect + rng.randbytes(rng.randint(1, 400))
            case 6:
                kind = "odd CONNECT"
                data = rng.choice(connect_packets(victim["id"], username, password)) + valid[1]
            case 7:
                kind = "CONNECT + many packets"
                data = connect + b"".join(
                    rng.choice([*valid[1:], *crafted[:5]]) for _ in range(rng.randint(2, 30))
                )
            case _:
                kind = "CONNECT + mutated stream"
                stream = b"".join(rng.choice(valid[1:]) for _ in range(20))
                data = connect + mutate(rng, stream)
        proxy = rng.choice(PROXY_LINES) if rng.random() < 0.25 else None
        out.append((kind, victim, data, proxy))
    return out


def encode_connect(device: dict[str, Any]) -> bytes:
    session = ClientSession()
    username, password = credentials(device)
    session.connect(device["id"], username, password.encode(), 60, True)
    return session.data_to_send()


def test_mqtt_codec_fuzz_closes_only_the_bad_connections(
    server: ServerProcess, api: httpx.Client
) -> None:
    # Connects are limited per device (30 at once, then 12 a minute); spread them.
    victims = [fresh_device(api, f"victim-{i}") for i in range(16)]
    json_devices = [fresh_device(api, f"json-{i}") for i in range(4)]
    dps_device = fresh_device(api, "dps")
    fragmenters = [fresh_device(api, f"fragmented-{i}") for i in range(2)]
    answerer = fresh_device(api, "method answers")
    rng = random.Random(f"{SEED}-mqtt")
    connections = mqtt_plan(rng, victims)
    # JSON payloads that fit a message (256 KiB) and a twin patch's answer path.
    corpus = []
    while len(corpus) < 160:
        attack = json_attack(rng, {"temperature": 21.5, "n": len(corpus)})
        if len(attack.body) <= 200_000:
            corpus.append(attack.body)
    dps_base = {"registrationId": dps_device["id"], "payload": {"modelId": "dtmi:fuzz:x;1"}}
    dps_corpus = [json_attack(rng, dps_base).body for _ in range(40)]
    dps_corpus = [body for body in dps_corpus if len(body) <= 200_000]
    tally = MqttTally()

    async def attack() -> None:
        gate = asyncio.Semaphore(MQTT_CONCURRENCY)

        async def one(kind: str, data: bytes, proxy: bytes | None) -> None:
            async with gate:
                await _send_raw(server, data, tally, proxy=proxy)

        async with asyncio.TaskGroup() as tasks:
            for kind, _, data, proxy in connections:
                tasks.create_task(one(kind, data, proxy))
            for i, device in enumerate(json_devices):
                tasks.create_task(_json_payloads(server, device, corpus[i::4], tally))
            tasks.create_task(_dps_payloads(server, dps_device, dps_corpus, tally))
            tasks.create_task(_method_answers(server, answerer, corpus[::4], tally))
            for device in fragmenters:  # own devices: a victim's session is taken over
                tasks.create_task(_fragmented(server, device, tally))
            for line in BAD_PROXY_LINES:
                tasks.create_task(bad_proxy(line))
            for junk in (b"\x00" * 50, b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
                tasks.create_task(_plain_tcp(server, junk, tally))

    async def bad_proxy(line: bytes) -> None:
        answer = await _plain_tcp(server, line, tally)
        # Answered 400 and closed, or (header too long, or never ended) closed unanswered.
        if answer not in (b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"):
            tally.problems.append(f"proxy line {line[:60]!r} was answered {answer[:80]!r}")

    with watched(server, api):
        started = time.monotonic()
        with AttackLoop() as loop:
            loop.submit(attack()).result(120)
        took = time.monotonic() - started
    print(
        f"  MQTT: {tally.connections} connections in {took:.1f} s, "
        f"{tally.closed_by_server} closed by the server, JSON acked {tally.acked}"
    )
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert tally.closed_by_server > len(connections) / 2  # the garbage was refused
    for device in json_devices:  # every acknowledged message is stored
        assert telemetry_count(api, device["id"]) == tally.acked[device["id"]] == 40


# -- 3. several attacks at once, then SIGTERM ----------------------------------------------------

ATTACK_S = 10.0
SLOWLORIS_HTTP = 600  # over http_max_connections (512): the cap must shed them
SLOWLORIS_MQTT = 150
BODY_64K = b'{"blob": "' + b"x" * (65_536 - 12) + b'"}'


@dataclass
class Siege:
    http_opened: int = 0
    http_cut: int = 0  # slowloris connections the server closed (408, or shed at the cap)
    mqtt_held: int = 0
    huge_431: int = 0
    huge_other: list[bytes] = field(default_factory=list)


async def http_slowloris(server: ServerProcess, until: threading.Event, siege: Siege) -> None:
    """SLOWLORIS_HTTP requests whose headers never end, one byte a second each; whenever the
    server closes one (408 after the header timeout, or shed at the connection cap), another
    takes its place."""
    port = int(server.addresses["http"]["port"])

    async def one() -> None:
        while not until.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            siege.http_opened += 1
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while not until.is_set():
                    writer.write(b"a")
                    await writer.drain()
                    got, closed = await _drain(reader, 1.0)
                    if closed:
                        siege.http_cut += 1
                        break
            except (ConnectionError, OSError):
                siege.http_cut += 1
            finally:
                writer.transport.abort()
            await asyncio.sleep(0.5)  # then another one

    async with asyncio.TaskGroup() as tasks:
        for _ in range(SLOWLORIS_HTTP):
            tasks.create_task(one())


async def mqtt_slowloris(server: ServerProcess, until: threading.Event, siege: Siege) -> None:
    """Device-port sockets that stop half-way: in the proxy header, in the TLS handshake,
    and after TLS before a whole CONNECT."""

    async def one(n: int) -> None:
        writer = None
        try:
            if n % 3 == 2:
                reader, writer = await open_tls(server)
                writer.write(b"\x10\x7f\x00\x04MQ")  # a CONNECT that stops
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.mqtt_port)
                writer.write(
                    b"CONNECT localhost:8883 HTTP/1.1\r\nHo"
                    if n % 3
                    else b"\x16\x03\x01\x02\x00\x01"
                )
            siege.mqtt_held += 1
            while not until.is_set():
                await asyncio.sleep(0.2)
        except (OSError, ssl.SSLError):
            pass
        finally:
            if writer is not None:
                writer.transport.abort()

    async with asyncio.TaskGroup() as tasks:
        for n in range(SLOWLORIS_MQTT):
            tasks.create_task(one(n))


def huge_headers(server: ServerProcess, until: threading.Event, siege: Siege) -> None:
    """Requests with a 1 MiB header (the limit is 64 KiB), or a thousand headers (the limit is
    100), one after the other, each on a new connection: each must get its 431. A thread of
    its own with a blocking socket, so that it looks for the answer between writes however
    busy the attack loop is (after its 431 the server reads and drops what follows for one
    second only, then closes: a client still writing then would see a reset)."""
    port = int(server.addresses["http"]["port"])
    filler = b"a" * 65536
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(1000))
    n = 0
    while not until.is_set():
        n += 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                if n % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    for _ in range(16):
                        if select.select([sock], [], [], 0)[0]:
                            break  # answered
                        sock.sendall(filler)
                else:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    head += chunk
            except OSError as exc:
                siege.huge_other.append(repr(exc).encode())
                continue
        if head.startswith(b"HTTP/1.1 431 "):
            siege.huge_431 += 1
        else:
            siege.huge_other.append(head[:80])


def test_several_attacks_at_once_then_a_clean_sigterm(tmp_path: Path) -> None:
    raise_fd_limit(4096)  # ours and the server's (it inherits the limit): ~800 sockets each
    server = ServerProcess(tmp_path / "siege").start()
    try:
        with client(server) as api:
            flood_device = fresh_device(api, "flooder")
            newcomer = fresh_device(api, "newcomer")
            target = create_device(api, "fuzz target", "fuzz", "d")
            gateway = create_device(api, "fuzz gateway", "fuzz", "d", gateway=True)
            cast = Cast(target, gateway, "", "", target, target)
            fuzz_requests = plan(FACES[0], cast, server, 10_000, f"{SEED}-siege")
            siege = Siege()
            until = threading.Event()
            flooder = Flooder(server, flood_device)
            fuzzed = Sent()
            with (
                watched(server, api, SIEGE_RSS_GROWTH_MAX_MIB) as (monitor, prober, rss),
                AttackLoop() as loop,
            ):
                attacks = [
                    loop.submit(flooder.run(until, BODY_64K)),
                    loop.submit(http_slowloris(server, until, siege)),
                    loop.submit(mqtt_slowloris(server, until, siege)),
                ]

                def fuzzer(offset: int) -> None:
                    with httpx.Client(timeout=30, verify=False) as http:
                        for request in fuzz_requests[offset::2]:
                            if until.is_set():
                                return
                            try:
                                response = http.request(
                                    request.route.method,
                                    request.url,
                                    content=request.attack.body,
                                    headers=request.raw_headers,
                                )
                            except httpx.HTTPError as exc:
                                fuzzed.problems.append(f"no answer ({exc!r}): {request}")
                                continue
                            check(FACES[0], request, response, fuzzed)

                with ThreadPoolExecutor(3) as pool:
                    fuzzing = [pool.submit(fuzzer, i) for i in range(2)]
                    fuzzing.append(pool.submit(huge_headers, server, until, siege))
                    until.wait(ATTACK_S)
                    until.set()
                    for future in [*fuzzing, *attacks]:
                        future.result(60)
            print(
                f"  siege: flooder wrote {flooder.sent} x 64 KiB; HTTP slowloris opened "
                f"{siege.http_opened}, {siege.http_cut} cut by the server; MQTT half-open "
                f"{siege.mqtt_held}; huge heads answered 431: {siege.huge_431}; JSON fuzz "
                f"{sum(fuzzed.statuses.values())} requests {sorted(fuzzed.statuses.items())}"
            )
            assert not fuzzed.problems, "\n".join(fuzzed.problems[:20])
            assert siege.huge_431 > 0 and not siege.huge_other, siege.huge_other[:5]
            assert siege.http_cut > 0  # the connection cap shed slowloris connections
            assert "reading it at that rate" in server.log_path.read_text()  # flood throttled

            async def newcomer_served() -> float:
                start = time.monotonic()
                raw = RawDevice(server.mqtt_port, server.ca_file)
                username, password = credentials(newcomer)
                assert await raw.connect(newcomer["id"], username, password, clean=True) == 0
                packet_id = raw.publish(f"devices/{newcomer['id']}/messages/events/", b"{}", 1)
                async with asyncio.timeout(CONNECT_MAX_S + 5):
                    while packet_id not in raw.acked:
                        await asyncio.sleep(0.002)
                took = time.monotonic() - start
                await raw.close()
                return took

            took = asyncio.run(newcomer_served())
            assert took < CONNECT_MAX_S, f"a fresh device took {took:.2f} s"
            served_within(server, newcomer["id"], PROBE_MAX_S)
        start = time.monotonic()
        code = server.stop()
        stopped_in = time.monotonic() - start
    finally:
        server.kill()
    print(
        f"  fresh device served in {took * 1000:.0f} ms; SIGTERM: exit {code} in {stopped_in:.1f} s"
    )
    assert code == 0, server.log()
    assert stopped_in < 15
    assert_clean(server.log_path.read_text())
    assert f"device {flood_device['id']} disconnected" in server.log()
