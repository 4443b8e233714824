"""The IoT Central face walked through as the IoT Central REST API describes it, against the real
server.

Every success and error response is checked for the specification's shape and status;
telemetry posted here is checked on /v1 (the Central API has no telemetry read route), and
telemetry that arrives through the device HTTPS ingest is checked against the same template.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e

API = "/central/api"
VERSION = "2022-07-31"
SUPPORTED = (
    "1.0",
    "1.1-preview",
    "1.2-preview",
    "2022-05-31",
    "2022-06-30-preview",
    "2022-07-31",
    "2022-10-31-preview",
    "2023-07-31-preview",
)
SEED_DEVICE_KEYS = {"id", "displayName", "template", "simulated", "provisioned", "enabled"}
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


def template_body(template_id: str) -> dict[str, Any]:
    """A thermostat with a component, in IoT Central's device template shape."""
    return {
        "@id": template_id,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Thermostat",
        "capabilityModel": {
            "@id": f"{template_id}:cm",
            "@type": "Interface",
            "contents": [
                {"@type": "Telemetry", "name": "temperature", "schema": "double"},
                {"@type": "Telemetry", "name": "humidity", "schema": "double"},
                {
                    "@type": "Telemetry",
                    "name": "status",
                    "schema": {
                        "@type": "Enum",
                        "valueSchema": "string",
                        "enumValues": [{"name": "ok", "enumValue": "ok"}],
                    },
                },
                {
                    "@type": "Property",
                    "name": "targetTemperature",
                    "schema": "double",
                    "writable": True,
                },
                {"@type": "Property", "name": "firmwareVersion", "schema": "string"},
                {
                    "@type": "Command",
                    "name": "reboot",
                    "request": {"name": "rebootInterval", "schema": "integer"},
                },
                {"@type": "Command", "name": "ping"},
                {
                    "@type": "Component",
                    "name": "thermostat1",
                    "schema": {
                        "@id": f"{template_id}:thermostat",
                        "@type": "Interface",
                        "contents": [
                            {"@type": "Telemetry", "name": "temperature", "schema": "double"},
                            {
                                "@type": "Property",
                                "name": "targetTemperature",
                                "schema": "double",
                                "writable": True,
                            },
                            {
                                "@type": "Command",
                                "name": "getMaxMinReport",
                                "request": {"name": "since", "schema": "dateTime"},
                            },
                        ],
                    },
                },
            ],
        },
    }


def make_gateway_module(
    admin: httpx.Client, unique: Callable[[str], str], module_name: str
) -> tuple[str, dict[str, Any]]:
    """An IoT Edge gateway made through /v1 (in a project of its own) and a module of it:
    the gateway's id and the module as /v1 answers it (with its keys)."""
    gateway = admin.post(
        "/v1/devices",
        json={
            "name": "gateway",
            "project": unique("p"),
            "deployment": unique("d"),
            "isIoTEdgeCapable": True,
        },
    )
    assert gateway.status_code == 200, gateway.text
    gateway_id = gateway.json()["id"]
    module = admin.post(f"/v1/devices/{gateway_id}/modules", json={"moduleId": unique(module_name)})
    assert module.status_code == 200, module.text
    return gateway_id, module.json()


def property_values(shown: dict[str, Any]) -> dict[str, Any]:
    """GET /devices/{id}/properties without the real API's `$metadata` (at the top and in
    components): the values alone."""
    return {
        k: property_values(v) if isinstance(v, dict) and "$metadata" in v else v
        for k, v in shown.items()
        if k != "$metadata"
    }


