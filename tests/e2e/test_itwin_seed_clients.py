"""The iTwin socket API driven by the seed's own sample clients, as printed.

- the Python walk-through ("See Below for our end to end example"): websocket-client's
  `create_connection`, authenticate with the id `"0"`, then getSensors, getMetrics and getData,
  each on a fresh connection, reading with `ws.recv()` until `finished`;
- the Python TCP client: `decodeOneJsonFrame` counting braces one byte at a time, the
  handshake and getData written back to back;
- the JavaScript client: `sendRequest` / `onMessage` with callbacks by id, `nextId` from
  authenticate, getMetrics then getUnits of the first metric, getData's callback telling
  `requestStatus` from `data` from `"code" in result`, subscribeSensors.

The data comes from a thinghub device registered on /v1 that posts telemetry over HTTPS:
`{"T": ..., "P_raw": ...}` makes the sensor the seed's walk-through shows (dT, T, P_raw).
"""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websocket import create_connection

from tests.e2e.itwin import (
    RECV_TIMEOUT_S,
    SeedJsClient,
    decodeOneJsonFrame,
    register,
    send_telemetry,
    sensor_id,
    tcp_address,
    ws_url,
)
from tests.e2e.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]


@pytest.fixture(scope="module")
def rugged_troll(server: ServerProcess) -> dict[str, Any]:
    """A device with three readings of T and P_raw, and the ids and times to ask for them."""
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as api:
        device = register(api, project)
    start = datetime.now(UTC) - timedelta(seconds=1)
    for t, p in ((21.5, 101325.0), (21.75, 101300.0), (22.0, 101290.5)):
        send_telemetry(server, device, {"T": t, "P_raw": p})
    end = datetime.now(UTC) + timedelta(seconds=1)
    return {
        "device": device,
        "project": project,
        "sensor": sensor_id(device["id"]),
        "start": start.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "end": end.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


def as_printed(text: str, troll: dict[str, Any]) -> str:
    """A request of the seed's walk-through with its placeholders made ours: the sensor id,
    the project id and the dates."""
    for printed, ours in (
        ("/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor", troll["sensor"]),
        ("60F8B30928A37A575ECEE061", troll["project"]),
        ("2021-06-24T10:56:11.832Z", troll["start"]),
        ("2021-07-22T00:38:05.477Z", troll["end"]),
    ):
        text = text.replace(printed, ours)
    return text


def test_python_walkthrough_get_sensors_metrics_and_data(
    server: ServerProcess, rugged_troll: dict[str, Any]
) -> None:
    url = ws_url(server)
    code = server.admin_token
    sensor, project = rugged_troll["sensor"], rugged_troll["project"]

    # Step 1, as printed: authenticate with id "0", then getSensors with projectIds.
    ws = create_connection(url, timeout=RECV_TIMEOUT_S)
    json_text = (
        r'{"jsonrpc":"2.0","method":"authenticate","id":"0","params":{"code":"' + code + '"}}'
    )
    ws.send(json_text)
    result = ws.recv()
    assert json.loads(result) == {"jsonrpc": "2.0", "id": 0, "result": {"nextId": 1}}
    json_text = """{
   "jsonrpc":"2.0",
   "method":"getSensors",
   "id":1,
   "params":{
      "sensors": ["/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor"],
      "projectIds":[
         "60F8B30928A37A575ECEE061"
      ]
   }
}"""
    json_text = as_printed(json_text, rugged_troll)
    ws.send(json_text)
    response = json.loads(ws.recv())
    assert response["id"] == 1
    [found] = response["result"]
    assert found["id"] == sensor
    assert found["device"] == f"/thinghub/{rugged_troll['device']['id']}/node/device/" + (
        f"{rugged_troll['device']['id']}/device"
    )
    assert found["props"]["PROJECT_ID"] == project
    assert found["props"]["NODE_ID"] == f"/thinghub/{rugged_troll['device']['id']}/node"
    assert found["props"]["LAST_OBSERVATION"]["values"] == [22.0, 101290.5]
    ws.close()

    # Step 2: getMetrics without projectIds (the seed's note: not required) -> dT, T, P_raw.
    ws = create_connection(url, timeout=RECV_TIMEOUT_S)
    ws.send(r'{"jsonrpc":"2.0","method":"authenticate","id":"0","params":{"code":"' + code + '"}}')
    assert "nextId" in json.loads(ws.recv())["result"]
    ws.send(
        as_printed(
            """{
   "jsonrpc":"2.0",
   "method":"getMetrics",
   "id":1,
   "params":{
      "sensors": ["/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor"]
   }
}""",
            rugged_troll,
        )
    )
    metrics = json.loads(ws.recv())["result"][sensor]
    assert [m["id"] for m in metrics] == ["dT", "T", "P_raw"]
    assert metrics[0] == {
        "id": "dT",
        "name": "delta temperature",
        "displayName": "∆ Temperature",
        "defaultUnit": "C",
        "notation": "∆T",
        "hidden": False,
        "params": [
            {"id": "dt", "mandatory": False},
            {"id": "START_DATE", "mandatory": False},
            {"id": "ZERO_DATE", "mandatory": False},
        ],
    }
    assert metrics[2]["defaultUnit"] == "Pa" and metrics[2]["params"] == []
    ws.close()

    # Step 3: getData of P_raw in Pa, read until a separate "finished".
    ws = create_connection(url, timeout=RECV_TIMEOUT_S)
    ws.send(r'{"jsonrpc":"2.0","method":"authenticate","id":"0","params":{"code":"' + code + '"}}')
    ws.recv()
    ws.send(
        as_printed(
            """{
   "jsonrpc":"2.0",
   "method":"getData",
   "id":1,
   "params":{
      "sensor":"/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor",
      "metric":"P_raw",
      "unit":"Pa",
      "params":{

      },
      "startDate":"2021-06-24T10:56:11.832Z",
      "endDate":"2021-07-22T00:38:05.477Z",
      "projectIds":[
         "60F8B30928A37A575ECEE061"
      ]
   }
}""",
            rugged_troll,
        )
    )
    data: dict[str, float] = {}
    while True:
        result = json.loads(ws.recv())
        assert result["id"] == 1
        if "requestStatus" in result["result"] and result["result"]["requestStatus"] == "finished":
            assert list(result["result"]) == ["requestStatus"]  # finished is its own message
            ws.close()
            break
        data.update(result["result"]["data"])
    assert list(data.values()) == [101325.0, 101300.0, 101290.5]
    assert all(key.endswith("Z") and len(key) == 24 for key in data)


def test_python_tcp_client_with_decode_one_json_frame(
    server: ServerProcess, rugged_troll: dict[str, Any]
) -> None:
    host, port = tcp_address(server)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(RECV_TIMEOUT_S)
    s.connect((host, port))
    # The handshake and getData back to back, without waiting.
    handshake = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "authenticate",
            "params": {"code": server.admin_token},
            "id": 0,
        }
    )
    retrieval_params = {
        "sensor": rugged_troll["sensor"],
        "metric": "T",
        "unit": "F",
        "params": {},
        "startDate": rugged_troll["start"],
        "endDate": rugged_troll["end"],
    }
    s.send(
        handshake.encode()
        + json.dumps(
            {"jsonrpc": "2.0", "method": "getData", "id": 1, "params": retrieval_params}
        ).encode()
    )
    json_frame = decodeOneJsonFrame(s)
    response = json.loads(json_frame)
    assert response == {"jsonrpc": "2.0", "id": 0, "result": {"nextId": 1}}
    assert "data" not in response["result"]  # the sample runs this check on the object
    series: dict[str, Any] = {"id": rugged_troll["sensor"], "metric": "T", "data": {}}
    frames = [json_frame]
    while True:
        frame = decodeOneJsonFrame(s)
        frames.append(frame)
        response = json.loads(frame)
        if "data" in response["result"]:
            for date in response["result"]["data"]:
                series["data"][date] = response["result"]["data"][date]
        if (
            "requestStatus" in response["result"]
            and response["result"]["requestStatus"] == "finished"
        ):
            s.close()
            break
    assert list(series["data"].values()) == [70.7, 71.15, 71.6]  # 21.5, 21.75, 22 C in F
    # Compact, nothing between frames: each frame read starts at its own `{`.
    assert all(f.startswith(b'{"jsonrpc":"2.0"') and b"\n" not in f for f in frames)


