"""Deeply nested JSON, the inputs that crashed or broke the server (issue 7, items 1-3 and 9).

Each test sends one of them through a real face or device channel and checks the documented
answer, that the server process is still up, and that a bystander device is still served (a
PUBACK over MQTT, a 204 over HTTPS). JSON nesting is bounded by `max_json_depth` (64 by
default; docs/limits.md): deeper request bodies are 400s, deeper device telemetry is kept as
its text, and stored bodies too deep to render are answered as their text.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    API_VERSION,
    assert_error,
    client,
    create_device,
    device_sas,
    events_path,
    sas_token,
)
from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess, running
from tests.pg import fetch

pytestmark = pytest.mark.e2e

LIMIT = 64  # the default max_json_depth
TOO_DEEP = f"nests deeper than {LIMIT} levels of arrays and objects (max_json_depth)"
# The reported crash inputs: 256 KiB of nested arrays (a segfault in orjson 3.8.3), and
# 52,428 objects that are never closed (a RecursionError in Python's json).
DEEP_ARRAYS = b"[" * 131072 + b"]" * 131072
# The same as device telemetry: IoT Hub's 256 KiB counts the message's properties too, so the
# body leaves room for them (the topic's and request's system properties).
DEEP_TELEMETRY = b"[" * 130_944 + b"]" * 130_944
OPEN_OBJECTS = b'{"":' * 52428
# Small enough for a twin patch (32 KiB), deeper than Python's json can parse.
DEEP_SMALL = b"[" * 5000 + b"]" * 5000
WAIT_S = 15.0


def nest(levels: int, leaf: bytes = b"1") -> bytes:
    """`levels` objects, one inside the other: nest(2) == b'{"a":{"a":1}}'."""
    return b'{"a":' * levels + leaf + b"}" * levels


def nest_arrays(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # running() also checks, at the end, that the log holds no traceback.
    with running(ServerProcess(tmp_path_factory.mktemp("thinghub-abuse-json"))) as proc:
        yield proc


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as api:
        yield api


@pytest.fixture
def device(admin: httpx.Client, unique: Callable[[str], str]) -> dict[str, Any]:
    return create_device(admin, "deep", unique("proj"), unique("dep"))


# -- helpers -----------------------------------------------------------------------------------


def ingest(server: ServerProcess, device: dict[str, Any], body: bytes) -> httpx.Response:
    """HTTPS device ingest of raw bytes, authenticated with the device's SAS."""
    return httpx.post(
        f"{server.http_url}{events_path(device['id'])}",
        params={"api-version": API_VERSION},
        content=body,
        headers={"Authorization": device_sas(device), "Content-Type": "application/json"},
        timeout=30,
        verify=False,
    )


def telemetry_topic(device_id: str, message_id: str | None = None) -> str:
    bag = f"%24.mid={message_id}" if message_id else ""
    return f"devices/{device_id}/messages/events/{bag}"


