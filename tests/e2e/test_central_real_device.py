"""The real IoT Central API with a real device (the azure-iot-device SDK): commands sent with
{request, responseTimeout, connectionTimeout} answered with the device's response, command
history, whole-device and component properties reaching the device in one patch, last-value
telemetry of what the device sent, and a gateway's module through the modules routes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from azure.iot.device import Message, MethodResponse

from tests.e2e.azure import SERVER_ARGS, Inbox, Target, connected, wait_for
from tests.e2e.server import ServerProcess, running
from tests.e2e.test_central_api import (
    API,
    TIME_RE,
    VERSION,
    assert_error,
    make_gateway_module,
    property_values,
    template_body,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        ServerProcess(tmp_path_factory.mktemp("thinghub-central-real"), *SERVER_ARGS)
    ) as p:
        yield p


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> Target:
    return Target.of(server.addresses)


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=60,
    )


@pytest.fixture
def central(server: ServerProcess) -> Iterator[httpx.Client]:
    with _client(server) as client:
        yield client


@pytest.fixture(scope="module")
def template_id(server: ServerProcess) -> str:
    tid = "dtmi:thinghub:real:thermostat;1"
    with _client(server) as client:
        response = client.put(f"/deviceTemplates/{tid}", json=template_body(tid))
    assert response.status_code == 200, response.text
    return tid


@pytest.fixture
def device(central: httpx.Client, template_id: str, unique: Callable[[str], str]) -> dict[str, Any]:
    device_id = unique("real")
    made = central.put(f"/devices/{device_id}", json={"template": template_id})
    assert made.status_code == 200, made.text
    key = central.get(f"/devices/{device_id}/credentials").json()["symmetricKey"]["primaryKey"]
    return {"id": device_id, "key": key}


def _answering(client: Any, calls: Inbox) -> Callable[[Any], None]:
    """A method handler: `ping` fails with 500, anything else echoes with 200."""

    def on_method(request: Any) -> None:
        calls((request.name, request.payload))
        if request.name == "ping":
            response = MethodResponse.create_from_method_request(request, 500, {"error": "no"})
        else:
            response = MethodResponse.create_from_method_request(
                request, 200, {"done": request.name, "got": request.payload}
            )
        client.send_method_response(response)

    return on_method


def test_commands_answer_with_the_devices_response(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    base = f"/devices/{device_id}/commands"
    calls = Inbox()
    client = target.device_client({"id": device_id}, key=device["key"])
    with connected(client):
        client.on_method_request_received = _answering(client, calls)
        done = central.post(
            f"{base}/reboot",
            json={"request": 60, "responseTimeout": 10, "connectionTimeout": 0},
        )
        assert done.status_code == 201, done.text
        answer = done.json()
        assert answer["response"] == {"done": "reboot", "got": 60}
        assert answer["responseCode"] == 200
        assert answer["request"] == 60
        assert answer["status"] == "Completed"
        assert answer["id"] == answer["commandId"]
        assert answer["responseTimeout"] == 10
        assert answer["connectionTimeout"] == 0
        assert TIME_RE.fullmatch(answer["completedTime"])

        failed = central.post(f"{base}/ping", json={"request": None})
        assert failed.status_code == 201, failed.text
        assert failed.json()["responseCode"] == 500
        assert failed.json()["response"] == {"error": "no"}
        assert failed.json()["status"] == "Failed"

        component = central.post(
            f"/devices/{device_id}/components/thermostat1/commands/getMaxMinReport",
            json={"request": "2023-10-26T15:00:00Z"},
        )
        assert component.status_code == 201, component.text
        assert component.json()["response"] == {
            "done": "thermostat1*getMaxMinReport",
            "got": "2023-10-26T15:00:00Z",
        }
        # The API document's form is still queued, answered at once as Pending.
        queued = central.post(f"{base}/reboot", json={"rebootInterval": 5})
        assert queued.status_code == 200, queued.text
        assert set(queued.json()) == {"commandId", "status"}
        assert queued.json()["status"] == "Pending"
        wait_for(
            lambda: (
                central.get(f"{base}/{queued.json()['commandId']}/status").json()["status"]
                == "Completed"
            ),
            what="the queued command to complete",
        )

    # History: newest first, both forms, with what the device answered.
    history = central.get(f"{base}/reboot")
    assert history.status_code == 200, history.text
    runs = history.json()["value"]
    assert [r["id"] for r in runs] == [queued.json()["commandId"], answer["id"]]
    assert runs[0]["request"] == 5
    assert runs[0]["response"] == {"done": "reboot", "got": 5}
    assert runs[1]["response"] == {"done": "reboot", "got": 60}
    assert [r["responseCode"] for r in runs] == [200, 200]
    comp = central.get(f"/devices/{device_id}/components/thermostat1/commands/getMaxMinReport")
    assert [r["id"] for r in comp.json()["value"]] == [component.json()["id"]]
    assert central.get(f"{base}/explode").json() == {"value": []}
    assert sorted(name for name, _ in calls.items) == sorted(
        ["reboot", "ping", "thermostat1*getMaxMinReport", "reboot"]
    )
    # The envelope's values are still checked: 400 naming the field, nothing sent.
    for body, field in [
        ({"request": 1, "connectionTimeout": 31}, "connectionTimeout"),
        ({"request": 1, "connectionTimeout": -1}, "connectionTimeout"),
        ({"request": 1, "responseTimeout": 4}, "responseTimeout"),
        ({"request": "soon"}, "rebootInterval"),
    ]:
        assert_error(central.post(f"{base}/reboot", json=body), 400, field)


def test_connection_timeout_waits_for_the_device_to_connect(
    target: Target, central: httpx.Client, device: dict[str, Any], server: ServerProcess
) -> None:
    device_id = device["id"]
    calls = Inbox()

    def send() -> httpx.Response:
        with _client(server) as other:
            return other.post(
                f"/devices/{device_id}/commands/reboot",
                json={"request": 7, "connectionTimeout": 25, "responseTimeout": 10},
            )

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(send)
        # The command is stored Pending while it waits for the device.
        history = wait_for(
            lambda: central.get(f"/devices/{device_id}/commands/reboot").json()["value"],
            what="the waiting command",
        )
        assert history[0]["status"] == "Pending"
        assert not pending.done()
        client = target.device_client({"id": device_id}, key=device["key"])
        client.on_method_request_received = _answering(client, calls)
        with connected(client):
            response = pending.result(timeout=40)
    assert response.status_code == 201, response.text
    assert response.json()["response"] == {"done": "reboot", "got": 7}
    assert response.json()["responseCode"] == 200
    assert response.json()["connectionTimeout"] == 25
    assert calls.items == [("reboot", 7)]


def test_an_unanswered_command_times_out_and_an_offline_one_ends_at_once(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    started = time.monotonic()
    offline = central.post(f"/devices/{device_id}/commands/reboot", json={"request": 1})
    assert offline.status_code == 201, offline.text
    assert time.monotonic() - started < 5  # connectionTimeout 0: no wait at all
    assert offline.json()["status"] == "Expired"
    assert offline.json()["responseCode"] == 404
    assert "response" not in offline.json()

    calls = Inbox()
    client = target.device_client({"id": device_id}, key=device["key"])
    with connected(client):
        client.on_method_request_received = calls  # receives, never answers
        silent = central.post(
            f"/devices/{device_id}/commands/reboot", json={"request": 1, "responseTimeout": 5}
        )
    assert silent.status_code == 201, silent.text
    assert silent.json()["status"] == "TimedOut"
    assert "response" not in silent.json()
    assert [r.name for r in calls.items] == ["reboot"]


def test_whole_device_properties_reach_the_device_and_show_its_reports(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    base = f"/devices/{device_id}/properties"
    patches = Inbox()
    client = target.device_client({"id": device_id}, key=device["key"])
    with connected(client):
        client.on_twin_desired_properties_patch_received = patches
        written = central.patch(
            base, json={"targetTemperature": 22.5, "thermostat1": {"targetTemperature": 19}}
        )
        assert written.status_code == 202, written.text
        # One patch, the component marked as Plug and Play devices expect.
        patch = patches.wait(lambda p: "targetTemperature" in p, what="the patch")
        assert patch == {
            "targetTemperature": 22.5,
            "thermostat1": {"__t": "c", "targetTemperature": 19},
            "$version": patch["$version"],
        }
        client.patch_twin_reported_properties(
            {
                "targetTemperature": {"value": 22.0, "ac": 200, "av": patch["$version"]},
                "firmwareVersion": "2.0.1",
                "thermostat1": {
                    "__t": "c",
                    "targetTemperature": {"value": 19, "ac": 200, "av": patch["$version"]},
                },
            }
        )
        shown = wait_for(
            lambda: (b := central.get(base).json()).get("firmwareVersion") and b,
            what="the reported properties",
        )
        assert TIME_RE.fullmatch(shown["$metadata"]["firmwareVersion"]["lastUpdateTime"])
        assert property_values(shown) == {
            "targetTemperature": 22.0,
            "firmwareVersion": "2.0.1",
            "thermostat1": {"targetTemperature": 19},
        }
        # PUT as the real API sends it.
        again = central.put(base, json={"targetTemperature": 23})
        assert again.status_code == 202, again.text
        assert again.json() == {"$metadata": {"targetTemperature": {"desiredValue": 23}}}
        patches.wait(lambda p: p.get("targetTemperature") == 23, what="the PUT patch")
        # A read-only property cannot be written.
        assert_error(central.patch(base, json={"firmwareVersion": "x"}), 400, "firmwareVersion")


def test_last_value_of_device_telemetry(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    client = target.device_client({"id": device_id}, key=device["key"])
    with connected(client):
        for body, component in (
            ({"temperature": 20.5}, None),
            ({"temperature": 31.5}, "thermostat1"),
            ({"humidity": 40.0}, None),
        ):
            message = Message(json.dumps(body), content_type="application/json")  # type: ignore[no-untyped-call]
            message.content_encoding = "utf-8"
            if component is not None:
                message.custom_properties["$.sub"] = component
            client.send_message(message)
    root = wait_for(
        lambda: (
            central.get(f"/devices/{device_id}/telemetry/humidity").status_code == 200
            and central.get(f"/devices/{device_id}/telemetry/temperature")
        ),
        what="the telemetry",
    )
    assert root.json()["value"] == 20.5
    assert TIME_RE.fullmatch(root.json()["timestamp"])
    part = central.get(f"/devices/{device_id}/components/thermostat1/telemetry/temperature")
    assert part.status_code == 200, part.text
    assert part.json()["value"] == 31.5
    assert_error(
        central.get(f"/devices/{device_id}/components/thermostat1/telemetry/humidity"), 404
    )


def test_modules_of_a_gateway(
    target: Target,
    central: httpx.Client,
    admin: httpx.Client,
    unique: Callable[[str], str],
) -> None:
    gateway_id, module = make_gateway_module(admin, unique, "camera")
    module_id = module["moduleId"]
    listed = central.get(f"/devices/{gateway_id}/modules")
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["value"]] == [module_id]

    base = f"/devices/{gateway_id}/modules/{module_id}"
    calls = Inbox()
    patches = Inbox()
    client = target.module_client(gateway_id, module)
    with connected(client):
        client.on_method_request_received = _answering(client, calls)
        client.on_twin_desired_properties_patch_received = patches
        ran = central.post(f"{base}/commands/AdjustFrameRate", json={"request": {"fps": 30}})
        assert ran.status_code == 201, ran.text
        assert ran.json()["response"] == {"done": "AdjustFrameRate", "got": {"fps": 30}}
        written = central.patch(f"{base}/properties", json={"frameRate": 30})
        assert written.status_code == 202, written.text
        patches.wait(lambda p: p.get("frameRate") == 30, what="the module's patch")
        assert property_values(central.get(f"{base}/properties").json()) == {"frameRate": 30}
        client.send_message(
            Message('{"fps": 29.5}', content_type="application/json", content_encoding="utf-8")  # type: ignore[no-untyped-call]
        )
        last = wait_for(
            lambda: (r := central.get(f"{base}/telemetry/fps")).status_code == 200 and r,
            what="module telemetry",
        )
        assert last.json()["value"] == 29.5
    history = central.get(f"{base}/commands/AdjustFrameRate").json()["value"]
    assert [r["id"] for r in history] == [ran.json()["id"]]
    # The gateway's own command history does not hold the module's.
    assert central.get(f"/devices/{gateway_id}/commands/AdjustFrameRate").json() == {"value": []}
    assert_error(central.get(f"/devices/{gateway_id}/modules/nope/properties"), 404)


# -- device groups and jobs ----------------------------------------------------------------------


def _job_done(central: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (j := central.get(f"/jobs/{job_id}").json())["status"] in ("completed", "failed") and j
        ),
        what=f"job {job_id} to end",
        timeout=60,
    )


def test_device_groups_and_jobs(
    target: Target,
    central: httpx.Client,
    template_id: str,
    unique: Callable[[str], str],
) -> None:
    prefix = unique("fleet")
    devices = []
    for i in range(3):
        device_id = f"{prefix}-{i}"
        made = central.put(f"/devices/{device_id}", json={"template": template_id})
        assert made.status_code == 200, made.text
        key = central.get(f"/devices/{device_id}/credentials").json()["symmetricKey"]["primaryKey"]
        devices.append({"id": device_id, "key": key})
    central.put(f"/devices/{prefix}-other", json={})  # not templated: not in the group

    # A group: IoT Central's query form, or an OData filter.
    group_id = unique("group")
    group = central.put(
        f"/deviceGroups/{group_id}",
        json={
            "displayName": "Fleet",
            "filter": f'SELECT * FROM devices WHERE $template = "{template_id}" '
            f"AND startswith($id, '{prefix}')",
        },
    )
    assert group.status_code == 200, group.text
    assert set(group.json()) == {"id", "displayName", "filter", "etag"}
    members = central.get(f"/deviceGroups/{group_id}/devices")
    assert [d["id"] for d in members.json()["value"]] == [d["id"] for d in devices]
    odata = central.patch(
        f"/deviceGroups/{group_id}",
        json={"filter": f"startswith(id, '{prefix}') and template ne null"},
        headers={"If-Match": group.json()["etag"]},
    )
    assert odata.status_code == 200, odata.text
    assert [d["id"] for d in central.get(f"/deviceGroups/{group_id}/devices").json()["value"]] == [
        d["id"] for d in devices
    ]
    assert group_id in [g["id"] for g in central.get("/deviceGroups").json()["value"]]
    for body, field in [
        ({"displayName": "x", "filter": "SELECT * FROM devices WHERE $colour = 1"}, "filter"),
        ({"displayName": "x", "filter": "nonsense ("}, "filter"),
        ({"displayName": "x"}, "filter"),
        ({"displayName": "x", "filter": "enabled", "organizations": ["o"]}, "organizations"),
    ]:
        assert_error(central.put(f"/deviceGroups/{unique('g')}", json=body), 400, field)
    assert_error(
        central.patch(f"/deviceGroups/{group_id}", json={}, headers={"If-Match": "x"}), 412
    )

    # Two devices connected and answering commands; the third offline.
    calls = Inbox()
    patches = Inbox()
    clients = [target.device_client({"id": d["id"]}, key=d["key"]) for d in devices[:2]]
    with connected(clients[0]), connected(clients[1]):
        for client in clients:
            client.on_method_request_received = _answering(client, calls)
            client.on_twin_desired_properties_patch_received = patches

        # A property job: every device's desired twin, whether it is connected or not.
        job = central.put(
            f"/jobs/{unique('job')}",
            json={
                "displayName": "Set target",
                "group": group_id,
                "data": [
                    {
                        "type": "property",
                        "target": template_id,
                        "path": "targetTemperature",
                        "value": 21,
                    }
                ],
            },
        )
        assert job.status_code == 200, job.text
        assert job.json()["progress"]["total"] == 3
        done = _job_done(central, job.json()["id"])
        assert done["status"] == "completed"
        assert done["progress"] == {"total": 3, "pending": 0, "completed": 3, "failed": 0}
        for _ in clients:
            patches.wait(lambda p: p.get("targetTemperature") == 21, what="the job's patch")
        third = central.get(f"/devices/{devices[2]['id']}/properties/targetTemperature")
        assert third.json()["value"] == 21

        # A command job: the offline device fails; a rerun once it is connected completes.
        command_job = unique("job")
        ran = central.put(
            f"/jobs/{command_job}",
            json={
                "displayName": "Reboot",
                "group": group_id,
                "data": [{"type": "command", "path": "reboot", "value": 3}],
            },
        )
        assert ran.status_code == 200, ran.text
        failed = _job_done(central, command_job)
        assert failed["status"] == "failed"
        statuses = central.get(f"/jobs/{command_job}/devices").json()["value"]
        assert [(s["id"], s["status"]) for s in statuses] == [
            (devices[0]["id"], "completed"),
            (devices[1]["id"], "completed"),
            (devices[2]["id"], "failed"),
        ]
        assert "404" in statuses[2]["error"]
        late = target.device_client({"id": devices[2]["id"]}, key=devices[2]["key"])
        with connected(late):
            late.on_method_request_received = _answering(late, calls)
            rerun = central.put(f"/jobs/{command_job}/rerun/{command_job}-rerun")
            assert rerun.status_code == 200, rerun.text
            assert rerun.json()["rerunOf"] == command_job
            assert rerun.json()["progress"]["total"] == 1
            again = _job_done(central, f"{command_job}-rerun")
            assert again["status"] == "completed"
        assert sorted(p for name, p in calls.items if name == "reboot") == [3, 3, 3]
        assert_error(central.put(f"/jobs/{command_job}/rerun/{command_job}-rerun"), 409)

    # A cloud property job: kept with every device, shown with its properties.
    cloud = central.put(
        f"/jobs/{unique('job')}",
        json={
            "displayName": "Label",
            "group": group_id,
            "data": [{"type": "cloudProperty", "path": "site", "value": "Plant 7"}],
        },
    )
    assert cloud.status_code == 200, cloud.text
    assert _job_done(central, cloud.json()["id"])["status"] == "completed"
    for d in devices:
        assert central.get(f"/devices/{d['id']}/properties").json()["site"] == "Plant 7"

    # Bad jobs.
    for body, status, field in [
        (
            {"displayName": "x", "group": "nope", "data": [{"type": "property", "path": "a"}]},
            404,
            "nope",
        ),
        ({"displayName": "x", "group": group_id, "data": []}, 400, "data"),
        (
            {"displayName": "x", "group": group_id, "data": [{"type": "explode", "path": "a"}]},
            400,
            "type",
        ),
        (
            {
                "displayName": "x",
                "group": group_id,
                "data": [{"type": "command", "path": "a"}],
                "batch": 5,
            },
            400,
            "batch",
        ),
    ]:
        assert_error(central.put(f"/jobs/{unique('bad')}", json=body), status, field)
    assert_error(
        central.put(
            f"/jobs/{cloud.json()['id']}",
            json={
                "displayName": "x",
                "group": group_id,
                "data": [{"type": "cloudProperty", "path": "a", "value": 1}],
            },
        ),
        409,
    )
    assert cloud.json()["id"] in [j["id"] for j in central.get("/jobs").json()["value"]]
    assert central.delete(f"/deviceGroups/{group_id}").status_code == 204
    assert_error(central.get(f"/deviceGroups/{group_id}"), 404)


def test_a_job_stops_and_resumes(
    target: Target,
    central: httpx.Client,
    template_id: str,
    unique: Callable[[str], str],
) -> None:
    prefix = unique("slow")
    devices = []
    for i in range(3):
        device_id = f"{prefix}-{i}"
        assert (
            central.put(f"/devices/{device_id}", json={"template": template_id}).status_code == 200
        )
        key = central.get(f"/devices/{device_id}/credentials").json()["symmetricKey"]["primaryKey"]
        devices.append({"id": device_id, "key": key})
    group_id = unique("group")
    central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "Slow", "filter": f"startswith(id, '{prefix}')"},
    )
    release = threading.Event()
    calls = Inbox()
    clients = [target.device_client({"id": d["id"]}, key=d["key"]) for d in devices]

    def held(client: Any) -> Callable[[Any], None]:
        def on_method(request: Any) -> None:
            calls(request.name)
            release.wait(30)  # the first device holds the job until the test lets go
            client.send_method_response(
                MethodResponse.create_from_method_request(request, 200, {"ok": True})
            )

        return on_method

    with connected(clients[0]), connected(clients[1]), connected(clients[2]):
        for client in clients:
            client.on_method_request_received = held(client)
        job_id = unique("job")
        made = central.put(
            f"/jobs/{job_id}",
            json={
                "displayName": "Held",
                "group": group_id,
                "data": [{"type": "command", "path": "ping", "value": None}],
            },
        )
        assert made.status_code == 200, made.text
        calls.wait(what="the first device's command")
        stopped = central.post(f"/jobs/{job_id}/stop")
        assert stopped.status_code == 204, stopped.text
        release.set()
        halted = wait_for(
            lambda: (j := central.get(f"/jobs/{job_id}").json())["progress"]["pending"] == 2 and j,
            what="the first device's outcome",
        )
        assert halted["status"] == "stopped"
        assert_error(central.post(f"/jobs/{job_id}/stop"), 409, "stopped")
        # No further device is worked on while it is stopped.
        assert central.get(f"/jobs/{job_id}").json()["progress"]["pending"] == 2
        assert len(calls.items) == 1
        resumed = central.post(f"/jobs/{job_id}/resume")
        assert resumed.status_code == 204, resumed.text
        # ping answers 200 here (this handler): every device completes.
        done = _job_done(central, job_id)
    assert done["status"] == "completed"
    assert len(calls.items) == 3


def test_query_selects_and_filters_properties(
    target: Target, central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    """POST /query over properties: reported by the device (firmwareVersion), set from the
    cloud (targetTemperature, a component's thermostat1.targetTemperature) and cloud
    properties (site), one row per device when no telemetry is named; beside telemetry, each
    message carries its device's properties."""
    prefix = unique("qp")
    ids = [f"{prefix}-{i}" for i in range(3)]
    for device_id in ids:
        made = central.put(f"/devices/{device_id}", json={"template": template_id})
        assert made.status_code == 200, made.text
    key = central.get(f"/devices/{ids[0]}/credentials").json()["symmetricKey"]["primaryKey"]
    client = target.device_client({"id": ids[0]}, key=key)
    with connected(client):
        client.patch_twin_reported_properties({"firmwareVersion": "2.0.1"})
        wait_for(
            lambda: central.get(f"/devices/{ids[0]}/properties").json().get("firmwareVersion"),
            what="the reported firmware",
        )
    for device_id, target_temperature in zip(ids, (21.5, 18.0, 25.0), strict=True):
        written = central.patch(
            f"/devices/{device_id}/properties",
            json={"targetTemperature": target_temperature, "thermostat1": {"targetTemperature": 5}},
        )
        assert written.status_code == 202, written.text
    group_id = unique("qgroup")
    group = central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "q", "filter": f"id eq '{ids[1]}' or id eq '{ids[2]}'"},
    )
    assert group.status_code == 200, group.text
    job = central.put(
        f"/jobs/{unique('qjob')}",
        json={
            "displayName": "site",
            "group": group_id,
            "data": [{"type": "cloudProperty", "path": "site", "value": "Plant 7"}],
        },
    )
    assert job.status_code == 200, job.text
    assert _job_done(central, job.json()["id"])["status"] == "completed"
    sent = central.post(f"/devices/{ids[0]}/telemetry", json={"temperature": 30.5})
    assert sent.status_code == 204, sent.text
    mine = "(" + " OR ".join(f"$id = '{d}'" for d in ids) + ")"

    def query(text: str) -> list[dict[str, Any]]:
        response = central.post("/query", json={"query": text})
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    rows = query(
        f"SELECT $id, firmwareVersion, targetTemperature, thermostat1.targetTemperature, site "
        f"FROM {template_id} WHERE {mine} ORDER BY $id"
    )
    assert rows == [
        {"$id": ids[0], "firmwareVersion": "2.0.1", "targetTemperature": 21.5,
         "thermostat1.targetTemperature": 5},
        {"$id": ids[1], "targetTemperature": 18.0, "thermostat1.targetTemperature": 5,
         "site": "Plant 7"},
        {"$id": ids[2], "targetTemperature": 25.0, "thermostat1.targetTemperature": 5,
         "site": "Plant 7"},
    ]  # fmt: skip
    # WHERE on properties: reported, set, cloud; $ts is when the newest of them changed.
    warm = query(
        f"SELECT $id, $ts, targetTemperature FROM {template_id} "
        f"WHERE {mine} AND targetTemperature > 20 ORDER BY targetTemperature DESC"
    )
    assert [(r["$id"], r["targetTemperature"]) for r in warm] == [(ids[2], 25.0), (ids[0], 21.5)]
    assert all(TIME_RE.fullmatch(r["$ts"]) for r in warm)
    assert query(f"SELECT $id FROM {template_id} WHERE {mine} AND firmwareVersion = '2.0.1'") == [
        {"$id": ids[0]}
    ]
    sited = query(f"SELECT $id, site FROM {template_id} WHERE {mine} AND site = 'Plant 7'")
    assert sorted(r["$id"] for r in sited) == ids[1:]
    assert query(
        f"SELECT $id FROM {template_id} WHERE {mine} AND NOT (site = 'Plant 7') "
        f"AND thermostat1.targetTemperature = 5"
    ) == [{"$id": ids[0]}]
    # Aggregates over properties, per device or over all.
    (total,) = query(
        f"SELECT AVG(targetTemperature) AS mean, COUNT(site) FROM {template_id} WHERE {mine}"
    )
    assert total == {"mean": (21.5 + 18.0 + 25.0) / 3, "count_site": 2}
    # With telemetry: each message of the device, its properties beside.
    (message,) = query(
        f"SELECT $id, temperature, firmwareVersion FROM {template_id} "
        f"WHERE {mine} AND temperature > 0"
    )
    assert message == {"$id": ids[0], "temperature": 30.5, "firmwareVersion": "2.0.1"}