def test_python_tcp_keepalive_help_and_upload_as_printed(server: ServerProcess) -> None:
    """The TCP samples of "Utilities" and "Uploading Data": time, help (printed with
    "\\r\\n" + result: a string), uploadData of the seed's Trimble values."""
    host, port = tcp_address(server)
    s = socket.create_connection((host, port), timeout=RECV_TIMEOUT_S)
    s.send(json.dumps({"jsonrpc": "2.0", "method": "authenticate",
                       "params": {"code": server.admin_token}, "id": 0}).encode())  # fmt: skip
    decodeOneJsonFrame(s)
    sensor = f"/trimble4d/{uuid.uuid4().hex[:6]}/node/deviceId/device/sensorId/sensor"
    s.send(json.dumps({"jsonrpc": "2.0", "method": "createSensor", "id": 1, "params": {
        "sensor": sensor, "type": "TRIMBLE", "props": {"NAME": "Prism 1"}}}).encode())  # fmt: skip
    created = json.loads(decodeOneJsonFrame(s))["result"]
    assert created["id"] == sensor and created["props"]["NAME"] == "Prism 1"
    next_id = 2
    s.send(json.dumps({
        "jsonrpc": "2.0",
        "method": "uploadData",
        "id": next_id,
        "params": {
          "data": [
             {
                "sensorId": sensor,
                "timestamp": "2018-06-04T19:35:35.400Z",
                "values": {
                   "e": 100.0,
                   "e_adjusted": 101.0,
                   "n": 100.0,
                   "n_adjusted": 101.0,
                   "h": 100.0,
                   "h_adjusted": 101.0,
                   "ha": 45.0,
                   "za": 60.0,
                   "sd": 100.0,
                   "sd_corrected": 101.0,
                   "T": 23.0,
                   "P": 101325
                }
             }
          ]
       }
    }).encode())  # fmt: skip
    response = json.loads(decodeOneJsonFrame(s))
    assert response == {"jsonrpc": "2.0", "result": {"successfullyProcessedObs": 1}, "id": 2}
    next_id = next_id + 1
    s.send(json.dumps({"jsonrpc": "2.0", "method": "help", "id": next_id}).encode())
    response = json.loads(decodeOneJsonFrame(s))
    text = "\r\n" + response["result"]  # the sample prints it so: a string
    for method in ("getData", "subscribeData", "uploadData", "getUnits", "time"):
        assert f"\n{method} {{" in text
    next_id = next_id + 1
    s.send(json.dumps({"jsonrpc": "2.0", "method": "time", "id": next_id}).encode())
    response = json.loads(decodeOneJsonFrame(s))
    server_time = datetime.fromisoformat(response["result"]["time"].replace("Z", "+00:00"))
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 60
    # The uploaded observation is there, in the raw metric and converted.
    s.send(json.dumps({"jsonrpc": "2.0", "method": "getData", "id": 9, "params": {
        "sensor": sensor, "metric": "P", "unit": "kPa"}}).encode())  # fmt: skip
    assert json.loads(decodeOneJsonFrame(s))["result"] == {
        "data": {"2018-06-04T19:35:35.400Z": 101.325}
    }
    assert json.loads(decodeOneJsonFrame(s))["result"] == {"requestStatus": "finished"}
    s.close()


