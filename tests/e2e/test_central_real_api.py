"""The IoT Central face speaking the real Azure IoT Central REST API (2022-07-31) beside the
API document's sketch: `value`/`nextLink` paging with $maxpagesize and $orderby, OData string
functions in $filter, etag and If-Match on devices and templates, bodies as GET shows them
(read-only fields checked, unknown fields a 400 naming them), properties and last-value
telemetry routes, and the published request/response examples of the real API replayed.

Commands and properties with a real device: tests/e2e/test_central_real_device.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import (
    API,
    SEED_DEVICE_KEYS,
    TIME_RE,
    VERSION,
    assert_error,
    bare,
    central,
    make_device,
    make_gateway_module,
    property_values,
    template_body,
    template_id,
)

pytestmark = pytest.mark.e2e

__all__ = ["bare", "central", "template_id"]  # fixtures, shared with test_central_api.py


# -- lists: value, nextLink, $maxpagesize, $orderby, $filter functions ---------------------------


def _page_through(central: httpx.Client, bare: httpx.Client, **params: Any) -> list[str]:
    response = central.get("/devices", params=params)
    assert response.status_code == 200, response.text
    seen: list[str] = []
    while True:
        page = response.json()
        assert set(page) <= {"value", "devices", "nextLink"}
        assert page["value"] == page["devices"]
        seen += [d["id"] for d in page["value"]]
        if "nextLink" not in page:
            return seen
        link = urlsplit(page["nextLink"])
        assert link.path == f"{API}/devices"
        assert parse_qs(link.query)["api-version"] == [VERSION]
        response = bare.get(page["nextLink"])
        assert response.status_code == 200, response.text


def test_value_and_next_link_with_maxpagesize_and_orderby(
    central: httpx.Client, bare: httpx.Client, unique: Callable[[str], str]
) -> None:
    prefix = unique("real")
    names = ["Charlie", "alpha", "Bravo", "delta", "Echo"]
    for i, name in enumerate(names):
        make_device(central, f"{prefix}-{i}", displayName=name, simulated=i % 2 == 0)
    mine = f"startswith(id, '{prefix}')"

    # $maxpagesize pages as the real API does; every page is `value` (and `devices`).
    first = central.get("/devices", params={"$filter": mine, "$maxpagesize": 2}).json()
    assert len(first["value"]) == 2
    assert parse_qs(urlsplit(first["nextLink"]).query)["$maxpagesize"] == ["2"]
    by_id = _page_through(central, bare, **{"$filter": mine, "$maxpagesize": 2})
    assert by_id == [f"{prefix}-{i}" for i in range(5)]
    # With both, the smaller page size wins.
    both = central.get("/devices", params={"$filter": mine, "$maxpagesize": 4, "$top": 3})
    assert len(both.json()["value"]) == 3

    # $orderby: one key or several, asc (default) or desc, paged through nextLink.
    ordered = _page_through(
        central, bare, **{"$filter": mine, "$orderby": "displayName desc", "$maxpagesize": 2}
    )
    expected = sorted(range(5), key=lambda i: names[i], reverse=True)
    assert ordered == [f"{prefix}-{i}" for i in expected]
    two_keys = _page_through(
        central, bare, **{"$filter": mine, "$orderby": "simulated desc, id asc"}
    )
    assert two_keys == [f"{prefix}-{i}" for i in (0, 2, 4, 1, 3)]

    # OData's string functions.
    def ids(flt: str) -> list[str]:
        response = central.get("/devices", params={"$filter": f"{mine} and ({flt})"})
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["value"]]

    assert ids("tolower(displayName) eq 'bravo'") == [f"{prefix}-2"]
    assert ids("toupper(displayName) eq 'ALPHA'") == [f"{prefix}-1"]
    assert ids("contains(tolower(displayName), 'e')") == [
        f"{prefix}-0",
        f"{prefix}-3",
        f"{prefix}-4",
    ]
    assert ids("length(displayName) eq 5") == [f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    assert ids("indexof(displayName, 'ho') eq 2") == [f"{prefix}-4"]
    assert ids("substring(displayName, 1, 2) eq 'ch'") == [f"{prefix}-4"]
    assert ids("concat(displayName, '!') eq 'delta!'") == [f"{prefix}-3"]
    assert ids("trim(displayName) eq displayName and endswith(displayName, 'a')") == [
        f"{prefix}-1",
        f"{prefix}-3",
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"$orderby": "colour"}, "$orderby"),
        ({"$orderby": "id sideways"}, "$orderby"),
        ({"$orderby": ""}, "$orderby"),
        ({"$maxpagesize": "0"}, "$maxpagesize"),
        ({"$maxpagesize": "100000"}, "$maxpagesize"),
        ({"$skiptoken": "~x"}, "$skiptoken"),
        ({"$filter": "length(id)"}, "$filter"),
        ({"$filter": "tolower(enabled) eq 'x'"}, "$filter"),
        ({"$filter": "nosuch(id) eq 'x'"}, "$filter"),
    ],
)
def test_bad_list_parameters_are_400(
    central: httpx.Client, params: dict[str, str], field: str
) -> None:
    assert_error(central.get("/devices", params=params), 400, field)


# -- etag and If-Match -------------------------------------------------------------------------


def test_device_etags_and_if_match(central: httpx.Client, unique: Callable[[str], str]) -> None:
    device_id = unique("etag")
    created = central.put(f"/devices/{device_id}", json={"displayName": "one"})
    assert created.status_code == 200, created.text
    etag = created.json()["etag"]
    assert isinstance(etag, str) and etag
    assert created.headers["ETag"] == f'"{etag}"'
    got = central.get(f"/devices/{device_id}")
    assert got.json()["etag"] == etag
    assert got.headers["ETag"] == f'"{etag}"'

    # A stale If-Match is 412 and changes nothing; the current one (quoted or not) applies.
    stale = central.patch(
        f"/devices/{device_id}", json={"displayName": "two"}, headers={"If-Match": '"nope"'}
    )
    assert_error(stale, 412, "If-Match")
    assert stale.json()["error"]["code"] == "PreconditionFailed"
    assert central.get(f"/devices/{device_id}").json()["displayName"] == "one"
    ok = central.patch(
        f"/devices/{device_id}", json={"displayName": "two"}, headers={"If-Match": f'"{etag}"'}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["displayName"] == "two"
    new_etag = ok.json()["etag"]
    assert new_etag != etag
    # The old etag is stale now; * is whatever is there.
    assert_error(
        central.patch(f"/devices/{device_id}", json={"enabled": False}, headers={"If-Match": etag}),
        412,
    )
    star = central.patch(
        f"/devices/{device_id}", json={"enabled": False}, headers={"If-Match": "*"}
    )
    assert star.status_code == 200, star.text

    # A GET answer sent back: its etag is the condition, its read-only fields must match.
    current = central.get(f"/devices/{device_id}").json()
    back = central.patch(f"/devices/{device_id}", json={**current, "displayName": "three"})
    assert back.status_code == 200, back.text
    assert back.json()["displayName"] == "three"
    assert_error(central.patch(f"/devices/{device_id}", json={**current, "displayName": "x"}), 412)
    fresh = back.json()
    assert_error(
        central.patch(f"/devices/{device_id}", json={**fresh, "provisioned": True}),
        400,
        "provisioned is read-only",
    )
    assert_error(
        central.patch(f"/devices/{device_id}", json={**fresh, "id": "other"}),
        400,
        "id is read-only",
    )

    # PUT only creates: a condition on it can match nothing (and creates nothing).
    fresh_id = unique("etag")
    assert_error(central.put(f"/devices/{fresh_id}", json={"etag": etag}), 412, "If-Match")
    assert_error(central.put(f"/devices/{fresh_id}", json={}, headers={"If-Match": "*"}), 412)
    assert central.get(f"/devices/{fresh_id}").status_code == 404

    # Delete honours If-Match too.
    assert_error(central.delete(f"/devices/{device_id}", headers={"If-Match": etag}), 412)
    assert central.get(f"/devices/{device_id}").status_code == 200
    gone = central.delete(f"/devices/{device_id}", headers={"If-Match": fresh["etag"]})
    assert gone.status_code == 204


def test_template_etags_and_if_match(central: httpx.Client, unique: Callable[[str], str]) -> None:
    tid = f"dtmi:thinghub:etag:{unique('t').replace('-', '_')};1"
    put = central.put(f"/deviceTemplates/{tid}", json=template_body(tid))
    assert put.status_code == 200, put.text
    etag = put.json()["etag"]
    assert put.headers["ETag"] == f'"{etag}"'
    assert central.get(f"/deviceTemplates/{tid}").json()["etag"] == etag
    listed = central.get("/deviceTemplates").json()["value"]
    assert any(t["@id"] == tid and t["etag"] == etag for t in listed)

    stale = central.patch(
        f"/deviceTemplates/{tid}", json={"displayName": "x"}, headers={"If-Match": "old"}
    )
    assert_error(stale, 412, "If-Match")
    renamed = central.patch(
        f"/deviceTemplates/{tid}", json={"displayName": "Renamed"}, headers={"If-Match": etag}
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["etag"] != etag
    # The GET shape PUT back (etag inside) replaces it when the etag is current, else 412.
    document = central.get(f"/deviceTemplates/{tid}").json()
    again = central.put(f"/deviceTemplates/{tid}", json={**document, "displayName": "Again"})
    assert again.status_code == 200, again.text
    assert "etag" in again.json()
    assert again.json()["displayName"] == "Again"
    assert_error(central.put(f"/deviceTemplates/{tid}", json=document), 412)
    assert_error(central.delete(f"/deviceTemplates/{tid}", headers={"If-Match": etag}), 412)
    deleted = central.delete(f"/deviceTemplates/{tid}", headers={"If-Match": again.json()["etag"]})
    assert deleted.status_code == 204


def test_template_list_filters_orders_and_pages(
    central: httpx.Client, bare: httpx.Client, unique: Callable[[str], str]
) -> None:
    """DeviceTemplates_List takes basic OData ($top, $filter, $orderby) and pages with
    nextLink, as the device list does; the parameters were ignored (every template, one
    page)."""
    tag = unique("tl").replace("-", "_")
    ids = []
    for name in ("Charlie", "alpha", "Bravo"):
        tid = f"dtmi:thinghub:{tag}:{name.lower()};1"
        body = {**template_body(tid), "displayName": f"{tag} {name}"}
        assert central.put(f"/deviceTemplates/{tid}", json=body).status_code == 200
        ids.append(tid)
    mine = f"contains(displayName, '{tag}')"

    def names(**params: Any) -> list[str]:
        response = central.get("/deviceTemplates", params=params)
        assert response.status_code == 200, response.text
        return [t["displayName"].removeprefix(f"{tag} ") for t in response.json()["value"]]

    assert names(**{"$filter": mine}) == ["alpha", "Bravo", "Charlie"]  # by @id
    assert names(**{"$filter": f"{mine} and startswith(displayName, '{tag} C')"}) == ["Charlie"]
    assert names(**{"$filter": f"@id eq '{ids[0]}'"}) == ["Charlie"]
    assert names(**{"$filter": mine, "$orderby": "displayName desc"}) == [
        "alpha",
        "Charlie",
        "Bravo",
    ]
    first = central.get("/deviceTemplates", params={"$filter": mine, "$maxpagesize": 2})
    assert first.status_code == 200, first.text
    assert len(first.json()["value"]) == 2
    link = first.json()["nextLink"]
    assert urlsplit(link).path == f"{API}/deviceTemplates"
    rest = bare.get(link)
    assert rest.status_code == 200, rest.text
    assert [t["@id"] for t in first.json()["value"] + rest.json()["value"]] == sorted(ids)
    assert "nextLink" not in rest.json()
    assert names(**{"$filter": mine, "$top": 1}) == ["alpha"]
    for params, needle in (
        ({"$filter": "nope eq 'x'"}, "$filter"),
        ({"$filter": "displayName eq"}, "$filter"),
        ({"$orderby": "color"}, "$orderby"),
        ({"$top": 0}, "$top"),
        ({"$skiptoken": "x"}, "$skiptoken"),
    ):
        assert_error(central.get("/deviceTemplates", params=params), 400, needle)


def test_unknown_device_fields_are_400_naming_them(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    device_id = unique("strict")
    for body, field in [
        ({"displayName": "x", "colour": "red"}, "colour"),
        ({"organizations": ["seattle"]}, "organizations"),
        ({"provisioned": True}, "provisioned"),
        ({"lastSeen": "2023-01-01T00:00:00Z"}, "lastSeen"),
        ({"id": "another-id"}, "id"),
    ]:
        assert_error(central.put(f"/devices/{device_id}", json=body), 400, field)
    assert central.get(f"/devices/{device_id}").status_code == 404  # nothing was made
    made = make_device(central, device_id, id=device_id, provisioned=False)
    assert set(made) == SEED_DEVICE_KEYS | {"etag"}
    assert_error(central.patch(f"/devices/{device_id}", json={"colour": "red"}), 400, "colour")


# -- properties and telemetry without a device connection -----------------------------------


def test_properties_routes_check_their_input(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("props")
    make_device(central, device_id, template=template_id)
    base = f"/devices/{device_id}/properties"
    assert central.get(base).json() == {}
    written = central.patch(
        base, json={"targetTemperature": 21, "thermostat1": {"targetTemperature": 18}}
    )
    assert written.status_code == 202, written.text
    assert written.json() == {
        "$metadata": {"targetTemperature": {"desiredValue": 21}},
        "thermostat1": {"$metadata": {"targetTemperature": {"desiredValue": 18}}},
    }
    shown = central.get(base).json()
    assert property_values(shown) == {
        "targetTemperature": 21,
        "thermostat1": {"targetTemperature": 18},
    }
    # The real API's $metadata beside the values, at each level: when each value arrived.
    assert set(shown["$metadata"]) == {"targetTemperature"}
    assert TIME_RE.fullmatch(shown["$metadata"]["targetTemperature"]["lastUpdateTime"])
    assert set(shown["thermostat1"]["$metadata"]) == {"targetTemperature"}
    component = central.get(f"/devices/{device_id}/components/thermostat1/properties").json()
    assert component == shown["thermostat1"]
    # What GET shows may be written back as it is: $metadata is bookkeeping, not a property.
    again = central.put(base, json=shown)
    assert again.status_code == 202, again.text
    assert again.json() == written.json()
    # Anything else under that name is no property of the template.
    assert_error(central.patch(base, json={"thermostat1": {"$metadata": 1}}), 404, "$metadata")
    # PUT behaves as PATCH (a property cannot be unset); the one-property route agrees.
    put = central.put(
        f"/devices/{device_id}/components/thermostat1/properties", json={"targetTemperature": 17}
    )
    assert put.status_code == 202, put.text
    assert put.json() == {"$metadata": {"targetTemperature": {"desiredValue": 17}}}
    assert central.get(f"{base}/thermostat1*targetTemperature").json()["value"] == 17

    for body, status, needle in [
        ({"nope": 1}, 404, "nope"),
        ({"targetTemperature": "hot"}, 400, "targetTemperature"),
        ({"targetTemperature": None}, 400, "targetTemperature"),
        ({}, 400, "body"),
        ([1], 400, "body"),
        ({"thermostat1": {"nope": 1}}, 404, "nope"),
    ]:
        assert_error(central.patch(base, json=body), status, needle)
    # Nothing of a refused write was applied.
    assert central.get(f"{base}/targetTemperature").json()["value"] == 21
    assert_error(central.get(f"/devices/{unique('nope')}/properties"), 404)


def test_last_value_telemetry(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    device_id = unique("tele")
    make_device(central, device_id, template=template_id)
    url = f"/devices/{device_id}/telemetry"
    assert_error(central.get(f"{url}/temperature"), 404, "temperature")
    for body in (
        {"temperature": 20.5, "timestamp": "2023-10-26T15:05:10Z"},
        {"humidity": 40, "timestamp": "2023-10-26T15:05:20Z"},
        {"status": "ok", "timestamp": "2023-10-26T15:05:30Z"},
    ):
        assert central.post(url, json=body).status_code == 204
    last = central.get(f"{url}/temperature")
    assert last.status_code == 200, last.text
    assert last.json() == {"value": 20.5, "timestamp": "2023-10-26T15:05:10Z"}
    assert central.get(f"{url}/status").json()["value"] == "ok"
    assert central.post(url, json={"temperature": 22.0}).status_code == 204
    newest = central.get(f"{url}/temperature").json()
    assert newest["value"] == 22.0
    assert TIME_RE.fullmatch(newest["timestamp"])
    assert_error(central.get(f"/devices/{unique('nope')}/telemetry/temperature"), 404)


def test_components_are_listed(
    central: httpx.Client, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """Devices_ListComponents: `{value: [...]}` of the model's components as declared (the
    first call of the real API's how-to on controlling devices), without their schemas."""
    tid = f"dtmi:contoso:{unique('ctl').replace('-', '_')};1"
    body = template_body(tid)
    contents = body["capabilityModel"]["contents"]
    contents[-1] |= {"displayName": "Thermostat One", "description": "Thermostat One of Two."}
    contents.append(
        {
            "@type": "Component",
            "name": "deviceInformation",
            "schema": "dtmi:azure:DeviceManagement:DeviceInformation;1",
        }
    )
    assert central.put(f"/deviceTemplates/{tid}", json=body).status_code == 200
    device_id = unique("ctl")
    make_device(central, device_id, template=tid)
    listed = central.get(f"/devices/{device_id}/components")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "value": [
            {
                "@type": "Component",
                "name": "thermostat1",
                "displayName": "Thermostat One",
                "description": "Thermostat One of Two.",
            },
            {"@type": "Component", "name": "deviceInformation"},
        ]
    }
    # Through the specification's /v1 base too; a device without a model has none.
    assert central.get(f"/v1/devices/{device_id}/components").json() == listed.json()
    bare_id = unique("plain")
    make_device(central, bare_id)
    assert central.get(f"/devices/{bare_id}/components").json() == {"value": []}
    assert_error(central.get(f"/devices/{unique('nope')}/components"), 404)

    # A gateway's module: its model's components (none here), 404 for an unknown module.
    gateway_id, module = make_gateway_module(admin, unique, "cam")
    module_id = module["moduleId"]
    # Devices_ListModules: the real API's `name` (and `@type`) besides `id`.
    modules = central.get(f"/devices/{gateway_id}/modules").json()["value"]
    assert [(m["name"], m["id"], m["@type"]) for m in modules] == [
        (module_id, module_id, ["Relationship", "EdgeModule"])
    ]
    module = central.get(f"/devices/{gateway_id}/modules/{module_id}/components")
    assert module.status_code == 200, module.text
    assert module.json() == {"value": []}
    assert_error(central.get(f"/devices/{gateway_id}/modules/nope/components"), 404, "nope")