def assert_error(response: httpx.Response, status: int, needle: str | None = None) -> None:
    """IoT Central's error body: {"error": {code, message, requestId, time}}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "requestId", "time"}, error
    assert isinstance(error["code"], str)
    assert error["code"]
    uuid.UUID(error["requestId"])
    assert response.headers["x-ms-request-id"] == error["requestId"]
    assert response.headers["x-ms-error-code"] == error["code"]  # the real API's header
    parsedate_to_datetime(error["time"])
    if needle is not None:
        assert needle in error["message"], error["message"]


@pytest.fixture
def central(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def bare(server: ServerProcess) -> Iterator[httpx.Client]:
    """The admin token and no default query (for nextLinks and api-version tests)."""
    with httpx.Client(
        base_url=server.http_url,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def template_id(central: httpx.Client, unique: Callable[[str], str]) -> str:
    tid = f"dtmi:thinghub:test:{unique('thermostat').replace('-', '_')};1"
    response = central.put(f"/deviceTemplates/{tid}", json=template_body(tid))
    assert response.status_code == 200, response.text
    return tid


def make_device(central: httpx.Client, device_id: str, **body: Any) -> dict[str, Any]:
    response = central.put(f"/devices/{device_id}", json=body)
    assert response.status_code == 200, response.text
    device: dict[str, Any] = response.json()
    return device


# -- application, versions, errors, docs -------------------------------------------------------


def test_get_application(central: httpx.Client, server: ServerProcess) -> None:
    response = central.get("/apps/app")
    assert response.status_code == 200, response.text
    app = response.json()
    assert set(app) == {
        "id",
        "displayName",
        "template",
        "location",
        "state",
        "createdTime",
        "lastUpdatedTime",
    }
    uuid.UUID(app["id"])
    assert app["displayName"] == "default"
    assert app["state"] == "Running"
    assert TIME_RE.fullmatch(app["createdTime"])
    assert TIME_RE.fullmatch(app["lastUpdatedTime"])


def test_api_version_is_checked(bare: httpx.Client) -> None:
    assert bare.get(f"{API}/apps/app").status_code == 200  # missing: the newest
    for version in SUPPORTED:
        response = bare.get(f"{API}/apps/app", params={"api-version": version})
        assert response.status_code == 200, (version, response.text)
    for bad in ("2019-01-01", "", "latest", "2022-07-31;x"):
        response = bare.get(f"{API}/devices", params={"api-version": bad})
        assert_error(response, 400, "api-version")
        for version in SUPPORTED:
            assert version in response.json()["error"]["message"]


def test_unknown_routes_and_methods(central: httpx.Client) -> None:
    assert_error(central.get("/nope"), 404)
    refused = central.post("/apps/app", json={})
    assert_error(refused, 405)
    assert refused.json()["error"]["code"] == "MethodNotAllowed"
    assert "GET" in refused.headers["allow"]


def test_bodies_over_the_request_limit_are_413(central: httpx.Client) -> None:
    big = json.dumps({"displayName": "x" * (5 << 20)}).encode()
    response = central.put("/devices/too-big", content=big)
    assert_error(response, 413)
    assert_error(central.get("/devices/too-big"), 404)


def test_credentials_are_required(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url + API, timeout=30) as client:
        response = client.get("/devices")
        assert_error(response, 401)
        assert response.headers["www-authenticate"]
        for header in (
            "Bearer",
            "Bearer nope",
            "nope",
            "SharedAccessSignature sr=x&sig=y",
            "Basic dXNlcjpwYXNz",
        ):
            assert_error(client.get("/devices", headers={"Authorization": header}), 401)
        # Authentication comes before the body is judged: malformed or oversized, still 401.
        for body in (b'{"displayName": ', b"x" * (5 << 20)):
            assert_error(client.put("/devices/anon", content=body), 401)
            assert_error(client.post("/devices/anon/telemetry", content=body), 401)


def test_openapi_docs(bare: httpx.Client) -> None:
    docs = bare.get(f"{API}/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    spec = bare.get(f"{API}/openapi.json").json()
    for path in (
        "/apps/app",
        "/devices",
        "/devices/{device_id}",
        "/apiTokens/{token_id}",
        "/devices/{device_id}/telemetry",
        "/devices/{device_id}/commands/{command_name}",
        "/devices/{device_id}/commands/{command_id}/status",
        "/devices/{device_id}/properties/{property_name}",
        "/deviceTemplates/{template_id}",
    ):
        assert path in spec["paths"], path
    assert bare.get("/").json()["faces"]["central"] == API


# -- devices -----------------------------------------------------------------------------------


def test_device_lifecycle(
    central: httpx.Client, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    created = central.put(
        f"/devices/{device_id}", json={"displayName": "New IoT Device", "simulated": False}
    )
    assert created.status_code == 200, created.text
    device = created.json()
    etag = device.pop("etag")  # the real API's field, beside the API document's
    assert device == {
        "id": device_id,
        "displayName": "New IoT Device",
        "template": None,
        "simulated": False,
        "provisioned": False,
        "enabled": True,
    }
    device["etag"] = etag

    assert_error(central.put(f"/devices/{device_id}", json={}), 409, device_id)
    assert central.get(f"/devices/{device_id}").json() == device

    # The same device on /v1 (registry devices have no project).
    v1 = admin.get(f"/v1/devices/{device_id}")
    assert v1.status_code == 200, v1.text
    assert v1.json()["tags"]["name"] == "New IoT Device"

    patched = central.patch(
        f"/devices/{device_id}", json={"displayName": "Updated Sensor Alpha", "enabled": False}
    )
    assert patched.status_code == 200, patched.text
    changed = patched.json()
    assert changed["etag"] != etag  # a change makes a new etag
    assert changed == {
        **device,
        "displayName": "Updated Sensor Alpha",
        "enabled": False,
        "etag": changed["etag"],
    }
    assert admin.get(f"/v1/devices/{device_id}").json()["provisioningStatus"] == "disabled"
    assert central.patch(f"/devices/{device_id}", json={"simulated": True}).json()["simulated"]

    deleted = central.delete(f"/devices/{device_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(central.get(f"/devices/{device_id}"), 404, device_id)
    assert_error(central.delete(f"/devices/{device_id}"), 404)
    assert_error(central.patch(f"/devices/{device_id}", json={"enabled": True}), 404)
    assert admin.get(f"/v1/devices/{device_id}").status_code == 404


def test_create_defaults_and_bad_bodies(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    response = central.put(f"/devices/{device_id}")  # no body at all
    assert response.status_code == 200, response.text
    assert response.json()["displayName"] == device_id

    bad_id = central.put("/devices/bad%20id", json={})
    assert_error(bad_id, 400, "deviceId")
    for body, needle in [
        ({"simulated": "yes"}, "simulated"),
        ({"enabled": 1}, "enabled"),
        ({"displayName": 5}, "displayName"),
        ({"displayName": ""}, "displayName"),
        ({"template": "not a template id!"}, "template"),
        ({"template": 5}, "template"),
        ([1], "body"),
    ]:
        assert_error(central.put(f"/devices/{unique('dev')}", json=body), 400, needle)
    assert_error(central.put(f"/devices/{unique('dev')}", content=b"{nope"), 400, "JSON")
    assert_error(central.patch(f"/devices/{device_id}", json={"enabled": "no"}), 400, "enabled")
    assert_error(
        central.patch(f"/devices/{device_id}", json={"template": "bad id!"}), 400, "template"
    )


def test_seed_examples_verbatim(central: httpx.Client, unique: Callable[[str], str]) -> None:
    """Every request body of the IoT Central API's examples, as written: its device names a
    template the application does not have (the API has no template routes), which must be
    accepted."""
    device_id = unique("device001")
    created = central.put(
        f"/devices/{device_id}",
        json={
            "displayName": "New IoT Device",
            "template": "dtmi:com:example:genericDevice;1",
            "simulated": False,
        },
    )
    assert created.status_code == 200, created.text
    assert {k: v for k, v in created.json().items() if k != "etag"} == {
        "id": device_id,
        "displayName": "New IoT Device",
        "template": "dtmi:com:example:genericDevice;1",
        "simulated": False,
        "provisioned": False,
        "enabled": True,
    }
    assert_error(central.put(f"/devices/{device_id}", json=created.json()), 409)
    listed = central.get(
        "/devices", params={"$filter": "template eq 'dtmi:com:example:genericDevice;1'"}
    )
    assert device_id in [d["id"] for d in listed.json()["devices"]]

    telemetry = central.post(
        f"/devices/{device_id}/telemetry",
        json={"temperature": 25.5, "humidity": 60.2, "timestamp": "2023-10-26T15:05:10Z"},
    )
    assert telemetry.status_code == 204, telemetry.text

    command = central.post(f"/devices/{device_id}/commands/reboot", json={"rebootInterval": 60})
    assert command.status_code == 200, command.text
    assert command.json() == {"commandId": command.json()["commandId"], "status": "Pending"}
    status = central.get(f"/devices/{device_id}/commands/{command.json()['commandId']}/status")
    assert status.json() == command.json()

    # The property object: PATCH answers it, and GET shows the value set until the device
    # reports a newer one.
    base = f"/devices/{device_id}/properties/firmwareVersion"
    assert_error(central.get(base), 404, "firmwareVersion")
    patched = central.patch(base, json={"value": "1.3.0"})
    assert patched.status_code == 200, patched.text
    assert set(patched.json()) == {"value", "lastReportedTime"}
    assert patched.json()["value"] == "1.3.0"
    assert TIME_RE.fullmatch(patched.json()["lastReportedTime"])
    assert central.get(base).json() == patched.json()

    updated = central.patch(
        f"/devices/{device_id}", json={"displayName": "Updated Sensor Alpha", "enabled": False}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["displayName"] == "Updated Sensor Alpha"
    assert updated.json()["enabled"] is False
    assert central.delete(f"/devices/{device_id}").status_code == 204
    assert_error(central.get(f"/devices/{device_id}"), 404)


def test_a_template_created_later_applies_to_its_devices(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    tid = f"dtmi:thinghub:later:{unique('t').replace('-', '_')};1"
    device_id = unique("dev")
    make_device(central, device_id, template=tid)
    # No such template yet: nothing is checked.
    free = central.post(f"/devices/{device_id}/telemetry", json={"anything": "goes"})
    assert free.status_code == 204, free.text
    assert central.put(f"/deviceTemplates/{tid}", json=template_body(tid)).status_code == 200
    assert_error(
        central.post(f"/devices/{device_id}/telemetry", json={"anything": "goes"}),
        400,
        "anything",
    )
    assert_error(central.post(f"/devices/{device_id}/commands/explode", json={}), 404)
    assert_error(central.delete(f"/deviceTemplates/{tid}"), 409, device_id)


def test_the_seed_base_url_with_v1_works_too(bare: httpx.Client) -> None:
    """The specification sends requests to https://<app>.azureiotcentral.com/api/v1."""
    plain = bare.get(f"{API}/apps/app", params={"api-version": VERSION})
    v1 = bare.get(f"{API}/v1/apps/app", params={"api-version": VERSION})
    assert v1.status_code == 200, v1.text
    assert v1.json() == plain.json()
    assert_error(bare.get(f"{API}/v1/devices", params={"api-version": "x"}), 400, "api-version")


