"""The iTwin socket API's rules, over WebSocket (own port and /itwin/ws) and TCP: ids, errors,
framing, authentication, entities created and changed, observations and summaries.

As the real clients rely on: ids are echoed (numeric strings as numbers), never sequenced;
errors are JSON-RPC error objects with the request id; a bad request never closes a
WebSocket; on TCP, bytes that are no JSON get -32700 and the connection closes; repeated
failed authentication closes the connection.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websocket

from tests.e2e.azure import (  # noqa: F401 -- collect_sdk_garbage is a fixture
    SERVER_ARGS,
    Target,
    collect_sdk_garbage,
    connected,
    paho_socket_leaks,
)
from tests.e2e.helpers_st import create_device
from tests.e2e.itwin import (
    RECV_TIMEOUT_S,
    Ws,
    bentley_id,
    decodeOneJsonFrame,
    device_id,
    http_ws_url,
    node_id,
    register,
    rpc,
    send_telemetry,
    sensor_id,
    tcp_address,
    ws_url,
)
from tests.e2e.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.e2e.server import running

    with running(ServerProcess(tmp_path_factory.mktemp("itwin-socket"), *SERVER_ARGS)) as proc:
        yield proc


@pytest.fixture(params=["own-port", "http-port"])
def url(request: pytest.FixtureRequest, server: ServerProcess) -> str:
    """Both WebSocket endpoints serve the same API."""
    return ws_url(server) if request.param == "own-port" else http_ws_url(server)


def tcp(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(tcp_address(server), timeout=RECV_TIMEOUT_S)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    while True:
        part = s.recv(65536)
        if not part:
            return out
        out += part


# -- ids ----------------------------------------------------------------------------------------


def test_ids_are_echoed_numeric_strings_as_numbers(url: str, server: ServerProcess) -> None:
    ws = Ws(url, server.admin_token)
    try:
        for sent, answered in (("2", 2), (7, 7), ("0007", "0007"), ("abc", "abc"), (None, None)):
            ws.ws.send(rpc("time", {}, sent) if sent is not None else rpc("time", {}, None))
            if sent is None:
                continue  # a notification gets no answer
            assert ws.recv()["id"] == answered
        big = bentley_id()
        ws.ws.send(json.dumps({"jsonrpc": "2.0", "method": "time", "id": big,
                               "params": {"projectIds": ["whatever-project"]}}))  # fmt: skip
        assert ws.recv()["id"] == big
    finally:
        ws.close()


# -- errors -------------------------------------------------------------------------------------


def test_errors_are_json_rpc_errors_with_the_request_id(url: str, server: ServerProcess) -> None:
    ws = Ws(url)
    try:
        # Before authenticate: every other method is refused, the connection stays.
        answer = ws.call("getSensors", {}, 5)
        assert answer == {
            "jsonrpc": "2.0",
            "id": 5,
            "error": {"code": -32001, "message": answer["error"]["message"]},
        }
        answer = ws.call("authenticate", {"code": "not-a-key"}, 0)
        assert answer["error"]["code"] == -32002 and answer["id"] == 0
        assert ws.call("authenticate", {"code": server.admin_token}, 0)["result"] == {"nextId": 1}
        assert ws.call("noSuchMethod", {}, 6)["error"]["code"] == -32601
        bad = ws.call("getData", {"sensor": "/x/node/device", "metric": "T"}, 7)["error"]
        assert bad == {"code": -32602, "message": "Invalid params: unit: Field required"}
        bad = ws.call("getData", {"sensor": "no id", "metric": "T", "unit": "C"}, 8)["error"]
        assert bad["code"] == -32602 and bad["message"].startswith("Invalid params: sensor")
        missing = ws.call(
            "getData", {"sensor": "/thinghub/nobody/node/device/nobody/device/default/sensor",
                        "metric": "T", "unit": "C"}, 9)  # fmt: skip
        assert missing["error"]["code"] == -32004 and missing["id"] == 9
        ws.ws.send("{not json")
        parse_error = ws.recv()
        assert parse_error["id"] is None and parse_error["error"]["code"] == -32700
        ws.ws.send('[{"jsonrpc":"2.0","method":"time","id":1}]')
        assert ws.recv()["error"]["code"] == -32600
        ws.ws.send('{"jsonrpc":"1.0","method":"time","id":10}')
        assert ws.recv() == {
            "jsonrpc": "2.0",
            "id": 10,
            "error": {"code": -32600, "message": 'Invalid Request: "jsonrpc" must be "2.0"'},
        }
        # Still usable after all that.
        assert "time" in ws.call("time", {}, 11)["result"]
    finally:
        ws.close()


def test_a_parse_error_on_a_websocket_never_closes_it(url: str, server: ServerProcess) -> None:
    ws = Ws(url, server.admin_token)
    try:
        for junk in ("{not json", "", "123", "\u0000", '{"jsonrpc":"2.0","method":"time",'):
            ws.ws.send(junk)
            error = ws.recv()
            assert error["id"] is None and error["error"]["code"] in (-32700, -32600), junk
        ws.ws.send_binary(rpc("time", {}, 3).encode())  # a binary frame with JSON: served
        assert ws.recv()["id"] == 3
    finally:
        ws.close()


def test_tcp_parse_error_answers_then_closes(server: ServerProcess) -> None:
    s = tcp(server)
    try:
        s.sendall(rpc("authenticate", {"code": server.admin_token}, 0).encode())
        assert json.loads(decodeOneJsonFrame(s))["result"] == {"nextId": 1}
        s.sendall(rpc("time", {}, 1).encode() + b"{garbage}" + rpc("time", {}, 2).encode())
        rest = read_all(s)  # then EOF: the server closed it
    finally:
        s.close()
    first, _, tail = rest.partition(b"}}")
    answered = json.loads(first + b"}}")
    assert answered["id"] == 1 and "time" in answered["result"]
    error = json.loads(tail)
    assert error["id"] is None and error["error"]["code"] == -32700


def test_tcp_requests_split_anywhere_are_read_whole(server: ServerProcess) -> None:
    s = tcp(server)
    try:
        data = rpc("authenticate", {"code": server.admin_token}, 0).encode()
        data += rpc("getNodes", {"nodes": []}, 1).encode() + b"\r\n  "
        for i in range(len(data)):  # one byte at a time
            s.send(data[i : i + 1])
        assert json.loads(decodeOneJsonFrame(s))["id"] == 0
        assert json.loads(decodeOneJsonFrame(s)) == {"jsonrpc": "2.0", "id": 1, "result": []}
    finally:
        s.close()


def test_repeated_authentication_failures_close_the_connection(server: ServerProcess) -> None:
    s = tcp(server)
    try:
        for _ in range(3):
            s.sendall(rpc("authenticate", {"code": "wrong"}, 0).encode())
        rest = read_all(s)
    finally:
        s.close()
    assert rest.count(b'"code":-32002') == 3
    ws = websocket.create_connection(ws_url(server), timeout=RECV_TIMEOUT_S)
    try:
        for _ in range(3):
            ws.send(rpc("authenticate", {"code": "wrong"}, 0))
            assert json.loads(ws.recv())["error"]["code"] == -32002
        assert closed_by_server(ws)
    finally:
        ws.close()


def closed_by_server(ws: websocket.WebSocket) -> bool:
    """Whether the server closed the WebSocket: recv() ends it (a close frame reads as an
    empty message) or fails for a closed connection."""
    try:
        return ws.recv() in ("", b"")
    except websocket.WebSocketConnectionClosedException:
        return True


# -- entities -----------------------------------------------------------------------------------


def test_create_samples_as_printed_then_list_update_and_subscribe(
    url: str, server: ServerProcess
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    project = f"p{tag.lower()}"
    ws = Ws(url, server.admin_token)
    try:
        node = f"/fn/{tag}XX/node"
        answer = ws.call("createNode", {
            "node": node, "type": "THREAD",
            "props": {"NAME": "Sample thread", "SERIAL_NO": "02DDXX", "VERSION": "v4_6"},
            "projectIds": [project]}, "2")  # fmt: skip
        assert answer == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {
                "id": node,
                "type": "THREAD",
                "props": {"NAME": "Sample thread", "NODE_ID": node, "ACCESSIBLE": True},
            },
        }
        # The seed's createDevice names another node (…C5): it is made with the device.
        device = f"/fn/{tag}C5/node/demo/032432/device"
        answer = ws.call("createDevice", {
            "device": device, "type": "DEMO",
            "props": {"NAME": "Demo device", "NODE_ID": f"/fn/{tag}C5/node"},
            "projectIds": [project]}, "3")  # fmt: skip
        assert answer["result"] == {
            "id": device,
            "type": "DEMO",
            "props": {"NAME": "Demo device", "NODE_ID": f"/fn/{tag}C5/node", "ACCESSIBLE": True},
        }
        sensor = f"/instantel/{tag}6E/node/demo_sensor/UM9169/device/demo-1/sensor"
        answer = ws.call("createSensor", {
            "sensor": sensor, "observationType": "DEMO_SENSOR", "type": "DEMO_SENSOR",
            "props": {"NAME": "Demo Sensor"}, "projectIds": [project]}, "4")  # fmt: skip
        assert answer["result"] == {
            "type": "DEMO_SENSOR",
            "device": f"/instantel/{tag}6E/node/demo_sensor/UM9169/device",
            "id": sensor,
            "props": {
                "ACCESSIBLE": True,
                "SERIAL_NO": "UM9169",
                "NODE_ID": f"/instantel/{tag}6E/node",
                "NAME": "Demo Sensor",
            },
        }
        again = ws.call(
            "createNode",
            {"node": node, "type": "THREAD", "props": {"VERSION": "v1"}, "projectIds": [project]},
            5,
        )
        assert again["error"]["code"] == -32005
        no_version = ws.call("createNode", {"node": f"/fn/{tag}ZZ/node", "type": "THREAD",
                                            "props": {}}, 6)  # fmt: skip
        assert no_version["error"]["code"] == -32602 and "VERSION" in no_version["error"]["message"]

        # Listed in the project, with the full props.
        nodes = ws.call("getNodes", {"projectIds": [project]}, 7)["result"]
        assert sorted(n["id"] for n in nodes) == sorted(
            [node, f"/fn/{tag}C5/node", f"/instantel/{tag}6E/node"]
        )
        sample = next(n for n in nodes if n["id"] == node)
        assert sample["props"]["PROJECT_ID"] == project
        assert sample["props"]["VERSION"] == "v4_6" and sample["customProps"] == {}

        # subscribeSensors pushes the sensor on every change; updateSensor changes it.
        sub = bentley_id()
        ws.send("subscribeSensors", {"sensors": [sensor], "projectIds": [project]}, sub)
        assert ws.recv()["result"] == {"requestStatus": "acknowledged"}
        props = {"NAME": "Renamed", "ZERO_DATE": "2017-03-01T22:00:00.000Z"}
        ws.send("updateSensor", {"sensor": sensor, "props": props}, 8)
        # The answer and the push race (the push is the feed's, the answer the request's):
        # read until both are in, whichever comes first.
        by_id: dict[Any, dict[str, Any]] = {}
        while 8 not in by_id or sub not in by_id:
            message = ws.recv()
            by_id[message.get("id")] = message
        push = by_id[sub]
        assert push["result"]["data"]["props"]["NAME"] == "Renamed"
        result = by_id[8]["result"]
        assert result["props"]["NAME"] == "Renamed" and result["props"]["ZERO_DATE"].startswith(
            "2017"
        )
        refused = ws.call("updateSensor", {"sensor": sensor, "props": {"ACCESSIBLE": False}}, 9)
        assert refused["error"]["code"] == -32602 and "ACCESSIBLE" in refused["error"]["message"]
    finally:
        ws.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_device_created_here_is_on_v1_and_connects_over_mqtt(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    project = f"p{tag.lower()}"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        itwin_device = f"/fn/{tag}/node/demo/{tag}/device"
        ws.call("createDevice", {"device": itwin_device, "type": "DEMO",
                                 "props": {"NAME": "Made here", "NODE_ID": f"/fn/{tag}/node"},
                                 "projectIds": [project]}, 1)  # fmt: skip
        [found] = ws.call("getDevices", {"devices": [itwin_device]}, 2)["result"]
        core_id = found["props"]["THINGHUB_ID"]
        assert found["props"]["ACCESSIBLE"] is True  # fed through the API so far
        with server.client() as api:
            listed = api.get("/v1/devices", params={"projectID": project}).json()
            rows = listed.get("items", listed) if isinstance(listed, dict) else listed
            assert core_id in json.dumps(rows)
            device = api.get(f"/v1/devices/{core_id}").json()
        assert device["tags"]["name"] == "Made here"
        client = Target.of(server.addresses).device_client(device)
        with connected(client):
            deadline = time.monotonic() + 20
            while True:
                [now] = ws.call("getDevices", {"devices": [itwin_device]}, 3)["result"]
                if now["props"].get("LAST_COMM") and now["props"]["ACCESSIBLE"] is True:
                    break  # it talked over MQTT, and is connected
                assert time.monotonic() < deadline, now
                time.sleep(0.1)
        deadline = time.monotonic() + 20
        while True:  # once it has talked over MQTT it follows its connection
            [now] = ws.call("getDevices", {"devices": [itwin_device]}, 4)["result"]
            if now["props"]["ACCESSIBLE"] is False:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
    finally:
        ws.close()


def test_every_thinghub_device_is_visible_with_fixed_ids(server: ServerProcess) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as api:
        plain = register(api, project)
        gateway = create_device(api, "gw", project, "d", gateway=True)
        module = api.post(f"/v1/devices/{gateway['id']}/modules", json={"moduleId": "port1"})
        assert module.status_code in (200, 201), module.text
    send_telemetry(server, plain, {"temperature": 20.5}, component="thermostat1")
    ws = Ws(ws_url(server), server.admin_token)
    try:
        nodes = {n["id"] for n in ws.call("getNodes", {"projectIds": [project]}, 1)["result"]}
        assert nodes == {node_id(plain["id"]), node_id(gateway["id"])}
        devices = {
            d["id"]: d for d in ws.call("getDevices", {"projectIds": [project]}, 2)["result"]
        }
        module_id = f"/thinghub/{gateway['id']}/node/module/port1/device"
        assert set(devices) == {device_id(plain["id"]), device_id(gateway["id"]), module_id}
        assert devices[module_id]["props"]["NODE_ID"] == node_id(gateway["id"])
        sensors = {s["id"] for s in ws.call("getSensors", {"projectIds": [project]}, 3)["result"]}
        assert {sensor_id(plain["id"]), sensor_id(plain["id"], "thermostat1"),
                f"{module_id}/default/sensor"} <= sensors  # fmt: skip
        # Without projectIds the caller sees everything its token sees, this project included.
        everything = ws.call("getNodes", {}, 4)["result"]
        assert nodes <= {n["id"] for n in everything}
        # projectIds is honoured: another project lists none of these.
        other = ws.call("getNodes", {"projectIds": [f"{project}x"]}, 5)["result"]
        assert nodes.isdisjoint({n["id"] for n in other})
    finally:
        ws.close()


# -- observations -------------------------------------------------------------------------------


def test_observations_summaries_limits_and_raw_reads(server: ServerProcess) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as api:
        device = register(api, project)
    for t in (1.0, 2.0, 4.0, 8.0):
        send_telemetry(server, device, {"T": t, "P": 100000 + t})
    sensor = sensor_id(device["id"])
    ws = Ws(ws_url(server), server.admin_token)
    try:
        summary = ws.call("getObservationsSummary", {"sensors": [sensor], "projectIds": [project]},
                          bentley_id())["result"][sensor]  # fmt: skip
        assert summary["metric"] == "T" and summary["unit"] == "C"
        assert list(summary["first"]["observations"].values()) == [1.0]
        assert list(summary["last"]["observations"].values()) == [8.0]
        base = {"sensor": sensor, "metric": "T", "unit": "C", "projectIds": [project]}
        chunks, _ = ws.stream("getData", {**base, "limit": "last"})
        assert [list(c["data"].values()) for c in chunks] == [[8.0]]
        chunks, _ = ws.stream(
            "getData", {**base, "limit": {"function": "first", "params": {"size": 2}}}
        )
        assert [list(c["data"].values()) for c in chunks] == [[1.0, 2.0]]
        chunks, _ = ws.stream("getObservations", {"sensor": sensor, "projectIds": [project]})
        by_metric: dict[str, list[float]] = {}
        for chunk in chunks:
            by_metric.setdefault(chunk["metric"], []).extend(chunk["data"].values())
        assert by_metric == {
            "T": [1.0, 2.0, 4.0, 8.0],
            "P": [100001.0, 100002.0, 100004.0, 100008.0],
        }
        units = ws.call("getUnits", {"metrics": ["P", "dT"]}, bentley_id())["result"]
        assert [u["id"] for u in units["P"]][:3] == ["Pa", "hPa", "kPa"]
        raw = ws.call("getRawMetrics", {"sensors": [sensor], "types": ["GENERIC_SENSOR_SDE"]},
                      bentley_id())["result"]  # fmt: skip
        assert [m["id"] for m in raw[sensor]] == ["T", "P"]
        assert [m["id"] for m in raw["GENERIC_SENSOR_SDE"]] == ["GENERIC"]
        bad_unit = ws.call("getData", {**base, "unit": "Pa"}, bentley_id())["error"]
        assert bad_unit["code"] == -32602 and "unit" in bad_unit["message"]
    finally:
        ws.close()


def test_delta_metrics_against_a_reference_and_over_a_rolling_window(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex[:6]
    sensor = f"/api/{tag}/node/dynamic/{tag}/device/s1/sensor"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        ws.call("createSensor", {"sensor": sensor, "type": "TEMP", "props": {}}, 1)
        stamps = [f"2024-01-01T00:0{m}:00.000Z" for m in range(4)]
        uploaded = ws.call("uploadData", {"data": [
            {"sensorId": sensor, "timestamp": stamp, "values": {"T": value}}
            for stamp, value in zip(stamps, (1.0, 2.0, 4.0, 8.0), strict=True)]}, 2)  # fmt: skip
        assert uploaded["result"] == {"successfullyProcessedObs": 4}
        base = {"sensor": sensor, "metric": "dT", "unit": "C"}

        def series(params: dict[str, Any], **extra: Any) -> dict[str, float]:
            chunks, _ = ws.stream("getData", {**base, "params": params, **extra})
            return {k: v for c in chunks for k, v in c["data"].items()}

        # ZERO_DATE: relative to the first reading at or after it.
        assert series({"ZERO_DATE": {"value": stamps[1]}}) == dict(
            zip(stamps, (-1.0, 0.0, 2.0, 6.0), strict=True)
        )
        # Without params: relative to the first reading of the range.
        assert series({}, startDate=stamps[2]) == {stamps[2]: 0.0, stamps[3]: 4.0}
        # dt: each value minus the latest one at least a minute older.
        assert series({"dt": {"value": 1, "unit": "min"}}) == dict(
            zip(stamps[1:], (1.0, 2.0, 4.0), strict=True)
        )
        # A change of 1 C is a change of 1.8 F.
        assert series({"dt": {"value": 60}}, unit="F", limit="last") == {stamps[3]: 7.2}
        bad = ws.call("getData", {**base, "params": {"ZERO_DATE": {"value": 5}}}, 3)["error"]
        assert bad["code"] == -32602 and "params.ZERO_DATE.value" in bad["message"]
    finally:
        ws.close()


def test_observations_summary_takes_the_data_query_params(server: ServerProcess) -> None:
    """The seed: getObservationsSummary "returns the first and last observations that match
    the data query parameters" (sensor, metric, unit, startDate, endDate)."""
    tag = uuid.uuid4().hex[:6]
    sensor = f"/api/{tag}/node/dynamic/{tag}/device/s1/sensor"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        ws.call("createSensor", {"sensor": sensor, "type": "TEMP", "props": {}}, 1)
        stamps = [f"2024-01-01T00:0{m}:00.000Z" for m in range(4)]
        data = [
            {"sensorId": sensor, "timestamp": stamp, "values": {"T": value, "P": 1000 * value}}
            for stamp, value in zip(stamps, (0.0, 10.0, 20.0, 100.0), strict=True)
        ]
        uploaded = ws.call("uploadData", {"data": data}, 2)
        assert uploaded["result"] == {"successfullyProcessedObs": 4}

        def summary(**params: Any) -> dict[str, Any]:
            answer = ws.call("getObservationsSummary", {"sensors": [sensor], **params}, 3)
            result: dict[str, Any] = answer["result"][sensor]
            return result

        inside = summary(startDate=stamps[1], endDate=stamps[2])
        assert inside["first"]["observations"] == {stamps[1]: 10.0}
        assert inside["last"]["observations"] == {stamps[2]: 20.0}
        fahrenheit = summary(metric="T", unit="F", startDate=stamps[3])
        assert fahrenheit["unit"] == "F"
        assert fahrenheit["first"]["observations"] == {stamps[3]: 212.0}
        kilopascal = summary(metric="P", unit="kPa")
        assert kilopascal["metric"] == "P" and kilopascal["unit"] == "kPa"
        assert kilopascal["first"]["observations"] == {stamps[0]: 0.0}
        assert kilopascal["last"]["observations"] == {stamps[3]: 100.0}
        nothing = summary(startDate="2025-01-01T00:00:00.000Z")
        assert nothing["first"]["observations"] == {} == nothing["last"]["observations"]
        bad = ws.call("getObservationsSummary", {"sensors": [sensor], "unit": "Pa"}, 4)["error"]
        assert bad["code"] == -32602 and "unit" in bad["message"]
    finally:
        ws.close()


