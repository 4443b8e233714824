"""`thinghub edge` end to end: a real cloud, a real edge process, a pty as the instrument.

The gateway and its module are made on /v1 the way docs/edge.md tells an operator to; the
edge connects to the cloud as that gateway (MQTT/TLS, SAS) with the module's key for port 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket

import thinghub
from tests.e2e.edge import (
    EdgeProcess,
    Instrument,
    edge_toml,
    gateway_with_module,
    telemetry_bodies,
)
from tests.e2e.itwin import Ws, ws_url
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.backend_agnostic

WS_TIMEOUT_S = 10


@pytest.fixture
def instrument() -> Iterator[Instrument]:
    pty = Instrument()
    yield pty
    pty.close()


@pytest.fixture
def edges() -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    yield started
    for edge in started:
        edge.kill()


def _start(edges: list[EdgeProcess], edge: EdgeProcess) -> EdgeProcess:
    edges.append(edge)
    return edge.start()


def _wait_port_open(edge: EdgeProcess) -> None:
    edge.wait_status(lambda s: s["ports"]["1"]["open"] and s["cloud"]["connected"].get("port1"))


def _ws(edge: EdgeProcess, query: str = "") -> websocket.WebSocket:
    return websocket.create_connection(f"{edge.ws_url}/ws/port/1{query}", timeout=WS_TIMEOUT_S)


def _ws_refused(edge: EdgeProcess) -> int:
    """The handshake's HTTP status when the edge refuses a WebSocket on port 1."""
    ws = websocket.WebSocket()
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws.connect(f"{edge.ws_url}/ws/port/1", timeout=WS_TIMEOUT_S)
    finally:
        ws.close()
        if ws.sock is not None:
            ws.sock.close()
    return int(refused.value.status_code)


# -- the WebSocket bridge ------------------------------------------------------------------


