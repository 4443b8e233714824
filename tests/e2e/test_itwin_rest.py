"""The iTwin REST API and the Sensor Data Service, as the seed's samples call them.

The SDE walk-through: an access token from POST /connect/token (form-encoded, the seed's
scopes, values with the trailing space the samples print), the device and sensor templates
and the metrics catalog, a connection with devices and sensors made in one call, the
sensors' metrics, an upload with the seed's own body as printed (its `},]` included), the
advanced integration with refIds (the seed's curl with its two trailing commas), changes by
refId, and the connection read back through the seed's double-slash URL. Then the REST
lists with paging, projects, errors in the seed's shapes, and scopes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.itwin import Ws, api_token, register, send_telemetry, sensor_id, ws_url
from tests.e2e.server import ServerProcess
from tests.itwin_bodies import ADVANCED_INTEGRATION, SIMPLE_INTEGRATION

pytestmark = pytest.mark.e2e

SCOPES = "sensor-data:modify sensor-data:read users:read itwins:read itwins:modify"


# The seed's /data/upload curl body, as printed: the array ends with `},`.
UPLOAD = """{
    "observations": [
        {
            "sensorId": "/api/B08851/node/dynamic/AB10E2/device/D76619/sensor",
            "timestamp": "2024-02-20T04:35:23.653Z",
            "values": {
                "Alignment_Left_SD": 0.23,
                "Alignment_Right_SD": 0.84
            }
        },
    ]
}"""


def access_token(server: ServerProcess, scope: str = SCOPES, **token: Any) -> str:
    """POST /connect/token as the seed's `requests` sample does (values with its trailing
    space), for a new API token of the default account."""
    issued = api_token(server, **token)
    data = {
        "client_id": f"{issued['id']} ",
        "client_secret": f"{issued['token']} ",
        "grant_type": "client_credentials",
        "scope": scope,
    }
    response = httpx.post(f"{server.http_url}/connect/token", data=data, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert body["scope"] == " ".join(sorted(scope.split()))
    return str(body["access_token"])


def sde(server: ServerProcess, token: str) -> httpx.Client:
    """A client of the REST API. (The seed's samples print `Bearer <token> ` with a space
    after it; HTTP drops whitespace around a header value, and httpx refuses to send it.)"""
    return httpx.Client(
        base_url=f"{server.http_url}/itwin/api",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_sensor_data_service_walkthrough(server: ServerProcess) -> None:
    token = access_token(server, role="operator")
    project = f"p{uuid.uuid4().hex[:8]}"
    with sde(server, token) as api:
        device_types = api.get("/devices/types", params={"excludeLegacy": "true"}).json()
        assert device_types["deviceTypes"][0] == {
            "id": "IMPORT_DEVICE_SDE",
            "name": "Import Device",
            "icon": "smicon-device-import",
            "iconUnicode": "",
            "manufacturer": "sensemetrics",
            "minThreadVersion": "1.0",
            "editOnly": False,
            "isDynamic": True,
        }
        sensor_types = api.get("/sensors/types", params={"excludeLegacy": "true"}).json()
        generic = sensor_types["sensorTypes"][0]
        assert generic["id"] == "GENERIC_SENSOR_SDE"
        assert generic["metricsAndUnits"][0]["units"] == [{"unit": "GENERIC", "id": "GENERIC"}]
        metrics = api.get("/metrics/types", params={"excludeLegacy": "true"}).json()
        assert metrics["standard"] is True
        assert metrics["metrics"][0]["id"] == "T"
        assert [u["id"] for u in metrics["metrics"][0]["units"]] == ["C", "K", "F"]

        # One call: a connection, a device and two generic sensors.
        response = api.post(
            "/integrations/integrate",
            params={"projectIds": project},
            content=SIMPLE_INTEGRATION,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        integration = response.json()["integration"]
        node = integration["node"]
        serial = node["props"]["SERIAL_NO"]
        assert node["id"] == f"/api/{serial}/node" and node["type"] == "DYNAMIC"
        assert node["props"]["INTEGRATION_ID"] == "NODE_API_SDE"
        assert node["props"]["NAME"] == f"Data Source API Import {serial}"
        assert node["props"]["PROJECT_ID"] == project
        assert node["props"]["CREATION_DATE"].endswith("+00:00")
        [entry] = integration["devices"]
        device = entry["device"]
        assert device["id"].startswith(f"/api/{serial}/node/dynamic/")
        assert device["id"].endswith("/device") and device["type"] == "DYNAMIC"
        assert device["props"]["SIZE"] == 2 and device["props"]["NODE_ID"] == node["id"]
        assert device["props"]["INTEGRATION_ID"] == "IMPORT_DEVICE_SDE"
        assert [s["props"]["NAME"] for s in entry["sensors"]] == ["Sensor-1", "Sensor-2"]
        sensor = entry["sensors"][0]
        assert sensor["device"] == device["id"] and sensor["observationType"] == "DYNAMIC"
        assert sensor["props"]["UNKNOWN_METRICS"] == {
            "0": "Alignment_Left_SD",
            "1": "Alignment_Right_SD",
        }

        # The sensor's metrics, raw: exactly the seed's answer.
        response = api.post(
            "/sensors/metrics",
            params={"projectIds": project, "filters": "raw"},
            json={"ids": [sensor["id"]]},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "metricsBySensor": {
                sensor["id"]: [
                    {
                        "defaultUnit": "millimeter",
                        "hidden": False,
                        "displayName": name,
                        "notation": name,
                        "name": name,
                        "id": name,
                        "units": [
                            {"notation": "millimeter", "name": "millimeter", "id": "millimeter"}
                        ],
                    }
                    for name in ("Alignment_Left_SD", "Alignment_Right_SD")
                ]
            }
        }

        # The seed's upload, as printed, with its sensor id made ours.
        body = UPLOAD.replace("/api/B08851/node/dynamic/AB10E2/device/D76619/sensor", sensor["id"])
        response = api.post(
            "/data/upload", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"status": "ACCEPTED"}

        # The advanced form: the existing connection, a device and a sensor with refIds.
        device_ref, sensor_ref = f"{node['id']}-test-device", f"{node['id']}-test-sensor"
        body = ADVANCED_INTEGRATION.replace("/api/B08851/node", node["id"])
        body = body.replace('"{{$guid}}"', f'"{device_ref}"', 1).replace(
            '"{{$guid}}"', f'"{sensor_ref}"', 1
        )
        response = api.post(
            "/integrations/integrate",
            params={"projectIds": project},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        [added] = response.json()["integration"]["devices"]
        assert added["device"]["props"]["SERIAL_NO"] == device_ref
        assert added["device"]["props"]["NOTES"] == "Demo device"
        assert added["device"]["props"]["LOCATION"] == {
            "type": "Point",
            "coordinates": [174.7805678, -41.27834066, 20],
        }
        assert added["sensors"][0]["props"]["SERIAL_NO"] == sensor_ref  # the refId, as printed

        # Changes by refId: update the sensor, then remove the device.
        change = {
            "integration": {
                "nodeId": node["id"],
                "devices": [
                    {
                        "changeState": "update",
                        "refId": device_ref,
                        "props": {"NAME": "Renamed device"},
                        "sensors": [
                            {"changeState": "update", "refId": sensor_ref,
                             "props": {"NOTES": "moved"}},
                        ],
                    }
                ],
            }
        }  # fmt: skip
        response = api.post("/integrations/integrate", params={"projectIds": project}, json=change)
        assert response.status_code == 200, response.text
        [changed] = response.json()["integration"]["devices"]
        assert changed["device"]["id"] == added["device"]["id"]
        assert changed["device"]["props"]["NAME"] == "Renamed device"
        assert changed["sensors"][0]["props"]["NOTES"] == "moved"

        # The connection read back through the seed's URL: `/integrations/` + the node id.
        response = api.post(f"/integrations/{node['id']}", content=b"")
        assert response.status_code == 200, response.text
        assert "//api/" in str(response.request.url)
        devices = response.json()["integration"]["devices"]
        assert sorted(d["device"]["id"] for d in devices) == sorted(
            [device["id"], added["device"]["id"]]
        )
        removal = {"integration": {"nodeId": node["id"], "devices": [
            {"changeState": "remove", "refId": device_ref}]}}  # fmt: skip
        response = api.post("/integrations/integrate", params={"projectIds": project}, json=removal)
        assert response.status_code == 200, response.text
        devices = api.post(f"/integrations/{node['id']}").json()["integration"]["devices"]
        assert [d["device"]["id"] for d in devices] == [device["id"]]

    # The uploaded observation, over the socket API, with the access token as the code.
    ws = Ws(ws_url(server), token)
    try:
        chunks, _ = ws.stream(
            "getData",
            {"sensor": sensor["id"], "metric": "Alignment_Left_SD", "unit": "millimeter",
             "projectIds": [project]},
        )  # fmt: skip
        assert [c["data"] for c in chunks] == [{"2024-02-20T04:35:23.653Z": 0.23}]
    finally:
        ws.close()


def test_integration_errors_are_in_the_seed_shape(server: ServerProcess) -> None:
    with sde(server, server.admin_token) as api:

        def integrate(body: Any) -> httpx.Response:
            return api.post("/integrations/integrate", json=body)

        response = integrate({"integration": {"devices": []}})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "InvalidProcessIntegrationRequest"
        response = integrate({"integration": {"changeState": "new", "devices": [
            {"changeState": "new", "props": {"NAME": "no template"}}]}})  # fmt: skip
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "code": "InvalidProcessIntegrationRequest",
                "message": "Minimum request parameters not provided, new Devices and Sensors "
                "must have a valid `props.INTEGRATION_ID` set.",
            }
        }
        response = integrate({"integration": {"nodeId": "/api/NOPE00/node", "devices": []}})
        assert response.status_code == 422
        assert response.json()["error"]["message"] == (
            "Cannot process integration ensure the provided nodeId is valid."
        )
        response = api.post("/integrations//api/NOPE00/node")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "InvalidProcessIntegrationRequest"
        response = api.post("/data/upload", json={"observations": []})
        assert response.status_code == 400
        assert response.json() == {
            "errors": [{"message": "must not be empty", "path": "observations"}]
        }
        response = api.post("/data/upload", json={"observations": [
            {"sensorId": "/api/X/node/dynamic/Y/device/Z/sensor", "timestamp": "then",
             "values": {"a": 1}}]})  # fmt: skip
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert error["path"] == "observations[0].timestamp" and "then" not in error["message"]
        response = api.post(
            "/data/upload", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["errors"][0]["path"] == "body"
        for path in ("/documents", "/profiles", "/documents/1"):
            response = api.get(path, params={"projectIds": "x"})
            assert response.status_code == 404
            assert "out of scope" in response.json()["errors"][0]["message"]


def test_credentials_and_scopes(server: ServerProcess) -> None:
    url = f"{server.http_url}/itwin/api/sensors/all"
    for headers in ({}, {"Authorization": "ApiKey wrong"}, {"Authorization": "Basic abc"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        [error] = response.json()["errors"]
        assert error["path"] == "Authorization" and error["message"]
    token = api_token(server, role="operator")
    assert httpx.get(url, headers={"Authorization": f"ApiKey {token['token']}"}).status_code == 200

    # An access token without the scope needed: 401, as the seed's Sensor Data Service
    # answers a token that "does not have required scopes" (its 401 body names Authorization).
    reader = access_token(server, scope="sensor-data:read itwins:read")
    with sde(server, reader) as api:
        assert api.get("/sensors/all").status_code == 200
        response = api.post(
            "/data/upload", content=UPLOAD, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401
        [error] = response.json()["errors"]
        assert "sensor-data:modify" in error["message"] and error["path"] == "Authorization"
        response = api.post("/integrations/integrate", content=SIMPLE_INTEGRATION,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 401
        assert response.json()["errors"][0]["path"] == "Authorization"
        assert api.delete("/projects/anything").status_code == 401
    ws = Ws(ws_url(server), reader)  # the socket API takes it too, read-only
    try:
        refused = ws.call("createNode", {"node": "/fn/RO0001/node", "type": "T",
                                         "props": {"VERSION": "1"}}, 1)  # fmt: skip
        assert refused["error"]["code"] == -32003
        assert ws.call("getNodes", {}, 2)["result"] is not None
    finally:
        ws.close()
    users_only = access_token(server, scope="users:read")
    with sde(server, users_only) as api:
        assert api.get("/sensors/all").status_code == 401

    # An API token whose role may not write: authenticated, refused (403).
    viewer = api_token(server, role="viewer")
    with sde(server, viewer["token"]) as api:
        response = api.post(
            "/data/upload", content=UPLOAD, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 403

    token_url = f"{server.http_url}/connect/token"
    issued = api_token(server)
    form = {"client_id": issued["id"], "client_secret": "nope", "grant_type": "client_credentials"}
    response = httpx.post(token_url, data=form)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    form.update(client_secret=issued["token"], scope="root")
    response = httpx.post(token_url, data=form)
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    response = httpx.post(token_url, data={"grant_type": "password"})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


def test_lists_page_and_projects(server: ServerProcess) -> None:
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as v1:
        devices = [register(v1, project) for _ in range(3)]
    send_telemetry(server, devices[0], {"T": 1.0}, component="c1")
    with sde(server, server.admin_token) as api:
        seen = []
        for page in range(4):
            response = api.get(
                "/nodes/all", params={"projectIds": project, "pageSize": 2, "page": page}
            )
            assert response.status_code == 200
            assert response.headers["X-Total-Count"] == "3"
            seen += [n["id"] for n in response.json()]
        assert sorted(seen) == sorted(f"/thinghub/{d['id']}/node" for d in devices)
        sensors = api.get("/sensors/all", params={"projectIds": project}).json()
        assert sensor_id(devices[0]["id"], "c1") in {s["id"] for s in sensors}
        assert len(api.get("/devices/all", params={"projectIds": project}).json()) == 3
        assert api.get("/sensors/all", params={"pageSize": 0}).status_code == 400

        assert api.get(f"/projects/{project}").json() == {
            "id": project,
            "name": project,
            "isDefault": False,
        }
        usage = api.get(f"/projects/{project}/dataUsage").json()
        assert usage == {"projectId": project, "nodes": 3, "devices": 3, "sensors": 4,
                         "metricSeries": 1}  # fmt: skip
        assert api.get("/projects/nope-project").status_code == 404
        response = api.delete(f"/projects/{project}")
        assert (
            response.status_code == 409
            and "still has devices" in response.json()["errors"][0]["message"]
        )
    with server.client() as v1:
        for device in devices:
            assert v1.delete(f"/v1/devices/{device['id']}").status_code in (200, 204)
    # Deleting a project is the account's business: an operator, or an admin token limited
    # to that very project, may not (403 in the REST error shape).
    for role, limited in (("operator", None), ("admin", project)):
        other = api_token(server, role=role, project=limited)
        with sde(server, other["token"]) as api:
            response = api.delete(f"/projects/{project}")
            assert response.status_code == 403, response.text
            assert response.json()["errors"][0]["message"]
    with sde(server, server.admin_token) as api:
        assert api.delete(f"/projects/{project}").status_code == 204
        assert api.get(f"/projects/{project}").status_code == 404


def test_face_listen_serves_the_seed_urls(start_server: Callable[..., ServerProcess]) -> None:
    """With --face-listen itwin=HOST:PORT the seed's `https://iiot.bentley.com/api/...` URLs
    need only the host changed."""
    own = start_server("--face-listen", "itwin=127.0.0.1:0")
    base = own.addresses["faces"]["itwin"]["url"]
    headers = {"Authorization": f"ApiKey {own.admin_token}"}
    response = httpx.get(f"{base}/api/sensors/all?pageSize=100", headers=headers)
    assert response.status_code == 200 and response.json() == []
    assert (
        httpx.post(f"{base}/api/integrations//api/13DC2F/node", headers=headers).status_code == 404
    )
    missing = httpx.get(f"{base}/api/nothing-here", headers=headers)
    assert missing.status_code == 404 and "errors" in missing.json()


def test_one_entity_by_id_as_bentleys_widget_reads_it(server: ServerProcess) -> None:
    """Bentley's widget (EntityService.getEntity$) reads one entity at `/api/{kind}s/` + its
    id; ids start with `/`, so the URL has two slashes. The body is the entity as the lists
    show it; an id of nothing is 404, an id of another kind 400, in the REST error shape."""
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as v1:
        device = register(v1, project)
    send_telemetry(server, device, {"T": 21.5})
    sensor = sensor_id(device["id"])
    with sde(server, server.admin_token) as api:
        listed = api.get("/sensors/all", params={"projectIds": project}).json()
        [expected] = [s for s in listed if s["id"] == sensor]
        response = api.get(f"/sensors/{sensor}", params={"projectIds": project})
        assert response.status_code == 200, response.text
        assert response.json() == expected
        assert api.get(f"/sensors/{sensor}").json()["id"] == sensor  # projectIds optional
        node = api.get(f"/nodes//thinghub/{device['id']}/node").json()
        assert node["id"] == f"/thinghub/{device['id']}/node"
        held = api.get(f"/devices/{expected['device']}").json()
        assert held["id"] == expected["device"] and held["props"]["SIZE"] == 1

        missing = api.get("/sensors//fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["path"] == "id"
        wrong = api.get(f"/sensors//thinghub/{device['id']}/node")
        assert wrong.status_code == 400 and wrong.json()["errors"][0]["path"] == "id"
        elsewhere = api.get(f"/sensors/{sensor}", params={"projectIds": "another-project"})
        assert elsewhere.status_code == 404
        assert api.get(f"/sensors/{sensor}", headers={"Authorization": ""}).status_code == 401
        # The fixed routes keep their meaning.
        assert "sensorTypes" in api.get("/sensors/types").json()


def test_sensor_metrics_in_categories_as_bentleys_widget_asks(server: ServerProcess) -> None:
    """Bentley's widget (MetricService.getMetrics$) posts `{"ids": [...]}` to
    /sensors/metrics with `categorized=true` and reads `metricsBySensor[id]` as categories
    `{metricCategoryId, metricCategory, metrics}`, its default metric being the first
    category's first; without `categorized` the list stays flat, the deltas first."""
    project = f"p{uuid.uuid4().hex[:8]}"
    with server.client() as v1:
        device = register(v1, project)
    send_telemetry(server, device, {"T": 21.5, "P_raw": 101325.0})
    sensor = sensor_id(device["id"])
    with sde(server, server.admin_token) as api:
        flat = api.post(
            "/sensors/metrics", params={"projectIds": project}, json={"ids": [sensor]}
        ).json()["metricsBySensor"][sensor]
        assert [m["id"] for m in flat] == ["dT", "T", "P_raw"]  # the seed's walk-through
        by_id = {m["id"]: m for m in flat}

        response = api.post(
            "/sensors/metrics",
            params={"projectIds": project, "categorized": "true"},
            json={"ids": [sensor]},
        )
        assert response.status_code == 200, response.text
        categories = response.json()["metricsBySensor"][sensor]
        assert [(c["metricCategoryId"], [m["id"] for m in c["metrics"]]) for c in categories] == [
            ("RAW", ["T", "P_raw"]),
            ("DELTA", ["dT"]),
        ]
        assert all(isinstance(c["metricCategory"], str) for c in categories)
        assert categories[0]["metrics"][0] == by_id["T"]  # the same metric objects, units too

        raw = api.post(
            "/sensors/metrics",
            params={"categorized": "true", "filters": "raw"},
            json={"ids": [sensor]},
        ).json()["metricsBySensor"][sensor]
        assert [c["metricCategoryId"] for c in raw] == ["RAW"]