def test_unsubscribe_takes_the_seeds_subscription_id_name(server: ServerProcess) -> None:
    """The seed: unsubscribe* use "the subscriptionId returned by the subscription API
    request"; `{"subscriptionId": n}` names it as well as `{"id": n}`."""
    tag = uuid.uuid4().hex[:6]
    sensor = f"/api/{tag}/node/dynamic/{tag}/device/s1/sensor"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        ws.call("createSensor", {"sensor": sensor, "type": "TEMP", "props": {}}, 1)
        reading = {"sensorId": sensor, "timestamp": "2024-01-01T00:00:00.000Z", "values": {"T": 1}}
        ws.call("uploadData", {"data": [reading]}, 2)
        live = {"sensors": [sensor], "metric": "T", "unit": "C"}
        assert ws.call("subscribeData", live, 10)["result"] == {"requestStatus": "acknowledged"}
        assert ws.call("unsubscribeData", {"subscriptionId": 10}, 11)["result"] == {
            "unsubscribed": 10
        }
        assert ws.call("subscribeSensors", {"sensors": [sensor]}, 12)["result"] == {
            "requestStatus": "acknowledged"
        }
        assert ws.call("unsubscribeSensors", {"subscriptionId": "12"}, 13)["result"] == {
            "unsubscribed": 12
        }
        missing = ws.call("unsubscribeNodes", {}, 14)["error"]
        assert missing["code"] == -32602 and "id" in missing["message"]
    finally:
        ws.close()


