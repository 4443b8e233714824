"""/v1 takes the request forms the ST API's host (an Azure Function) takes: a trailing slash,
query names in any case, and browser calls from another origin (the ST portal's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    assert_error,
    client,
    create_device,
    device_sas,
    post_telemetry,
)
from tests.e2e.server import ServerProcess

ORIGIN = "https://portal.example.com"


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as api:  # httpx's default: redirects are not followed
        yield api


def test_a_trailing_slash_names_the_same_route(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("example_project"), unique("example_deployment")
    created = admin.post(
        "/v1/devices/",
        json={
            "name": "example smart thermostat",
            "project": project,
            "deployment": deployment,
            "isIoTEdgeCapable": False,
        },
    )
    assert created.status_code == 200, (created.status_code, created.headers)
    device_id = created.json()["id"]
    assert created.json()["tags"]["project"] == project

    got = admin.get(f"/v1/devices/{device_id}/")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == device_id
    listed = admin.get("/v1/devices/", params={"projectID": project})
    assert [d["id"] for d in listed.json()] == [device_id]

    put = admin.put(f"/v1/devices/{device_id}/", json={"properties": {"targetTemperature": 22.5}})
    assert put.status_code == 200, put.text
    assert put.json()["properties"]["desired"] == {"targetTemperature": 22.5}

    for path in ("/v1/telemetries/", "/v1/events/"):
        page = admin.get(path, params={"projectID": project, "deploymentID": deployment})
        assert page.status_code == 200, (path, page.status_code, page.text)
        assert isinstance(page.json(), list)

    method = admin.post(f"/v1/devices/{device_id}/method/", json={"name": "getMaxMinReport"})
    assert_error(method, 404, field="deviceId", code="DeviceNotOnline")

    # The face's root is no route, and never a redirect built from the Host header.
    assert_error(admin.get("/v1/"), 404)
    assert admin.delete(f"/v1/devices/{device_id}/").status_code == 204


def _telemetry(server: ServerProcess, device: dict[str, Any], temperature: int) -> None:
    sent = post_telemetry(
        server.http_url, device["id"], {"temperature": temperature}, device_sas(device)
    )
    assert sent.status_code == 204, sent.text


def test_query_names_match_in_any_case(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """A filter in another case filters; it is never dropped, answering every device's data."""
    deployment = unique("dep")
    one = create_device(admin, "one", unique("proj"), deployment)
    two = create_device(admin, "two", unique("proj"), deployment)
    _telemetry(server, one, 11)
    _telemetry(server, two, 22)

    def ids(path: str, params: dict[str, Any]) -> list[str]:
        response = admin.get(path, params=params)
        assert response.status_code == 200, response.text
        return [item.get("deviceID", item.get("id")) for item in response.json()]

    assert ids("/v1/telemetries", {"deviceId": one["id"]}) == [one["id"]]
    assert ids("/v1/telemetries", {"DEVICEID": two["id"]}) == [two["id"]]
    assert ids("/v1/telemetries", {"projectId": one["tags"]["project"]}) == [one["id"]]
    assert ids("/v1/devices", {"projectid": two["tags"]["project"]}) == [two["id"]]
    assert ids("/v1/events", {"deviceId": one["id"], "EventType": "device_lifecycle_event"}) == [
        one["id"]
    ]
    both = {"deploymentId": deployment, "Limit": 1}
    first = admin.get("/v1/telemetries", params=both)
    assert len(first.json()) == 1, first.text
    token = first.headers["x-continuation-token"]
    rest = ids("/v1/telemetries", {**both, "continuationtoken": token})
    assert rest == [one["id"]]  # newest first: two's came last

    # Values are passed on untouched, errors still name the declared parameter.
    assert_error(admin.get("/v1/events", params={"eventtype": "bogus"}), 400, field="eventType")
    assert_error(admin.get("/v1/telemetries", params={"FROM": "yesterday"}), 400, field="from")


def test_browser_calls_from_another_origin(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """The ST API serves the ST AIoT Craft web portal, a browser app on another origin."""
    with httpx.Client(base_url=server.http_url, timeout=30, verify=False) as browser:
        preflight = browser.options(
            "/v1/devices",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed

        # The paging and method-status headers are readable by the page's script.
        device = create_device(admin, "paged", unique("proj"), unique("dep"))
        for temperature in (1, 2):
            _telemetry(server, device, temperature)
        page = admin.get(
            "/v1/telemetries",
            params={"deviceID": device["id"], "limit": 1},
            headers={"Origin": ORIGIN},
        )
        assert page.status_code == 200, page.text
        assert page.headers["access-control-allow-origin"] == "*"
        exposed = page.headers["access-control-expose-headers"].lower()
        assert "x-continuation-token" in exposed and "x-method-status" in exposed

        # GET /v1/devices/{id} too (its answer usually skips the face's stack: fast_path).
        got = admin.get(f"/v1/devices/{device['id']}", headers={"Origin": ORIGIN})
        assert got.status_code == 200, got.text
        assert got.json() == admin.get(f"/v1/devices/{device['id']}").json()
        assert got.headers["access-control-allow-origin"] == "*"

        # An error reaches the script too (else the browser hides it as a network error).
        denied = browser.get("/v1/devices", headers={"Origin": ORIGIN})
        assert_error(denied, 401, field="Authorization")
        assert denied.headers["access-control-allow-origin"] == "*"
