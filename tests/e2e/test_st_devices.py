"""/v1 devices, projects, desired properties and events: the ST AIoT Craft IoT API walk-through."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    ANY_FIELD,
    ID_SCOPE_RE,
    TS_RE,
    anonymous,
    assert_error,
    assert_hub_unauthorized,
    b64_key_bytes,
    client,
    create_device,
    device_sas,
    is_uuid,
    post_telemetry,
)
from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    """conftest's admin api, made once per module (see helpers_st.api)."""
    with client(server) as api:
        yield api


SEED_FIELDS = {
    "id",
    "idScope",
    "provisioningStatus",
    "tags",
    "isIoTEdgeCapable",
    "connectionState",
    "credentials",
    "properties",
    "lastActivityTime",
    "modelId",
    "modules",
}


def test_seed_create_device_has_the_seed_shape(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("example_project"), unique("example_deployment")
    response = admin.post(
        "/v1/devices",
        json={
            "name": "example smart thermostat",
            "project": project,
            "deployment": deployment,
            "isIoTEdgeCapable": False,
        },
    )
    assert response.status_code == 200, response.text
    device = response.json()

    assert set(device) == SEED_FIELDS
    assert is_uuid(device["id"])
    assert ID_SCOPE_RE.fullmatch(device["idScope"]), device["idScope"]
    assert device["idScope"] == server.addresses["id_scope"]
    assert device["provisioningStatus"] == "enabled"
    tags = device["tags"]
    assert set(tags) == {"name", "project", "deployment", "user"}
    assert tags["name"] == "example smart thermostat"
    assert tags["project"] == project
    assert tags["deployment"] == deployment
    assert is_uuid(tags["user"])
    assert device["isIoTEdgeCapable"] is False
    assert device["connectionState"] == "Disconnected"
    credentials = device["credentials"]
    assert set(credentials) == {"type", "symmetricKey"}
    assert credentials["type"] == "symmetricKey"
    keys = credentials["symmetricKey"]
    assert set(keys) == {"primaryKey", "secondaryKey"}
    assert b64_key_bytes(keys["primaryKey"]) == 64
    assert b64_key_bytes(keys["secondaryKey"]) == 64
    assert len(keys["primaryKey"]) == 88
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert device["properties"] == {"desired": {}}
    assert device["lastActivityTime"] is None
    assert device["modelId"] is None
    assert device["modules"] is None

    fetched = admin.get(f"/v1/devices/{device['id']}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == device

    other = create_device(admin, "second", project, deployment)
    assert other["id"] != device["id"]
    assert other["credentials"]["symmetricKey"] != keys


def test_list_devices_filters_by_project_and_deployment(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    p1, p2, d1, d2 = unique("p1"), unique("p2"), unique("d1"), unique("d2")
    a = create_device(admin, "a", p1, d1)
    b = create_device(admin, "b", p1, d2)
    c = create_device(admin, "c", p2, d1)

    def ids(**params: str) -> set[str]:
        response = admin.get("/v1/devices", params=params)
        assert response.status_code == 200, response.text
        listed = response.json()
        assert all(set(d) == SEED_FIELDS for d in listed)
        return {d["id"] for d in listed}

    assert ids(projectID=p1) == {a["id"], b["id"]}
    assert ids(projectID=p1, deploymentID=d1) == {a["id"]}
    assert ids(projectID=p1, deploymentID=d2) == {b["id"]}
    assert ids(projectID=p2) == {c["id"]}
    assert ids(projectID=unique("none")) == set()
    assert {a["id"], b["id"], c["id"]} <= ids()
    listed = admin.get("/v1/devices", params={"projectID": p1, "deploymentID": d1}).json()
    assert listed == [admin.get(f"/v1/devices/{a['id']}").json()]


def test_a_null_iot_edge_flag_is_a_plain_device(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """`"isIoTEdgeCapable": null` (an unset optional boolean, as many clients' models send
    one) is the default: a device, not a 400. Only a boolean or null is taken."""
    project = unique("p")
    made = admin.post(
        "/v1/devices",
        json={"name": "n", "project": project, "deployment": "d", "isIoTEdgeCapable": None},
    )
    assert made.status_code == 200, made.text
    assert made.json()["isIoTEdgeCapable"] is False
    assert made.json()["modules"] is None
    group = admin.post(
        "/v1/enrollmentGroups",
        json={
            "enrollmentGroupId": unique("g"),
            "project": project,
            "deployment": "d",
            "isIoTEdgeCapable": None,
        },
    )
    assert group.status_code == 201, group.text
    assert group.json()["isIoTEdgeCapable"] is False


def test_projects_and_deployments_are_created_on_first_use(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, d1, d2 = unique("proj"), unique("dep1"), unique("dep2")
    before = {p["name"] for p in admin.get("/v1/projects").json()}
    assert project not in before
    assert_error(admin.get(f"/v1/projects/{project}/deployments"), 404, field="project")

    create_device(admin, "one", project, d1)
    create_device(admin, "two", project, d2)
    create_device(admin, "three", project, d1)

    projects = admin.get("/v1/projects")
    assert projects.status_code == 200, projects.text
    mine = [p for p in projects.json() if p["name"] == project]
    assert len(mine) == 1
    assert sorted(mine[0]["deployments"]) == sorted([d1, d2])
    assert TS_RE.fullmatch(mine[0]["createdTime"])

    deployments = admin.get(f"/v1/projects/{project}/deployments")
    assert deployments.status_code == 200, deployments.text
    listed = deployments.json()
    assert sorted(d["name"] for d in listed) == sorted([d1, d2])
    assert all(d["project"] == project and TS_RE.fullmatch(d["createdTime"]) for d in listed)


def test_desired_properties_twin_and_change_event(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("p"), unique("d")
    device = create_device(admin, "thermostat", project, deployment)
    did = device["id"]

    put = admin.put(f"/v1/devices/{did}", json={"properties": {"targetTemperature": 22.5}})
    assert put.status_code == 200, put.text
    assert put.json()["properties"] == {"desired": {"targetTemperature": 22.5}}
    assert set(put.json()) == SEED_FIELDS
    got = admin.get(f"/v1/devices/{did}").json()
    assert got["properties"] == {"desired": {"targetTemperature": 22.5}}

    twin = admin.get(f"/v1/devices/{did}/twin")
    assert twin.status_code == 200, twin.text
    desired = twin.json()["properties"]["desired"]
    assert desired["targetTemperature"] == 22.5
    assert desired["$version"] == 2
    assert TS_RE.fullmatch(desired["$metadata"]["targetTemperature"]["$lastUpdated"])
    assert TS_RE.fullmatch(desired["$metadata"]["$lastUpdated"])

    scope = {"projectID": project, "deploymentID": deployment}
    events = admin.get("/v1/events", params=scope)
    assert events.status_code == 200, events.text
    # Only the ST API's kinds by default: the device's creation is not one of its events.
    assert [e["eventType"] for e in events.json()] == ["change_event"]
    change = events.json()[0]
    assert set(change) == {"eventType", "deviceID", "timestamp", "body"}
    assert change["deviceID"] == did
    assert TS_RE.fullmatch(change["timestamp"])
    body = change["body"]
    assert set(body) == {"version", "properties"}
    assert isinstance(body["version"], int)
    assert not isinstance(body["version"], bool)
    assert set(body["properties"]) == {"desired"}
    patch = body["properties"]["desired"]
    assert set(patch) == {"targetTemperature", "$metadata", "$version"}
    assert patch["targetTemperature"] == 22.5
    assert patch["$version"] == 2
    assert TS_RE.fullmatch(patch["$metadata"]["targetTemperature"]["$lastUpdated"])

    only = admin.get("/v1/events", params={**scope, "eventType": "change_event"})
    assert only.status_code == 200, only.text
    assert [e["eventType"] for e in only.json()] == ["change_event"]
    others = admin.get("/v1/events", params={**scope, "eventType": "connection_state_event"})
    assert others.json() == []
    assert_error(
        admin.get("/v1/events", params={**scope, "eventType": "nope"}), 400, field="eventType"
    )

    # A second patch adds, then null deletes; each bumps $version and records an event.
    admin.put(f"/v1/devices/{did}", json={"properties": {"mode": "eco"}}).raise_for_status()
    deleted = admin.put(f"/v1/devices/{did}", json={"properties": {"targetTemperature": None}})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["properties"] == {"desired": {"mode": "eco"}}
    desired = admin.get(f"/v1/devices/{did}/twin").json()["properties"]["desired"]
    assert desired["$version"] == 4
    assert "targetTemperature" not in desired
    assert "targetTemperature" not in desired["$metadata"]
    newest = admin.get("/v1/events", params={**scope, "eventType": "change_event"}).json()
    assert len(newest) == 3
    assert newest[0]["body"]["properties"]["desired"]["$version"] == 4
    assert newest[0]["body"]["properties"]["desired"]["targetTemperature"] is None


def test_empty_desired_patch_changes_nothing(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    did = create_device(admin, "quiet", unique("p"), unique("d"))["id"]
    admin.put(f"/v1/devices/{did}", json={"properties": {"a": 1}}).raise_for_status()
    bodies: list[dict[str, Any]] = [
        {"properties": {}},
        {"properties": {"$version": 7}},
        {},
        {"properties": None},
    ]
    for body in bodies:
        response = admin.put(f"/v1/devices/{did}", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["properties"] == {"desired": {"a": 1}}
    twin = admin.get(f"/v1/devices/{did}/twin").json()
    assert twin["version"] == 2
    assert twin["properties"]["desired"]["$version"] == 2
    changes = admin.get("/v1/events", params={"deviceID": did, "eventType": "change_event"})
    assert len(changes.json()) == 1


def test_desired_patch_over_the_twin_limit_is_413_and_changes_nothing(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    did = create_device(admin, "before", unique("p"), unique("d"))["id"]
    big = {"name": "after", "properties": {"blob": "x" * (32 * 1024)}}
    assert_error(admin.put(f"/v1/devices/{did}", json=big), 413, field="properties")
    bad = {"name": "after", "properties": {"$nope": 1}}
    assert_error(admin.put(f"/v1/devices/{did}", json=bad), 400, field="properties.$nope")
    shown = admin.get(f"/v1/devices/{did}").json()
    assert shown["tags"]["name"] == "before"  # a rejected PUT renames nothing either
    assert shown["properties"] == {"desired": {}}
    fits = admin.put(f"/v1/devices/{did}", json={"properties": {"blob": "x" * 32000}})
    assert fits.status_code == 200, fits.text
    # Patches that fit one by one but would overfill the section: 413, and nothing changes.
    more = {"name": "renamed", "properties": {"more": "y" * 2000}}
    assert_error(admin.put(f"/v1/devices/{did}", json=more), 413, field="properties")
    shown = admin.get(f"/v1/devices/{did}").json()
    assert shown["tags"]["name"] == "before"
    assert set(shown["properties"]["desired"]) == {"blob"}
    # Replacing (or deleting) within the limit still works.
    smaller = {"properties": {"blob": None, "more": "y" * 2000}}
    assert admin.put(f"/v1/devices/{did}", json=smaller).status_code == 200


def test_seed_method_path_with_spaces_names_the_device(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """The ST API's documentation prints the call as
    `POST .../v1/devices/  c8dc6706-.../method`."""
    did = create_device(admin, "thermostat", unique("p"), unique("d"))["id"]
    response = admin.post(f"/v1/devices/  {did}/method", json={"name": "getMaxMinReport"})
    assert_error(response, 404, code="DeviceNotOnline")  # found, just not connected
    assert did in response.json()["error"]["message"]
    shown = admin.get(f"/v1/devices/%20{did}%20")
    assert shown.status_code == 200, shown.text
    assert shown.json()["id"] == did


def test_empty_filters_are_filters_not_given(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project = unique("p")
    device = create_device(admin, "one", project, unique("d"))
    admin.put(f"/v1/devices/{device['id']}", json={"properties": {"a": 1}}).raise_for_status()
    listed = admin.get("/v1/devices", params={"projectID": project, "deploymentID": ""})
    assert [d["id"] for d in listed.json()] == [device["id"]]
    events = admin.get(
        "/v1/events", params={"projectID": project, "deploymentID": "", "eventType": ""}
    )
    assert [e["deviceID"] for e in events.json()] == [device["id"]]
    telemetry = admin.get("/v1/telemetries", params={"projectID": project, "deviceID": ""})
    assert telemetry.status_code == 200, telemetry.text


def test_rename_and_disable_device(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    device = create_device(admin, "before", unique("p"), unique("d"))
    did = device["id"]
    renamed = admin.put(f"/v1/devices/{did}", json={"name": "after"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["tags"]["name"] == "after"

    disabled = admin.put(f"/v1/devices/{did}", json={"provisioningStatus": "disabled"})
    assert disabled.json()["provisioningStatus"] == "disabled"
    assert_hub_unauthorized(post_telemetry(server.http_url, did, {"t": 1}, device_sas(device)))
    enabled = admin.put(f"/v1/devices/{did}", json={"provisioningStatus": "enabled"})
    assert enabled.json()["provisioningStatus"] == "enabled"
    sent = post_telemetry(server.http_url, did, {"t": 2}, device_sas(device))
    assert sent.status_code == 204, sent.text


def test_method_on_offline_device(admin: httpx.Client, unique: Callable[[str], str]) -> None:
    did = create_device(admin, "thermostat", unique("p"), unique("d"))["id"]
    response = admin.post(f"/v1/devices/{did}/method", json={"name": "getMaxMinReport"})
    assert_error(response, 404, code="DeviceNotOnline")
    with_payload = admin.post(
        f"/v1/devices/{did}/method",
        json={
            "name": "getMaxMinReport",
            "payload": {"since": "2025-01-01"},
            "responseTimeoutInSeconds": 10,
        },
    )
    assert_error(with_payload, 404, code="DeviceNotOnline")
    timeouts: tuple[object, ...] = ("x", "10", 1, 4.9, 100000, True, [], {})
    for bad in timeouts:
        response = admin.post(
            f"/v1/devices/{did}/method",
            json={"name": "getMaxMinReport", "responseTimeoutInSeconds": bad},
        )
        assert_error(response, 400, field="responseTimeoutInSeconds")
    assert_error(
        admin.post("/v1/devices/no-such-device/method", json={"name": "x"}), 404, code="NotFound"
    )


def test_delete_device(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("p"), unique("d")
    device = create_device(admin, "doomed", project, deployment)
    did = device["id"]
    sas = device_sas(device)
    assert post_telemetry(server.http_url, did, {"t": 1}, sas).status_code == 204

    response = admin.delete(f"/v1/devices/{did}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_error(admin.get(f"/v1/devices/{did}"), 404, field="deviceId", code="NotFound")
    assert_error(admin.get(f"/v1/devices/{did}/twin"), 404)
    assert_error(admin.put(f"/v1/devices/{did}", json={"properties": {"a": 1}}), 404)
    assert_error(admin.delete(f"/v1/devices/{did}"), 404)
    listed = admin.get("/v1/devices", params={"projectID": project}).json()
    assert did not in {d["id"] for d in listed}
    assert_hub_unauthorized(post_telemetry(server.http_url, did, {"t": 2}, sas))
    stored = admin.get("/v1/telemetries", params={"projectID": project}).json()
    assert [t["body"] for t in stored] == [{"t": 1}]


def test_docs_and_openapi(server: ServerProcess) -> None:
    with anonymous(server) as bare:
        docs = bare.get("/v1/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assert "<html" in docs.text.lower()
        spec = bare.get("/v1/openapi.json")
    assert spec.status_code == 200
    document = spec.json()
    paths = document["paths"]
    expected = {
        "/devices": {"get", "post"},
        "/devices/{device_id}": {"get", "put", "delete"},
        "/devices/{device_id}/twin": {"get"},
        "/devices/{device_id}/method": {"post"},
        "/devices/{device_id}/modules": {"get", "post"},
        "/devices/{device_id}/modules/{module_id}": {"get", "put", "delete"},
        "/telemetries": {"get"},
        "/events": {"get"},
        "/projects": {"get"},
        "/projects/{project}/deployments": {"get"},
        "/tokens": {"get", "post"},
        "/tokens/{token_id}": {"delete"},
        "/auth/token": {"post"},
        "/users": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


# -- gateways and modules -----------------------------------------------------------------

MODULE_FIELDS = {
    "moduleId",
    "deviceId",
    "connectionState",
    "credentials",
    "properties",
    "lastActivityTime",
    "modelId",
}


def test_gateway_modules_lifecycle(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("p"), unique("d")
    gateway = create_device(admin, "edge box", project, deployment, gateway=True)
    gw = gateway["id"]
    assert gateway["isIoTEdgeCapable"] is True
    assert gateway["modules"] == []

    created = admin.post(f"/v1/devices/{gw}/modules", json={"moduleId": "sensor"})
    assert created.status_code == 200, created.text
    module = created.json()
    assert set(module) == MODULE_FIELDS
    assert module["moduleId"] == "sensor"
    assert module["deviceId"] == gw
    assert module["connectionState"] == "Disconnected"
    assert module["properties"] == {"desired": {}}
    assert module["lastActivityTime"] is None
    keys = module["credentials"]["symmetricKey"]
    assert module["credentials"]["type"] == "symmetricKey"
    assert b64_key_bytes(keys["primaryKey"]) == 64
    assert b64_key_bytes(keys["secondaryKey"]) == 64
    assert keys["primaryKey"] not in gateway["credentials"]["symmetricKey"].values()

    assert_error(admin.post(f"/v1/devices/{gw}/modules", json={"moduleId": "sensor"}), 409)
    admin.post(f"/v1/devices/{gw}/modules", json={"moduleId": "camera"}).raise_for_status()

    listed = admin.get(f"/v1/devices/{gw}/modules")
    assert listed.status_code == 200, listed.text
    assert sorted(m["moduleId"] for m in listed.json()) == ["camera", "sensor"]
    shown = admin.get(f"/v1/devices/{gw}").json()
    assert sorted(m["moduleId"] for m in shown["modules"]) == ["camera", "sensor"]
    assert admin.get(f"/v1/devices/{gw}/modules/sensor").json() == module
    # Modules are not devices of their own on the device routes.
    assert_error(admin.get(f"/v1/devices/{gw}/sensor"), 404)
    listed_devices = admin.get("/v1/devices", params={"projectID": project}).json()
    assert [d["id"] for d in listed_devices] == [gw]

    put = admin.put(f"/v1/devices/{gw}/modules/sensor", json={"properties": {"rate": 5}})
    assert put.status_code == 200, put.text
    assert put.json()["properties"] == {"desired": {"rate": 5}}
    twin = admin.get(f"/v1/devices/{gw}/modules/sensor/twin").json()
    assert twin["deviceId"] == gw
    assert twin["moduleId"] == "sensor"
    assert twin["properties"]["desired"]["rate"] == 5
    assert twin["properties"]["desired"]["$version"] == 2
    # The gateway's own desired properties are untouched.
    assert admin.get(f"/v1/devices/{gw}").json()["properties"] == {"desired": {}}
    assert_error(
        admin.post(f"/v1/devices/{gw}/modules/sensor/method", json={"name": "x"}),
        404,
        code="DeviceNotOnline",
    )

    # Module telemetry through the device HTTPS endpoint with a module SAS.
    module_sas = device_sas(module, module_of=gw)
    sent = post_telemetry(server.http_url, gw, {"temperature": 21}, module_sas, module_id="sensor")
    assert sent.status_code == 204, sent.text
    gw_sent = post_telemetry(server.http_url, gw, {"uptime": 1}, device_sas(gateway))
    assert gw_sent.status_code == 204, gw_sent.text
    # A module's key does not open the gateway's door, nor the gateway's key the module's.
    assert_hub_unauthorized(post_telemetry(server.http_url, gw, {"x": 1}, module_sas))
    assert_hub_unauthorized(
        post_telemetry(server.http_url, gw, {"x": 1}, device_sas(gateway), module_id="sensor")
    )
    assert_hub_unauthorized(
        post_telemetry(server.http_url, gw, {"x": 1}, module_sas, module_id="camera")
    )
    telemetry = admin.get("/v1/telemetries", params={"projectID": project}).json()
    assert telemetry[0]["deviceID"] == gw
    assert "moduleID" not in telemetry[0]
    assert telemetry[0]["body"] == {"uptime": 1}
    assert {k: telemetry[1][k] for k in ("deviceID", "moduleID", "body")} == {
        "deviceID": gw,
        "moduleID": "sensor",
        "body": {"temperature": 21},
    }
    assert len(telemetry) == 2
    # deviceID=<gateway> holds its modules' messages too; moduleID narrows to one module.
    by_gateway = admin.get("/v1/telemetries", params={"deviceID": gw}).json()
    assert [t.get("moduleID") for t in by_gateway] == [None, "sensor"]
    by_module = admin.get("/v1/telemetries", params={"deviceID": gw, "moduleID": "sensor"})
    assert [t["body"] for t in by_module.json()] == [{"temperature": 21}]
    assert_error(admin.get("/v1/telemetries", params={"moduleID": "sensor"}), 400, field="moduleID")

    deleted = admin.delete(f"/v1/devices/{gw}/modules/sensor")
    assert deleted.status_code == 204, deleted.text
    assert_error(admin.get(f"/v1/devices/{gw}/modules/sensor"), 404, field="moduleId")
    assert_error(admin.delete(f"/v1/devices/{gw}/modules/sensor"), 404)
    assert [m["moduleId"] for m in admin.get(f"/v1/devices/{gw}/modules").json()] == ["camera"]
    assert_hub_unauthorized(
        post_telemetry(server.http_url, gw, {"x": 1}, module_sas, module_id="sensor")
    )


def test_modules_need_a_gateway(admin: httpx.Client, unique: Callable[[str], str]) -> None:
    device = create_device(admin, "plain", unique("p"), unique("d"))
    assert device["modules"] is None
    response = admin.post(f"/v1/devices/{device['id']}/modules", json={"moduleId": "m"})
    assert_error(response, 400, field="isIoTEdgeCapable")
    assert_error(admin.get(f"/v1/devices/{device['id']}/modules/m"), 404)
    assert_error(admin.post("/v1/devices/no-such-gw/modules", json={"moduleId": "m"}), 404)
    assert_error(admin.get("/v1/devices/no-such-gw/modules"), 404)


def test_deleting_a_gateway_removes_its_modules(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    gateway = create_device(admin, "gw", unique("p"), unique("d"), gateway=True)
    gw = gateway["id"]
    module = admin.post(f"/v1/devices/{gw}/modules", json={"moduleId": "m1"}).json()
    module_sas = device_sas(module, module_of=gw)
    assert (
        post_telemetry(server.http_url, gw, {"a": 1}, module_sas, module_id="m1").status_code == 204
    )
    assert admin.delete(f"/v1/devices/{gw}").status_code == 204
    assert_error(admin.get(f"/v1/devices/{gw}/modules/m1"), 404)
    assert_hub_unauthorized(
        post_telemetry(server.http_url, gw, {"a": 2}, module_sas, module_id="m1")
    )


# -- bad input on every route: a 4xx in the error shape naming the field, never a 500 -------


@pytest.fixture(scope="module")
def targets(server: ServerProcess) -> dict[str, str]:
    """A device and a gateway with a module, shared by the bad-input cases (read-mostly)."""
    suffix = uuid.uuid4().hex[:8]
    with client(server) as api:
        device = create_device(api, "target", f"bad-{suffix}", "d")
        gateway = create_device(api, "gw", f"bad-{suffix}", "d", gateway=True)
        api.post(f"/v1/devices/{gateway['id']}/modules", json={"moduleId": "m"}).raise_for_status()
    return {"dev": device["id"], "gw": gateway["id"]}


MALFORMED = b'{"name": "x",'
BIG_INT = b"100000000000000000000000000"

# (method, path, body: dict/list -> JSON, bytes -> raw, status, field)
BAD_BODIES: list[tuple[str, str, object, int, str | None]] = [
    ("POST", "/v1/devices", MALFORMED, 400, "body"),
    ("POST", "/v1/devices", b"", 400, "body"),
    ("POST", "/v1/devices", [], 400, "body"),
    ("POST", "/v1/devices", [{"name": "n", "project": "p", "deployment": "d"}], 400, "body"),
    ("POST", "/v1/devices", "just a string", 400, "body"),
    ("POST", "/v1/devices", {"name": 5, "project": "p", "deployment": "d"}, 400, "name"),
    ("POST", "/v1/devices", {"name": "", "project": "p", "deployment": "d"}, 400, "name"),
    ("POST", "/v1/devices", {"name": "n", "project": 1, "deployment": "d"}, 400, "project"),
    ("POST", "/v1/devices", {"name": "n", "project": "a b", "deployment": "d"}, 400, "project"),
    ("POST", "/v1/devices", {"name": "n", "project": "p", "deployment": "a/b"}, 400, "deployment"),
    (
        "POST",
        "/v1/devices",
        {"name": "n", "project": "p", "deployment": "d", "isIoTEdgeCapable": "yes"},
        400,
        "isIoTEdgeCapable",
    ),
    (
        "POST",
        "/v1/devices",
        {"name": "n", "project": "p", "deployment": "d", "isIoTEdgeCapable": 1},
        400,
        "isIoTEdgeCapable",
    ),
    ("POST", "/v1/devices", {"project": "p", "deployment": "d"}, 400, "name"),
    ("POST", "/v1/devices", {"name": "n", "deployment": "d"}, 400, "project"),
    ("POST", "/v1/devices", {"name": "n", "project": "p"}, 400, "deployment"),
    ("PUT", "/v1/devices/{dev}", MALFORMED, 400, "body"),
    ("PUT", "/v1/devices/{dev}", [], 400, "body"),
    ("PUT", "/v1/devices/{dev}", {"properties": []}, 400, "properties"),
    ("PUT", "/v1/devices/{dev}", {"properties": "hot"}, 400, "properties"),
    ("PUT", "/v1/devices/{dev}", {"properties": {"$version": 1, "$x": 1}}, 400, "properties.$x"),
    ("PUT", "/v1/devices/{dev}", {"properties": {"a": {"b.c": 1}}}, 400, "properties.a.b.c"),
    ("PUT", "/v1/devices/{dev}", b'{"properties": {"a": NaN}}', 400, "properties.a"),
    ("PUT", "/v1/devices/{dev}", b'{"properties": {"a": ' + BIG_INT + b"}}", 400, "properties"),
    ("PUT", "/v1/devices/{dev}", {"name": 5}, 400, "name"),
    ("PUT", "/v1/devices/{dev}", {"provisioningStatus": "maybe"}, 400, "provisioningStatus"),
    ("PUT", "/v1/devices/{dev}", {"tags": {"name": 5}}, 400, "tags.name"),
    ("PUT", "/v1/devices/{dev}", {"properties": {"a": "x" * 40000}}, 413, "properties"),
    ("PUT", "/v1/devices/no-such-device", {"properties": {"a": 1}}, 404, "deviceId"),
    ("GET", "/v1/devices/no-such-device", None, 404, "deviceId"),
    ("GET", "/v1/devices/no-such-device/twin", None, 404, "deviceId"),
    ("DELETE", "/v1/devices/no-such-device", None, 404, "deviceId"),
    ("POST", "/v1/devices/{dev}/method", MALFORMED, 400, "body"),
    ("POST", "/v1/devices/{dev}/method", [], 400, "body"),
    ("POST", "/v1/devices/{dev}/method", {}, 400, "name"),
    ("POST", "/v1/devices/{dev}/method", {"name": 5}, 400, "name"),
    ("POST", "/v1/devices/{dev}/method", {"name": ""}, 400, "name"),
    ("POST", "/v1/devices/{dev}/method", {"name": "a/b"}, 400, "name"),
    (
        "POST",
        "/v1/devices/{dev}/method",
        {"name": "m", "responseTimeoutInSeconds": "x"},
        400,
        "responseTimeoutInSeconds",
    ),
    (
        "POST",
        "/v1/devices/{dev}/method",
        b'{"name": "m", "responseTimeoutInSeconds": 1e400}',
        400,
        "responseTimeoutInSeconds",
    ),
    (
        "POST",
        "/v1/devices/{dev}/method",
        b'{"name": "m", "payload": ' + BIG_INT + b"}",
        400,
        "payload",
    ),
    ("POST", "/v1/devices/no-such-device/method", {"name": "m"}, 404, "deviceId"),
    ("POST", "/v1/devices/{dev}/messages", {"body": 1, "ttlInSeconds": 0}, 400, "ttlInSeconds"),
    (
        "POST",
        "/v1/devices/{dev}/messages",
        {"body": 1, "properties": {"a": 1}},
        400,
        "properties.a",
    ),
    ("POST", "/v1/devices/{dev}/messages", b'{"body": ' + BIG_INT + b"}", 400, "body"),
    ("POST", "/v1/devices/{gw}/modules", MALFORMED, 400, "body"),
    ("POST", "/v1/devices/{gw}/modules", [], 400, "body"),
    ("POST", "/v1/devices/{gw}/modules", {}, 400, "moduleId"),
    ("POST", "/v1/devices/{gw}/modules", {"moduleId": 5}, 400, "moduleId"),
    ("POST", "/v1/devices/{gw}/modules", {"moduleId": "a/b"}, 400, "moduleId"),
    ("POST", "/v1/devices/{gw}/modules", {"moduleId": "m"}, 409, "moduleId"),
    ("POST", "/v1/devices/{dev}/modules", {"moduleId": "m"}, 400, "isIoTEdgeCapable"),
    ("PUT", "/v1/devices/{gw}/modules/m", {"properties": []}, 400, "properties"),
    ("PUT", "/v1/devices/{gw}/modules/m", [], 400, "body"),
    ("PUT", "/v1/devices/{gw}/modules/m", {"properties": {"$x": 1}}, 400, "properties.$x"),
    ("PUT", "/v1/devices/{gw}/modules/nope", {"properties": {"a": 1}}, 404, "moduleId"),
    ("GET", "/v1/devices/{gw}/modules/nope", None, 404, "moduleId"),
    ("GET", "/v1/devices/{gw}/modules/nope/twin", None, 404, "moduleId"),
    ("DELETE", "/v1/devices/{gw}/modules/nope", None, 404, "moduleId"),
    ("POST", "/v1/devices/{gw}/modules/m/method", {"name": 5}, 400, "name"),
    ("POST", "/v1/devices/{gw}/modules/nope/method", {"name": "m"}, 404, "moduleId"),
    ("POST", "/v1/tokens", MALFORMED, 400, "body"),
    ("POST", "/v1/tokens", [], 400, "body"),
    ("POST", "/v1/tokens", {}, 400, "role"),
    ("POST", "/v1/tokens", {"role": "root"}, 400, "role"),
    ("POST", "/v1/tokens", {"role": "viewer", "label": 5}, 400, "label"),
    ("DELETE", "/v1/tokens/no-such-token", None, 404, ANY_FIELD),
    ("POST", "/v1/users", [], 400, "body"),
    ("POST", "/v1/users", {"username": "u", "role": "viewer"}, 400, "password"),
    (
        "POST",
        "/v1/users",
        {"username": "u", "password": "short", "role": "viewer"},
        400,
        "password",
    ),
    (
        "POST",
        "/v1/users",
        {"username": 5, "password": "long enough", "role": "viewer"},
        400,
        "username",
    ),
    ("POST", "/v1/users", {"username": "u", "password": "long enough", "role": "x"}, 400, "role"),
    ("GET", "/v1/projects/no-such-project/deployments", None, 404, "project"),
    ("GET", "/v1/no-such-route", None, 404, None),
    ("PATCH", "/v1/devices/{dev}", {"name": "n"}, 405, None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_BODIES)
def test_bad_input_gets_a_4xx_naming_the_field(
    admin: httpx.Client,
    targets: dict[str, str],
    method: str,
    path: str,
    body: object,
    status: int,
    field: str | None,
) -> None:
    url = path.format(**targets)
    if body is None:
        response = admin.request(method, url)
    elif isinstance(body, bytes):
        response = admin.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = admin.request(method, url, json=body)
    assert_error(response, status, field=field)


def test_method_not_allowed_names_the_allowed_ones(
    admin: httpx.Client, targets: dict[str, str]
) -> None:
    response = admin.patch(f"/v1/devices/{targets['dev']}", json={"name": "n"})
    assert_error(response, 405, code="MethodNotAllowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "DELETE"}


def test_request_bodies_over_the_limit_are_413_before_they_are_read(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """max_request_bytes (4 MiB by default): declared or streamed, the face's 413."""
    project = unique("big")
    big = json.dumps({"name": "x" * (5 << 20), "project": project, "deployment": "d"}).encode()
    assert_error(admin.post("/v1/devices", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield big[: 1 << 20]
        yield big[1 << 20 :]

    assert_error(admin.post("/v1/devices", content=chunks()), 413)
    assert admin.get("/v1/devices", params={"projectID": project}).json() == []
    # Just under the limit is judged on its merits, not its size.
    fine = {"name": "x" * 100, "project": project, "deployment": "d"}
    assert admin.post("/v1/devices", json=fine).status_code == 200


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_json_bodies_parse_without_a_json_content_type(
    admin: httpx.Client, unique: Callable[[str], str], content_type: str | None
) -> None:
    """`curl -d '{...}'` sends a form content type (or none); the body is still JSON."""
    headers = {"Content-Type": content_type} if content_type else {}
    project = unique("curl")
    raw = json.dumps({"name": "curl", "project": project, "deployment": "d"}).encode()
    created = admin.post("/v1/devices", content=raw, headers=headers)
    assert created.status_code == 200, created.text
    did = created.json()["id"]
    assert created.json()["tags"]["project"] == project
    put = admin.put(f"/v1/devices/{did}", content=b'{"properties": {"t": 1}}', headers=headers)
    assert put.status_code == 200, put.text
    assert put.json()["properties"] == {"desired": {"t": 1}}
    method = admin.post(f"/v1/devices/{did}/method", content=b'{"name": "m"}', headers=headers)
    assert_error(method, 404, code="DeviceNotOnline")
    bad = admin.post("/v1/devices", content=MALFORMED, headers=headers)
    assert_error(bad, 400, field="body")


def test_the_fast_device_read_answers_what_the_full_stack_answers(
    start_server: Callable[..., ServerProcess], unique: Callable[[str], str]
) -> None:
    """GET /v1/devices/{id} on the shared port takes thinghub.fast_path; the face on its own
    port (--face-listen) has none: every answer, good or bad, is the same on both."""
    proc = start_server("--face-listen", "st=127.0.0.1:0")
    own = proc.addresses["faces"]["st"]["url"]
    bearer = {"Authorization": f"Bearer {proc.admin_token}"}
    with httpx.Client(base_url=proc.http_url, headers=bearer, timeout=30) as shared:
        gateway = create_device(shared, unique("gw"), unique("p"), "d", gateway=True)
        assert shared.post(
            f"/v1/devices/{gateway['id']}/modules", json={"moduleId": "m1"}
        ).status_code in (200, 201)
        device = create_device(shared, unique("dev"), unique("p"), "d")
        cases: list[tuple[str, dict[str, str]]] = [
            (f"/v1/devices/{device['id']}", bearer),
            (f"/v1/devices/{gateway['id']}", bearer),
            (f"/v1/devices/%20{device['id']}%20", bearer),  # ids are stripped
            (f"/v1/devices/{device['id']}?x=1", bearer),
            ("/v1/devices/no-such-device", bearer),
            (f"/v1/devices/{device['id']}", {}),
            (f"/v1/devices/{device['id']}", {"Authorization": "Bearer thk_wrong"}),
            (f"/v1/devices/{device['id']}", {"Authorization": f"Basic {proc.admin_token}"}),
        ]
        with (
            httpx.Client(base_url=own, timeout=30) as direct,
            httpx.Client(base_url=proc.http_url, timeout=30) as fast,
        ):
            for path, headers in cases:
                a, b = fast.get(path, headers=headers), direct.get(path, headers=headers)
                assert (a.status_code, a.content) == (b.status_code, b.content), path
                assert _without_date(a.headers) == _without_date(b.headers), path
    assert proc.stop() == 0


def _without_date(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.items() if k != "date")
