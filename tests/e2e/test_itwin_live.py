"""Live data on the iTwin face: subscriptions, across faces, as Bentley's client uses them.

- subscribeData pushes each new observation converted, reusing the subscribe request's id,
  after an `acknowledged`, and never says `finished`; unsubscribeData stops it (and only it);
- an Azure IoT device SDK device announcing the public thermostat model
  (`dtmi:com:example:Thermostat;1`, temperature in degreeCelsius) shows up with its sensor at
  once; its telemetry arrives as a push in °F and in getData;
- subscribeNodes reports the device going online and offline (ACCESSIBLE, LAST_COMM);
- an uploadData observation shows on /v1/telemetries and in every face's live feed.

Every request uses Bentley's random ids (50,000 to 99,999,999) and `projectIds`.
"""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.iot.device import Message

from tests.e2e.azure import (  # noqa: F401 -- collect_sdk_garbage is a fixture
    SERVER_ARGS,
    THERMOSTAT_MODEL,
    Target,
    collect_sdk_garbage,
    connected,
    paho_socket_leaks,
)
from tests.e2e.itwin import (
    Ws,
    bentley_id,
    device_id,
    node_id,
    register,
    send_telemetry,
    sensor_id,
    wait_until,
    ws_url,
)
from tests.e2e.server import ServerProcess, running

pytestmark = [
    pytest.mark.e2e,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]

