"""PUT /v1/devices/{id} with the shape GET returns: `properties.desired` is the patch,
`tags.project`/`tags.deployment` move the device, read-only fields must hold what the device
has, and no field is silently ignored (a 400 names it, nothing changes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import assert_error, client, create_device
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as api:
        yield api


@pytest.fixture
def device(admin: httpx.Client, unique: Callable[[str], str]) -> dict[str, Any]:
    return create_device(admin, "thermostat", unique("proj"), unique("dep"))


def _desired(admin: httpx.Client, device_id: str) -> dict[str, Any]:
    twin = admin.get(f"/v1/devices/{device_id}/twin")
    assert twin.status_code == 200, twin.text
    desired: dict[str, Any] = twin.json()["properties"]["desired"]
    return {k: v for k, v in desired.items() if not k.startswith("$")}


def test_the_get_shape_round_trips(admin: httpx.Client, device: dict[str, Any]) -> None:
    device_id = device["id"]
    url = f"/v1/devices/{device_id}"
    # The ST API's form: properties is the patch.
    seeded = admin.put(url, json={"properties": {"targetTemperature": 22.5}})
    assert seeded.status_code == 200, seeded.text
    shown = admin.get(url).json()
    assert shown["properties"] == {"desired": {"targetTemperature": 22.5}}

    # GET's shape sent back with a change: a lone `desired` object is the patch.
    changed = {**shown, "properties": {"desired": {"targetTemperature": 19, "mode": "eco"}}}
    put = admin.put(url, json=changed)
    assert put.status_code == 200, put.text
    assert put.json()["properties"] == {"desired": {"targetTemperature": 19, "mode": "eco"}}
    assert _desired(admin, device_id) == {"targetTemperature": 19, "mode": "eco"}
    assert "desired" not in _desired(admin, device_id)

    # The whole GET answer, unchanged, is a no-op 200.
    same = admin.get(url).json()
    again = admin.put(url, json=same)
    assert again.status_code == 200, again.text
    assert again.json()["tags"] == same["tags"]
    assert again.json()["properties"] == same["properties"]


def test_tags_project_moves_the_device(
    admin: httpx.Client,
    server: ServerProcess,
    device: dict[str, Any],
    unique: Callable[[str], str],
) -> None:
    device_id = device["id"]
    url = f"/v1/devices/{device_id}"
    old_project = device["tags"]["project"]
    new_project, new_deployment = unique("moved"), unique("dep")
    shown = admin.get(url).json()
    moved = admin.put(
        url,
        json={
            **shown,
            "tags": {**shown["tags"], "project": new_project, "deployment": new_deployment},
        },
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["tags"]["project"] == new_project
    assert moved.json()["tags"]["deployment"] == new_deployment
    listed = admin.get("/v1/devices", params={"projectID": new_project}).json()
    assert [d["id"] for d in listed] == [device_id]
    assert admin.get("/v1/devices", params={"projectID": old_project}).json() == []
    projects = {p["name"]: p["deployments"] for p in admin.get("/v1/projects").json()}
    assert projects[new_project] == [new_deployment]
    # Only the project: the deployment stays.
    solo = unique("solo")
    only = admin.put(url, json={"tags": {"project": solo}})
    assert only.status_code == 200, only.text
    assert only.json()["tags"]["project"] == solo
    assert only.json()["tags"]["deployment"] == new_deployment

    # A token limited to a project may not move a device out of it.
    issued = admin.post("/v1/tokens", json={"role": "operator", "project": solo})
    assert issued.status_code == 201, issued.text
    with client(server, issued.json()["token"]) as limited:
        refused = limited.put(url, json={"tags": {"project": unique("elsewhere")}})
        assert_error(refused, 403)
        assert admin.get(url).json()["tags"]["project"] == solo
        renamed = limited.put(url, json={"tags": {"name": "renamed"}})
        assert renamed.status_code == 200, renamed.text
    for bad in ("bad id!", ""):
        assert_error(admin.put(url, json={"tags": {"project": bad}}), 400)
    assert admin.get(url).json()["tags"]["project"] == solo


def test_fields_that_cannot_be_applied_are_400_naming_them(
    admin: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    url = f"/v1/devices/{device_id}"
    shown = admin.get(url).json()
    for body, field in [
        ({"colour": "red"}, "colour"),
        ({"tags": {"owner": "me"}}, "tags.owner"),
        ({"tags": {"user": "somebody-else"}}, "tags.user"),
        ({"id": "another"}, "id"),
        ({"idScope": "0ne00000000"}, "idScope"),
        ({"isIoTEdgeCapable": True}, "isIoTEdgeCapable"),
        ({"modelId": "dtmi:x:y;1"}, "modelId"),
        ({"credentials": {"type": "x509"}}, "credentials"),
        ({"modules": [{"moduleId": "m1"}]}, "modules"),
        ({**shown, "properties": {"desired": {"x": 1}}, "colour": 1}, "colour"),
    ]:
        assert_error(admin.put(url, json=body), 400, field=field)
    # Nothing of a refused request was applied.
    assert admin.get(url).json()["properties"] == shown["properties"]
    assert admin.get(url).json()["tags"] == shown["tags"]
    # Read-only fields holding what the device has are taken.
    same = admin.put(url, json={"id": device_id, "isIoTEdgeCapable": False, "tags": shown["tags"]})
    assert same.status_code == 200, same.text


def test_module_put_takes_its_get_shape(admin: httpx.Client, unique: Callable[[str], str]) -> None:
    gateway = create_device(admin, "gw", unique("proj"), unique("dep"), gateway=True)
    module_id = unique("m")
    made = admin.post(f"/v1/devices/{gateway['id']}/modules", json={"moduleId": module_id})
    assert made.status_code == 200, made.text
    url = f"/v1/devices/{gateway['id']}/modules/{module_id}"
    shown = admin.get(url).json()
    put = admin.put(url, json={**shown, "properties": {"desired": {"fps": 30}}})
    assert put.status_code == 200, put.text
    assert put.json()["properties"] == {"desired": {"fps": 30}}
    assert_error(admin.put(url, json={"moduleId": "other"}), 400, field="moduleId")
    assert_error(admin.put(url, json={"tags": {"name": "x"}}), 400, field="tags")