def test_an_upload_of_several_sensors_stores_each_sensors_points_and_names_the_bad(
    server: ServerProcess,
) -> None:
    """Entries of two sensors interleaved, and bad ones between them (a sensorId that is a
    list or an object, an unknown sensor, a metric a generic sensor does not declare): each
    sensor's points land in its own series, in time order, and the bad entries are named by
    their index."""
    tag = uuid.uuid4().hex[:6]
    first = f"/api/{tag}/node/dynamic/{tag}/device/a/sensor"
    second = f"/api/{tag}/node/dynamic/{tag}/device/b/sensor"
    declared = f"/api/{tag}/node/dynamic/{tag}/device/c/sensor"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        ws.call("createSensor", {"sensor": first, "type": "TEMP", "props": {}}, 1)
        ws.call("createSensor", {"sensor": second, "type": "TEMP", "props": {}}, 2)
        props = {"KNOWN_METRICS": {"0": "T"}, "KNOWN_UNITS": {"0": "C"}}
        created = ws.call(
            "createSensor", {"sensor": declared, "type": "GENERIC_SENSOR_SDE", "props": props}, 3
        )
        assert "result" in created, created
        stamp = "2024-03-01T00:00:0{}.000Z".format
        data: list[Any] = [
            {"sensorId": first, "timestamp": stamp(0), "values": {"T": 1.0}},
            {"sensorId": second, "timestamp": stamp(1), "values": {"T": 10.0}},
            {"sensorId": [first], "timestamp": stamp(2), "values": {"T": 2.0}},
            {"sensorId": first, "timestamp": stamp(3), "values": {"T": 3}},
            {"sensorId": {"id": first}, "timestamp": stamp(4), "values": {"T": 4.0}},
            {"sensorId": f"{first}x", "timestamp": stamp(5), "values": {"T": 5.0}},
            {"sensorId": second, "timestamp": stamp(6), "values": {"T": 20.0}},
            {"sensorId": declared, "timestamp": stamp(7), "values": {"P": 1.0}},
            {"sensorId": declared, "timestamp": stamp(8), "values": {"T": 30.0}},
        ]
        answer = ws.call("uploadData", {"data": data}, 4)["result"]
        assert answer["successfullyProcessedObs"] == 5
        assert answer["rejectedObs"] == 4
        assert [e["path"] for e in answer["errors"]] == [
            "data[2].sensorId", "data[4].sensorId", "data[5].sensorId", "data[7].values.P",
        ]  # fmt: skip

        def series(sensor: str) -> dict[str, float]:
            chunks, _ = ws.stream("getData", {"sensor": sensor, "metric": "T", "unit": "C"})
            return {k: v for c in chunks for k, v in c["data"].items()}

        assert series(first) == {stamp(0): 1.0, stamp(3): 3.0}
        assert series(second) == {stamp(1): 10.0, stamp(6): 20.0}
        assert series(declared) == {stamp(8): 30.0}
    finally:
        ws.close()


