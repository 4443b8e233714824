"""The ux4iot face over the wire: the 4.x call order of every hook replayed with
python-socketio's AsyncClient (an Engine.IO v4 client independent of socket.io-client), the
REST routes with their documented statuses, keys through /v1 and the CLI, live data from
every ingest path, session expiry, the log level, and the face on its own port.

Devices are real: raw MQTT over TLS on thinghub's codec (tests/e2e/mqtt_client.py), the
IoT Hub HTTPS endpoint, and IoT Central's telemetry route.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess
from tests.e2e.ux4iot import (
    KEY,
    SESSION,
    UX,
    LiveSocket,
    Ux,
    create_key,
    live_socket,
    new_device,
    other_account,
    send_https,
    telemetry_of,
)

CENTRAL_VERSION = "2022-07-31"
CLOSE_WITHIN_S = 5.0  # the poll timeout it must not wait for is 30 s


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(create_key(server, label="tests")["key"])


@pytest.fixture
def ux(server: ServerProcess, key: str) -> Iterator[Ux]:
    with Ux(server.http_url, key) as client:
        yield client


@pytest.fixture
def device(server: ServerProcess) -> dict[str, Any]:
    return new_device(server)


async def mqtt_device(server: ServerProcess, device: dict[str, Any]) -> RawDevice:
    raw = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(device)
    assert await raw.connect(device["id"], username, password) == 0
    return raw


async def wait_until(probe: Callable[[], bool], within: float = 15.0, what: str = "it") -> None:
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# -- common ------------------------------------------------------------------------------------


def test_version_and_status_need_no_credentials(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url + UX, timeout=30) as bare:
        version = bare.get("/version")
        assert version.status_code == 200 and version.text.startswith("4.")
        status = bare.get("/status")
        assert status.status_code == 200 and status.json()["status"] == "ok"


def test_a_session_opens_with_any_body_or_none(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url + UX, timeout=30) as bare:
        ids = set()
        for kwargs in (
            {"headers": {"Content-Type": "application/x-www-form-urlencoded"}},  # axios
            {"json": {"whatever": 1}},
            {"content": b"\x00not json"},
            {},
        ):
            response = bare.post("/session", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200, response.text
            ids.add(response.json()["sessionId"])
        assert len(ids) == 4


def test_a_session_opens_at_the_root_of_the_port_too(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    """admin-node's `getSessionIdStatic(endpoint)` posts to `new URL('/session', endpoint)`,
    which drops the Endpoint's `/ux4iot`: the port's root answers it with the same session."""
    with httpx.Client(base_url=server.http_url, timeout=30) as root:
        response = root.post("/session")
        assert response.status_code == 200, response.text
        session = response.json()["sessionId"]
        assert root.get("/session").status_code == 405
    assert ux.grant(session, device["id"], "deviceTwin").status_code == 204
    assert ux.as_session("GET", f"/deviceTwin/{device['id']}", session).status_code == 200


# -- keys --------------------------------------------------------------------------------------


def test_keys_are_created_listed_rotated_and_revoked_through_v1(server: ServerProcess) -> None:
    created = create_key(server, label="rotating")
    assert created["connectionString"] == (
        f"Endpoint={server.http_url}/ux4iot;SharedAccessKey={created['key']}"
    )
    with server.client(verify=False) as api:
        listed = api.get("/v1/ux4iot/keys").json()
        mine = next(k for k in listed if k["id"] == created["id"])
        assert mine["label"] == "rotating" and "key" not in mine
        # a key is not a bearer token: /v1 refuses it
        assert (
            api.get(
                "/v1/devices", headers={"Authorization": f"Bearer {created['key']}"}
            ).status_code
            == 401
        )
        with Ux(server.http_url, created["key"]) as ux:
            assert ux.grant(ux.session(), "nope", "telemetry").status_code == 204  # key accepted
        rotated = api.post(f"/v1/ux4iot/keys/{created['id']}/rotate").json()
        assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
        with Ux(server.http_url, created["key"]) as old, Ux(server.http_url, rotated["key"]) as new:
            assert old.http.delete("/sessions").status_code == 401
            assert new.http.delete("/sessions").status_code == 204
        assert api.delete(f"/v1/ux4iot/keys/{created['id']}").status_code == 204
        with Ux(server.http_url, rotated["key"]) as gone:
            assert gone.http.delete("/sessions").status_code == 401
        assert api.delete(f"/v1/ux4iot/keys/{created['id']}").status_code == 404
        viewer = api.post("/v1/tokens", json={"role": "viewer"}).json()["token"]
    with server.client(viewer, verify=False) as api:
        assert api.post("/v1/ux4iot/keys", json={}).status_code == 403
        assert api.get("/v1/ux4iot/keys").status_code == 403


def test_the_cli_prints_a_working_connection_string(server: ServerProcess) -> None:
    port = str(server.addresses["http"]["port"])
    connection = server.cli("ux4iot", "key", "create", "--label", "cli", "--http-port", port)
    endpoint, _, key = connection.partition(";SharedAccessKey=")
    assert endpoint == f"Endpoint={server.http_url}/ux4iot" and key
    with Ux(server.http_url, key) as ux:
        assert ux.http.delete("/sessions").status_code == 204
    listed = json.loads(server.cli("ux4iot", "key", "list", "--json"))
    key_id = next(k["id"] for k in listed if k["label"] == "cli")
    rotated = server.cli("ux4iot", "key", "rotate", key_id, "--http-port", port)
    new_key = rotated.partition(";SharedAccessKey=")[2]
    assert new_key and new_key != key
    server.cli("ux4iot", "key", "revoke", key_id)
    # The running server forgets a revoked key within its 5 s token cache.
    deadline = time.monotonic() + 15
    with Ux(server.http_url, new_key) as ux:
        while ux.http.delete("/sessions").status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.2)


# -- grants and errors -------------------------------------------------------------------------


def test_grants_answer_their_documented_statuses(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    session = ux.session()
    dev = device["id"]
    for kind, extra in (
        ("telemetry", {"telemetryKey": "temp"}),
        ("telemetry", {"telemetryKey": None}),
        ("deviceTwin", {}),
        ("connectionState", {}),
        ("desiredProperties", {}),
        ("directMethod", {"directMethodName": "reboot"}),
        ("directMethod", {"directMethodName": None}),
        ("d2cMessages", {}),
    ):
        assert ux.grant(session, dev, kind, **extra).status_code == 204
        assert ux.revoke(session, dev, kind, **extra).status_code == 204
    bad = ux.grant(session, dev, "telemetri")
    assert bad.status_code == 400 and "telemetri" in bad.json()["error"]["message"]
    # 404 is for an unknown session only (the spec's statuses): a device id is not looked up
    assert ux.grant(session, "no-such-device", "telemetry").status_code == 204
    assert ux.revoke(session, "no-such-device", "telemetry").status_code == 204
    assert ux.revoke(session, "never-granted", "deviceTwin").status_code == 204
    assert ux.grant("no-such-session", dev, "telemetry").status_code == 404
    assert ux.revoke("no-such-session", dev, "telemetry").status_code == 404
    with Ux(server.http_url, "wrong") as wrong:
        assert wrong.grant(session, dev, "telemetry").status_code == 401
    with Ux(server.http_url, None) as nokey:
        assert nokey.grant(session, dev, "telemetry").status_code == 401
    missing = ux.http.put("/grants", json={"sessionId": session, "type": "telemetry"})
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "deviceId"
    assert ux.http.request("DELETE", "/grants").status_code == 400  # the grant is the body


def test_subscriptions_need_a_grant_and_a_known_session(ux: Ux, device: dict[str, Any]) -> None:
    session, dev = ux.session(), device["id"]
    assert ux.subscribe(session, dev, "deviceTwin").status_code == 403
    assert ux.subscribe("no-such-session", dev, "deviceTwin").status_code == 404
    assert ux.subscribe(session, dev, "desiredProperties").status_code == 400
    assert ux.grant(session, dev, "deviceTwin").status_code == 204
    assert ux.subscribe(session, dev, "deviceTwin").status_code == 204
    assert ux.subscribe(session, dev, "deviceTwin", method="DELETE").status_code == 204
    assert ux.subscribe(session, dev, "connectionState", method="DELETE").status_code == 403


async def test_a_device_granted_before_it_is_registered_is_covered_once_it_is(
    server: ServerProcess, ux: Ux
) -> None:
    """ux4iot stores a grant by device id (spec: PUT /grants is 404 for no session only), so a
    security backend may grant a device that is registered later."""
    dev = f"ux-later-{uuid.uuid4().hex[:10]}"
    session = ux.session()
    assert ux.grant(session, dev, "telemetry", telemetryKey=None).status_code == 204
    assert ux.subscribe(session, dev, "telemetry", telemetryKey=None).status_code == 204
    unknown = ux.as_session("GET", f"/lastValue/{dev}", session)
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "deviceId"
    async with live_socket(server.http_url, session) as live:
        with server.client(verify=False) as api:
            params = {"api-version": CENTRAL_VERSION}
            created = api.put(
                f"/central/api/devices/{dev}", params=params, json={"displayName": dev}
            )
            assert created.status_code == 200, created.text
            sent = api.post(
                f"/central/api/devices/{dev}/telemetry", params=params, json={"temp": 4}
            )
            assert sent.status_code == 204, sent.text
        await live.wait(telemetry_of(dev, temp=4))
    last = ux.as_session("GET", f"/lastValue/{dev}/temp", session)
    assert last.status_code == 200 and last.json()["data"] == {"temp": 4}


def test_bulk_calls_take_both_body_forms_all_or_nothing(ux: Ux, device: dict[str, Any]) -> None:
    session, dev = ux.session(), device["id"]
    assert ux.grant(session, dev, "telemetry", telemetryKey=None).status_code == 204

    def element(key: str, with_session: bool = True) -> dict[str, Any]:
        out = {"deviceId": dev, "type": "telemetry", "telemetryKey": key}
        return {**out, "sessionId": session} if with_session else out

    # react: a bare array, sessionId in each element
    react = ux.bare.put("/subscriptions", json=[element("a"), element("b")])
    assert react.status_code == 200 and react.json() == [element("a"), element("b")]
    # admin-node: {subscriptionRequests} with the sessionId header
    admin = ux.bare.put(
        "/subscriptions",
        json={"subscriptionRequests": [element("c", False)]},
        headers={SESSION: session},
    )
    assert admin.status_code == 200 and admin.json() == [element("c")]
    # one malformed element: 400 naming it, nothing applied
    broken = ux.bare.put(
        "/subscriptions",
        json=[element("d"), {"deviceId": dev, "type": "nope", "sessionId": session}],
    )
    assert broken.status_code == 400 and broken.json()["error"]["field"] == "[1].type"
    # elements without a grant are skipped; the answer is what was applied
    twin = {"sessionId": session, "deviceId": dev, "type": "deviceTwin"}
    skipped = ux.bare.put("/subscriptions", json=[element("e"), twin])
    assert skipped.status_code == 200 and skipped.json() == [element("e")]
    assert ux.bare.put("/subscriptions", json=[]).json() == []
    # unknown session anywhere: 404, nothing applied
    stranger = {**element("f"), "sessionId": "no-such-session"}
    assert ux.bare.put("/subscriptions", json=[element("f"), stranger]).status_code == 404
    # admin-node's unsubscribeAll: a bare array with the header
    removed = ux.bare.request(
        "DELETE", "/subscriptions", json=[element("a", False)], headers={SESSION: session}
    )
    assert removed.status_code == 200 and removed.json() == [element("a")]
    assert ux.bare.put("/subscriptions", json={"subscriptionRequests": 3}).status_code == 400
    assert ux.bare.put("/subscriptions", json=[element("g", False)]).status_code == 400


# -- the 4.x hooks, replayed -------------------------------------------------------------------


@pytest.mark.parametrize("transports", [("websocket", "polling"), ("polling",)])
async def test_use_telemetry_grant_last_value_subscribe_then_data(
    server: ServerProcess, ux: Ux, device: dict[str, Any], transports: tuple[str, ...]
) -> None:
    dev = device["id"]
    session = ux.session()
    async with live_socket(server.http_url, session, transports=transports) as live:
        assert ux.grant(session, dev, "telemetry", telemetryKey="temp").status_code == 204
        first = ux.as_session("GET", f"/lastValue/{dev}/temp", session)
        assert first.status_code == 404  # nothing yet (the client swallows it)
        assert ux.subscribe(session, dev, "telemetry", telemetryKey="temp").status_code == 204
        send_https(server, device, {"temp": 21.5, "secret": 1})
        got = await live.wait(telemetry_of(dev, temp=21.5))
        assert got["telemetry"] == {"temp": 21.5}  # never a key it was not granted
        assert got["timestamp"].endswith("Z") and "T" in got["timestamp"]
        last = ux.as_session("GET", f"/lastValue/{dev}/temp", session).json()
        assert last == {"deviceId": dev, "data": {"temp": 21.5}, "timestamp": got["timestamp"]}
        # a key it holds no grant for
        assert ux.as_session("GET", f"/lastValue/{dev}/secret", session).status_code == 403
        # unmount: DELETE /subscription; the next value is not delivered, the sentinel is
        assert ux.grant(session, dev, "d2cMessages").status_code == 204
        assert ux.subscribe(session, dev, "d2cMessages").status_code == 204
        assert (
            ux.subscribe(session, dev, "telemetry", "DELETE", telemetryKey="temp").status_code
            == 204
        )
        send_https(server, device, {"temp": 22.5})
        await live.wait(lambda p: p.get("message") == {"temp": 22.5})
        assert not any(p.get("telemetry") == {"temp": 22.5} for p in live.payloads)


async def test_a_polling_client_disconnects_at_once(server: ServerProcess, ux: Ux) -> None:
    """A polling client that disconnects sends CLOSE while its last GET still waits; the server
    answers that GET (as Node's engine.io does), so python-socketio's `disconnect()` returns
    at once instead of after its 30 s poll timeout, and the session counts no socket."""
    session = ux.session()
    live = LiveSocket(UX)
    await live.client.connect(
        f"{server.http_url}/?sessionId={session}", namespaces=[UX], transports=["polling"]
    )
    await asyncio.sleep(0.2)  # its next long poll is waiting at the server
    await asyncio.wait_for(live.close(), CLOSE_WITHIN_S)
    assert live.client.connected is False


async def test_use_multi_telemetry_takes_the_bulk_path_in_both_forms(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    send_https(server, device, {"a": 1, "b": "text", "c": True, "d": {"x": 1}})
    session = ux.session()
    async with live_socket(server.http_url, session) as live:
        assert ux.grant(session, dev, "telemetry", telemetryKey=None).status_code == 204
        values = ux.as_session("GET", f"/lastValue/{dev}", session).json()
        assert values["deviceId"] == dev and values["timestamp"] == ""
        assert {k: v["value"] for k, v in values["data"].items()} == {
            "a": 1, "b": "text", "c": True, "d": {"x": 1},
        }  # fmt: skip
        elements = [
            {"sessionId": session, "deviceId": dev, "type": "telemetry", "telemetryKey": k}
            for k in ("a", "b")
        ]
        assert ux.bare.put("/subscriptions", json=elements).json() == elements
        send_https(server, device, {"a": 2, "b": "t2", "c": False})
        await live.wait(telemetry_of(dev, a=2, b="t2"))  # one message, only subscribed keys
        envelope = {
            "subscriptionRequests": [{k: v for k, v in elements[0].items() if k != "sessionId"}]
        }
        removed = ux.bare.request(
            "DELETE", "/subscriptions", json=envelope, headers={SESSION: session}
        )
        assert removed.json() == [elements[0]]
        send_https(server, device, {"a": 3, "b": "t3"})
        await live.wait(telemetry_of(dev, b="t3"))


async def test_connection_state_twin_and_d2c_hooks_with_an_mqtt_device(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    session = ux.session()
    async with live_socket(server.http_url, session) as live:
        for kind in ("connectionState", "deviceTwin", "d2cMessages"):
            assert ux.grant(session, dev, kind).status_code == 204
        state = ux.as_session("GET", f"/connectionState/{dev}", session).json()
        assert state["deviceId"] == dev and state["data"] is False
        twin = ux.as_session("GET", f"/deviceTwin/{dev}", session).json()
        assert set(twin["data"]["properties"]) == {"reported", "desired"}
        for kind in ("connectionState", "deviceTwin", "d2cMessages"):
            assert ux.subscribe(session, dev, kind).status_code == 204
        raw = await mqtt_device(server, device)
        try:
            await live.wait(lambda p: p.get("connectionState") is True, what="connected")
            assert ux.as_session("GET", f"/connectionState/{dev}", session).json()["data"] is True
            raw.publish(f"devices/{dev}/messages/events/", b'{"hello": "world"}')
            await live.wait(lambda p: p.get("message") == {"hello": "world"})
            raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", b'{"fw": "1.2"}')
            pushed = await live.wait(
                lambda p: (
                    p.get("deviceTwin", {}).get("properties", {}).get("reported", {}).get("fw")
                    == "1.2"
                )
            )
            assert pushed["deviceId"] == dev and pushed["deviceTwin"]["version"] >= 2
            assert (
                ux.as_session("GET", f"/deviceTwin/{dev}", session).json()["data"]["properties"][
                    "reported"
                ]["fw"]
                == "1.2"
            )
        finally:
            await raw.close()
        await live.wait(lambda p: p.get("connectionState") is False, what="disconnected")


async def test_direct_method_and_desired_patch_reach_the_mqtt_device(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    session = ux.session()
    raw = await mqtt_device(server, device)
    try:
        await raw.subscribe("$iothub/methods/POST/#")
        await raw.subscribe("$iothub/twin/PATCH/properties/desired/#")
        call = {
            "deviceId": dev,
            "methodParams": {
                "methodName": "reboot",
                "payload": {"in": 5},
                "responseTimeoutInSeconds": 10,
            },
        }
        assert ux.as_session("POST", "/directMethod", session, json=call).status_code == 403
        assert ux.grant(session, dev, "directMethod", directMethodName="reboot").status_code == 204

        async def answer() -> None:
            await wait_until(
                lambda: any(
                    p.topic.startswith("$iothub/methods/POST/reboot/") for p in raw.received
                ),
                what="the method",
            )
            request = next(
                p for p in raw.received if p.topic.startswith("$iothub/methods/POST/reboot/")
            )
            assert json.loads(request.payload) == {"in": 5}
            rid = request.topic.rsplit("$rid=", 1)[1]
            raw.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"done": true}')

        responder = asyncio.create_task(answer())
        response = await asyncio.to_thread(
            ux.as_session, "POST", "/directMethod", session, json=call
        )
        await responder
        assert response.status_code == 200 and response.json() == {
            "status": 201,
            "payload": {"done": True},
        }
        other = {**call, "methodParams": {"methodName": "format"}}
        assert ux.as_session("POST", "/directMethod", session, json=other).status_code == 403
        # desired properties: the grant, then the patch reaches the device over MQTT
        patch = {"deviceId": dev, "desiredPropertyPatch": {"interval": 30}}
        assert (
            ux.as_session("PATCH", "/deviceTwinDesiredProperties", session, json=patch).status_code
            == 403
        )
        assert ux.grant(session, dev, "desiredProperties").status_code == 204
        patched = ux.as_session("PATCH", "/deviceTwinDesiredProperties", session, json=patch)
        assert patched.status_code == 200 and patched.json()["status"] == 200
        assert patched.json()["payload"]["properties"]["desired"]["interval"] == 30
        await wait_until(
            lambda: any(
                p.topic.startswith("$iothub/twin/PATCH/properties/desired/")
                and json.loads(p.payload).get("interval") == 30
                for p in raw.received
            ),
            what="the desired patch on the device",
        )
        # An empty patch changes nothing (as on every face): the desired version stays.
        version = patched.json()["payload"]["properties"]["desired"]["$version"]
        empty = {"deviceId": dev, "desiredPropertyPatch": {}}
        unchanged = ux.as_session("PATCH", "/deviceTwinDesiredProperties", session, json=empty)
        assert unchanged.status_code == 200
        assert unchanged.json()["payload"]["properties"]["desired"]["$version"] == version
    finally:
        await raw.close()
    # offline: 404 passed through; a timeout is 504
    offline = ux.as_session("POST", "/directMethod", session, json=call)
    assert offline.status_code == 404 and offline.json()["error"]["code"] == "DeviceNotOnline"


async def test_an_unanswered_method_is_504(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    raw = await mqtt_device(server, device)
    try:
        await raw.subscribe("$iothub/methods/POST/#")
        call = {
            "deviceId": device["id"],
            "methodParams": {"methodName": "slow", "responseTimeoutInSeconds": 5},
        }
        response = await asyncio.to_thread(ux.http.post, "/directMethod", json=call)
        assert response.status_code == 504
    finally:
        await raw.close()


async def test_revoking_a_grant_stops_its_deliveries_at_once(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    session = ux.session()
    async with live_socket(server.http_url, session) as live:
        for key in ("temp", "hum"):
            assert ux.grant(session, dev, "telemetry", telemetryKey=key).status_code == 204
            assert ux.subscribe(session, dev, "telemetry", telemetryKey=key).status_code == 204
        send_https(server, device, {"temp": 1, "hum": 1})
        await live.wait(telemetry_of(dev, temp=1, hum=1))
        assert ux.revoke(session, dev, "telemetry", telemetryKey="temp").status_code == 204
        # the very next message: hum only, in the same payload temp would have been in
        send_https(server, device, {"temp": 2, "hum": 2})
        await live.wait(telemetry_of(dev, hum=2))
        assert not any(p.get("telemetry", {}).get("temp") == 2 for p in live.payloads)
        assert ux.subscribe(session, dev, "telemetry", telemetryKey="temp").status_code == 403
        assert ux.as_session("GET", f"/lastValue/{dev}/temp", session).status_code == 403


async def test_deleting_a_session_disconnects_its_socket(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    session = ux.session()
    async with live_socket(server.http_url, session) as live:
        assert ux.grant(session, device["id"], "telemetry").status_code == 204
        assert ux.http.delete(f"/sessions/{session}").status_code == 204
        await live.wait_disconnect()
    assert ux.http.delete(f"/sessions/{session}").status_code == 404
    assert ux.subscribe(session, device["id"], "telemetry").status_code == 404
    # DELETE /sessions: every session of the account
    sessions = [ux.session() for _ in range(2)]
    for s in sessions:
        assert ux.grant(s, device["id"], "deviceTwin").status_code == 204
    assert ux.http.delete("/sessions").status_code == 204
    assert all(ux.subscribe(s, device["id"], "deviceTwin").status_code == 404 for s in sessions)


async def test_a_socket_with_an_unknown_session_is_disconnected(server: ServerProcess) -> None:
    for namespace in ("/ux4iot", "/"):
        live = LiveSocket(namespace)
        await live.client.connect(
            f"{server.http_url}/?sessionId=no-such-session",
            namespaces=[namespace],
            transports=["websocket"],
            wait_timeout=15,
        )
        await live.wait_disconnect()
        await live.close()


async def test_every_ingest_path_arrives(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    session = ux.session()
    async with live_socket(server.http_url, session) as live:
        assert ux.grant(session, dev, "telemetry", telemetryKey=None).status_code == 204
        assert ux.subscribe(session, dev, "telemetry", telemetryKey=None).status_code == 204
        send_https(server, device, {"via": "https"})
        await live.wait(telemetry_of(dev, via="https"))
        raw = await mqtt_device(server, device)
        try:
            raw.publish(f"devices/{dev}/messages/events/", b'{"via": "mqtt"}')
            await live.wait(telemetry_of(dev, via="mqtt"))
        finally:
            await raw.close()
        with server.client(verify=False) as api:
            sent = api.post(
                f"/central/api/devices/{dev}/telemetry",
                params={"api-version": CENTRAL_VERSION},
                json={"via": "central"},
            )
            assert sent.status_code == 204, sent.text
        await live.wait(telemetry_of(dev, via="central"))


def test_last_values_of_a_key_of_every_type_and_clearing(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    dev = device["id"]
    send_https(server, device, {"n": 1, "s": "a"})
    send_https(server, device, {"n": 2.5})

    def data() -> dict[str, Any]:
        response = ux.http.get(f"/lastValue/{dev}")  # the key: no grant needed
        assert response.status_code == 200
        return {k: v["value"] for k, v in response.json()["data"].items()}

    deadline = time.monotonic() + 15
    while data() != {"n": 2.5, "s": "a"}:
        assert time.monotonic() < deadline, data()
        time.sleep(0.05)
    assert ux.http.get(f"/lastValue/{dev}/s").json()["data"] == {"s": "a"}
    assert ux.http.delete(f"/lastValue/{dev}").status_code == 204
    assert data() == {}
    assert ux.http.get(f"/lastValue/{dev}/n").status_code == 404
    send_https(server, device, {"n": 3})
    deadline = time.monotonic() + 15
    while data() != {"n": 3}:
        assert time.monotonic() < deadline, data()
        time.sleep(0.05)


def test_a_last_value_sent_once_outlives_many_newer_messages(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    """ux4iot keeps each key's last value until it is cleared: a state a device reports once,
    then buried under frequent readings, is still what useTelemetry starts from."""
    dev = device["id"]
    send_https(server, device, {"state": "running", "door": False, "cfg": {"mode": 2}})
    for n in range(30):
        send_https(server, device, {"temp": n})
    deadline = time.monotonic() + 15
    while ux.http.get(f"/lastValue/{dev}/temp").json().get("data") != {"temp": 29}:
        assert time.monotonic() < deadline, "the newest reading never became the last value"
        time.sleep(0.05)
    assert ux.http.get(f"/lastValue/{dev}/state").json()["data"] == {"state": "running"}
    assert ux.http.get(f"/lastValue/{dev}/door").json()["data"] == {"door": False}
    session = ux.session()
    for key in ("state", "cfg", "temp"):
        assert ux.grant(session, dev, "telemetry", telemetryKey=key).status_code == 204
    got = ux.as_session("GET", f"/lastValue/{dev}", session).json()["data"]
    assert {k: v["value"] for k, v in got.items()} == {
        "state": "running",
        "cfg": {"mode": 2},
        "temp": 29,
    }
    one = ux.as_session("GET", f"/lastValue/{dev}/cfg", session)
    assert one.status_code == 200 and one.json()["data"] == {"cfg": {"mode": 2}}
    # cleared is cleared, however far back the value lies
    assert ux.http.delete(f"/lastValue/{dev}").status_code == 204
    assert ux.http.get(f"/lastValue/{dev}/state").status_code == 404
    assert ux.as_session("GET", f"/lastValue/{dev}", session).json()["data"] == {}


def test_a_session_with_a_telemetry_grant_clears_the_last_values(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    """Seed, "Remove all last values for a device": the sessionId header or the key; with a
    session, a telemetry grant of the device must exist."""
    dev = device["id"]
    send_https(server, device, {"n": 1})
    assert ux.bare.delete(f"/lastValue/{dev}").status_code == 401
    assert ux.as_session("DELETE", f"/lastValue/{dev}", "no-such-session").status_code == 404
    session = ux.session()
    assert ux.as_session("DELETE", f"/lastValue/{dev}", session).status_code == 403  # unbound
    assert ux.grant(session, dev, "deviceTwin").status_code == 204
    assert ux.as_session("DELETE", f"/lastValue/{dev}", session).status_code == 403
    assert ux.grant(session, "another-device", "telemetry").status_code == 204
    assert ux.as_session("DELETE", f"/lastValue/{dev}", session).status_code == 403
    assert ux.http.get(f"/lastValue/{dev}/n").json()["data"] == {"n": 1}  # nothing cleared
    assert ux.grant(session, dev, "telemetry", telemetryKey="n").status_code == 204
    assert ux.as_session("DELETE", f"/lastValue/{dev}", session).status_code == 204
    assert ux.http.get(f"/lastValue/{dev}/n").status_code == 404
    assert ux.as_session("GET", f"/lastValue/{dev}", session).json()["data"] == {}
    # a granted device id the account does not hold is 404, as with the key
    gone = ux.as_session("DELETE", "/lastValue/another-device", session)
    assert gone.status_code == 404 and gone.json()["error"]["field"] == "deviceId"


def test_reads_need_a_credential(server: ServerProcess, ux: Ux, device: dict[str, Any]) -> None:
    dev = device["id"]
    for path in (
        f"/lastValue/{dev}",
        f"/lastValue/{dev}/k",
        f"/deviceTwin/{dev}",
        f"/connectionState/{dev}",
    ):
        assert ux.bare.get(path).status_code == 401
        assert ux.bare.get(path, headers={SESSION: "no-such-session"}).status_code == 404
        unbound = ux.session()  # no grant yet: it may read nothing
        assert ux.bare.get(path, headers={SESSION: unbound}).status_code == 403
        assert ux.bare.get(path, headers={KEY: "wrong"}).status_code == 401


# -- log level, expiry, its own port -------------------------------------------------------------


async def test_the_log_level_changes_at_run_time(
    server: ServerProcess, ux: Ux, device: dict[str, Any]
) -> None:
    assert ux.http.put("/logLevel/loud").status_code == 400
    assert ux.http.put("/logLevel/debug").status_code == 204
    try:
        session = ux.session()
        async with live_socket(server.http_url, session):
            await wait_until(
                lambda: f"joined session {session}" in server.log(), what="a debug line"
            )
    finally:
        assert ux.http.put("/logLevel/info").status_code == 204
    session = ux.session()
    async with live_socket(server.http_url, session):
        pass
    assert f"joined session {session}" not in server.log()
    # the log level is the server's: another account's key may not set it
    token = other_account(server, "ux-loglevel")
    with Ux(server.http_url, create_key(server, token)["key"]) as tenant:
        assert tenant.http.put("/logLevel/debug").status_code == 403


async def test_idle_sessions_expire_and_their_sockets_are_refused(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(env={"THINGHUB_UX4IOT_SESSION_IDLE_S": "1"})
    try:
        with Ux(server.http_url, create_key(server)["key"]) as ux:
            device = new_device(server)
            idle, kept = ux.session(), ux.session()
            assert ux.grant(kept, device["id"], "telemetry").status_code == 204
            async with live_socket(server.http_url, kept) as live:
                await asyncio.sleep(2.5)  # let the idle time pass (1 s), twice over
                assert ux.grant(idle, device["id"], "telemetry").status_code == 404
                # a session with a socket stays
                assert ux.subscribe(kept, device["id"], "telemetry").status_code == 204
                send_https(server, device, {"still": "here"})
                await live.wait(telemetry_of(device["id"], still="here"))
            refused = LiveSocket()
            await refused.client.connect(
                f"{server.http_url}/?sessionId={idle}",
                namespaces=[UX],
                transports=["websocket"],
                wait_timeout=15,
            )
            await refused.wait_disconnect()
            await refused.close()
    finally:
        assert server.stop() == 0


async def test_face_listen_serves_it_at_the_root_of_its_own_port(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--face-listen", "ux4iot=127.0.0.1:0")
    try:
        own = server.addresses["faces"]["ux4iot"]["url"]
        key = create_key(server)["key"]
        device = new_device(server)
        with Ux(own, key, prefix="") as ux, Ux(server.http_url, key) as shared:
            session = ux.session()
            assert ux.grant(session, device["id"], "telemetry", telemetryKey="t").status_code == 204
            # one session store for both ports
            assert (
                shared.subscribe(session, device["id"], "telemetry", telemetryKey="t").status_code
                == 204
            )
            async with live_socket(own, session, namespace="/") as live:
                send_https(server, device, {"t": 7})
                await live.wait(telemetry_of(device["id"], t=7))
    finally:
        assert server.stop() == 0


def test_a_key_made_on_the_st_faces_own_port_names_an_endpoint_that_works(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With `--face-listen st=127.0.0.1:0` and no public URL, `POST /v1/ux4iot/keys` on the
    ST face's own port answers the shared HTTP port's Endpoint (which serves /ux4iot), not
    the port the request came in on (which serves only /v1); a ux4iot backend using that
    Endpoint and key opens a session."""
    server = start_server("--face-listen", "st=127.0.0.1:0")
    try:
        own = server.addresses["faces"]["st"]["url"]
        assert own != server.http_url
        bearer = {"Authorization": f"Bearer {server.admin_token}"}
        with httpx.Client(base_url=own, timeout=30, headers=bearer) as api:
            created = api.post("/v1/ux4iot/keys", json={"label": "own port"})
            assert created.status_code == 201, created.text
            listed = api.get("/v1/ux4iot/keys").json()
        body = created.json()
        expected = f"{server.http_url}/ux4iot"
        assert body["endpoint"] == expected
        assert body["connectionString"] == f"Endpoint={expected};SharedAccessKey={body['key']}"
        assert {k["endpoint"] for k in listed} == {expected}
        endpoint, _, key = (
            body["connectionString"].removeprefix("Endpoint=").partition(";SharedAccessKey=")
        )
        with Ux(endpoint, key, prefix="") as ux:  # the Endpoint as a ux4iot backend uses it
            assert ux.session()
    finally:
        assert server.stop() == 0