# -- the real API's published examples, replayed --------------------------------------------------


def test_published_examples_of_the_real_api(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    """Request bodies of the real API's examples (2022-07-31), as published, and the answers
    this server gives to them, compared with the published answers where it can give them."""
    tid = f"dtmi:contoso:{unique('ex').replace('-', '_')};1"
    template = {
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Example",
        "capabilityModel": {
            "@id": f"{tid}:cm",
            "@type": "Interface",
            "contents": [
                {
                    "@type": "Component",
                    "name": "settings",
                    "schema": {
                        "@id": f"{tid}:settings",
                        "@type": "Interface",
                        "contents": [
                            {"@type": "Property", "name": n, "schema": s, "writable": True}
                            for n, s in (
                                ("fanSpeed", "double"),
                                ("voltage", "double"),
                                ("current", "double"),
                                ("irSwitch", "boolean"),
                            )
                        ],
                    },
                },
                {
                    "@type": "Component",
                    "name": "Thermostat_1o",
                    "schema": {
                        "@id": f"{tid}:thermostat",
                        "@type": "Interface",
                        "contents": [
                            {
                                "@type": "Command",
                                "name": "CoolDown",
                                "request": {
                                    "name": "tempVal",
                                    "schema": {
                                        "@type": "Object",
                                        "fields": [{"name": "tempVal", "schema": "double"}],
                                    },
                                },
                            }
                        ],
                    },
                },
            ],
        },
    }
    assert central.put(f"/deviceTemplates/{tid}", json=template).status_code == 200

    # Devices_Create: its body names an organization, which this server has not: a 400 naming
    # it, not a device silently made without one.
    device_id = unique("ccc")
    example = {
        "displayName": "CheckoutThermostatccc",
        "template": tid,
        "simulated": True,
        "enabled": True,
        "organizations": ["seattle"],
    }
    assert_error(central.put(f"/devices/{device_id}", json=example), 400, "organizations")
    example.pop("organizations")
    created = central.put(f"/devices/{device_id}", json=example)
    assert created.status_code == 200, created.text
    published = {  # the published answer, but its etag and organizations
        "id": device_id,
        "displayName": "CheckoutThermostatccc",
        "template": tid,
        "simulated": True,
        "provisioned": False,
        "enabled": True,
    }
    assert {k: v for k, v in created.json().items() if k != "etag"} == published

    # Devices_UpdateProperties: the published answer, exactly.
    update = central.patch(
        f"/devices/{device_id}/properties", json={"settings": {"voltage": 25, "current": 7}}
    )
    assert update.status_code == 202, update.text
    assert update.json() == {
        "settings": {"$metadata": {"voltage": {"desiredValue": 25}, "current": {"desiredValue": 7}}}
    }
    # Devices_UpdateComponentProperties: the published answer, exactly.
    component = central.patch(
        f"/devices/{device_id}/components/settings/properties",
        json={"fanSpeed": 35, "voltage": 5, "current": 2, "irSwitch": True},
    )
    assert component.status_code == 202, component.text
    assert component.json() == {
        "$metadata": {
            "fanSpeed": {"desiredValue": 35},
            "voltage": {"desiredValue": 5},
            "current": {"desiredValue": 2},
            "irSwitch": {"desiredValue": True},
        }
    }
    # Devices_ExecuteComponentCommand, its body as published; the device is offline and the
    # default connectionTimeout is 0, so it ends at once, in the real API's shape.
    command = central.post(
        f"/devices/{device_id}/components/Thermostat_1o/commands/CoolDown",
        json={"request": {"tempVal": 30}},
    )
    assert command.status_code == 201, command.text
    answer = command.json()
    assert answer["request"] == {"tempVal": 30}
    assert answer["responseCode"] == 404
    assert answer["id"] == answer["commandId"]
    # The timeouts it applied, as the real API's DeviceCommand shows them (defaults 0 and 30).
    assert (answer["connectionTimeout"], answer["responseTimeout"]) == (0, 30)
    # Devices_GetComponentCommandHistory: {value: [...]} with what was sent.
    history = central.get(f"/devices/{device_id}/components/Thermostat_1o/commands/CoolDown")
    assert history.status_code == 200, history.text
    assert [c["id"] for c in history.json()["value"]] == [answer["id"]]


# -- roles and users ---------------------------------------------------------------------------


def test_roles_and_users(
    central: httpx.Client,
    admin: httpx.Client,
    server: ServerProcess,
    unique: Callable[[str], str],
) -> None:
    roles = central.get("/roles")
    assert roles.status_code == 200, roles.text
    assert {r["displayName"]: r["id"] for r in roles.json()["value"]} == {
        "App Administrator": "ca310b8d-2f4a-44e0-a36e-957c202cd8d4",
        "App Builder": "344138e9-8de4-4497-8c54-5237e96d6aaf",
        "App Operator": "ae2c9854-393b-4f97-8c42-479d70ce626e",
    }
    one = central.get("/roles/ae2c9854-393b-4f97-8c42-479d70ce626e")
    assert one.json() == {
        "id": "ae2c9854-393b-4f97-8c42-479d70ce626e",
        "displayName": "App Operator",
    }
    assert_error(central.get("/roles/nope"), 404, "nope")

    operator, viewer = unique("op"), unique("view")
    for name, role in ((operator, "operator"), (viewer, "viewer")):
        made = admin.post(
            "/v1/users", json={"username": name, "password": "s3cret-pass", "role": role}
        )
        assert made.status_code == 201, made.text
    users = {u["email"]: u for u in central.get("/users").json()["value"]}
    assert users[operator]["roles"] == [{"role": "ae2c9854-393b-4f97-8c42-479d70ce626e"}]
    assert users[operator]["type"] == "email"
    assert users[viewer]["roles"] == []  # IoT Central has no read-only built-in role
    got = central.get(f"/users/{users[operator]['id']}")
    assert got.json() == users[operator]
    assert_error(central.get("/users/nope"), 404)
    # Seeing users is an administrator's: an App Operator token is refused.
    token = central.put(f"/apiTokens/{unique('tok')}", json={"roles": [{"role": "operator"}]})
    assert token.status_code == 200, token.text
    with httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": token.json()["token"]},
    ) as as_operator:
        assert_error(as_operator.get("/users"), 403, "App Operator")
        assert as_operator.get("/roles").status_code == 200