# -- TLS and access tokens ----------------------------------------------------------------------


def test_itwin_tls_serves_wss_and_tls_over_tcp_with_the_hub_certificate(
    start_server: Callable[..., ServerProcess],
) -> None:
    """--itwin-tls: the WebSocket port speaks wss and the TCP port TLS, with the hub's server
    certificate (trusted through its CA); a plain client gets nothing from either. The code is
    an access token from /v1/auth/token (client credentials of an API token)."""
    proc = start_server("--itwin-tls")
    with proc.client() as api:
        issued = api.post("/v1/tokens", json={"role": "viewer", "label": "tls"}).json()
    response = httpx.post(
        f"{proc.http_url}/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": issued["id"],
            "client_secret": issued["token"],
        },  # fmt: skip
    )
    assert response.status_code == 200, response.text
    jwt = response.json()["access_token"]
    host, ws_port = proc.addresses["itwin_ws"]["host"], proc.addresses["itwin_ws"]["port"]
    ws = websocket.create_connection(
        f"wss://{host}:{ws_port}",
        timeout=RECV_TIMEOUT_S,
        sslopt={"ca_certs": proc.ca_file, "server_hostname": "localhost"},
    )
    try:
        ws.send(rpc("authenticate", {"code": jwt}, "0"))
        assert json.loads(ws.recv()) == {"jsonrpc": "2.0", "id": 0, "result": {"nextId": 1}}
        ws.send(rpc("time", None, 1))
        assert json.loads(ws.recv())["result"]["time"].endswith("Z")
    finally:
        ws.close()

    context = ssl.create_default_context(cafile=proc.ca_file)
    raw = socket.create_connection(tcp_address(proc), timeout=RECV_TIMEOUT_S)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall((rpc("authenticate", {"code": jwt}, 0) + rpc("getNodes", {}, 1)).encode())
        assert json.loads(decodeOneJsonFrame(tls))["result"] == {"nextId": 1}
        assert isinstance(json.loads(decodeOneJsonFrame(tls))["result"], list)

    # Plain clients are refused: no WebSocket upgrade, no JSON-RPC answer.
    with pytest.raises((websocket.WebSocketException, ConnectionError, OSError)):
        websocket.create_connection(f"ws://{host}:{ws_port}", timeout=RECV_TIMEOUT_S).close()
    with socket.create_connection(tcp_address(proc), timeout=RECV_TIMEOUT_S) as plain:
        plain.sendall(rpc("authenticate", {"code": jwt}, 0).encode())
        assert b'"jsonrpc"' not in read_all(plain)