def test_javascript_client_callbacks(server: ServerProcess, rugged_troll: dict[str, Any]) -> None:
    client = SeedJsClient(ws_url(server))
    state: dict[str, Any] = {"connected": False}
    try:
        # socket.onopen: authenticate, then take nextId from the result.
        def on_authenticated(result: Any) -> None:
            client.next_id = result["nextId"]
            state["connected"] = True

        client.send_request("authenticate", {"code": server.admin_token}, on_authenticated)
        client.pump_until(lambda: state["connected"])
        assert client.next_id == 1

        # "Metrics": getMetrics, then getUnits of the first metric.
        sensor = rugged_troll["sensor"]
        all_metrics: list[Any] = []
        all_units: dict[str, Any] = {}

        def on_metrics(result: Any) -> None:
            if "code" not in result and sensor in result:
                all_metrics.extend(result[sensor])
                first_metric = all_metrics[0]["id"]

                def on_units(units: Any) -> None:
                    all_units[first_metric] = units[first_metric]

                client.send_request("getUnits", {"metrics": [first_metric]}, on_units)
            else:
                state["warned"] = result

        client.send_request("getMetrics", {"sensors": [sensor]}, on_metrics)
        client.pump_until(lambda: bool(all_units) or "warned" in state)
        assert [u["id"] for u in all_units["dT"]] == ["C", "K", "F"]
        assert all_units["dT"][2] == {"id": "F", "name": "fahrenheit", "notation": "°F"}

        # "Retrieving Data": the callback tells finished, data and errors apart.
        series: dict[str, Any] = {"id": sensor, "metric": "dT", "data": {}}
        outcome: dict[str, Any] = {}

        def on_data(result: Any) -> None:
            if "requestStatus" in result and result["requestStatus"] == "finished":
                outcome["finished"] = True
            elif "data" in result:
                for date in result["data"]:
                    series["data"][date] = result["data"][date]
            elif "code" in result:
                outcome["error"] = result

        retrieval_params = {
            "sensor": sensor,
            "metric": "dT",
            "unit": "F",
            "params": {"ZERO_DATE": {"value": rugged_troll["start"]}},
            "startDate": rugged_troll["start"],
            "endDate": rugged_troll["end"],
        }
        client.send_request("getData", retrieval_params, on_data)
        client.pump_until(lambda: bool(outcome))
        assert outcome == {"finished": True}
        # Relative to the first reading after ZERO_DATE (21.5 C), as differences in F.
        assert [round(v, 9) for v in series["data"].values()] == [0.0, 0.45, 0.9]

        # An unknown metric: the same callback gets the error object ("code" in result).
        client.send_request("getData", {**retrieval_params, "metric": "nope"}, on_data)
        outcome.clear()
        client.pump_until(lambda: bool(outcome))
        assert outcome["error"]["code"] == -32602
        assert "metric" in outcome["error"]["message"]
        assert client.logged_errors == []
    finally:
        client.close()