async def until(check: Callable[[], bool], what: str, wait_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {wait_s:g} s")
        await asyncio.sleep(0.01)


async def connect(
    server: ServerProcess, device: dict[str, Any], *, clean: bool = False
) -> RawDevice:
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(device)
    assert await raw.connect(device["id"], username, password, clean=clean) == 0
    return raw


async def publish_acked(raw: RawDevice, topic: str, payload: bytes) -> None:
    packet_id = raw.publish(topic, payload, 1)
    assert packet_id is not None
    await until(lambda: packet_id in raw.acked or raw.closed.is_set(), "PUBACK")
    assert packet_id in raw.acked, "the connection closed instead of a PUBACK"


async def next_publish(raw: RawDevice, prefix: str) -> Any:
    def arrived() -> bool:
        return any(p.topic.startswith(prefix) for p in raw.received) or raw.closed.is_set()

    await until(arrived, f"a publish on {prefix}")
    found = [p for p in raw.received if p.topic.startswith(prefix)]
    assert found, f"the connection closed before a publish on {prefix}"
    raw.received.remove(found[0])
    return found[0]


def listed(admin: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = admin.get("/v1/telemetries", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json())


def assert_serving(server: ServerProcess, admin: httpx.Client) -> None:
    """The process is up, /healthz answers, and a new device gets a 204 and a PUBACK."""
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert httpx.get(f"{server.http_url}/healthz", timeout=10).status_code == 200
    bystander = create_device(admin, "bystander", "bystanders", "d")
    assert ingest(server, bystander, b'{"ok": 1}').status_code == 204

    async def puback() -> None:
        raw = await connect(server, bystander)
        try:
            await publish_acked(raw, telemetry_topic(bystander["id"]), b'{"ok": 2}')
        finally:
            await raw.close()

    asyncio.run(puback())


# -- item 1: the unauthenticated token endpoint ------------------------------------------------


@pytest.mark.parametrize("body", [DEEP_ARRAYS, OPEN_OBJECTS], ids=["arrays", "open-objects"])
def test_token_endpoint_refuses_deep_json_unauthenticated(
    server: ServerProcess, admin: httpx.Client, body: bytes
) -> None:
    response = httpx.post(
        f"{server.http_url}/v1/auth/token",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error"] == "invalid_request", answer
    assert TOO_DEEP in answer["error_description"], answer
    assert_serving(server, admin)


# -- item 1 and 9: every face's JSON bodies ----------------------------------------------------

ST_ROUTES = [
    ("POST", "/v1/devices"),
    ("PUT", "/v1/devices/{id}"),  # the desired-properties (twin) patch
    ("POST", "/v1/devices/{id}/method"),
    ("POST", "/v1/devices/{id}/messages"),
    ("POST", "/v1/devices/{id}/modules"),
    ("PUT", "/v1/devices/{id}/modules/m1"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/users"),
    ("POST", "/v1/enrollmentGroups"),
]


@pytest.mark.parametrize(("method", "path"), ST_ROUTES)
def test_st_json_bodies_deeper_than_the_limit_are_400(
    server: ServerProcess,
    admin: httpx.Client,
    device: dict[str, Any],
    method: str,
    path: str,
) -> None:
    url = path.format(id=device["id"])
    response = admin.request(method, url, content=DEEP_ARRAYS)
    error = assert_error(response, 400, field="body", code="InvalidInput")
    assert TOO_DEEP in error["message"], error
    # Credentials come first: without them it is a 401, whatever the body.
    with httpx.Client(base_url=server.http_url, timeout=30) as anonymous:
        assert_error(anonymous.request(method, url, content=DEEP_ARRAYS), 401)
    assert_serving(server, admin)


def test_st_bodies_at_the_limit_pass_and_one_deeper_do_not(
    admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """The depth limit comes first (63 + the body object): at the limit the body is read and
    `extra`, a field the route does not apply, is the 400; one deeper is too deep."""
    fields = {"name": "n", "project": unique("p"), "deployment": "d"}
    at_limit = json.dumps({**fields, "extra": json.loads(nest(LIMIT - 1))})
    read = assert_error(admin.post("/v1/devices", content=at_limit), 400, field="extra")
    assert TOO_DEEP not in read["message"]
    over = json.dumps({**fields, "extra": json.loads(nest(LIMIT))})
    error = assert_error(admin.post("/v1/devices", content=over), 400, field="body")
    assert TOO_DEEP in error["message"]


CENTRAL_ROUTES = [
    ("PUT", "/devices/{new}"),
    ("PATCH", "/devices/{id}"),
    ("PATCH", "/devices/{id}/properties/setPoint"),  # the desired-properties (twin) patch
    ("POST", "/devices/{id}/telemetry"),
    ("POST", "/devices/{id}/commands/reboot"),
    ("POST", "/devices/{id}/components/c1/commands/reboot"),
    ("PUT", "/deviceTemplates/{new}"),
    ("PUT", "/apiTokens/{new}"),
]


@pytest.mark.parametrize(("method", "path"), CENTRAL_ROUTES)
def test_central_json_bodies_deeper_than_the_limit_are_400(
    server: ServerProcess,
    admin: httpx.Client,
    unique: Callable[[str], str],
    method: str,
    path: str,
) -> None:
    with httpx.Client(
        base_url=f"{server.http_url}/central/api",
        headers={"Authorization": server.admin_token},
        timeout=30,
    ) as central:
        device_id = unique("c")
        assert central.put(f"/devices/{device_id}", json={}).status_code == 200
        url = path.format(id=device_id, new=unique("n"))
        response = central.request(method, url, content=DEEP_ARRAYS)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "BadRequest", error
        assert TOO_DEEP in error["message"], error
        assert {"requestId", "time"} <= set(error), error
    assert_serving(server, admin)


def test_central_template_merge_patch_deeper_than_the_limit_is_400(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    with httpx.Client(
        base_url=f"{server.http_url}/central/api",
        headers={"Authorization": server.admin_token},
        timeout=30,
    ) as central:
        tid = unique("tpl")
        assert central.put(f"/deviceTemplates/{tid}", json=template(tid)).status_code == 200
        response = central.patch(f"/deviceTemplates/{tid}", content=DEEP_ARRAYS)
        assert response.status_code == 400, response.text
        assert TOO_DEEP in response.json()["error"]["message"]
    assert_serving(server, admin)


# -- item 1: device telemetry, over HTTPS and MQTT ---------------------------------------------


@pytest.mark.parametrize("body", [DEEP_TELEMETRY, OPEN_OBJECTS], ids=["arrays", "open-objects"])
def test_https_ingest_of_deep_json_is_stored_as_text(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any], body: bytes
) -> None:
    """IoT Hub takes any bytes as a message body: accepted, kept as text, never parsed."""
    response = ingest(server, device, body)
    assert response.status_code == 204, response.text
    [stored] = listed(admin, deviceID=device["id"])
    assert stored["body"] == body.decode()
    assert_serving(server, admin)


def test_mqtt_telemetry_of_deep_json_is_acknowledged_and_stored_as_text(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    async def send() -> None:
        raw = await connect(server, device)
        try:
            for payload in (DEEP_TELEMETRY, OPEN_OBJECTS, b'{"after": 1}'):
                await publish_acked(raw, telemetry_topic(device["id"]), payload)
        finally:
            await raw.close()

    asyncio.run(send())
    bodies = [t["body"] for t in listed(admin, deviceID=device["id"])]
    assert len(bodies) == 3, bodies
    assert DEEP_TELEMETRY.decode() in bodies
    assert OPEN_OBJECTS.decode() in bodies
    assert {"after": 1} in bodies
    assert_serving(server, admin)


def test_a_deep_qos1_message_resent_after_a_reconnect_is_stored_once(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """The device drops before its PUBACK and sends the message again, as the SDK does."""
    topic = telemetry_topic(device["id"], "deep-1")

    async def send_twice() -> None:
        first = await connect(server, device)
        first.publish(topic, DEEP_TELEMETRY, 1)
        await first.close()  # gone without waiting for the PUBACK
        again = await connect(server, device)
        try:
            await publish_acked(again, topic, DEEP_TELEMETRY)
        finally:
            await again.close()

    asyncio.run(send_twice())
    [stored] = listed(admin, deviceID=device["id"])
    assert stored["body"] == DEEP_TELEMETRY.decode()
    assert_serving(server, admin)


# -- item 2: a templated device's deep message -------------------------------------------------


def template(template_id: str) -> dict[str, Any]:
    return {
        "@id": template_id,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "one double",
        "capabilityModel": {
            "@id": f"{template_id}:model",
            "@type": "Interface",
            "contents": [{"@type": "Telemetry", "name": "x", "schema": "double"}],
        },
    }


def test_a_templated_devices_deep_message_is_rejected_not_fatal(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    tid, device_id = unique("tpl"), unique("tdev")
    with httpx.Client(
        base_url=f"{server.http_url}/central/api",
        headers={"Authorization": server.admin_token},
        timeout=30,
    ) as central:
        assert central.put(f"/deviceTemplates/{tid}", json=template(tid)).status_code == 200
        made = central.put(f"/devices/{device_id}", json={"template": tid})
        assert made.status_code == 200, made.text
        key = central.get(f"/devices/{device_id}/credentials").json()["symmetricKey"]
    device = {"id": device_id, "credentials": {"symmetricKey": key}}
    deep = b'{"x":' + nest(300) + b"}"  # 1.8 KB, as reported
    response = ingest(server, device, deep)
    assert response.status_code == 400, response.text
    assert response.json()["Message"].startswith("ErrorCode:ArgumentInvalid;")
    assert TOO_DEEP in response.json()["Message"]

    async def send() -> None:
        # Over MQTT a rejected message is still acknowledged (resending would not help).
        raw = await connect(server, device)
        try:
            await publish_acked(raw, telemetry_topic(device_id), deep)
            # A shallow mismatch is rejected by the template itself; a match is stored.
            await publish_acked(raw, telemetry_topic(device_id), b'{"x": {"a": 1}}')
            await publish_acked(raw, telemetry_topic(device_id), b'{"x": 1.5}')
        finally:
            await raw.close()

    asyncio.run(send())
    rejected = admin.get(
        "/v1/events", params={"deviceID": device_id, "eventType": "telemetry_rejected_event"}
    )
    assert rejected.status_code == 200, rejected.text
    reasons = sorted(e["body"]["reason"] for e in rejected.json())
    assert len(reasons) == 3, reasons
    assert sum(TOO_DEEP in r for r in reasons) == 2, reasons
    assert [t["body"] for t in listed(admin, deviceID=device_id)] == [{"x": 1.5}]
    assert_serving(server, admin)


# -- item 3: listing stored deep bodies --------------------------------------------------------


def test_a_stored_256_level_body_does_not_break_listing(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    body = nest_arrays(256)  # 512 B; the report's object form was 1,537 B
    assert ingest(server, device, body).status_code == 204
    for params in ({}, {"projectID": device["tags"]["project"]}, {"deviceID": device["id"]}):
        bodies = [t["body"] for t in listed(admin, **params)]
        assert body.decode() in bodies, params
    assert_serving(server, admin)


def insert_old_rows(proc: ServerProcess, device_id: str, body: str, event_body: str) -> None:
    """Rows as versions before the depth check wrote them: the payload's own JSON text."""
    telemetry = (
        "INSERT INTO telemetry (account_id, device_id, project, deployment, enqueued_at, body, "
        "source) SELECT account_id, id, project, deployment, {now}, {body}, 'mqtt' "
        "FROM devices WHERE id = {id}"
    )
    event = (
        "INSERT INTO events (account_id, device_id, project, deployment, type, ts, body) "
        "SELECT account_id, id, project, deployment, 'telemetry_rejected_event', {now}, {body} "
        "FROM devices WHERE id = {id}"
    )
    now = int(time.time() * 1_000_000)
    if proc.database:  # PostgreSQL
        for sql, text in ((telemetry, body), (event, event_body)):
            fetch(
                proc.database, sql.format(now=now, body="$1::text", id="$2::text"), text, device_id
            )
        return
    with sqlite3.connect(proc.data_dir / "thinghub.db", timeout=10) as conn:
        for sql, text in ((telemetry, body), (event, event_body)):
            conn.execute(sql.format(now=now, body="?", id="?"), (text, device_id))
    conn.close()


def test_deep_rows_written_by_older_versions_are_listed_as_text(
    tmp_path: Path, unique: Callable[[str], str]
) -> None:
    data_dir = tmp_path / "old-rows"
    body = nest(256).decode()  # 1,537 bytes, the reported body
    event_body = json.dumps({"reason": "old"})[:-1] + ', "body": ' + body + "}"
    with running(ServerProcess(data_dir)) as first, client(first) as api:
        device = create_device(api, "old", unique("proj"), "d")
    insert_old_rows(first, device["id"], body, event_body)
    second = ServerProcess(data_dir, admin_token=first.admin_token)
    with running(second), client(second) as api:
        for params in (
            {},
            {"projectID": device["tags"]["project"]},
            {"deviceID": device["id"]},
        ):
            assert [t["body"] for t in listed(api, **params)] == [body], params
        events = api.get(
            "/v1/events",
            params={"deviceID": device["id"], "eventType": "telemetry_rejected_event"},
        )
        assert events.status_code == 200, events.text
        assert [e["body"] for e in events.json()] == [event_body]
        assert_serving(second, api)


# -- item 9: twin patches and DPS over MQTT ----------------------------------------------------


def test_a_deep_reported_patch_is_400_and_the_connection_stays(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    async def patch() -> None:
        raw = await connect(server, device)
        try:
            await raw.subscribe("$iothub/twin/res/#")
            raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", DEEP_SMALL, 0)
            refused = await next_publish(raw, "$iothub/twin/res/")
            assert refused.topic == "$iothub/twin/res/400/?$rid=1"
            raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", b'{"fine": 1}', 0)
            accepted = await next_publish(raw, "$iothub/twin/res/")
            assert accepted.topic.startswith("$iothub/twin/res/204/?$rid=2&$version=")
            assert not raw.closed.is_set()
        finally:
            await raw.close()

    asyncio.run(patch())
    twin = admin.get(f"/v1/devices/{device['id']}/twin").json()
    assert twin["properties"]["reported"]["fine"] == 1
    assert_serving(server, admin)


def test_a_deep_dps_register_body_is_a_dps_400(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    scope, reg = device["idScope"], device["id"]
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    password = sas_token(key, f"{scope}/registrations/{reg}", int(time.time()) + 600)
    username = f"{scope}/registrations/{reg}/api-version=2019-03-31"

    async def register() -> None:
        raw = RawDevice(server.mqtt_port, server.ca_file)
        assert await raw.connect(reg, username, password, clean=True) == 0
        try:
            await raw.subscribe("$dps/registrations/res/#")
            raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", DEEP_SMALL, 0)
            refused = await next_publish(raw, "$dps/registrations/res/")
            assert refused.topic == "$dps/registrations/res/400/?$rid=1"
            answer = json.loads(refused.payload)
            assert answer["errorCode"] == 400004, answer
            assert TOO_DEEP in answer["message"], answer
            body = json.dumps({"registrationId": reg}).encode()
            raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=2", body, 0)
            accepted = await next_publish(raw, "$dps/registrations/res/")
            assert accepted.topic.startswith("$dps/registrations/res/202/?$rid=2"), accepted.topic
        finally:
            await raw.close()

    asyncio.run(register())
    assert_serving(server, admin)


def test_a_deep_method_answer_reaches_the_caller_as_text(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any]
) -> None:
    async def answer() -> httpx.Response:
        raw = await connect(server, device)
        try:
            await raw.subscribe("$iothub/methods/POST/#")
            call = asyncio.create_task(
                asyncio.to_thread(
                    admin.post,
                    f"/v1/devices/{device['id']}/method",
                    json={"name": "deep", "responseTimeoutInSeconds": 10},
                )
            )
            request = await next_publish(raw, "$iothub/methods/POST/deep/")
            rid = request.topic.rsplit("$rid=", 1)[1]
            raw.publish(f"$iothub/methods/res/200/?$rid={rid}", DEEP_SMALL, 0)
            response = await call
            assert not raw.closed.is_set()
            return response
        finally:
            await raw.close()

    response = asyncio.run(answer())
    assert response.status_code == 200, response.text
    assert response.json() == DEEP_SMALL.decode()
    assert_serving(server, admin)
