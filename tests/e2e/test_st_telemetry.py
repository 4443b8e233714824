"""Telemetry through the IoT Hub-compatible device HTTPS endpoint, read back at /v1/telemetries."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    TS_RE,
    assert_error,
    assert_hub_unauthorized,
    client,
    create_device,
    device_resource,
    device_sas,
    post_telemetry,
    sas_token,
)
from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    """conftest's admin api, made once per module (see helpers_st.api)."""
    with client(server) as api:
        yield api


def _parse(ts: str) -> datetime:
    """An ST API timestamp (7 fraction digits) as a datetime, to microseconds."""
    assert TS_RE.fullmatch(ts), ts
    return datetime.strptime(ts[:26] + "+0000", "%Y-%m-%dT%H:%M:%S.%f%z")


def _between(newer: str, older: str) -> str:
    """An ISO time strictly between two telemetry timestamps."""
    a, b = _parse(older), _parse(newer)
    assert a < b
    return (a + (b - a) / 2).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _send(server: ServerProcess, device: dict[str, Any], bodies: list[Any]) -> None:
    sas = device_sas(device)
    for body in bodies:
        response = post_telemetry(server.http_url, device["id"], body, sas)
        assert response.status_code == 204, response.text


def test_device_sends_telemetry_with_a_sdk_style_sas(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("example_project"), unique("example_deployment")
    device = create_device(admin, "example smart thermostat", project, deployment)
    sas = device_sas(device)
    for temperature in (16, 13, 35):
        response = post_telemetry(
            server.http_url,
            device["id"],
            {"temperature": temperature},
            sas,
            headers={
                "iothub-app-unit": "celsius",
                "iothub-messageid": os.urandom(4).hex(),
                "iothub-contenttype": "application/json",
                "iothub-contentencoding": "utf-8",
            },
        )
        assert response.status_code == 204, response.text
        assert response.content == b""

    response = admin.get(
        "/v1/telemetries", params={"projectID": project, "deploymentID": deployment}
    )
    assert response.status_code == 200, response.text
    items = response.json()
    assert [set(t) for t in items] == [{"deviceID", "timestamp", "body"}] * 3
    assert [t["body"] for t in items] == [
        {"temperature": 35},
        {"temperature": 13},
        {"temperature": 16},
    ]
    assert {t["deviceID"] for t in items} == {device["id"]}
    stamps = [_parse(t["timestamp"]) for t in items]
    assert stamps == sorted(stamps, reverse=True)
    assert abs(stamps[0].timestamp() - time.time()) < 300
    assert "x-continuation-token" not in response.headers

    # The device's activity shows up on the device.
    seen = admin.get(f"/v1/devices/{device['id']}").json()["lastActivityTime"]
    assert seen is not None
    assert TS_RE.fullmatch(seen)

    assert (
        admin.get(
            "/v1/telemetries", params={"projectID": project, "deploymentID": unique("other")}
        ).json()
        == []
    )


def test_secondary_key_and_expiry(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project = unique("p")
    device = create_device(admin, "d", project, "dep")
    secondary = device_sas(device, key="secondaryKey")
    assert (
        post_telemetry(server.http_url, device["id"], {"k": "secondary"}, secondary).status_code
        == 204
    )
    expired = device_sas(device, expiry=int(time.time()) - 60)
    assert_hub_unauthorized(post_telemetry(server.http_url, device["id"], {"k": "x"}, expired))
    bodies = [t["body"] for t in admin.get("/v1/telemetries", params={"projectID": project}).json()]
    assert bodies == [{"k": "secondary"}]


def test_bad_device_credentials_are_refused(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project = unique("p")
    device = create_device(admin, "a", project, "dep")
    other = create_device(admin, "b", project, "dep")
    did = device["id"]
    wrong_key = base64.b64encode(os.urandom(64)).decode()
    good = device_sas(device)
    refused = {
        "wrong key": sas_token(wrong_key, device_resource(did)),
        "other device's token": device_sas(other),
        "other device's key, this resource": sas_token(
            other["credentials"]["symmetricKey"]["primaryKey"], device_resource(did)
        ),
        "tampered expiry": good.replace("&se=", "&se=1"),
        "no prefix": good.removeprefix("SharedAccessSignature "),
        "bearer scheme": "Bearer " + good,
        "garbage": "SharedAccessSignature garbage",
        "missing sig": f"SharedAccessSignature sr=localhost%2Fdevices%2F{did}&se=9999999999",
        "unknown field": good + "&xx=1",
        "empty": "",
    }
    for label, auth in refused.items():
        response = post_telemetry(server.http_url, did, {"label": label}, auth)
        assert response.status_code == 401, (label, response.text)
        assert_hub_unauthorized(response)
    assert_hub_unauthorized(post_telemetry(server.http_url, did, {"label": "none"}, None))
    # A valid token on a device that does not exist.
    assert_hub_unauthorized(
        post_telemetry(
            server.http_url,
            "no-such-device",
            {"x": 1},
            sas_token(wrong_key, device_resource("no-such-device")),
        )
    )
    # Nothing was stored; the right token still works.
    assert admin.get("/v1/telemetries", params={"projectID": project}).json() == []
    assert post_telemetry(server.http_url, did, {"ok": True}, good).status_code == 204
    assert [
        t["body"] for t in admin.get("/v1/telemetries", params={"projectID": project}).json()
    ] == [{"ok": True}]


def test_filters_by_device_and_time(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("p"), unique("d")
    a = create_device(admin, "a", project, deployment)
    b = create_device(admin, "b", project, deployment)
    _send(server, a, [{"n": 1}, {"n": 2}])
    _send(server, b, [{"n": 3}])
    _send(server, a, [{"n": 4}])
    scope = {"projectID": project, "deploymentID": deployment}

    everything = admin.get("/v1/telemetries", params=scope).json()
    assert [t["body"]["n"] for t in everything] == [4, 3, 2, 1]
    by_a = admin.get("/v1/telemetries", params={**scope, "deviceID": a["id"]}).json()
    assert [t["body"]["n"] for t in by_a] == [4, 2, 1]
    by_b = admin.get("/v1/telemetries", params={"deviceID": b["id"]}).json()
    assert [t["body"]["n"] for t in by_b] == [3]
    none = admin.get("/v1/telemetries", params={"deviceID": "no-such-device"})
    assert none.status_code == 200
    assert none.json() == []

    stamps = [t["timestamp"] for t in everything]  # n = 4, 3, 2, 1
    since = _between(stamps[2], stamps[3])  # after n=1, before n=2
    until = _between(stamps[0], stamps[1])  # after n=3, before n=4
    window = admin.get("/v1/telemetries", params={**scope, "from": since, "to": until}).json()
    assert [t["body"]["n"] for t in window] == [3, 2]
    newer = admin.get("/v1/telemetries", params={**scope, "from": since}).json()
    assert [t["body"]["n"] for t in newer] == [4, 3, 2]
    older = admin.get("/v1/telemetries", params={**scope, "to": until}).json()
    assert [t["body"]["n"] for t in older] == [3, 2, 1]
    # Epoch seconds work too, and the ST API's own 7-digit form.
    epoch = str(_parse(stamps[3]).timestamp() - 1)
    assert len(admin.get("/v1/telemetries", params={**scope, "from": epoch}).json()) == 4
    exact = admin.get("/v1/telemetries", params={**scope, "from": stamps[0]}).json()
    assert [t["body"]["n"] for t in exact] == [4]
    assert_error(
        admin.get("/v1/telemetries", params={**scope, "from": until, "to": since}),
        400,
        field="from",
    )


def test_paging_covers_every_message_once(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project = unique("p")
    device = create_device(admin, "pager", project, "dep")
    _send(server, device, [{"n": n} for n in range(7)])

    seen: list[int] = []
    pages: list[int] = []
    params: dict[str, Any] = {"projectID": project, "limit": 3}
    for _ in range(10):
        response = admin.get("/v1/telemetries", params=params)
        assert response.status_code == 200, response.text
        items = response.json()
        pages.append(len(items))
        seen += [t["body"]["n"] for t in items]
        cursor = response.headers.get("x-continuation-token")
        if cursor is None:
            break
        params = {**params, "continuationToken": cursor}
    assert pages == [3, 3, 1]
    assert seen == [6, 5, 4, 3, 2, 1, 0]

    exact = admin.get("/v1/telemetries", params={"projectID": project, "limit": 7})
    assert len(exact.json()) == 7
    assert "x-continuation-token" not in exact.headers
    default = admin.get("/v1/telemetries", params={"projectID": project})
    assert len(default.json()) == 7
    # An empty token, as a loop sending back an absent header would, is the first page.
    empty = admin.get("/v1/telemetries", params={"projectID": project, "continuationToken": ""})
    assert empty.status_code == 200, empty.text
    assert empty.json() == default.json()

    for bad in ("!!!", "abc", "not-a-cursor"):
        response = admin.get(
            "/v1/telemetries", params={"projectID": project, "continuationToken": bad}
        )
        assert_error(response, 400, field="continuationToken")


def test_events_are_paged_and_filtered(admin: httpx.Client, unique: Callable[[str], str]) -> None:
    project, deployment = unique("p"), unique("d")
    device = create_device(admin, "evented", project, deployment)
    for n in range(4):
        admin.put(f"/v1/devices/{device['id']}", json={"properties": {"n": n}}).raise_for_status()
    scope = {"projectID": project, "deploymentID": deployment, "eventType": "change_event"}

    versions: list[int] = []
    params: dict[str, Any] = {**scope, "limit": 3}
    for _ in range(10):
        response = admin.get("/v1/events", params=params)
        assert response.status_code == 200, response.text
        versions += [e["body"]["properties"]["desired"]["$version"] for e in response.json()]
        cursor = response.headers.get("x-continuation-token")
        if cursor is None:
            break
        params = {**params, "continuationToken": cursor}
    assert versions == [5, 4, 3, 2]

    # By default the ST API's kinds only; eventType also lists thinghub's own kinds.
    listed = admin.get("/v1/events", params={"deviceID": device["id"]}).json()
    assert [e["eventType"] for e in listed] == ["change_event"] * 4
    assert all(e["deviceID"] == device["id"] and TS_RE.fullmatch(e["timestamp"]) for e in listed)
    stamps = [e["timestamp"] for e in listed]
    assert stamps == sorted(stamps, reverse=True)
    lifecycle = admin.get(
        "/v1/events", params={"deviceID": device["id"], "eventType": "device_lifecycle_event"}
    ).json()
    assert [e["body"] for e in lifecycle] == [{"operation": "createDevice"}]


@pytest.mark.parametrize("route", ["/v1/telemetries", "/v1/events"])
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2025-13-01T00:00:00Z"}, "to"),
        ({"from": "1e400"}, "from"),
        ({"to": "nan"}, "to"),
        ({"from": "-1e30"}, "from"),
        ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "from"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"continuationToken": "%%%"}, "continuationToken"),
    ],
)
def test_bad_query_parameters(
    admin: httpx.Client, route: str, params: dict[str, str], field: str
) -> None:
    assert_error(admin.get(route, params=params), 400, field=field)


def test_limit_bounds_are_inclusive(admin: httpx.Client) -> None:
    for limit in ("1", "1000"):
        for route in ("/v1/telemetries", "/v1/events"):
            response = admin.get(route, params={"limit": limit})
            assert response.status_code == 200, response.text
            assert len(response.json()) <= int(limit)


def test_nul_characters_are_never_a_500(admin: httpx.Client) -> None:
    """PostgreSQL text cannot hold U+0000 (SQLite can): either backend answers, never 500."""
    for params in ({"projectID": "\x00"}, {"deviceID": "a\x00b"}, {"deploymentID": "\x00"}):
        for path in ("/v1/telemetries", "/v1/events", "/v1/devices"):
            if path == "/v1/devices" and "deviceID" in params:
                continue  # not a filter of the device list
            response = admin.get(path, params=params)
            if response.status_code != 200:
                assert_error(response, 400)
            else:
                assert response.json() == []
    made = admin.post(
        "/v1/devices", json={"name": "nul\x00name", "project": "p", "deployment": "d"}
    )
    if made.status_code != 200:
        assert_error(made, 400)


def test_a_time_with_an_unencoded_plus_offset_is_that_offset(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """`?from=...T13:00:00+01:00` written into a URL as it is: the query's `+` arrives as a
    space, which before a time's offset can only be its sign (was a 400)."""
    device = create_device(admin, "offset", unique("p"), "d")
    _send(server, device, [{"n": 1}])
    url = f"/v1/telemetries?deviceID={device['id']}"
    sent = admin.get(url).json()[0]["timestamp"]
    # The message's time in +01:00, to the second (at or a little before the message).
    local = (_parse(sent) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")

    def bodies(query: str) -> list[Any]:
        response = admin.get(f"{url}&{query}")
        assert response.status_code == 200, response.text
        return [t["body"] for t in response.json()]

    assert bodies(f"from={local}+01:00") == [{"n": 1}]
    assert bodies(f"from={local}+00:00") == []  # an hour after the message
    assert bodies(f"from={local}+0100") == [{"n": 1}]
    assert bodies(f"from={local[:-3]}+01:00") == [{"n": 1}]  # hh:mm
    before = (_parse(sent) + timedelta(hours=1, seconds=-1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert bodies(f"to={before}+01:00") == []
    assert bodies(f"to={local}+00:00") == [{"n": 1}]
    assert_error(admin.get(f"{url}&from={local}+1"), 400, field="from")


@pytest.mark.parametrize("route", ["/v1/telemetries", "/v1/events", "/v1/devices/{id}/files"])
def test_an_empty_limit_is_the_default_page(
    admin: httpx.Client, unique: Callable[[str], str], route: str
) -> None:
    """`?limit=` (a client sending an unset page size) is the default page, as an empty
    filter is a filter not given (was a 400 'Input should be a valid integer')."""
    device = create_device(admin, "limitless", unique("p"), "d")
    path = route.format(id=device["id"])
    response = admin.get(f"{path}?limit=")
    assert response.status_code == 200, response.text
    assert response.json() == admin.get(path).json()
    assert_error(admin.get(f"{path}?limit=%20"), 400, field="limit")


def test_a_binary_body_is_listed_as_its_base64_text(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """A body that is not UTF-8 is listed as its base64 text, as IoT Hub's routing stores
    it (was `null`, which a JSON null body also is)."""
    device = create_device(admin, "binary", unique("p"), "d")
    sas = device_sas(device)
    payloads = [b"\x01\x02\xff\x00", b"null", "h\u00e9llo".encode()]
    for payload in payloads:
        response = httpx.post(
            f"{server.http_url}/devices/{device['id']}/messages/events",
            params={"api-version": "2020-09-30"},
            content=payload,
            headers={"Authorization": sas, "Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert response.status_code == 204, response.text
    listed = admin.get("/v1/telemetries", params={"deviceID": device["id"]}).json()
    assert [t["body"] for t in listed] == ["h\u00e9llo", None, "AQL/AA=="]
    assert base64.b64decode(listed[2]["body"]) == payloads[0]