def test_a_device_announcing_a_templates_model_id_gets_that_template(
    target: Target, central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    """IoT Central's automatic association: a device without a template that registers or
    connects with the model id of one of the application's templates is assigned it."""

    def unassigned() -> dict[str, Any]:
        device_id = unique("auto")
        made = central.put(f"/devices/{device_id}", json={"displayName": device_id})
        assert made.status_code == 200, made.text
        assert made.json().get("template") is None
        creds = central.get(f"/devices/{device_id}/credentials").json()
        return {"id": device_id, "key": creds["symmetricKey"]["primaryKey"]}

    # through DPS: the registration's payload names the model (as the SDK's samples send it)
    registered = unassigned()
    dps = target.provisioning_client(registered["id"], registered["key"])
    dps.provisioning_payload = {"modelId": template_id}
    assert dps.register().status == "assigned"
    assert central.get(f"/devices/{registered['id']}").json()["template"] == template_id

    # connecting straight to the hub with the model id (MQTT user name's model-id)
    connecting = unassigned()
    client = target.device_client(
        {"id": connecting["id"]}, key=connecting["key"], product_info=template_id
    )
    with connected(client):
        shown = central.get(f"/devices/{connecting['id']}").json()
    assert shown["template"] == template_id

    # a model id no template has: no template; a device's own template is kept
    other = unassigned()
    client = target.device_client({"id": other["id"]}, key=other["key"], product_info="dtmi:x:y;1")
    with connected(client):
        assert central.get(f"/devices/{other['id']}").json().get("template") is None
    other_template = "dtmi:thinghub:real:other;1"
    put = central.put(f"/deviceTemplates/{other_template}", json=template_body(other_template))
    assert put.status_code == 200, put.text
    kept_id = unique("kept")
    made = central.put(f"/devices/{kept_id}", json={"template": other_template})
    assert made.status_code == 200, made.text
    key = central.get(f"/devices/{kept_id}/credentials").json()["symmetricKey"]["primaryKey"]
    client = target.device_client({"id": kept_id}, key=key, product_info=template_id)
    with connected(client):
        assert central.get(f"/devices/{kept_id}").json()["template"] == other_template