# -- updates ------------------------------------------------------------------------------------


def test_update_node_and_device_overwrite_the_props_given(server: ServerProcess) -> None:
    """updateNode and updateDevice mirror create ({node|device, props}): the props named are
    overwritten, the others kept; NAME of a thinghub device renames it on /v1 too."""
    tag = uuid.uuid4().hex[:6].upper()
    project = f"p{tag.lower()}"
    with server.client() as api:
        device = register(api, project)
    ws = Ws(ws_url(server), server.admin_token)
    try:
        node = f"/fn/{tag}/node"
        old = {"NAME": "Old", "VERSION": "v1", "SITE": "north"}
        created = ws.call(
            "createNode", {"node": node, "type": "THREAD", "projectIds": [project], "props": old}, 1
        )
        assert created["result"]["id"] == node
        updated = ws.call(
            "updateNode", {"node": node, "props": {"NAME": "New", "VERSION": "v2"}}, 2
        )
        props = updated["result"]["props"]
        assert (props["NAME"], props["VERSION"], props["SITE"]) == ("New", "v2", "north")
        [listed] = ws.call("getNodes", {"nodes": [node]}, 3)["result"]
        assert (listed["props"]["NAME"], listed["props"]["VERSION"]) == ("New", "v2")

        itwin_device = device_id(device["id"])
        roof = {"type": "Point", "coordinates": [7.25, 46.5, 510.0]}
        new = {"NAME": "Renamed", "LOCATION": roof}
        answer = ws.call("updateDevice", {"device": itwin_device, "props": new}, 4)
        assert answer.get("result", {}).get("props", {}).get("NAME") == "Renamed", answer
        [listed] = ws.call("getDevices", {"devices": [itwin_device]}, 5)["result"]
        assert listed["props"]["NAME"] == "Renamed"
        assert listed["props"]["LOCATION"]["coordinates"] == [7.25, 46.5, 510.0]
        with server.client() as api:
            assert api.get(f"/v1/devices/{device['id']}").json()["tags"]["name"] == "Renamed"
        # createDevice needs NODE_ID, as createNode needs VERSION.
        no_node = ws.call("createDevice", {"device": f"/fn/{tag}/node/x/Z/device", "type": "D",
                                           "props": {"NAME": "n"}}, 7)  # fmt: skip
        assert no_node["error"]["code"] == -32602 and "NODE_ID" in no_node["error"]["message"]
        missing = ws.call("updateDevice", {"device": f"/fn/{tag}/node/x/Y/device",
                                           "props": {"NAME": "n"}}, 6)  # fmt: skip
        assert missing["error"]["code"] == -32004
    finally:
        ws.close()