# -- POST /query -------------------------------------------------------------------------------


def test_query_over_telemetry(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    now = time.time()

    def at(seconds_ago: float) -> str:
        stamp = datetime.fromtimestamp(now - seconds_ago, tz=UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    first, second = unique("q"), unique("q")
    for device_id in (first, second):
        make_device(central, device_id, template=template_id)
    for device_id, ago, temperature in [
        (first, 3 * 86_400, 10.0),  # outside a one-day window
        (first, 600, 20.0),
        (first, 300, 22.0),
        (second, 200, 30.0),
    ]:
        sent = central.post(
            f"/devices/{device_id}/telemetry",
            json={"temperature": temperature, "timestamp": at(ago)},
        )
        assert sent.status_code == 204, sent.text
    mine = f"($id = '{first}' OR $id = '{second}')"

    def query(text: str) -> list[dict[str, Any]]:
        response = central.post("/query", json={"query": text})
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"results"}
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    rows = query(
        f"SELECT $id, $ts, temperature FROM {template_id} "
        f"WHERE WITHIN_WINDOW(P1D) AND {mine} ORDER BY $ts DESC"
    )
    assert [(r["$id"], r["temperature"]) for r in rows] == [
        (second, 30.0),
        (first, 22.0),
        (first, 20.0),
    ]
    assert all(TIME_RE.fullmatch(r["$ts"]) for r in rows)
    top = query(
        f"SELECT TOP 1 $id, temperature FROM {template_id} WHERE {mine} ORDER BY temperature"
    )
    assert top == [{"$id": first, "temperature": 10.0}]
    per_device = query(
        f"SELECT $id, AVG(temperature) AS mean, COUNT(temperature) FROM {template_id} "
        f"WHERE WITHIN_WINDOW(P1D) AND {mine} GROUP BY $id ORDER BY $id"
    )
    assert sorted((r["$id"], r["mean"], r["count_temperature"]) for r in per_device) == sorted(
        [(first, 21.0, 2), (second, 30.0, 1)]
    )
    windows = query(
        f"SELECT $ts, MAX(temperature) FROM {template_id} "
        f"WHERE WITHIN_WINDOW(P7D) AND {mine} GROUP BY WINDOW(P10D)"
    )
    assert sum(1 for _ in windows) >= 1
    assert max(w["max_temperature"] for w in windows) == 30.0

    for body, status, needle in [
        ({"query": "SELECT temperature FROM dtmi:nope:none;1"}, 404, "dtmi:nope:none;1"),
        ({"query": f"SELECT temperature FROM {template_id} WHERE"}, 400, "query"),
        ({"query": f"SELECT temperature, AVG(humidity) FROM {template_id}"}, 400, "aggregated"),
        ({"query": 5}, 400, "query"),
        ({"query": "x", "top": 3}, 400, "top"),
    ]:
        assert_error(central.post("/query", json=body), status, needle)


def test_published_template_example_and_geopoint(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    """DeviceTemplates_Create's published body (2022-10-31-preview) is taken: it has IoT
    Central's `geopoint` schema (a command's response), an `extends`, an Edge module
    relationship and a cloud property; it was a 400 ("unknown schema 'geopoint'"). A geopoint
    value is {lat, lon, alt?}."""
    tid = f"dtmi:contoso:{unique('tdt').replace('-', '_')};1"
    body = {
        "@type": ["ModelDefinition", "DeviceModel", "EdgeModel"],
        "displayName": "Test Definition",
        "capabilityModel": {
            "@id": "dtmi:contoso:testCapabilityModel;1",
            "@type": "Interface",
            "displayName": "Test Capability Model",
            "extends": [
                {
                    "@id": "dtmi:contoso:testInterface;1",
                    "@type": "Interface",
                    "displayName": "Test Interface",
                    "contents": [
                        {
                            "@type": "Telemetry",
                            "displayName": "Test Telemetry",
                            "name": "testTelemetry",
                            "schema": "double",
                        },
                        {
                            "@type": ["Telemetry", "Event", "EventValue"],
                            "displayName": "Test Event",
                            "name": "testEvent",
                            "schema": "integer",
                            "severity": "warning",
                        },
                        {
                            "@type": ["Property", "Initialized"],
                            "displayName": "Test Property",
                            "name": "testProperty",
                            "schema": "string",
                            "writable": True,
                            "initialValue": "initialValue1",
                        },
                        {
                            "@type": "Command",
                            "commandType": "synchronous",
                            "displayName": "Test Command",
                            "name": "testCommand",
                            "request": {
                                "displayName": "Test Request",
                                "name": "testRequest",
                                "schema": "double",
                            },
                            "response": {
                                "displayName": "Test Response",
                                "name": "testResponse",
                                "schema": "geopoint",
                            },
                        },
                    ],
                }
            ],
            "contents": [
                {
                    "@type": ["Relationship", "EdgeModule"],
                    "displayName": "Test Module",
                    "maxMultiplicity": 1,
                    "name": "testModule",
                    "target": [
                        {
                            "@id": "dtmi:contoso:testModuleCapabilityModel;1",
                            "@type": "Interface",
                            "displayName": "Test Module Capability Model",
                            "contents": [],
                        }
                    ],
                },
                {
                    "@type": ["Cloud", "Property"],
                    "displayName": "Test Cloud Property",
                    "name": "testCloudProperty",
                    "schema": "dateTime",
                },
                {"@type": "Telemetry", "name": "location", "schema": "geopoint"},
            ],
        },
    }
    created = central.put(f"/deviceTemplates/{tid}", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["capabilityModel"] == body["capabilityModel"]
    device_id = unique("geo")
    make_device(central, device_id, template=tid)
    url = f"/devices/{device_id}/telemetry"
    where = {"lat": 47.64263, "lon": -122.13035, "alt": 0}
    assert central.post(url, json={"location": where, "testTelemetry": 1.5}).status_code == 204
    assert central.get(f"{url}/location").json()["value"] == where
    for bad in ({"lat": 47.6}, {"lat": 91, "lon": 0}, {"type": "Point", "coordinates": [1, 2]}):
        assert_error(central.post(url, json={"location": bad}), 400, "location")


def test_cloud_properties_are_set_with_the_property_routes(
    central: httpx.Client, unique: Callable[[str], str]
) -> None:
    """A template's `["Cloud", "Property"]` is set with the same routes as a writable
    property (the whole-device PATCH, and the specification's one-property PATCH), kept with
    the device and shown by GET; it was a 400 ("not writable")."""
    tid = f"dtmi:contoso:{unique('cp').replace('-', '_')};1"
    body = template_body(tid)
    body["capabilityModel"]["contents"].append(
        {"@type": ["Cloud", "Property"], "name": "customerName", "schema": "string"}
    )
    assert central.put(f"/deviceTemplates/{tid}", json=body).status_code == 200
    device_id = unique("cp")
    make_device(central, device_id, template=tid)
    base = f"/devices/{device_id}/properties"
    assert_error(central.get(f"{base}/customerName"), 404, "customerName")

    both = central.patch(base, json={"customerName": "Contoso", "targetTemperature": 21.5})
    assert both.status_code == 202, both.text
    assert both.json() == {
        "$metadata": {
            "targetTemperature": {"desiredValue": 21.5},
            "customerName": {"desiredValue": "Contoso"},
        }
    }
    shown = central.get(base).json()
    assert shown["customerName"] == "Contoso"
    assert shown["targetTemperature"] == 21.5

    one = central.patch(f"{base}/customerName", json={"value": "Fabrikam"})
    assert one.status_code == 200, one.text
    assert one.json()["value"] == "Fabrikam"
    assert TIME_RE.fullmatch(one.json()["lastReportedTime"])
    assert central.get(f"{base}/customerName").json() == one.json()
    assert central.get(base).json()["customerName"] == "Fabrikam"

    # Checked against the template, and nothing of a refused write is applied.
    assert_error(central.patch(base, json={"customerName": 5}), 400, "customerName")
    assert_error(central.patch(f"{base}/customerName", json={"value": None}), 400)
    refused = central.patch(base, json={"customerName": "X", "targetTemperature": "hot"})
    assert_error(refused, 400, "targetTemperature")
    assert central.get(base).json()["customerName"] == "Fabrikam"


def test_preview_query_options_without_dollar(
    central: httpx.Client, bare: httpx.Client, unique: Callable[[str], str]
) -> None:
    """2022-10-31-preview names the options `filter`, `orderby` and `maxpagesize` (no `$`), as
    its how-tos write them: they are applied like the `$` names (they were silently ignored:
    every device, one page)."""
    tag = unique("pv").replace("-", "_")
    for name in ("b", "a", "c"):
        make_device(central, f"{tag}-{name}", displayName=f"{tag} {name}")
    params = {
        "api-version": "2022-10-31-preview",
        "filter": f"startswith(displayName, '{tag}')",
        "orderby": "displayName desc",
        "maxpagesize": 2,
    }
    first = bare.get(f"{API}/devices", params=params)
    assert first.status_code == 200, first.text
    assert [d["id"] for d in first.json()["value"]] == [f"{tag}-c", f"{tag}-b"]
    rest = bare.get(first.json()["nextLink"])
    assert rest.status_code == 200, rest.text
    assert [d["id"] for d in rest.json()["value"]] == [f"{tag}-a"]
    assert "nextLink" not in rest.json()
    # The `$` name wins when both are sent; a malformed plain filter is the same 400.
    both = bare.get(
        f"{API}/devices",
        params={**params, "$filter": f"id eq '{tag}-a'", "maxpagesize": 5},
    )
    assert [d["id"] for d in both.json()["value"]] == [f"{tag}-a"]
    assert_error(bare.get(f"{API}/devices", params={**params, "filter": "nope eq"}), 400)
    templates = bare.get(
        f"{API}/deviceTemplates",
        params={"api-version": "2022-10-31-preview", "filter": f"@id eq 'dtmi:no:{tag};1'"},
    )
    assert templates.json() == {"value": []}
