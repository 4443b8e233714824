"""Devices connect with the real azure-iot-device SDK (issue 3, "How it is checked" 1-5).

Every SDK client reaches the server's ephemeral MQTT port through the listener's HTTP CONNECT
proxy line (ProxyOptions in-process, MQTT_PROXY for the thermostat script), with the fake
names hub.iothub.test and dps.iothub.test that the server puts in its certificate SANs.
Everything the device did is then checked through /v1, as the seed's user would.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.iot.device import Message, MethodResponse
from azure.iot.device.exceptions import ConnectionFailedError, CredentialError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.azure import (  # noqa: F401 -- collect_sdk_garbage is a fixture
    HUB_HOST,
    SERVER_ARGS,
    THERMOSTAT_MODEL,
    Inbox,
    RawClient,
    Target,
    ThermostatProcess,
    closing_client,
    collect_sdk_garbage,
    connected,
    connection_states,
    derive_device_key,
    events,
    method_report,
    paho_socket_leaks,
    primary_key,
    reported_change,
    stored_telemetry,
    telemetries,
    wait_connection_state,
    wait_for,
    wait_telemetry,
)
from tests.e2e.helpers_st import TS_RE, StServer, create_device
from tests.e2e.server import running
from tests.pg import create_database, drop_database
from thinghub.mqtt import PubackReceived

pytestmark = [
    pytest.mark.backend_agnostic,  # it runs itself on both backends (the `server` fixture)
    pytest.mark.e2e,
    pytest.mark.slow,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]

REPORT_KEYS = {"avgTemp", "maxTemp", "minTemp", "startTime", "endTime"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StServer]:
    """One server per backend for the module, with the fake hub and DPS names in its
    certificate: every test here runs on SQLite and on PostgreSQL (a database of its own
    on the session's server)."""
    database: tuple[str, ...] = ()
    if request.param == "postgres":
        dsn = create_database(request.getfixturevalue("postgres_dsn"), "thinghub_e2e_sdk")
        database = ("--database", dsn)
    data_dir = tmp_path_factory.mktemp("thinghub-sdk")
    try:
        with running(StServer(data_dir, *SERVER_ARGS, *database)) as proc:
            yield proc
    finally:
        if database:
            drop_database(database[1])


@pytest.fixture(scope="module")
def target(server: StServer) -> Target:
    assert server.addresses["hub_hostname"] == HUB_HOST
    return Target.of(server.addresses)


@pytest.fixture
def new_device(admin: httpx.Client, unique: Callable[[str], str]) -> Callable[..., dict[str, Any]]:
    def make(
        name: str = "sdk device",
        *,
        gateway: bool = False,
        project: str | None = None,
        deployment: str | None = None,
    ) -> dict[str, Any]:
        return create_device(
            admin, name, project or unique("proj"), deployment or unique("dep"), gateway=gateway
        )

    return make


# -- (1) the thermostat story, through DPS ---------------------------------------------------


def test_thermostat_story_through_dps(
    server: StServer, target: Target, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("example_project"), unique("example_deployment")
    device = create_device(admin, "example smart thermostat", project, deployment)
    device_id = device["id"]
    assert device["idScope"] == target.id_scope

    thermostat = ThermostatProcess(target.thermostat_env(device_id, primary_key(device)))
    try:
        # The sample's start-up lines: assigned by DPS to our hub, under its own id.
        at, _ = thermostat.wait_line("Device was assigned", 30)
        thermostat.wait_line(device_id, after=at)
        assert thermostat.lines[at + 1 : at + 3] == [HUB_HOST, device_id]
        thermostat.wait_line("Press Q to quit")
        thermostat.wait_line("Sent message")

        # Telemetry, as GET /v1/telemetries?projectID&deploymentID shows it in the seed.
        def listed() -> list[dict[str, Any]]:
            response = admin.get(
                "/v1/telemetries", params={"projectID": project, "deploymentID": deployment}
            )
            assert response.status_code == 200, response.text
            return list(response.json()) if len(response.json()) >= 2 else []

        items = wait_for(listed, what="two telemetries")
        for item in items:
            assert set(item) == {"deviceID", "timestamp", "body"}, item
            assert item["deviceID"] == device_id
            assert TS_RE.fullmatch(item["timestamp"]), item
            assert set(item["body"]) == {"temperature"}, item
            assert isinstance(item["body"]["temperature"], int)
            assert 10 <= item["body"]["temperature"] <= 49
        for row in stored_telemetry(server, device_id):
            assert row["content_type"] == "application/json"
            assert row["content_encoding"] == "utf-8"

        # connection_state_event deviceConnected, as in the seed.
        connected_event = wait_connection_state(admin, device_id, "deviceConnected")
        assert connected_event["deviceID"] == device_id
        assert set(connected_event["body"]) == {"sequenceNumber", "state"}
        assert len(connected_event["body"]["sequenceNumber"]) == 64

        # The reported maxTempSinceLastReboot change_event, in the seed's shape.
        change = reported_change(admin, device_id, "maxTempSinceLastReboot")
        body = change["body"]
        assert set(body) == {"version", "properties"}
        assert isinstance(body["version"], int)
        reported = body["properties"]["reported"]
        assert reported["maxTempSinceLastReboot"] == 10.96
        assert isinstance(reported["$version"], int)
        meta = reported["$metadata"]
        assert TS_RE.fullmatch(meta["$lastUpdated"])
        assert TS_RE.fullmatch(meta["maxTempSinceLastReboot"]["$lastUpdated"])

        # The model id came only through the hub username (product_info); DPS payload too.
        shown = admin.get(f"/v1/devices/{device_id}").json()
        assert shown["modelId"] == THERMOSTAT_MODEL
        assert shown["connectionState"] == "Connected"
        assert shown["lastActivityTime"] is not None

        # A desired targetTemperature reaches the device, which acks it the PnP way.
        put = admin.put(
            f"/v1/devices/{device_id}", json={"properties": {"targetTemperature": 22.5}}
        )
        assert put.status_code == 200, put.text
        assert put.json()["properties"]["desired"] == {"targetTemperature": 22.5}
        twin = admin.get(f"/v1/devices/{device_id}/twin").json()
        desired_version = twin["properties"]["desired"]["$version"]
        assert desired_version == 2  # a new twin's desired section is version 1, as in IoT Hub
        # The line the seed shows, key order included.
        seed_line = "the data in the desired properties patch was: "
        thermostat.wait_line(seed_line + "{'$version': 2, 'targetTemperature': 22.5}")
        ack_event = reported_change(admin, device_id, "targetTemperature")
        ack = ack_event["body"]["properties"]["reported"]["targetTemperature"]
        assert ack == {
            "ac": 200,
            "ad": "Successfully executed patch",
            "av": desired_version,
            "value": 22.5,
        }

        # getMaxMinReport: the device's double-encoded report comes back with status 200.
        since = datetime.datetime.now(datetime.UTC).isoformat()
        response = admin.post(
            f"/v1/devices/{device_id}/method",
            json={"name": "getMaxMinReport", "payload": since, "responseTimeoutInSeconds": 15},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-method-status"] == "200"
        report = method_report(response)
        assert set(report) == REPORT_KEYS
        assert 10 <= report["minTemp"] <= report["avgTemp"] <= report["maxTemp"] <= 49
        assert datetime.datetime.fromisoformat(
            report["startTime"]
        ) <= datetime.datetime.fromisoformat(report["endTime"])
        thermostat.wait_line(since)  # the device printed the payload it was sent

        reboot = admin.post(
            f"/v1/devices/{device_id}/method", json={"name": "reboot", "payload": 3}
        )
        assert reboot.status_code == 200, reboot.text
        assert reboot.json() == {"result": True, "data": "reboot succeeded"}

        # "Q": the device shuts down and a deviceDisconnected event follows.
        assert thermostat.quit() == 0, thermostat.output()
        # The stdin thread prints "Quitting..." while the telemetry task may be printing too;
        # two threads' prints can share a line, so look for it inside lines.
        thermostat.wait_line("Quitting...", timeout=0)
        thermostat.wait_line("Shut down", timeout=0)
    finally:
        thermostat.close()
    wait_connection_state(admin, device_id, "deviceDisconnected")
    assert connection_states(admin, device_id) == ["deviceConnected", "deviceDisconnected"]
    assert admin.get(f"/v1/devices/{device_id}").json()["connectionState"] == "Disconnected"


def test_thermostat_through_an_enrollment_group(
    target: Target, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    project, deployment = unique("group_project"), unique("group_deployment")
    created = admin.post(
        "/v1/enrollmentGroups",
        json={"enrollmentGroupId": unique("group"), "project": project, "deployment": deployment},
    )
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["idScope"] == target.id_scope
    shown = admin.get(f"/v1/enrollmentGroups/{group['enrollmentGroupId']}").json()
    assert shown["idScope"] == target.id_scope
    assert shown["attestation"] == group["attestation"]
    listed_groups = admin.get("/v1/enrollmentGroups").json()
    assert group["enrollmentGroupId"] in {g["enrollmentGroupId"] for g in listed_groups}
    assert {g["idScope"] for g in listed_groups} == {target.id_scope}
    group_key = group["attestation"]["symmetricKey"]["primaryKey"]
    registration_id = unique("thermo")
    assert admin.get("/v1/devices", params={"projectID": project}).json() == []

    # A key derived for another registration id is refused by DPS.
    wrong = target.provisioning_client(
        registration_id, derive_device_key(group_key, unique("other"))
    )
    with pytest.raises(CredentialError):
        wrong.register()

    key = derive_device_key(group_key, registration_id)
    thermostat = ThermostatProcess(target.thermostat_env(registration_id, key))
    try:
        at, _ = thermostat.wait_line("Device was assigned", 30)
        thermostat.wait_line(registration_id, after=at)
        assert thermostat.lines[at + 1 : at + 3] == [HUB_HOST, registration_id]
        thermostat.wait_line("Sent message")
        wait_telemetry(admin, registration_id, lambda t: "temperature" in t["body"])
        listed = admin.get("/v1/devices", params={"projectID": project}).json()
        assert [d["id"] for d in listed] == [registration_id]
        device = listed[0]
        assert device["tags"]["project"] == project
        assert device["tags"]["deployment"] == deployment
        assert device["modelId"] == THERMOSTAT_MODEL
        assert device["connectionState"] == "Connected"
        assert device["idScope"] == target.id_scope
        assert thermostat.quit() == 0, thermostat.output()
    finally:
        thermostat.close()
    wait_connection_state(admin, registration_id, "deviceDisconnected")


def test_dps_in_process_with_proxy_options(
    target: Target, new_device: Callable[..., dict[str, Any]]
) -> None:
    """The SDK's register() result, field by field (spec §7 final body)."""
    device = new_device()
    client = target.provisioning_client(device["id"], primary_key(device))
    client.provisioning_payload = {"modelId": THERMOSTAT_MODEL}
    result = client.register()
    assert result.status == "assigned"
    state = result.registration_state
    assert state.device_id == device["id"]
    assert state.assigned_hub == HUB_HOST
    assert state.sub_status == "initialAssignment"
    assert str(state)  # the SDK's samples print it; raises when a field is missing
    assert result.operation_id


# -- (2) connection string + symmetric key ---------------------------------------------------


def test_telemetry_with_properties(
    server: StServer, target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    device = new_device()
    with connected(target.device_client(device)) as client:
        message = Message(
            json.dumps({"temperature": 21.5, "humidity": 40}),
            message_id="mid-1",
            content_encoding="utf-8",
            content_type="application/json",
        )
        message.correlation_id = "corr-1"
        message.custom_properties = {"alert": "high temp", "a&b": "x=y", "path": "a/b"}
        client.send_message(message)
        client.send_message("plain string")
        # The same message id again is a duplicate and is not stored twice.
        client.send_message(
            Message('{"temperature": 99}', message_id="mid-1", content_type="application/json")
        )
        client.send_message(Message('{"after": true}', message_id="mid-2"))
        wait_telemetry(admin, device["id"], lambda t: t["body"] == {"after": True})

    bodies = [t["body"] for t in reversed(telemetries(admin, device["id"]))]
    assert bodies == [{"temperature": 21.5, "humidity": 40}, "plain string", {"after": True}]
    rows = stored_telemetry(server, device["id"])
    assert rows[0]["message_id"] == "mid-1"
    assert rows[0]["correlation_id"] == "corr-1"
    assert rows[0]["content_type"] == "application/json"
    assert rows[0]["content_encoding"] == "utf-8"
    assert json.loads(rows[0]["properties"]) == {"alert": "high temp", "a&b": "x=y", "path": "a/b"}
    assert rows[1]["message_id"] is None
    assert rows[1]["properties"] is None
    assert rows[2]["message_id"] == "mid-2"


def test_twin_get_and_reported_patch(
    target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    device = new_device()
    device_id = device["id"]
    assert (
        admin.put(f"/v1/devices/{device_id}", json={"properties": {"fanSpeed": 3}}).status_code
        == 200
    )
    with connected(target.device_client(device)) as client:
        twin = client.get_twin()
        assert set(twin) == {"desired", "reported"}
        assert twin["desired"]["fanSpeed"] == 3
        assert isinstance(twin["desired"]["$version"], int)
        assert set(twin["reported"]) == {"$version"}
        first = twin["reported"]["$version"]

        client.patch_twin_reported_properties({"firmware": "1.2.3", "battery": 97})
        client.patch_twin_reported_properties({"battery": None, "rssi": -60})
        twin = client.get_twin()
        reported = {k: v for k, v in twin["reported"].items() if not k.startswith("$")}
        assert reported == {"firmware": "1.2.3", "rssi": -60}
        assert twin["reported"]["$version"] == first + 2

    change = reported_change(admin, device_id, "firmware")
    assert change["body"]["properties"]["reported"]["firmware"] == "1.2.3"
    assert change["body"]["properties"]["reported"]["$version"] == first + 1
    deleted = reported_change(admin, device_id, "rssi")["body"]["properties"]["reported"]
    assert deleted["battery"] is None
    assert deleted["$version"] == first + 2
    service_twin = admin.get(f"/v1/devices/{device_id}/twin").json()
    assert service_twin["properties"]["reported"]["rssi"] == -60
    assert "battery" not in service_twin["properties"]["reported"]


def test_desired_patch_method_and_c2d(
    target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    device = new_device()
    device_id = device["id"]
    # Queued while the device has never connected: delivered once it listens.
    queued = admin.post(
        f"/v1/devices/{device_id}/messages",
        json={"body": {"cmd": "queued"}, "properties": {"color": "red", "path": "a/b&c=d"}},
    )
    assert queued.status_code == 202, queued.text

    patches, messages, states = Inbox(), Inbox(), Inbox()
    client = target.device_client(device)
    client.on_connection_state_change = lambda: states(client.connected)

    def on_method(request: Any) -> None:
        status = 200 if request.name == "echo" else 404
        client.send_method_response(
            MethodResponse.create_from_method_request(
                request, status, {"name": request.name, "got": request.payload}
            )
        )

    with connected(client):
        client.on_twin_desired_properties_patch_received = patches
        client.on_method_request_received = on_method
        client.on_message_received = messages
        states.wait(lambda s: s is True, what="on_connection_state_change(connected)")

        first = messages.wait(what="the queued C2D message")
        assert json.loads(first.data) == {"cmd": "queued"}
        assert first.message_id == queued.json()["messageId"]
        assert first.custom_properties == {"color": "red", "path": "a/b&c=d"}

        live = admin.post(
            f"/v1/devices/{device_id}/messages",
            json={"body": "hello device", "properties": {"n": "2"}},
        )
        assert live.status_code == 202, live.text
        second = messages.wait(lambda m: m.data == b"hello device", what="the live C2D")
        assert second.message_id == live.json()["messageId"]
        assert second.custom_properties == {"n": "2"}

        put = admin.put(
            f"/v1/devices/{device_id}",
            json={"properties": {"targetTemperature": 42.5, "mode": "eco"}},
        )
        assert put.status_code == 200, put.text
        version = admin.get(f"/v1/devices/{device_id}/twin").json()["properties"]["desired"][
            "$version"
        ]
        patch = patches.wait(lambda p: "targetTemperature" in p, what="the desired patch")
        assert patch == {"targetTemperature": 42.5, "mode": "eco", "$version": version}

        response = admin.post(
            f"/v1/devices/{device_id}/method",
            json={"name": "echo", "payload": {"a": [1, 2, {"b": None}], "s": "x"}},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-method-status"] == "200"
        assert response.json() == {"name": "echo", "got": {"a": [1, 2, {"b": None}], "s": "x"}}

        missing = admin.post(f"/v1/devices/{device_id}/method", json={"name": "nope"})
        assert missing.status_code == 200, missing.text
        assert missing.headers["x-method-status"] == "404"
        assert missing.json() == {"name": "nope", "got": None}
    assert messages.items == [first, second]
    wait_connection_state(admin, device_id, "deviceDisconnected")


def test_desired_changed_while_offline_is_delivered_on_reconnect(
    target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    """The server's persistent session, not the SDK's own twin GET, brings the change.

    ensure_desired_properties=False turns off the SDK's refresh-on-reconnect, and the SDK
    never re-subscribes on connect(): only our stored subscription can deliver the patch.
    """
    device = new_device()
    device_id = device["id"]
    patches = Inbox()
    client = target.device_client(device, ensure_desired_properties=False)
    with connected(client):
        client.on_twin_desired_properties_patch_received = patches
        admin.put(f"/v1/devices/{device_id}", json={"properties": {"setpoint": 1}})
        patches.wait(lambda p: p.get("setpoint") == 1, what="the first desired patch")

        client.disconnect()
        wait_for(
            lambda: (
                admin.get(f"/v1/devices/{device_id}").json()["connectionState"] == "Disconnected"
            ),
            what="Disconnected",
        )
        put = admin.put(f"/v1/devices/{device_id}", json={"properties": {"setpoint": 2}})
        assert put.status_code == 200, put.text
        version = admin.get(f"/v1/devices/{device_id}/twin").json()["properties"]["desired"][
            "$version"
        ]
        assert not any(p.get("setpoint") == 2 for p in patches.items)

        client.connect()
        patch = patches.wait(lambda p: p.get("setpoint") == 2, what="the missed patch")
        assert patch["$version"] == version
    expected = ["deviceConnected", "deviceDisconnected"] * 2
    wait_for(lambda: connection_states(admin, device_id) == expected, what=str(expected))


# -- (3) a module of a gateway ---------------------------------------------------------------


def test_module_client(
    target: Target,
    admin: httpx.Client,
    new_device: Callable[..., dict[str, Any]],
    unique: Callable[[str], str],
) -> None:
    gateway = new_device("edge gateway", gateway=True)
    gateway_id = gateway["id"]
    module_id = unique("sensor")
    created = admin.post(f"/v1/devices/{gateway_id}/modules", json={"moduleId": module_id})
    assert created.status_code == 200, created.text
    module = created.json()
    assert module["moduleId"] == module_id
    assert module["deviceId"] == gateway_id
    base = f"/v1/devices/{gateway_id}/modules/{module_id}"

    patches = Inbox()
    client = target.module_client(gateway_id, module)

    def on_method(request: Any) -> None:
        client.send_method_response(
            MethodResponse.create_from_method_request(
                request, 200, {"module": module_id, "echo": request.payload}
            )
        )

    with connected(client):
        client.on_twin_desired_properties_patch_received = patches
        client.on_method_request_received = on_method
        client.send_message(
            Message('{"pressure": 1013}', content_type="application/json", content_encoding="utf-8")
        )
        client.send_message_to_output(Message('{"alarm": "low"}'), "alerts")

        def landed() -> list[dict[str, Any]]:
            found = admin.get(
                "/v1/telemetries", params={"projectID": gateway["tags"]["project"]}
            ).json()
            return found if len(found) >= 2 else []

        items = sorted(wait_for(landed, what="module telemetry"), key=lambda t: t["timestamp"])
        assert [t["body"] for t in items] == [{"pressure": 1013}, {"alarm": "low"}]
        for item in items:
            assert item["deviceID"] == gateway_id
            assert item["moduleID"] == module_id

        client.patch_twin_reported_properties({"state": "running"})
        twin = client.get_twin()
        assert twin["reported"]["state"] == "running"
        service_twin = admin.get(f"{base}/twin").json()
        assert service_twin["deviceId"] == gateway_id
        assert service_twin["moduleId"] == module_id
        assert service_twin["properties"]["reported"]["state"] == "running"

        put = admin.put(base, json={"properties": {"interval": 5}})
        assert put.status_code == 200, put.text
        patch = patches.wait(lambda p: p.get("interval") == 5, what="the module's patch")
        assert (
            patch["$version"]
            == admin.get(f"{base}/twin").json()["properties"]["desired"]["$version"]
        )
        # The gateway's own twin is untouched.
        assert (
            admin.get(f"/v1/devices/{gateway_id}/twin")
            .json()["properties"]["desired"]
            .get("interval")
            is None
        )

        response = admin.post(f"{base}/method", json={"name": "ping", "payload": [1, "two"]})
        assert response.status_code == 200, response.text
        assert response.headers["x-method-status"] == "200"
        assert response.json() == {"module": module_id, "echo": [1, "two"]}
        assert admin.get(base).json()["connectionState"] == "Connected"
    wait_for(
        lambda: admin.get(base).json()["connectionState"] == "Disconnected",
        what="the module disconnected",
    )


# -- (4) SAS token renewal -------------------------------------------------------------------


def test_token_renewal_keeps_working(
    target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    """sastoken_ttl=130: the SDK reconnects with a fresh token every ~10 s (expiry - 120 s)."""
    device = new_device()
    device_id = device["id"]
    states = Inbox()
    client = target.device_client(device, sastoken_ttl=130)
    client.on_connection_state_change = lambda: states(client.connected)

    def on_method(request: Any) -> None:
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"pong": request.payload})
        )

    with connected(client):
        client.on_method_request_received = on_method
        client.send_message('{"n": 0}')
        # Two renewals: three deviceConnected events in all.
        wait_for(
            lambda: connection_states(admin, device_id).count("deviceConnected") >= 3,
            timeout=45,
            interval=0.5,
            what="two SAS renewals",
        )
        wait_for(lambda: client.connected, what="the client back after renewal")
        client.send_message('{"n": 1}')
        wait_telemetry(admin, device_id, lambda t: t["body"] == {"n": 1})
        response = admin.post(
            f"/v1/devices/{device_id}/method",
            json={"name": "ping", "payload": 7, "responseTimeoutInSeconds": 15},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"pong": 7}
    sequence = connection_states(admin, device_id)
    assert sequence[:5] == [
        "deviceConnected",
        "deviceDisconnected",
        "deviceConnected",
        "deviceDisconnected",
        "deviceConnected",
    ], sequence
    assert [t["body"] for t in telemetries(admin, device_id)] == [{"n": 1}, {"n": 0}]


# -- (5) refusals, and others unaffected -----------------------------------------------------


def foreign_certificate(common_name: str, directory: Path) -> tuple[Path, Path]:
    """A client certificate with the right CN, issued by a CA the hub never heard of."""
    now = datetime.datetime.now(datetime.UTC)

    def build(name: str, key: Any, issuer: x509.Name, signer: Any, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    ca_cert = build("rogue CA", ca_key, ca_name, ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(common_name, leaf_key, ca_cert.subject, ca_key, False)
    cert_file, key_file = directory / "rogue.pem", directory / "rogue.key"
    cert_file.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_refused_credentials_leave_others_sending(
    server: StServer,
    target: Target,
    admin: httpx.Client,
    new_device: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    bystander = new_device("bystander")
    victim = new_device("victim")
    disabled = new_device("to be disabled")
    assert (
        admin.put(
            f"/v1/devices/{disabled['id']}", json={"provisioningStatus": "disabled"}
        ).status_code
        == 200
    )
    random_key = base64.b64encode(secrets.token_bytes(64)).decode()

    def attempts() -> Iterator[tuple[str, Any, type[Exception]]]:
        yield "wrong key", target.device_client(victim, key=random_key), CredentialError
        yield (
            "secondary key of another device",
            target.device_client(
                victim, key=bystander["credentials"]["symmetricKey"]["secondaryKey"]
            ),
            CredentialError,
        )
        yield (
            "unknown device",
            target.device_client({"id": "no-such-device-" + secrets.token_hex(4)}, key=random_key),
            CredentialError,
        )
        yield "disabled device", target.device_client(disabled), CredentialError
        token = target.hub_sas(victim["id"], primary_key(victim), int(time.time()) + 2)
        expiring = target.sastoken_client(token)  # the SDK refuses already-expired tokens
        wait_for(
            lambda: time.time() > int(token.rsplit("se=", 1)[1]) + 0.5, what="the token to expire"
        )
        yield "expired token", expiring, CredentialError
        yield (
            "certificate from another CA",
            target.x509_client(victim["id"], *foreign_certificate(victim["id"], tmp_path)),
            ConnectionFailedError,
        )

    sent = 0
    with connected(target.device_client(bystander)) as keeper:
        for name, client, error in attempts():
            with closing_client(client), pytest.raises(error) as info:
                client.connect()
            if error is CredentialError:
                assert "not authorised" in str(info.value.__cause__), (name, info.value)
            keeper.send_message(json.dumps({"after": name}))
            sent += 1
            assert keeper.connected, name
        wait_telemetry(
            admin, bystander["id"], lambda t: t["body"] == {"after": "certificate from another CA"}
        )
    assert len(telemetries(admin, bystander["id"])) == sent
    for device in (victim, disabled):
        assert telemetries(admin, device["id"]) == []
        assert connection_states(admin, device["id"]) == []
    log = server.log_path.read_text()
    assert "refused with CONNACK 5" in log
    assert "certificate verify failed" in log


def test_x509_device_certificate(
    target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    device = new_device()
    issued = admin.post(f"/v1/devices/{device['id']}/certificates")
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["deviceId"] == device["id"]
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["id"]
    assert body["caCertificate"] == target.ca_pem
    cert_file, key_file = tmp_path / "device.pem", tmp_path / "device.key"
    cert_file.write_text(body["certificate"])
    key_file.write_text(body["privateKey"])

    with connected(target.x509_client(device["id"], cert_file, key_file)) as client:
        client.send_message(Message('{"auth": "x509"}', content_type="application/json"))
        client.patch_twin_reported_properties({"auth": "x509"})
        wait_telemetry(admin, device["id"], lambda t: t["body"] == {"auth": "x509"})
    reported_change(admin, device["id"], "auth")
    wait_connection_state(admin, device["id"], "deviceDisconnected")

    # The certificate names one device: presenting it for another is refused.
    other = new_device()
    with (
        closing_client(target.x509_client(other["id"], cert_file, key_file)) as client,
        pytest.raises(CredentialError),
    ):
        client.connect()
    assert connection_states(admin, other["id"]) == []


def test_other_devices_topics_are_refused(
    server: StServer, target: Target, admin: httpx.Client, new_device: Callable[..., dict[str, Any]]
) -> None:
    """Raw MQTT (our own codec) for what the SDK cannot send: foreign topics."""
    intruder, victim = new_device("intruder"), new_device("victim")
    expiry = int(time.time()) + 600
    token = target.hub_sas(intruder["id"], primary_key(intruder), expiry)
    username = target.hub_username(intruder["id"])

    # Control: its own telemetry topic works and is acknowledged.
    with RawClient(target) as raw:
        assert raw.connect(intruder["id"], username, token).return_code == 0
        raw.publish(
            f"devices/{intruder['id']}/messages/events/%24.ct=application%2Fjson", b'{"own": true}'
        )
        raw.next_event(PubackReceived)
    wait_telemetry(admin, intruder["id"], lambda t: t["body"] == {"own": True})

    abuses = [
        ("publish", f"devices/{victim['id']}/messages/events/"),
        ("publish", f"devices/{victim['id']}/modules/m1/messages/events/"),
        ("publish", "$iothub/twin/PATCH/properties/desired/?$rid=1"),
        ("publish", "some/other/topic"),
        ("subscribe", f"devices/{victim['id']}/messages/devicebound/#"),
        ("subscribe", "devices/+/messages/events/#"),  # only the C2D filter may hold a +
        ("subscribe", "$iothub/#"),
        ("subscribe", "#"),
    ]
    for action, topic in abuses:
        with RawClient(target) as raw:
            assert raw.connect(intruder["id"], username, token).return_code == 0
            if action == "publish":
                raw.publish(topic, b'{"forged": true}')
            else:
                raw.subscribe(topic)
            assert raw.wait_closed(10), f"{action} {topic!r} did not disconnect"
    log = server.log_path.read_text()
    assert f"publish to another device's topic 'devices/{victim['id']}" in log
    assert "subscribe to '#' is not allowed" in log
    assert telemetries(admin, victim["id"]) == []
    assert not any(t["body"] == {"forged": True} for t in telemetries(admin, intruder["id"]))
    desired = admin.get(f"/v1/devices/{intruder['id']}/twin").json()["properties"]["desired"]
    assert "forged" not in desired

    # Other devices keep working meanwhile: the victim itself connects and sends.
    with connected(target.device_client(victim)) as client:
        client.send_message('{"victim": "fine"}')
        wait_telemetry(admin, victim["id"], lambda t: t["body"] == {"victim": "fine"})
    assert [t["body"] for t in telemetries(admin, victim["id"])] == [{"victim": "fine"}]
    assert events(admin, victim["id"], "change_event") == []