ACK = {"requestStatus": "acknowledged"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the fake hub names in its certificate, for the Azure SDK."""
    with running(ServerProcess(Path(tmp_path_factory.mktemp("itwin-live")), *SERVER_ARGS)) as proc:
        yield proc
    gc.collect()  # what the SDK left, here, where paho_socket_leaks applies


@pytest.fixture
def project() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def fence(ws: Ws, project: str) -> list[dict[str, Any]]:
    """Send `time` and return every message read before its answer. Requests are handled in
    order and pushes are written when their event is dispatched, so whatever the server had
    sent by then is in this list."""
    request_id = bentley_id()
    ws.send("time", {"projectIds": [project]}, request_id)
    before = []
    while True:
        message = ws.recv()
        if message.get("id") == request_id:
            assert "time" in message["result"]
            return before
        before.append(message)


def test_subscribe_data_pushes_until_unsubscribed_and_never_finishes(
    hub: ServerProcess, project: str
) -> None:
    with hub.client() as api:
        device = register(api, project)
    send_telemetry(hub, device, {"T": 10.0})  # before: not pushed
    sensor = sensor_id(device["id"])
    ws = Ws(ws_url(hub), hub.admin_token)
    try:
        sub_f, sub_k = bentley_id(), bentley_id()
        for request_id, unit in ((sub_f, "F"), (sub_k, "K")):
            ws.send(
                "subscribeData",
                {"sensors": [sensor], "metric": "T", "unit": unit, "projectIds": [project]},
                request_id,
            )
            assert ws.recv() == {"jsonrpc": "2.0", "id": request_id, "result": ACK}
        send_telemetry(hub, device, {"T": 20.0, "other": "text"})
        send_telemetry(hub, device, {"T": 100.0})
        pushes: dict[int, list[float]] = {sub_f: [], sub_k: []}
        while len(pushes[sub_f]) < 2 or len(pushes[sub_k]) < 2:
            message = ws.recv()
            [(stamp, value)] = message["result"]["data"].items()
            assert stamp.endswith("Z")
            pushes[message["id"]].append(value)
        assert pushes == {sub_f: [68.0, 212.0], sub_k: [293.15, 373.15]}
        assert all("requestStatus" not in m.get("result", {}) for m in fence(ws, project))

        # unsubscribeData names the subscribe request's id, in a request of its own.
        answer = ws.call("unsubscribeData", {"id": sub_f, "projectIds": [project]}, bentley_id())
        assert answer["result"] == {"unsubscribed": sub_f}
        send_telemetry(hub, device, {"T": 0.0})
        message = ws.recv()  # the other subscription still gets it...
        assert message["id"] == sub_k and list(message["result"]["data"].values()) == [273.15]
        assert fence(ws, project) == []  # ...and the unsubscribed one got nothing
        again = ws.call("unsubscribeData", {"id": sub_f}, bentley_id())
        assert again["error"]["code"] == -32004  # it is gone
    finally:
        ws.close()


def test_subscribe_data_of_a_delta_is_relative_to_its_reference(
    hub: ServerProcess, project: str
) -> None:
    with hub.client() as api:
        device = register(api, project)
    send_telemetry(hub, device, {"T": 20.0})  # the first reading: the reference
    ws = Ws(ws_url(hub), hub.admin_token)
    try:
        sub = bentley_id()
        ws.send(
            "subscribeData",
            {
                "sensors": [sensor_id(device["id"])],
                "metric": "dT",
                "unit": "F",
                "params": {"START_DATE": {"value": "2000-01-01T00:00:00.000Z"}},
                "projectIds": [project],
            },
            sub,
        )
        assert ws.recv()["result"] == ACK
        send_telemetry(hub, device, {"T": 25.0})
        assert list(ws.recv()["result"]["data"].values()) == [9.0]  # +5 C is +9 F
    finally:
        ws.close()


def test_azure_sdk_telemetry_arrives_in_fahrenheit_live_and_in_get_data(
    hub: ServerProcess, project: str
) -> None:
    with hub.client() as api:
        device = register(api, project)
    target = Target.of(hub.addresses)
    sensor = sensor_id(device["id"])
    ws = Ws(ws_url(hub), hub.admin_token)
    try:
        # The device is visible at once: its node, device and default sensor.
        nodes = ws.call("getNodes", {"nodes": [node_id(device["id"])], "projectIds": [project]})
        assert [n["props"]["ACCESSIBLE"] for n in nodes["result"]] == [False]
        client = target.device_client(device, product_info=THERMOSTAT_MODEL)
        with connected(client):
            # The model id the device announced gives the temperature its unit (C).
            metrics = wait_until(
                lambda: _metrics_with_units(ws, sensor, project), "the thermostat's metrics"
            )
            assert metrics["temperature"] == "C"
            sub = bentley_id()
            ws.send(
                "subscribeData",
                {
                    "sensors": [sensor],
                    "metric": "temperature",
                    "unit": "F",
                    "projectIds": [project],
                },
                sub,
            )
            assert ws.recv()["result"] == ACK
            client.send_message(
                Message(
                    json.dumps({"temperature": 21.5}),
                    content_encoding="utf-8",
                    content_type="application/json",
                )
            )
            push = ws.recv()
            assert push["id"] == sub
            [(stamp, fahrenheit)] = push["result"]["data"].items()
            assert fahrenheit == 70.7
        chunks, finished = ws.stream(
            "getData",
            {"sensor": sensor, "metric": "temperature", "unit": "F", "projectIds": [project]},
        )
        assert finished["result"] == {"requestStatus": "finished"}
        assert [c["data"] for c in chunks] == [{stamp: 70.7}]
    finally:
        ws.close()


def _metrics_with_units(ws: Ws, sensor: str, project: str) -> dict[str, str] | None:
    answer = ws.call("getMetrics", {"sensors": [sensor], "projectIds": [project]}, bentley_id())
    metrics = answer["result"].get(sensor, [])
    found = {m["id"]: m["defaultUnit"] for m in metrics}
    return found if "temperature" in found else None


def test_subscribe_nodes_reports_the_device_going_online_and_offline(
    hub: ServerProcess, project: str
) -> None:
    with hub.client() as api:
        device = register(api, project)
    node = node_id(device["id"])
    ws = Ws(ws_url(hub), hub.admin_token)
    try:
        sub = bentley_id()
        ws.send("subscribeNodes", {"nodes": [node], "projectIds": [project]}, sub)
        assert ws.recv()["result"] == ACK
        client = Target.of(hub.addresses).device_client(device)
        with connected(client):
            online = _next_node(ws, sub)
            assert online["id"] == node and online["props"]["ACCESSIBLE"] is True
            assert online["props"]["LAST_COMM"].endswith("Z")
        offline = _next_node(ws, sub, accessible=False)
        assert offline["props"]["ACCESSIBLE"] is False
    finally:
        ws.close()


def _next_node(ws: Ws, sub: int, accessible: bool = True) -> dict[str, Any]:
    """The next push of subscription `sub` with ACCESSIBLE as given (a device's telemetry or
    twin activity may push the same node in between)."""
    while True:
        message = ws.recv()
        assert message["id"] == sub and "requestStatus" not in message["result"]
        node: dict[str, Any] = message["result"]["data"]
        if node["props"]["ACCESSIBLE"] is accessible:
            return node


def test_upload_data_shows_on_v1_and_in_a_live_feed(hub: ServerProcess, project: str) -> None:
    with hub.client() as api:
        device = register(api, project)
    send_telemetry(hub, device, {"level": 0.5})  # the device's sensor gets its metric
    sensor = sensor_id(device["id"], "probe")  # no telemetry of this component: no sensor
    listener = Ws(ws_url(hub), hub.admin_token)
    uploader = Ws(ws_url(hub), hub.admin_token)
    try:
        sub = bentley_id()
        listener.send(
            "subscribeData",
            {"sensors": [sensor_id(device["id"])], "metric": "level", "unit": "GENERIC"},
            sub,
        )
        assert listener.recv()["result"] == ACK
        answer = uploader.call(
            "uploadData",
            {
                "data": [
                    {
                        "sensorId": sensor_id(device["id"]),
                        "timestamp": "2024-02-20T04:35:23.653Z",
                        "values": {"level": 0.23},
                    },
                    {
                        "sensorId": sensor,
                        "timestamp": "2024-02-20T04:35:24.000Z",
                        "values": {"level": 1},
                    },
                    {"sensorId": sensor_id(device["id"]), "timestamp": "yesterday", "values": {}},
                ],
                "projectIds": [project],
            },
            bentley_id(),
        )
        result = answer["result"]
        # The second names a sensor that does not exist yet; the third is malformed.
        assert result["successfullyProcessedObs"] == 1
        assert result["rejectedObs"] == 2
        assert [e["path"] for e in result["errors"]] == ["data[1].sensorId", "data[2].timestamp"]
        push = listener.recv()
        if list(push["result"]["data"].values()) == [0.5]:
            # The message stored before the subscription may still be on its way to the
            # live feed when the subscription starts: it is the device's own, not the upload's.
            push = listener.recv()
        assert push["id"] == sub
        assert push["result"]["data"] == {"2024-02-20T04:35:23.653Z": 0.23}
        with hub.client() as api:
            stored = api.get("/v1/telemetries", params={"deviceID": device["id"]}).json()
        items = stored.get("items", stored) if isinstance(stored, dict) else stored
        assert json.dumps({"level": 0.23})[1:-1] in json.dumps(items)
    finally:
        listener.close()
        uploader.close()


def test_half_a_millisecond_rounds_up_in_pushes_get_data_and_last_observation(
    hub: ServerProcess, project: str
) -> None:
    """The one rounding: times are kept to the microsecond and printed to the millisecond
    half up on the integer (not to even): an upload at .0025 s and one at .0035 s both round
    up, and the live push, getData, getObservationsSummary and LAST_OBSERVATION print the same
    keys."""
    with hub.client() as api:
        device = register(api, project)
    send_telemetry(hub, device, {"level": 0.5})
    sensor = sensor_id(device["id"])
    listener = Ws(ws_url(hub), hub.admin_token)
    uploader = Ws(ws_url(hub), hub.admin_token)
    try:
        sub = bentley_id()
        listener.send(
            "subscribeData", {"sensors": [sensor], "metric": "level", "unit": "GENERIC"}, sub
        )
        acknowledged = listener.recv()
        assert acknowledged.get("result") == ACK, acknowledged
        stamps = ["2031-05-06T07:08:09.0025Z", "2031-05-06T07:08:09.0035Z"]
        answer = uploader.call(
            "uploadData",
            {
                "data": [
                    {"sensorId": sensor, "timestamp": stamp, "values": {"level": float(i)}}
                    for i, stamp in enumerate(stamps)
                ],
                "projectIds": [project],
            },
            bentley_id(),
        )
        assert answer["result"] == {"successfullyProcessedObs": 2}
        keys = ["2031-05-06T07:08:09.003Z", "2031-05-06T07:08:09.004Z"]
        pushed = [listener.recv()["result"]["data"] for _ in stamps]
        assert pushed == [{keys[0]: 0.0}, {keys[1]: 1.0}]
        chunks, _ = uploader.stream(
            "getData",
            {"sensor": sensor, "metric": "level", "unit": "GENERIC",
             "startDate": "2031-01-01T00:00:00.000Z", "projectIds": [project]},
        )  # fmt: skip
        assert [c["data"] for c in chunks] == [{keys[0]: 0.0, keys[1]: 1.0}]
        summary = uploader.call(
            "getObservationsSummary", {"sensors": [sensor], "metric": "level",
                                       "projectIds": [project]}, bentley_id()
        )["result"][sensor]  # fmt: skip
        assert summary["last"]["observations"] == {keys[1]: 1.0}
        [found] = uploader.call("getSensors", {"sensors": [sensor], "projectIds": [project]},
                                bentley_id())["result"]  # fmt: skip
        assert found["props"]["LAST_OBSERVATION"]["timestamp"] == keys[1]
    finally:
        listener.close()
        uploader.close()


def test_subscribe_devices_and_sensors_push_changes_until_unsubscribed(
    hub: ServerProcess, project: str
) -> None:
    """subscribeNodes/Devices/Sensors push the entity on each change with the subscribe id;
    unsubscribeNodes/Devices/Sensors {id} end them. A second device of the same project is the
    fence: the feed dispatches events in order, so once its push arrives every push of the
    first device's later event would have arrived before it."""
    with hub.client() as api:
        device, marker = register(api, project), register(api, project)
    send_telemetry(hub, device, {"T": 1.0})  # its sensor exists from the start
    ws = Ws(ws_url(hub), hub.admin_token)
    try:
        subs = {"nodes": bentley_id(), "devices": bentley_id(), "sensors": bentley_id()}
        ids = {
            "nodes": node_id(device["id"]),
            "devices": device_id(device["id"]),
            "sensors": sensor_id(device["id"]),
        }
        for kind, sub in subs.items():
            method = "subscribe" + kind.capitalize()
            ws.send(method, {kind: [ids[kind]], "projectIds": [project]}, sub)
            # until_id: a push of an earlier subscription (the node's activity) may come first
            assert ws.until_id(sub) == {"jsonrpc": "2.0", "id": sub, "result": ACK}
        fence_sub = bentley_id()
        ws.send("subscribeSensors", {"sensors": [sensor_id(marker["id"])],
                                     "projectIds": [project]}, fence_sub)  # fmt: skip
        assert ws.until_id(fence_sub)["result"] == ACK

        send_telemetry(hub, device, {"T": 2.5})
        seen: dict[int, dict[str, Any]] = {}

        def observed(sub: int) -> Any:
            return seen.get(sub, {}).get("props", {}).get("LAST_OBSERVATION", {})

        # Until both show the new observation (pushes of earlier activity may come first).
        while observed(subs["sensors"]).get("values") != [2.5] or not observed(subs["devices"]):
            message = ws.recv()
            seen[message["id"]] = message["result"]["data"]
        assert seen[subs["sensors"]]["id"] == ids["sensors"]
        assert seen[subs["devices"]]["id"] == ids["devices"]

        for kind, sub in subs.items():
            method = "unsubscribe" + kind.capitalize()
            answer = ws.call(method, {"id": sub, "projectIds": [project]}, bentley_id())
            assert answer["result"] == {"unsubscribed": sub}
        send_telemetry(hub, device, {"T": 3.0})  # no subscription of it is left
        send_telemetry(hub, marker, {"T": 4.0})
        after = []
        while True:
            message = ws.recv()
            if message["id"] == fence_sub:
                break
            after.append(message)
        assert [m for m in after if m["id"] in subs.values()] == []
        gone = ws.call("unsubscribeSensors", {"id": subs["sensors"]}, bentley_id())
        assert gone["error"]["code"] == -32004
    finally:
        ws.close()


CENTRAL_VERSION = {"api-version": "2022-07-31"}


def test_central_telemetry_arrives_in_the_central_templates_unit(hub: ServerProcess) -> None:
    """An IoT Central device whose template gives `temperature` the DTDL unit degreeCelsius:
    its sensor's metric is in C, and telemetry posted on the Central face is pushed in F and
    read back with getData."""
    tag = uuid.uuid4().hex[:8]
    template = f"dtmi:thinghub:itwin:t{tag};1"
    central = {"Authorization": f"Bearer {hub.admin_token}"}
    base = f"{hub.http_url}/central/api"
    body = {
        "@id": template,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Boiler",
        "capabilityModel": {
            "@id": f"dtmi:thinghub:itwin:t{tag}:cm;1",
            "@type": "Interface",
            "contents": [
                {
                    "@type": ["Telemetry", "Temperature"],
                    "name": "temperature",
                    "schema": "double",
                    "unit": "degreeCelsius",
                },  # fmt: skip
                {
                    "@type": "Telemetry",
                    "name": "pressure",
                    "schema": "double",
                    "unit": "kilopascal",
                },  # fmt: skip
            ],
        },
    }
    with httpx.Client(base_url=base, params=CENTRAL_VERSION, headers=central) as api:
        response = api.put(f"/deviceTemplates/{template}", json=body)
        assert response.status_code == 200, response.text
        core_id = f"boiler-{tag}"
        response = api.put(
            f"/devices/{core_id}", json={"displayName": "Boiler", "template": template}
        )
        assert response.status_code == 200, response.text
        sensor = sensor_id(core_id)
        ws = Ws(ws_url(hub), hub.admin_token)
        try:
            metrics = ws.call("getMetrics", {"sensors": [sensor]}, bentley_id())["result"][sensor]
            units = {m["id"]: m["defaultUnit"] for m in metrics}
            assert units["temperature"] == "C" and units["pressure"] == "kPa"
            sub = bentley_id()
            ws.send(
                "subscribeData", {"sensors": [sensor], "metric": "temperature", "unit": "F"}, sub
            )
            assert ws.recv()["result"] == ACK
            response = api.post(f"/devices/{core_id}/telemetry",
                                json={"temperature": 25.0, "pressure": 101.3})  # fmt: skip
            assert response.status_code == 204, response.text
            push = ws.recv()
            assert push["id"] == sub
            [(stamp, fahrenheit)] = push["result"]["data"].items()
            assert fahrenheit == 77.0
            chunks, _ = ws.stream(
                "getData", {"sensor": sensor, "metric": "pressure", "unit": "psi"}
            )
            [(same, psi)] = [item for chunk in chunks for item in chunk["data"].items()]
            assert same == stamp and abs(psi - 14.692) < 0.001
        finally:
            ws.close()