def test_device_ids_are_global(
    central: httpx.Client, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    v1 = admin.post(
        "/v1/devices", json={"name": "from v1", "project": unique("p"), "deployment": unique("d")}
    )
    assert v1.status_code == 200, v1.text
    device_id = v1.json()["id"]
    assert_error(central.put(f"/devices/{device_id}", json={}), 409)
    seen = central.get(f"/devices/{device_id}").json()
    assert seen["displayName"] == "from v1"
    assert seen["template"] is None
    assert set(seen) <= SEED_DEVICE_KEYS | {"lastSeen", "firmwareVersion", "etag"}


def test_list_filter_and_paging(
    central: httpx.Client, bare: httpx.Client, unique: Callable[[str], str]
) -> None:
    prefix = unique("flt")
    for i in range(5):
        make_device(central, f"{prefix}-{i}", displayName=f"Sensor {i}", simulated=i % 2 == 1)
    listed = central.get("/devices")
    assert listed.status_code == 200, listed.text
    # The API document's `devices`, and the real API's `value` beside it.
    assert set(listed.json()) == {"devices", "value"}
    assert listed.json()["value"] == listed.json()["devices"]
    mine = [d for d in listed.json()["devices"] if d["id"].startswith(prefix)]
    assert [d["id"] for d in mine] == [f"{prefix}-{i}" for i in range(5)]
    for device in mine:
        assert set(device) == SEED_DEVICE_KEYS | {"etag"}

    def ids(flt: str, **params: Any) -> list[str]:
        response = central.get("/devices", params={"$filter": flt, **params})
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["devices"]]

    assert ids(f"startswith(id, '{prefix}') and simulated eq true") == [
        f"{prefix}-1",
        f"{prefix}-3",
    ]
    assert ids(f"startswith(id,'{prefix}') and not simulated and displayName ne 'Sensor 0'") == [
        f"{prefix}-2",
        f"{prefix}-4",
    ]
    assert ids(f"id eq '{prefix}-2' or (id eq '{prefix}-4' and enabled eq true)") == [
        f"{prefix}-2",
        f"{prefix}-4",
    ]
    assert ids(f"startswith(id, '{prefix}') and template eq null and provisioned eq false") == [
        f"{prefix}-{i}" for i in range(5)
    ]
    assert ids(f"id gt '{prefix}-2' and startswith(id, '{prefix}')") == [
        f"{prefix}-3",
        f"{prefix}-4",
    ]

    # $top pages with nextLink (a relative link keeping $filter, $top and api-version).
    first = central.get("/devices", params={"$filter": f"startswith(id,'{prefix}')", "$top": 2})
    assert first.status_code == 200, first.text
    seen, page = [], first.json()
    while True:
        assert len(page["devices"]) <= 2
        seen += [d["id"] for d in page["devices"]]
        if "nextLink" not in page:
            break
        link = urlsplit(page["nextLink"])
        assert link.path == f"{API}/devices"
        query = parse_qs(link.query)
        assert query["$top"] == ["2"]
        assert query["api-version"] == [VERSION]
        assert query["$filter"] == [f"startswith(id,'{prefix}')"]
        response = bare.get(page["nextLink"])
        assert response.status_code == 200, response.text
        page = response.json()
    assert seen == [f"{prefix}-{i}" for i in range(5)]
    exact = central.get(
        "/devices", params={"$filter": f"startswith(id,'{prefix}')", "$top": 5}
    ).json()
    assert len(exact["devices"]) == 5
    assert "nextLink" not in exact