def test_bentley_client_alert_triggers_and_project_less_calls(server: ServerProcess) -> None:
    """Bentley's widget (SocketService) adds `projectIds: [authState.getProjectId()]` to
    every call, which is `[null]` without a project, and subscribes to alert triggers once;
    an error would end its stream. thinghub has no alert rules: the subscription is
    acknowledged, never pushes, and ends with unsubscribeAlertTriggers."""
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as api:
        device = register(api, project)
    sensor = sensor_id(device["id"])
    ws = Ws(ws_url(server), server.admin_token)
    try:
        # `[null]`: the caller's whole view, as omitting projectIds.
        answer = ws.call("getSensors", {"sensors": [sensor], "projectIds": [None]}, bentley_id())
        assert [found["id"] for found in answer["result"]] == [sensor]
        answer = ws.call("time", {"projectIds": [None]}, bentley_id())
        assert answer["result"]["time"].endswith("Z")

        sub = bentley_id()
        answer = ws.call("subscribeAlertTriggers", {"projectIds": [project]}, sub)
        assert answer == {"jsonrpc": "2.0", "id": sub, "result": {"requestStatus": "acknowledged"}}
        also = bentley_id()
        answer = ws.call("subscribeAlertTriggers", {"projectIds": [None]}, also)
        assert answer["result"] == {"requestStatus": "acknowledged"}
        send_telemetry(server, device, {"T": 21.5})
        fence = bentley_id()
        ws.send("time", {"projectIds": [project]}, fence)
        assert ws.recv()["id"] == fence  # nothing pushed before it
        answer = ws.call("unsubscribeAlertTriggers", {"id": sub}, bentley_id())
        assert answer["result"] == {"unsubscribed": sub}
        answer = ws.call("unsubscribeAlertTriggers", {"id": sub}, bentley_id())
        assert answer["error"]["code"] == -32004
        assert "subscribeAlertTriggers" in ws.call("help")["result"]
    finally:
        ws.close()