def test_websocket_bridge_is_byte_transparent_both_ways(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(edges, EdgeProcess(tmp_path, server, gateway, edge_toml(instrument, gateway)))
    _wait_port_open(edge)
    first, second = _ws(edge), _ws(edge)
    edge.wait_status(lambda s: s["ports"]["1"]["listeners"] == 2)

    # Instrument -> every client: text as text frames, other bytes as binary frames.
    instrument.write(b"hello from the instrument\r\n")
    for client in (first, second):
        opcode, data = client.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert data == b"hello from the instrument\r\n"
    raw = bytes([0x00, 0xFF, 0xFE, 0x80, 0x0D, 0x0A])
    instrument.write(raw)
    for client in (first, second):
        opcode, data = client.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY and data == raw

    # Client -> instrument: text and binary frames, unchanged.
    first.send("ping?\r\n")
    assert instrument.read_exactly(7) == b"ping?\r\n"
    second.send_binary(b"\x01\x02\xff\x00")
    assert instrument.read_exactly(4) == b"\x01\x02\xff\x00"

    # POST /api/message writes to the port too (the seed's curl sends portNumber as a string).
    with edge.client() as api:
        response = api.post(
            "/api/message", content=json.dumps({"portNumber": "1", "message": "hello world"})
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"portNumber": 1, "message": "hello world"}
        assert instrument.read_exactly(11) == b"hello world"

        # deviceConnection false closes the port and its WebSocket clients.
        response = api.put("/api/deviceConnection?port=1", json={"value": False})
        assert response.json() == {"value": False}
        for client in (first, second):
            opcode, data = client.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert int.from_bytes(data[:2], "big") == 4000
        assert api.get("/api/deviceConnection?port=1").json() == {"value": False}
        refused = api.post("/api/message", json={"portNumber": 1, "message": "x"})
        assert refused.status_code == 409
        assert refused.json()["status"] == 409 and "port 1" in refused.json()["message"]
        assert _ws_refused(edge) == 403

        assert api.put("/api/deviceConnection?port=1", json={"value": True}).json() == {
            "value": True
        }
    _wait_port_open(edge)
    again = _ws(edge, "?frames=binary")
    edge.wait_status(lambda s: s["ports"]["1"]["listeners"] == 1)
    instrument.write(b"back\r\n")
    opcode, data = again.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data == b"back\r\n"
    for client in (first, second, again):
        client.close()
        client.shutdown()
    assert edge.stop() == 0
    assert "Traceback" not in edge.log(), edge.log()


# -- observations to the cloud -------------------------------------------------------------


def test_instrument_lines_become_module_telemetry_on_v1(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(edges, EdgeProcess(tmp_path, server, gateway, edge_toml(instrument, gateway)))
    _wait_port_open(edge)
    instrument.write(b"T=21.5 H=40\r\nnot a reading\r\nT=-3.25\r\nT=22")
    instrument.write(b".75 H=41.5\r\n")
    bodies = telemetry_bodies(server, gateway["id"], "port1", 3)
    assert [{k: v for k, v in b.items() if k != "readAt"} for b in bodies] == [
        {"temperature": 21.5, "humidity": 40},
        {"temperature": -3.25},
        {"temperature": 22.75, "humidity": 41.5},
    ]
    assert all(b["readAt"].endswith("Z") for b in bodies)
    status = edge.status()
    assert status["ports"]["1"]["lines"] == 4 and status["ports"]["1"]["unparsed"] == 1
    assert status["queue"] == {"queued": 0, "accepted": 3, "sent": 3, "dropped": 0}

    with server.client() as client:
        device = client.get(f"/v1/devices/{gateway['id']}").json()
        assert device["isIoTEdgeCapable"] is True
        assert device["connectionState"] == "Connected"
        module = client.get(f"/v1/devices/{gateway['id']}/modules/port1").json()
        assert module["connectionState"] == "Connected"
        # The gateway reported what it is; its direct method answers from the edge.
        twin = client.get(f"/v1/devices/{gateway['id']}/twin").json()
        reported = json.dumps(twin)
        assert "thinghubEdge" in reported and '"simulated"' in reported
        answer = client.post(
            f"/v1/devices/{gateway['id']}/method",
            json={"name": "getInfo", "payload": {}, "responseTimeoutInSeconds": 10},
        )
        assert answer.status_code == 200, answer.text
        assert "port1" in json.dumps(answer.json())
        # A module's `write` method reaches the instrument.
        answer = client.post(
            f"/v1/devices/{gateway['id']}/modules/port1/method",
            json={"name": "write", "payload": {"message": "*IDN?\r\n"}},
        )
        assert answer.status_code == 200, answer.text
    assert instrument.read_exactly(7) == b"*IDN?\r\n"

    # The cloud's iTwin face shows the same readings: the gateway is a node, its port a
    # device under it, the port's telemetry a sensor (docs/faces/itwin.md, "Ids").
    gw = gateway["id"]
    module_device = f"/thinghub/{gw}/node/module/port1/device"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        [device] = ws.call("getDevices", {"devices": [module_device]})["result"]
        assert device["props"]["NODE_ID"] == f"/thinghub/{gw}/node"
        assert device["props"]["ACCESSIBLE"] is True
        chunks, _ = ws.stream(
            "getData",
            {"sensor": f"{module_device}/default/sensor", "metric": "temperature",
             "unit": "GENERIC", "projectIds": ["edge_project"]},
        )  # fmt: skip
        values = [v for c in chunks for v in c["data"].values()]
        # Readings stored within one millisecond share a key (getData is keyed by ISO ms
        # times, and the later one wins); the last line is always there.
        assert values[-1] == 22.75 and set(values) <= {21.5, -3.25, 22.75}
        chunks, _ = ws.stream(
            "getData",
            {"sensor": f"{module_device}/default/sensor", "metric": "humidity",
             "unit": "GENERIC", "limit": "last"},
        )  # fmt: skip
        assert [v for c in chunks for v in c["data"].values()] == [41.5]
    finally:
        ws.close()


def test_observations_queue_while_the_cloud_is_down_and_all_arrive_after(
    start_server: Callable[..., ServerProcess],
    instrument: Instrument,
    edges: list[EdgeProcess],
    tmp_path: Path,
) -> None:
    cloud = start_server(data_dir=tmp_path / "cloud")
    with cloud.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(
        edges, EdgeProcess(tmp_path / "edge", cloud, gateway, edge_toml(instrument, gateway))
    )
    _wait_port_open(edge)
    mqtt_port = cloud.mqtt_port
    assert cloud.stop() == 0
    edge.wait_status(lambda s: not s["cloud"]["connected"].get("port1"))

    count = 40
    for i in range(count):
        instrument.write(f"T={i}\r\n".encode())
    status = edge.wait_status(lambda s: s["queue"]["accepted"] == count)
    assert status["queue"]["queued"] == count and status["queue"]["sent"] == 0

    # The same cloud again: same data directory, same device port (the edge's --cloud).
    again = start_server(
        "--mqtt-port", str(mqtt_port), data_dir=tmp_path / "cloud", admin_token=cloud.admin_token
    )
    bodies = telemetry_bodies(again, gateway["id"], "port1", count)
    assert [b["temperature"] for b in bodies] == list(range(count))  # all, once, in order
    edge.wait_status(lambda s: s["queue"]["queued"] == 0 and s["queue"]["sent"] == count)


def test_the_edge_renews_its_sas_tokens_before_the_cloud_closes_them(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    """The cloud closes a connection when its SAS token expires, as IoT Hub does; the edge
    signs tokens of cloud.sas_ttl_s and reconnects with a new one before that, so none of its
    connections fails and readings flow across the renewals."""
    with server.client() as client:
        gateway = gateway_with_module(client)
    toml = edge_toml(instrument, gateway).replace(
        "reconnect_max_s = 1", "reconnect_max_s = 1\nsas_ttl_s = 5"
    )
    edge = _start(edges, EdgeProcess(tmp_path, server, gateway, toml))
    _wait_port_open(edge)
    edge.wait_status(lambda s: s["cloud"]["connected"].get("port1") is True)
    count = 7
    for i in range(count):  # past a token's lifetime
        instrument.write(f"T={i}\r\n".encode())
        time.sleep(1.0)
    bodies = telemetry_bodies(server, gateway["id"], "port1", count)
    assert [b["temperature"] for b in bodies] == list(range(count))  # all, once, in order
    log = edge.log_path.read_text()
    renewed = log.count("SAS token renewed before it expires")
    assert renewed >= 2, log  # the gateway's and the module's connections
    assert "; reconnecting" not in log, log  # no connection failed (closed by the cloud)
    assert edge.status()["cloud"]["errors"] == {}


def test_kill_minus_nine_mid_queue_loses_nothing_accepted(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    toml = edge_toml(instrument, gateway)
    edge = _start(edges, EdgeProcess(tmp_path, server, gateway, toml))
    _wait_port_open(edge)
    with edge.client() as api:
        assert api.put("/api/cloudConnection", content='{ "value": "false"}').json() == {
            "value": False
        }
    edge.wait_status(lambda s: not s["cloud"]["connected"].get("port1"))
    count = 2000
    instrument.write(b"".join(f"T={i}\r\n".encode() for i in range(count)))
    edge.wait_status(lambda s: s["queue"]["accepted"] == count, timeout_s=60)
    # Let it start sending, and kill it while the queue drains.
    with edge.client() as api:
        api.put("/api/cloudConnection", json={"value": True})
    at_kill = edge.wait_status(lambda s: s["queue"]["sent"] > 0, timeout_s=60)
    edge.kill()
    assert 0 < at_kill["queue"]["queued"] < count, at_kill  # killed mid-queue

    # The restarted edge (same data directory) sends the rest; the cloud stores each once.
    restarted = _start(edges, EdgeProcess(tmp_path, server, gateway, toml))
    bodies = telemetry_bodies(server, gateway["id"], "port1", count, timeout_s=60)
    assert sorted(b["temperature"] for b in bodies) == list(range(count))
    assert len(bodies) == count
    restarted.wait_status(lambda s: s["queue"]["queued"] == 0 and s["queue"]["accepted"] == count)
    with restarted.client() as api:
        assert api.get("/api/cloudConnection").json() == {"value": True}  # persisted


# -- every REST route, in the seed's shapes, on the simulated board ------------------------


@pytest.fixture(scope="module")
def rest_edge(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EdgeProcess, Instrument]]:
    pty = Instrument()
    work = tmp_path_factory.mktemp("edge-rest")
    update_target = work / "installed"
    extra = f"""
[update]
install_command = ["{sys.executable}", "-c", "{COPY}", "{{file}}", "{update_target}"]
url_template = "file://{work}/releases/thinghub-edge-{{version}}.tar.gz"
"""
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = EdgeProcess(work, server, gateway, edge_toml(pty, gateway, extra)).start()
    try:
        _wait_port_open(edge)
        yield edge, pty
    finally:
        edge.kill()
        pty.close()


# The install command of the tests: copy the update where the "application" lives.
COPY = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# (method, path, body as curl -d sends it (None: no body), status, the expected answer or a
# check of it). Bodies are the seed's examples.
ROUTES: list[tuple[str, str, Any, int, Any]] = [
    ("GET", "/api/serialNumber", None, 200, {"value": "5EED01"}),
    ("GET", "/api/time", None, 200, lambda b: b["value"].endswith("Z") and len(b) == 1),
    (
        "POST", "/api/time", '{"time":"2019-11-19T15:41:30.000Z"}', 200,
        lambda b: b["value"].startswith("2019-11-19T15:41:3"),
    ),
    ("GET", "/api/timeAccurate", None, 200, {"value": True}),
    ("GET", "/api/chargeInputVoltage", None, 200, {"value": 14.5288}),
    ("GET", "/api/chargeInputCurrent", None, 200, {"value": 0.0225}),
    ("GET", "/api/batteryVoltage", None, 200, {"value": 13.7456}),
    ("GET", "/api/stateOfCharge", None, 200, {"value": 87.0}),
    ("GET", "/api/batterySaver", None, 200, {"value": False, "low": 0, "high": 100}),
    (
        "PUT", "/api/batterySaver", '{ "value" : true, "low": 10, "high": 100 }', 200,
        {"value": True, "low": 10, "high": 100},
    ),
    (
        "PUT", "/api/batterySaver", '{ "value": true, "low": 20, "high": 80}', 200,
        {"value": True, "low": 20, "high": 80},
    ),
    ("PUT", "/api/batterySaver", '{"value": true}', 200, {"value": True, "low": 10, "high": 100}),
    ("PUT", "/api/batterySaver", '{"value": true, "low": 20}', 400, {"field": "high"}),
    ("PUT", "/api/batterySaver", '{"value": true, "low": 50, "high": 80}', 400, {"field": "low"}),
    ("GET", "/api/deviceAdcRead?port=1&option=0", None, 200, lambda b: _number(b["value"])),
    ("GET", "/api/deviceAdcRead?port=1&option=1", None, 200, lambda b: _number(b["value"])),
    ("GET", "/api/deviceAdcRead?port=1&option=7", None, 400, {"field": "option"}),
    (
        "POST", "/api/deviceVoltage", '{ "portNumber": 1, "value": 1}', 200,
        {"portNumber": 1, "value": 1},
    ),
    ("POST", "/api/deviceVoltage", '{ "portNumber": 1, "value": 5}', 400, {"field": "value"}),
    ("POST", "/api/sleep", '{"duration":10000}', 200, {"duration": 10000}),
    ("GET", "/api/tempRead", None, 200, {"value": 36.75}),
    ("GET", "/api/pressRead", None, 200, {"value": 101788.50996}),
    ("GET", "/api/deviceAdcRead420?port=1", None, 200, {"value": -0.00429}),
    ("GET", "/api/deviceAdcRead420", None, 400, {"field": "port"}),
    (
        "POST", "/api/deviceRsSel", '{ "portNumber": 3, "content": "RS232"}', 200,
        {"portNumber": 3, "content": "RS232"},
    ),
    ("POST", "/api/deviceRsSel", '{ "portNumber": 3, "content": "CAN"}', 400, {"field": "content"}),
    ("POST", "/api/observation", None, 200, {"value": True}),
    (
        "GET", "/api/configure?port=1", None, 200,
        lambda b: b["COMM_TYPE"] == "RS232" and b["DELIMITERS_HEX"] == ["0D0A"]
        and "MODULE_KEY" not in b,
    ),
    (
        "PUT", "/api/configure?port=2",
        '{ "COMM_TYPE" : "RS232", "BAUD_RATE" : 9600, "DELIMITERS_HEX" : ["0D0A"], '
        '"PORT" : 1234, "HOST" : "127.0.0.1" }', 200,
        {"COMM_TYPE": "RS232", "BAUD_RATE": 9600, "DELIMITERS_HEX": ["0D0A"], "PORT": 1234,
         "HOST": "127.0.0.1"},
    ),
    (
        "DELETE", "/api/configure?port=2", '{"resources" : ["DELIMITERS_HEX"] }', 200,
        {"COMM_TYPE": "RS232", "BAUD_RATE": 9600, "PORT": 1234, "HOST": "127.0.0.1"},
    ),
    (
        "DELETE", "/api/configure?port=2", '{"resources" : ["HOST", "PORT"] }', 200,
        {"COMM_TYPE": "RS232", "BAUD_RATE": 9600},
    ),
    ("PUT", "/api/configure?port=2", '{ "BAUD_RATE": 12345 }', 400, {"field": "BAUD_RATE"}),
    ("GET", "/api/configure?port=99", None, 400, {"field": "port"}),
    ("GET", "/api/interfacePriority", None, 200, {"content": "eth0"}),
    ("PUT", "/api/interfacePriority/cellular", None, 200, {"content": "ppp0"}),
    ("PUT", "/api/interfacePriority/ethernet", None, 200, {"content": "eth0"}),
    (
        "POST", "/api/message", '{ "portNumber": "1", "message": "hello world"}', 200,
        {"portNumber": 1, "message": "hello world"},
    ),
    ("GET", "/api/version", None, 200, {"value": thinghub.__version__}),
    ("GET", "/api/firmware", None, 200, {"value": "simulated-1.0.0"}),
    ("GET", "/api/hardware", None, 200, {"value": "thinghub simulated board"}),
    ("POST", "/api/accessible", '{ "value": "false"}', 200, {"value": False}),
    ("POST", "/api/accessible", '{ "value": "true"}', 200, {"value": True}),
    ("GET", "/api/cloudConnection", None, 200, {"value": True}),
    ("GET", "/api/deviceConnection?port=2", None, 200, {"value": True}),
    ("PUT", "/api/deviceConnection?port=3", '{ "value": false}', 200, {"value": False}),
    ("PUT", "/api/deviceConnection?port=3", '{ "value": true}', 200, {"value": True}),
    ("GET", "/api/nope", None, 404, {"status": 404}),
    ("DELETE", "/api/time", None, 405, {"status": 405}),
    ("POST", "/api/time", "{not json", 400, {"field": "body"}),
    # A time the clock cannot keep is refused, not set (it was set, then every read was a 500).
    ("POST", "/api/time", '{"time":"9999-12-31T23:59:59.990Z"}', 400, {"field": "time"}),
    ("POST", "/api/time", '{"time":"0001-01-01T00:00:00+01:00"}', 400, {"field": "time"}),
    ("POST", "/api/time", '{"time":1574178090}', 400, {"field": "time"}),  # ISO 8601 only
    ("POST", "/api/time", '{"time":"19 Nov 2019"}', 400, {"field": "time"}),
    ("GET", "/api/time", None, 200, lambda b: b["value"].endswith("Z")),
    ("POST", "/api/deviceVoltage", '{"portNumber": 4, "value": 1}', 400, {"field": "portNumber"}),
    ("GET", "/api/interfacePriority/cellular", None, 405,
     {"message": "GET /api/interfacePriority/cellular: use PUT"}),
    ("OPTIONS", "/api/time", None, 405, {"status": 405}),
    # Deeper than the JSON parser's stack, under the size limit: a 400, it was a 500.
    ("PUT", "/api/cloudConnection", '{"value": ' + "[" * 30000 + "]" * 30000 + "}", 400,
     {"field": "body"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    ROUTES,
    ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(ROUTES)],
)
def test_rest_route_answers_in_the_seed_shape(
    rest_edge: tuple[EdgeProcess, Instrument],
    method: str,
    path: str,
    body: str | None,
    status: int,
    expected: Any,
) -> None:
    edge, instrument = rest_edge
    assert edge.proc is not None and edge.proc.poll() is None, (edge.proc.returncode, edge.log())
    with edge.client() as api:
        # As curl -d sends it: no JSON content type.
        response = api.request(method, path, content=body)
    assert response.status_code == status, response.text
    answer = response.json()
    if status >= 400:
        assert answer["status"] == status and answer["error"] and answer["message"]
        assert {k: answer[k] for k in expected} == expected
    elif callable(expected):
        assert expected(answer), answer
    else:
        assert answer == expected
    if path == "/api/message":
        assert instrument.read_exactly(11) == b"hello world"


def test_head_is_get_without_a_body(rest_edge: tuple[EdgeProcess, Instrument]) -> None:
    edge, _ = rest_edge
    with edge.client() as api:
        head = api.head("/api/serialNumber")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == "application/json"
        assert api.head("/api/observation").status_code == 405  # never runs the POST


def test_device_connection_of_a_port_not_configured_yet(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    """The seed's `PUT deviceConnection?port=3` on an edge with only port 1 configured: the
    setting is kept (it was a 404) and applies when the port is configured."""
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(edges, EdgeProcess(tmp_path, server, gateway, edge_toml(instrument, gateway)))
    third = Instrument()
    try:
        with edge.client() as api:
            assert api.get("/api/deviceConnection?port=3").json() == {"value": True}
            off = api.put("/api/deviceConnection?port=3", content='{ "value": false}')
            assert off.status_code == 200, off.text
            assert off.json() == {"value": False}
            assert api.get("/api/deviceConnection?port=3").json() == {"value": False}
            assert api.get("/api/deviceConnection?port=2").json() == {"value": True}
            configured = api.put(
                "/api/configure?port=3", json={"COMM_TYPE": "RS232", "DEVICE": third.path}
            )
            assert configured.status_code == 200, configured.text
            port3 = edge.status()["ports"]["3"]
            assert port3["enabled"] is False and port3["open"] is False
            assert api.put("/api/deviceConnection?port=3", json={"value": True}).json() == {
                "value": True
            }
            edge.wait_status(lambda s: s["ports"]["3"]["open"])
            bad = api.put("/api/deviceConnection?port=99", json={"value": False})
            assert bad.status_code == 400 and bad.json()["field"] == "port"
    finally:
        third.close()


def test_rest_writes_take_effect(rest_edge: tuple[EdgeProcess, Instrument]) -> None:
    edge, _ = rest_edge
    with edge.client() as api:
        api.post("/api/deviceVoltage", json={"portNumber": 2, "value": 2})
        assert api.get("/api/deviceAdcRead?port=2&option=0").json() == {"value": 15.0}
        api.post("/api/deviceVoltage", json={"portNumber": 2, "value": 0})
        assert api.get("/api/deviceAdcRead?port=2&option=0").json() == {"value": 0.0}
        api.post("/api/time", json={"time": "2030-01-02T03:04:05.000Z"})
        assert api.get("/api/time").json()["value"].startswith("2030-01-02T03:0")
        api.put("/api/batterySaver", json={"value": False})
        saver = api.get("/api/batterySaver").json()
        assert saver["value"] is False and set(saver) == {"value", "low", "high"}


def test_update_from_a_file_and_from_a_version(
    rest_edge: tuple[EdgeProcess, Instrument], tmp_path: Path
) -> None:
    edge, _ = rest_edge
    package = tmp_path / "snoopy-1.2.3.jar"
    package.write_bytes(b"new application bytes")
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    with edge.client() as api:
        missing = api.post(f"/api/update?file={package}")
        assert missing.status_code == 400 and missing.json()["field"] == "sha256"
        wrong = api.post(f"/api/update?file={package}&sha256={'0' * 64}")
        assert wrong.status_code == 400 and "expected" in wrong.json()["message"]
        gone = api.post(f"/api/update?file={tmp_path / 'nope.jar'}&sha256={digest}")
        assert gone.status_code == 404

        (tmp_path / "snoopy-1.2.3.jar.sha256").write_text(f"{digest}  snoopy-1.2.3.jar\n")
        done = api.post(f"/api/update?file={package}")
        assert done.status_code == 200, done.text
        assert done.json()["value"] == "1.2.3" and done.json()["sha256"] == digest
        assert (edge.work / "installed").read_bytes() == b"new application bytes"
        assert api.get("/api/version").json() == {"value": "1.2.3"}

        releases = edge.work / "releases"
        releases.mkdir(exist_ok=True)
        release = releases / "thinghub-edge-7.18.0.tar.gz"
        release.write_bytes(b"release 7.18.0")
        release_digest = hashlib.sha256(b"release 7.18.0").hexdigest()
        (releases / "thinghub-edge-7.18.0.tar.gz.sha256").write_text(release_digest + "\n")
        done = api.post("/api/update?version=7.18.0")
        assert done.status_code == 200, done.text
        assert done.json() == {"value": "7.18.0", "previous": "1.2.3", "sha256": release_digest}
        assert (edge.work / "installed").read_bytes() == b"release 7.18.0"
        assert api.get("/api/version").json() == {"value": "7.18.0"}
        unknown = api.post("/api/update?version=9.9.9")
        assert unknown.status_code == 400 and unknown.json()["field"] == "sha256"


def test_a_token_guards_the_local_api(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(
        edges,
        EdgeProcess(
            tmp_path, server, gateway, edge_toml(instrument, gateway), "--api-token", "s3cret-t0k"
        ),
    )
    assert edge.addresses["token_required"] is True
    with edge.client() as api:
        refused = api.get("/api/tempRead")
        assert refused.status_code == 401 and refused.json()["status"] == 401
        assert (
            api.get("/api/tempRead", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        ok = api.get("/api/tempRead", headers={"Authorization": "Bearer s3cret-t0k"})
        assert ok.json() == {"value": 36.75}
    assert _ws_refused(edge) == 403
    ws = websocket.create_connection(
        f"{edge.ws_url}/ws/port/1",
        timeout=WS_TIMEOUT_S,
        header=["Authorization: Bearer s3cret-t0k"],
    )
    ws.close()
    ws.shutdown()


def test_a_non_loopback_listener_needs_a_token(
    server: ServerProcess, instrument: Instrument, tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = EdgeProcess(tmp_path, server, gateway, edge_toml(instrument, gateway))
    edge.args = ("--listen", "0.0.0.0:0")
    with pytest.raises(RuntimeError, match="api_token"):
        edge.start()


def test_linux_board_reads_sysfs_and_names_itself_when_it_cannot(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    sysfs = tmp_path / "sys"
    (sysfs / "class" / "thermal" / "thermal_zone0").mkdir(parents=True)
    (sysfs / "class" / "thermal" / "thermal_zone0" / "temp").write_text("45250\n")
    supply = sysfs / "class" / "power_supply" / "BAT0"
    supply.mkdir(parents=True)
    (supply / "type").write_text("Battery\n")
    (supply / "voltage_now").write_text("12600000\n")
    (supply / "capacity").write_text("76\n")
    with server.client() as client:
        gateway = gateway_with_module(client)
    toml = edge_toml(instrument, gateway).replace(
        'kind = "simulated"', f'kind = "linux"\nsysfs_root = "{sysfs}"\nserial_number = "ABC123"'
    )
    edge = _start(edges, EdgeProcess(tmp_path / "edge", server, gateway, toml))
    with edge.client() as api:
        assert api.get("/api/tempRead").json() == {"value": 45.25}
        assert api.get("/api/batteryVoltage").json() == {"value": 12.6}
        assert api.get("/api/stateOfCharge").json() == {"value": 76.0}
        assert api.get("/api/serialNumber").json() == {"value": "ABC123"}
        for path in ("/api/chargeInputVoltage", "/api/pressRead", "/api/batterySaver"):
            refused = api.get(path)
            assert refused.status_code == 501, refused.text
            body = refused.json()
            assert body["board"] == "linux" and "board 'linux' cannot give" in body["message"]
        refused = api.post("/api/observation")
        assert refused.status_code == 501 and "LED" in refused.json()["message"]
        refused = api.put("/api/interfacePriority/cellular")
        assert refused.status_code == 501 and refused.json()["board"] == "linux"


def test_bad_configuration_is_refused_naming_the_key(
    server: ServerProcess, instrument: Instrument, tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    toml = edge_toml(instrument, gateway).replace("BAUD_RATE = 9600", "BAUD_RATE = 12")
    with pytest.raises(RuntimeError, match="ports.1.BAUD_RATE"):
        EdgeProcess(tmp_path, server, gateway, toml).start()


def test_a_wrong_module_key_keeps_observations_queued(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    good_key = gateway["module_key"]
    bad = {**gateway, "module_key": base64.b64encode(os.urandom(64)).decode()}
    edge = _start(edges, EdgeProcess(tmp_path, server, bad, edge_toml(instrument, bad)))
    status = edge.wait_status(lambda s: "port1" in s["cloud"]["errors"])
    assert "return code 5" in status["cloud"]["errors"]["port1"]
    edge.wait_status(lambda s: s["ports"]["1"]["open"])
    instrument.write(b"T=1\r\nT=2\r\n")
    edge.wait_status(lambda s: s["queue"]["accepted"] == 2 and s["queue"]["queued"] == 2)
    # The right key through the API: the module connects and the queue drains.
    with edge.client() as api:
        response = api.put("/api/configure?port=1", json={"MODULE_KEY": good_key})
        assert response.status_code == 200 and "MODULE_KEY" not in response.json()
    bodies = telemetry_bodies(server, gateway["id"], "port1", 2)
    assert [b["temperature"] for b in bodies] == [1, 2]


def test_the_edge_answers_httpx_json_too(rest_edge: tuple[EdgeProcess, Instrument]) -> None:
    edge, _ = rest_edge
    with httpx.Client(base_url=edge.url, timeout=10) as api:
        response = api.put("/api/cloudConnection", json={"value": "false"})
        assert response.json() == {"value": False}
        assert api.get("/api/cloudConnection").json() == {"value": False}
        edge.wait_status(lambda s: not any(s["cloud"]["connected"].values()))
        assert api.put("/api/cloudConnection", json={"value": True}).json() == {"value": True}
    edge.wait_status(lambda s: s["cloud"]["connected"].get("port1") is True)


def test_the_gateway_can_find_its_hub_with_dps(
    server: ServerProcess, instrument: Instrument, edges: list[EdgeProcess], tmp_path: Path
) -> None:
    with server.client() as client:
        gateway = gateway_with_module(client)
    edge = _start(
        edges,
        EdgeProcess(
            tmp_path, server, gateway, edge_toml(instrument, gateway),
            "--dps-id-scope", server.addresses["id_scope"],
            "--dps-registration-id", gateway["id"],
            "--dps-key", gateway["key"],
            use_connection_string=False,
        ),
    )  # fmt: skip
    status = edge.wait_status(lambda s: s["cloud"]["connected"].get("port1") is True)
    assert status["cloud"]["gateway"] == gateway["id"]
    instrument.write(b"T=5\r\n")
    assert [b["temperature"] for b in telemetry_bodies(server, gateway["id"], "port1", 1)] == [5]