@pytest.mark.parametrize(
    "flt",
    [
        "simulated eq",
        "simulated eq 'true'",
        "colour eq 'red'",
        "startswith(id)",
        "(enabled",
        "id eq 'x",
        "enabled == true",
        "id",
        "not",
        "",
        "x" * 5000,
        "(" * 200 + "enabled" + ")" * 200,
        "startswith(id, 'a') and",
        "id eq 99999999999999999999999999999999999999999999",
    ],
)
def test_malformed_filters_are_400(central: httpx.Client, flt: str) -> None:
    assert_error(central.get("/devices", params={"$filter": flt}), 400, "$filter")


@pytest.mark.parametrize("top", ["0", "-1", "abc", "1.5", "100000"])
def test_bad_top_is_400(central: httpx.Client, top: str) -> None:
    assert_error(central.get("/devices", params={"$top": top}), 400, "$top")


def test_credentials_connect_the_same_device(
    central: httpx.Client, admin: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    make_device(central, device_id)
    response = central.get(f"/devices/{device_id}/credentials")
    assert response.status_code == 200, response.text
    creds = response.json()
    assert set(creds) == {"idScope", "symmetricKey"}
    assert creds["idScope"] == server.addresses["id_scope"]
    v1 = admin.get(f"/v1/devices/{device_id}").json()["credentials"]["symmetricKey"]
    assert creds["symmetricKey"] == v1
    assert_error(central.get(f"/devices/{unique('nope')}/credentials"), 404)
    # Devices_GetAttestation: the device's own keys, an individual symmetric-key attestation.
    attestation = central.get(f"/devices/{device_id}/attestation")
    assert attestation.status_code == 200, attestation.text
    assert attestation.json() == {"type": "symmetricKey", "symmetricKey": v1}
    assert_error(central.get(f"/devices/{unique('nope')}/attestation"), 404)
    assert_error(central.put(f"/devices/{device_id}/attestation", json={}), 405)


# -- device templates --------------------------------------------------------------------------


def test_device_template_crud(central: httpx.Client, unique: Callable[[str], str]) -> None:
    tid = f"dtmi:thinghub:crud:{unique('t').replace('-', '_')};1"
    body = template_body(tid)
    put = central.put(f"/deviceTemplates/{tid}", json=body)
    assert put.status_code == 200, put.text
    document = put.json()
    assert document["@id"] == tid
    assert document["@type"] == ["ModelDefinition", "DeviceModel"]
    assert document["displayName"] == "Thermostat"
    assert document["capabilityModel"]["contents"] == body["capabilityModel"]["contents"]
    assert central.get(f"/deviceTemplates/{tid}").json() == document
    listed = central.get("/deviceTemplates").json()
    assert set(listed) == {"value"}
    assert document in listed["value"]

    patched = central.patch(f"/deviceTemplates/{tid}", json={"displayName": "Renamed"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["etag"] != document["etag"]
    assert patched.json() == {**document, "displayName": "Renamed", "etag": patched.json()["etag"]}

    # A device uses it: it cannot be deleted.
    device_id = unique("dev")
    make_device(central, device_id, template=tid)
    assert_error(central.delete(f"/deviceTemplates/{tid}"), 409, device_id)
    assert central.delete(f"/devices/{device_id}").status_code == 204
    assert central.delete(f"/deviceTemplates/{tid}").status_code == 204
    assert_error(central.get(f"/deviceTemplates/{tid}"), 404, tid)
    assert_error(central.delete(f"/deviceTemplates/{tid}"), 404)
    assert_error(central.patch(f"/deviceTemplates/{tid}", json={}), 404)


def test_bare_interfaces_and_bad_templates(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    tid = f"dtmi:thinghub:bare:{unique('t').replace('-', '_')};1"
    bare_iface = {
        "@id": tid,
        "@type": "Interface",
        "@context": "dtmi:dtdl:context;3",
        "displayName": "Bare",
        "contents": [{"@type": "Telemetry", "name": "t", "schema": "double"}],
    }
    put = central.put(f"/deviceTemplates/{tid}", json=bare_iface)
    assert put.status_code == 200, put.text
    assert put.json()["capabilityModel"]["contents"] == bare_iface["contents"]
    assert put.json()["displayName"] == "Bare"

    other = f"dtmi:thinghub:bad:{unique('t').replace('-', '_')};1"
    cases: list[tuple[Any, str]] = [
        (
            {
                "capabilityModel": {
                    "@type": "Interface",
                    "contents": [{"@type": "Telemetry", "name": "t", "schema": "quaternion"}],
                }
            },
            "unknown schema",
        ),
        (
            {
                "capabilityModel": {
                    "@type": "Interface",
                    "contents": [{"@type": "Telemetry", "name": "t"}],
                }
            },
            "schema is required",
        ),
        (
            {
                "capabilityModel": {
                    "@type": "Interface",
                    "contents": [
                        {"@type": "Property", "name": "p", "schema": "string", "writable": "no"}
                    ],
                }
            },
            "writable",
        ),
        ({"@id": "dtmi:mismatch;1", "capabilityModel": {"@type": "Interface"}}, "@id"),
        ({"displayName": "no model"}, "capabilityModel"),
        ("text", "capabilityModel"),
        (
            {"capabilityModel": {"@type": "Interface", "contents": [], "big": 2**70}},
            "cannot be stored",
        ),
    ]
    for body, needle in cases:
        assert_error(central.put(f"/deviceTemplates/{other}", json=body), 400, needle)
    assert_error(central.put(f"/deviceTemplates/{other}", content=b"[{"), 400)
    assert_error(central.put("/deviceTemplates/bad%20id", json=bare_iface), 400, "deviceTemplateId")
    assert_error(central.get(f"/deviceTemplates/{other}"), 404)


# -- telemetry ---------------------------------------------------------------------------------


def telemetries(admin: httpx.Client, device_id: str) -> list[dict[str, Any]]:
    response = admin.get("/v1/telemetries", params={"deviceID": device_id})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_telemetry_lands_in_the_shared_store(
    central: httpx.Client, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    make_device(central, device_id)
    response = central.post(
        f"/devices/{device_id}/telemetry",
        json={"temperature": 25.5, "humidity": 60.2, "timestamp": "2023-10-26T15:05:10Z"},
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert telemetries(admin, device_id) == [
        {
            "deviceID": device_id,
            "timestamp": "2023-10-26T15:05:10.0000000Z",
            "body": {"temperature": 25.5, "humidity": 60.2},
        }
    ]

    before = time.time()
    assert central.post(f"/devices/{device_id}/telemetry", json={"n": 1}).status_code == 204
    latest = telemetries(admin, device_id)[0]
    assert latest["body"] == {"n": 1}
    # No timestamp: the time it arrived; and the device was seen.
    assert central.get(f"/devices/{device_id}").json()["lastSeen"] >= time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1)
    )

    assert_error(central.post(f"/devices/{unique('nope')}/telemetry", json={"t": 1}), 404)
    for body in ([1, 2], "text", 5, None):
        assert_error(central.post(f"/devices/{device_id}/telemetry", json=body), 400, "object")
    assert_error(central.post(f"/devices/{device_id}/telemetry", content=b"{"), 400, "JSON")
    for stamp in ("yesterday", 5, "2023-13-45T00:00:00Z", "nan", "1e400"):
        assert_error(
            central.post(f"/devices/{device_id}/telemetry", json={"t": 1, "timestamp": stamp}),
            400,
            "timestamp",
        )
    assert_error(central.post(f"/devices/{device_id}/telemetry", json={"big": 2**70}), 400)
    assert len(telemetries(admin, device_id)) == 2


def test_templated_telemetry_is_validated(
    central: httpx.Client, admin: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    device = make_device(central, device_id, template=template_id, displayName="T")
    assert device["template"] == template_id
    ok = central.post(
        f"/devices/{device_id}/telemetry",
        json={"temperature": 21, "humidity": 40.5, "status": "ok"},
    )
    assert ok.status_code == 204, ok.text
    for body, needle in [
        ({"temperature": "hot"}, "temperature must be a double"),
        ({"pressure": 1013}, "'pressure' is not in device template"),
        ({"status": "bad"}, "status must be one of"),
    ]:
        assert_error(central.post(f"/devices/{device_id}/telemetry", json=body), 400, needle)
    for raw in (b'{"temperature": NaN}', b'{"temperature": -Infinity}'):
        response = central.post(
            f"/devices/{device_id}/telemetry",
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "not a JSON number")
    assert [t["body"] for t in telemetries(admin, device_id)] == [
        {"temperature": 21, "humidity": 40.5, "status": "ok"}
    ]
    rejected = admin.get(
        "/v1/events", params={"deviceID": device_id, "eventType": "telemetry_rejected_event"}
    ).json()
    assert len(rejected) == 3
    assert {"temperature must be a double" in e["body"]["reason"] for e in rejected} == {
        True,
        False,
    }

    # Unassigning the template lifts the check.
    assert (
        central.patch(f"/devices/{device_id}", json={"template": None}).json()["template"] is None
    )
    assert (
        central.post(f"/devices/{device_id}/telemetry", json={"pressure": 1013}).status_code == 204
    )


def _hub_sas(key: str, device_id: str) -> str:
    expiry = int(time.time()) + 600
    uri = quote(f"localhost/devices/{device_id}", safe="")
    digest = hmac.new(base64.b64decode(key), f"{uri}\n{expiry}".encode(), hashlib.sha256)
    sig = quote(base64.b64encode(digest.digest()).decode(), safe="")
    return f"SharedAccessSignature sr={uri}&sig={sig}&se={expiry}"


def test_device_ingest_is_checked_against_the_template_and_seen_here(
    central: httpx.Client,
    bare: httpx.Client,
    admin: httpx.Client,
    template_id: str,
    unique: Callable[[str], str],
) -> None:
    """Telemetry through another adapter (device HTTPS ingest) meets the same template."""
    device_id = unique("dev")
    make_device(central, device_id, template=template_id)
    key = central.get(f"/devices/{device_id}/credentials").json()["symmetricKey"]["primaryKey"]
    headers = {"Authorization": _hub_sas(key, device_id), "Content-Type": "application/json"}
    url = f"/devices/{device_id}/messages/events?api-version=2020-09-30"
    good = bare.post(url, content=b'{"temperature": 19.5}', headers=headers)
    assert good.status_code == 204, good.text
    bad = bare.post(url, content=b'{"temperature": "cold"}', headers=headers)
    assert bad.status_code == 400, bad.text
    assert [t["body"] for t in telemetries(admin, device_id)] == [{"temperature": 19.5}]
    reasons = [
        e["body"]["reason"]
        for e in admin.get(
            "/v1/events", params={"deviceID": device_id, "eventType": "telemetry_rejected_event"}
        ).json()
    ]
    assert len(reasons) == 1
    assert "temperature must be a double" in reasons[0]
    assert TIME_RE.fullmatch(central.get(f"/devices/{device_id}").json()["lastSeen"])


# -- commands ----------------------------------------------------------------------------------


def test_commands_are_queued_and_checked(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    make_device(central, device_id, template=template_id)
    base = f"/devices/{device_id}/commands"
    ids = []
    # (IoT Central's envelope {request, responseTimeout, connectionTimeout} waits for the
    # device instead: tests/e2e/test_central_real_commands.py.)
    accepted: list[Any] = [
        {"rebootInterval": 60},  # the specification's body: {<request name>: value}
        60,  # the request value itself
        {"rebootInterval": 5},
        {"request": 5, "extra": 1},  # not only envelope keys: the arguments themselves
    ]
    for body in accepted[:3]:
        response = central.post(f"{base}/reboot", json=body)
        assert response.status_code == 200, (body, response.text)
        result = response.json()
        assert set(result) == {"commandId", "status"}
        assert result["status"] == "Pending"
        ids.append(result["commandId"])
    assert len(set(ids)) == 3
    assert_error(central.post(f"{base}/reboot", json=accepted[3]), 400, "rebootInterval")
    more: list[tuple[str, Any]] = [
        ("ping", None),
        ("ping", {}),
        ("thermostat1*getMaxMinReport", "2023-10-26T15:00:00Z"),
    ]
    for name, body in more:
        response = central.post(f"{base}/{name}", json=body)
        assert response.status_code == 200, (name, response.text)
    component = central.post(
        f"/devices/{device_id}/components/thermostat1/commands/getMaxMinReport",
        json={"since": "2023-10-26T15:00:00Z"},
    )
    assert component.status_code == 200, component.text

    status = central.get(f"{base}/{ids[0]}/status")
    assert status.status_code == 200, status.text
    assert status.json() == {"commandId": ids[0], "status": "Pending"}

    for name, body, needle in [
        ("reboot", {"rebootInterval": "soon"}, "rebootInterval must be an integer"),
        ("reboot", None, "needs its request"),
        ("reboot", {"request": "x"}, "rebootInterval must be an integer"),
        ("reboot", {"request": 1, "responseTimeout": 0}, "responseTimeout"),
        ("reboot", {"request": 1, "responseTimeout": "x"}, "responseTimeout"),
        ("reboot", {"request": 1, "connectionTimeout": -1}, "connectionTimeout"),
        ("ping", {"x": 1}, "takes no request"),
        ("thermostat1*getMaxMinReport", "later", "since must be a dateTime"),
        ("reboot", {"request": 2**70}, "cannot be stored"),
    ]:
        assert_error(central.post(f"{base}/{name}", json=body), 400, needle)
    assert_error(central.post(f"{base}/reboot", content=b"{"), 400, "JSON")
    # A Content-Type that names JSON but is none FastAPI parses ("json", "text/json"; any
    # other is read as JSON, faces/_http.JsonBodies) reaches the route as bytes: a 400.
    for content_type in ("json", "text/json"):
        plain = central.post(
            f"{base}/reboot",
            content=b'{"a": 1}',
            headers={"Content-Type": content_type},
        )
        assert_error(plain, 400, "not JSON")
    for name in ("explode", "thermostat1*reboot", "nope*ping"):
        assert_error(central.post(f"{base}/{name}", json={}), 404, name)
    assert_error(central.post(f"/devices/{unique('nope')}/commands/reboot", json=1), 404)
    assert_error(central.get(f"{base}/{uuid.uuid4()}/status"), 404)
    other = unique("dev")
    make_device(central, other)
    assert_error(central.get(f"/devices/{other}/commands/{ids[0]}/status"), 404)
    # Without a template any command and payload is accepted, up to IoT Hub's 128 KiB.
    free = central.post(f"/devices/{other}/commands/anything", json={"a": [1, None]})
    assert free.status_code == 200, free.text
    huge = central.post(f"/devices/{other}/commands/anything", json={"a": "x" * 200_000})
    assert_error(huge, 413, "limit")


def test_commands_expire_when_the_device_does_not_come(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    """The real API's form waits up to connectionTimeout for the device to connect; it never
    comes, so the command ends Expired with IoT Hub's "not online" code."""
    device_id = unique("dev")
    make_device(central, device_id)
    started = time.monotonic()
    response = central.post(
        f"/devices/{device_id}/commands/reboot", json={"request": 1, "connectionTimeout": 1}
    )
    assert response.status_code == 201, response.text
    assert time.monotonic() - started >= 1.0  # it waited for the device
    command_id = response.json()["commandId"]
    assert response.json()["status"] == "Expired"
    assert response.json()["responseCode"] == 404
    status = central.get(f"/devices/{device_id}/commands/{command_id}/status").json()
    assert status["status"] == "Expired", status
    assert set(status) == {"commandId", "status", "completedTime", "responseCode"}
    assert TIME_RE.fullmatch(status["completedTime"])


# -- properties --------------------------------------------------------------------------------


def test_properties(
    central: httpx.Client, admin: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    make_device(central, device_id, template=template_id)
    base = f"/devices/{device_id}/properties"
    assert_error(central.get(f"{base}/targetTemperature"), 404, "has no value yet")
    assert_error(central.get(f"{base}/colour"), 404, "colour")

    response = central.patch(f"{base}/targetTemperature", json={"value": 21.5})
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"value", "lastReportedTime"}
    assert result["value"] == 21.5
    assert TIME_RE.fullmatch(result["lastReportedTime"])
    # Until the device reports, GET shows the value set here.
    assert central.get(f"{base}/targetTemperature").json() == result
    component = central.patch(f"{base}/thermostat1*targetTemperature", json={"value": 18})
    assert component.status_code == 200, component.text
    desired = admin.get(f"/v1/devices/{device_id}/twin").json()["properties"]["desired"]
    assert desired["targetTemperature"] == 21.5
    assert desired["thermostat1"] == {"__t": "c", "targetTemperature": 18}

    for name, body, status, needle in [
        ("firmwareVersion", {"value": "1.3.0"}, 400, "not writable"),
        ("targetTemperature", {"value": "warm"}, 400, "targetTemperature must be a double"),
        ("targetTemperature", {"value": None}, 400, "null"),
        ("targetTemperature", {}, 400, "value"),
        ("targetTemperature", [1], 400, "body"),
        ("colour", {"value": "red"}, 404, "colour"),
        ("thermostat1*firmwareVersion", {"value": "x"}, 404, "firmwareVersion"),
    ]:
        assert_error(central.patch(f"{base}/{name}", json=body), status, needle)
    assert_error(central.patch(f"/devices/{unique('nope')}/properties/x", json={"value": 1}), 404)

    # Untemplated: any name, any JSON value; the twin's rules still apply.
    free = unique("dev")
    make_device(central, free)
    ok = central.patch(f"/devices/{free}/properties/setpoint", json={"value": {"a": [1]}})
    assert ok.status_code == 200, ok.text
    assert central.get(f"/devices/{free}/properties/setpoint").json()["value"] == {"a": [1]}
    assert_error(central.get(f"/devices/{free}/properties/other"), 404, "other")
    for name in ("$bad", "$version", "$metadata"):
        assert_error(central.patch(f"/devices/{free}/properties/{name}", json={"value": 1}), 400)
    assert_error(central.patch(f"/devices/{free}/properties/big", json={"value": 2**70}), 400)
    huge = central.patch(f"/devices/{free}/properties/big", json={"value": "x" * 40_000})
    assert_error(huge, 413, "limit")
    for raw in (b'{"value": NaN}', b'{"value": [Infinity]}'):
        assert_error(
            central.patch(
                f"/devices/{free}/properties/setpoint",
                content=raw,
                headers={"Content-Type": "application/json"},
            ),
            400,
            "not a JSON number",
        )


# -- no 500s -----------------------------------------------------------------------------------


def test_bad_input_is_never_a_500(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("dev")
    make_device(central, device_id, template=template_id)
    nested = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 300 + b"1" + b"}" * 300
    bodies = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"x"',
        b"1e999",
        b"NaN",
        b"\xff\xfe",
        nested,
        deep_object,
        b'{"value": ' + b"9" * 5000 + b"}",
        b'{"a": "\\ud800"}',
    ]
    routes = [
        ("PUT", "/apiTokens/" + unique("tok")),
        ("PUT", "/devices/" + unique("dev")),
        ("PATCH", f"/devices/{device_id}"),
        ("POST", f"/devices/{device_id}/telemetry"),
        ("POST", f"/devices/{device_id}/commands/reboot"),
        ("PATCH", f"/devices/{device_id}/properties/targetTemperature"),
        ("PUT", "/deviceTemplates/" + unique("tpl")),
        ("PATCH", f"/deviceTemplates/{template_id}"),
    ]
    for method, path in routes:
        for body in bodies:
            response = central.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code < 500, (method, path, body[:40], response.text)
            if response.status_code >= 400:
                assert_error(response, response.status_code)


# -- a face on its own port ----------------------------------------------------------------------


def test_face_listen_serves_central_at_the_root(start_server: Callable[..., ServerProcess]) -> None:
    proc = start_server("--face-listen", "central=127.0.0.1:0")
    url = proc.addresses["faces"]["central"]["url"]
    headers = {"Authorization": proc.admin_token}  # the raw token, no scheme
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        app = client.get("/apps/app", params={"api-version": VERSION})
        assert app.status_code == 200, app.text
        for i in range(3):
            assert client.put(f"/devices/own-{i}", json={}).status_code == 200
        page = client.get("/devices", params={"$top": 2}).json()
        assert urlsplit(page["nextLink"]).path == "/devices"
        assert [d["id"] for d in client.get(page["nextLink"]).json()["devices"]] == ["own-2"]
        assert_error(client.get("/apps/app", params={"api-version": "x"}), 400)
        assert client.get("/docs").status_code == 200
        # Real IoT Central clients hard-code /api/...: the same face answers there too.
        native = client.get("/api/apps/app", params={"api-version": VERSION})
        assert native.status_code == 200, native.text
        assert native.json() == app.json()
        # ... and at the specification's base URL, /api/v1; a nextLink keeps the path it was
        # asked on.
        v1 = client.get("/api/v1/devices", params={"$top": 2, "api-version": VERSION})
        assert v1.status_code == 200, v1.text
        assert urlsplit(v1.json()["nextLink"]).path == "/api/v1/devices"
    assert proc.stop() == 0


def test_last_seen_survives_an_update_and_a_restart(
    start_server: Callable[..., ServerProcess], tmp_path: Any
) -> None:
    """The seed's `lastSeen`: a PATCH of the device after its telemetry must not write an
    older activity time back (it was lost at the next restart)."""
    data_dir = tmp_path / "seen"
    proc = start_server(data_dir=data_dir)

    def client(server: ServerProcess) -> httpx.Client:
        return httpx.Client(
            base_url=server.http_url + API,
            params={"api-version": VERSION},
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=30,
        )

    with client(proc) as central:
        make_device(central, "seen-1")
        assert central.post("/devices/seen-1/telemetry", json={"t": 1}).status_code == 204
        seen = central.get("/devices/seen-1").json()["lastSeen"]
        patched = central.patch("/devices/seen-1", json={"displayName": "Renamed"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["lastSeen"] == seen
    assert proc.stop() == 0
    again = start_server(data_dir=data_dir, admin_token=proc.admin_token)
    with client(again) as central:
        device = central.get("/devices/seen-1").json()
        assert device["displayName"] == "Renamed"
        assert device["lastSeen"] == seen
