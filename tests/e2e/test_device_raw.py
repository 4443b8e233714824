"""The hub and DPS dialects, driven byte by byte where the SDK never goes (raw MQTT over TLS).

Each test pins one rule of docs/faces/device-mqtt.md or of IoT Hub's documented MQTT
behaviour that the Azure SDK itself never exercises: other client libraries' topic filters,
QoS 2, RETAIN, Will, clean sessions, request ids, duplicate method deliveries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.azure import (
    SERVER_ARGS,
    RawClient,
    Target,
    connection_states,
    primary_key,
    sign_sas,
    stored_telemetry,
    telemetries,
    wait_for,
    wait_telemetry,
)
from tests.e2e.helpers_st import StServer, create_device
from tests.e2e.server import running
from thinghub.mqtt import (
    ProtocolViolation,
    PubackReceived,
    Publish,
    SubackReceived,
    UnsubackReceived,
    Will,
    encode,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StServer]:
    with running(StServer(tmp_path_factory.mktemp("thinghub-raw"), *SERVER_ARGS)) as proc:
        yield proc


@pytest.fixture(scope="module")
def target(server: StServer) -> Target:
    return Target.of(server.addresses)


@pytest.fixture
def device(admin: httpx.Client, unique: Callable[[str], str]) -> dict[str, Any]:
    return create_device(admin, "raw device", unique("proj"), unique("dep"))


def hub_client(
    target: Target,
    device: dict[str, Any],
    *,
    clean: bool = False,
    will: Will | None = None,
    auto_ack: bool = True,
    raw: RawClient | None = None,
) -> RawClient:
    """Connected as the device; `raw` is a client whose TLS is already up (for races)."""
    raw = raw or RawClient(target)
    if not auto_ack:
        raw.session = type(raw.session)(auto_ack=False)
    token = target.hub_sas(device["id"], primary_key(device), int(time.time()) + 600)
    connack = raw.connect(
        device["id"], target.hub_username(device["id"]), token, clean=clean, will=will
    )
    assert connack.return_code == 0, connack
    return raw


def test_c2d_with_the_plus_filter_of_azure_sdk_for_c(
    target: Target, admin: httpx.Client, device: dict[str, Any], unique: Callable[[str], str]
) -> None:
    """azure-sdk-for-c subscribes `devices/+/messages/devicebound/#`; IoT Hub accepts it and
    sends the device its own messages only. The subscription persists like the usual one."""
    other = create_device(admin, "other", unique("proj"), unique("dep"))
    with hub_client(target, device) as raw:
        raw.subscribe("devices/+/messages/devicebound/#")
        assert raw.wait_suback().return_codes == (1,)
        for to, body in ((other, "not yours"), (device, "yours")):
            sent = admin.post(f"/v1/devices/{to['id']}/messages", json={"body": body})
            assert sent.status_code == 202, sent.text
        [got] = raw.publishes(within=2)
        assert got.topic.startswith(f"devices/{device['id']}/messages/devicebound/")
        assert got.payload == b"yours"
    # Clean session 0 and no SUBSCRIBE this time: the stored subscription still delivers.
    with hub_client(target, device) as raw:
        sent = admin.post(f"/v1/devices/{device['id']}/messages", json={"body": "later"})
        assert sent.status_code == 202, sent.text
        assert [p.payload for p in raw.publishes(within=2)] == [b"later"]
        # Unsubscribing with the same + filter ends delivery.
        raw.session.unsubscribe(["devices/+/messages/devicebound/#"])
        raw._flush()
        raw.next_event(UnsubackReceived)
        admin.post(f"/v1/devices/{device['id']}/messages", json={"body": "queued"})
        assert raw.publishes(within=1.5) == []


def test_qos2_publish_closes_the_connection(
    server: StServer, target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """IoT Hub does not support QoS 2: such a PUBLISH closes the connection, unstored."""
    topic = f"devices/{device['id']}/messages/events/"
    with hub_client(target, device) as raw:
        raw.sock.sendall(encode(Publish(topic, b'{"qos": 2}', 2, packet_id=9)))
        assert raw.wait_closed(10)
        # Closed without a PUBREC (which our QoS 0/1 client session would call a violation).
        assert not any(isinstance(e, ProtocolViolation) for e in raw.events)
    with hub_client(target, device) as raw:  # the device itself may go on, with QoS 1
        raw.publish(topic, b'{"qos": 1}')
        raw.next_event(PubackReceived)
    wait_telemetry(admin, device["id"], lambda t: t["body"] == {"qos": 1})
    assert [t["body"] for t in telemetries(admin, device["id"])] == [{"qos": 1}]
    assert "QoS 2 publish" in server.log_path.read_text()


def test_retained_telemetry_is_marked_not_kept(
    server: StServer, target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    with hub_client(target, device) as raw:
        raw.session.publish(
            f"devices/{device['id']}/messages/events/k=v", b'{"r": 1}', 1, retain=True
        )
        raw._flush()
        raw.next_event(PubackReceived)
    wait_telemetry(admin, device["id"], lambda t: t["body"] == {"r": 1})
    [row] = stored_telemetry(server, device["id"])
    assert json.loads(row["properties"]) == {"k": "v", "mqtt-retain": "true"}


def test_will_is_sent_as_telemetry_when_the_connection_drops(
    server: StServer, target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    did = device["id"]
    will = Will(f"devices/{did}/messages/events/%24.ct=application%2Fjson&why=lost", b'{"w": 1}')

    def ended(connections: int) -> None:
        """Wait until the server recorded the end of that many connections. A connection's
        end is recorded first, then its Will is stored (ingest queues it at once), so what
        an earlier connection stored is queued before the next connection's Will."""
        wait_for(
            lambda: connection_states(admin, did).count("deviceDisconnected") >= connections,
            what=f"{connections} disconnections",
        )

    # DISCONNECT discards the Will (§3.14.4).
    discarded = Will(will.topic, b'{"w": 0}')
    hub_client(target, device, will=discarded).disconnect()
    ended(1)
    # A Will on another device's topic is ignored, even when the connection drops.
    other = create_device(admin, "other", "p-will", "d-will")
    forged = Will(f"devices/{other['id']}/messages/events/", b'{"forged": 1}')
    hub_client(target, device, will=forged).close()
    ended(2)
    # Dropped without DISCONNECT: the Will becomes telemetry marked as such. Once it is
    # stored, anything the two connections before it had stored would be stored too.
    hub_client(target, device, will=will).close()
    wait_telemetry(admin, did, lambda t: t["body"] == {"w": 1})
    [row] = stored_telemetry(server, did)
    assert row["content_type"] == "application/json"
    assert json.loads(row["properties"]) == {"why": "lost", "iothub-MessageType": "Will"}
    assert telemetries(admin, other["id"]) == []


def test_clean_session_state_is_not_resumed(target: Target, device: dict[str, Any]) -> None:
    """MQTT 3.1.1 §3.1.2.4: a clean session ends with its connection; clean 0 persists."""
    token = target.hub_sas(device["id"], primary_key(device), int(time.time()) + 600)
    username = target.hub_username(device["id"])

    def session_present(*, clean: bool, subscribe: bool = False) -> bool:
        with RawClient(target) as raw:
            connack = raw.connect(device["id"], username, token, clean=clean)
            assert connack.return_code == 0
            if subscribe:
                raw.subscribe("$iothub/methods/POST/#")
                raw.wait_suback()
            return connack.session_present

    assert session_present(clean=True, subscribe=True) is False
    assert session_present(clean=False, subscribe=True) is False  # the clean one left nothing
    assert session_present(clean=False) is True
    assert session_present(clean=True) is False  # discards the stored session
    assert session_present(clean=False) is False


def test_a_method_request_reaches_the_device_once_per_connection(
    server: StServer, target: Target, device: dict[str, Any]
) -> None:
    """The PnP sample subscribes `$iothub/methods/POST/#` twice, and the SDK forgets
    unanswered requests when it reconnects: each connection gets the request once."""
    did = device["id"]
    raw = hub_client(target, device, auto_ack=False)  # never PUBACKs: the request stays in flight
    raw.subscribe("$iothub/methods/POST/#")
    raw.wait_suback()
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        with server.client() as api:
            result["response"] = api.post(
                f"/v1/devices/{did}/method",
                json={"name": "reboot", "payload": 3, "responseTimeoutInSeconds": 30},
            )

    caller = threading.Thread(target=call)
    caller.start()
    try:
        [request] = raw.publishes(within=3)
        assert request.topic.startswith("$iothub/methods/POST/reboot/?$rid=")
        assert request.payload == b"3"
        raw.subscribe("$iothub/methods/POST/#")  # again, as the sample does
        assert raw.publishes(within=1.5) == []
        raw.close()  # dropped before PUBACK and before answering

        with hub_client(target, device) as again:
            [resent] = again.publishes(within=3)
            assert resent.topic == request.topic and not resent.dup
            rid = resent.topic.split("$rid=", 1)[1]
            again.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"ok": true}')
            caller.join(30)
            assert again.publishes(within=0.5) == []
    finally:
        caller.join(30)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.headers["x-method-status"] == "201"
    assert response.json() == {"ok": True}


def test_takeover_hands_unacknowledged_messages_to_the_new_connection(
    target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """A new connection replaces the old one and gets, at once, the C2D message the
    old one never acknowledged (the old socket is left open: its close may take long)."""
    old = hub_client(target, device, auto_ack=False)
    with old:
        old.subscribe(f"devices/{device['id']}/messages/devicebound/#")
        old.wait_suback()
        sent = admin.post(f"/v1/devices/{device['id']}/messages", json={"body": "c2d-1"})
        assert sent.status_code == 202, sent.text
        assert [p.payload for p in old.publishes(within=2)] == [b"c2d-1"]
        with hub_client(target, device) as new:
            assert [p.payload for p in new.publishes(within=3)] == [b"c2d-1"]
            assert old.wait_closed(5)
    with hub_client(target, device) as later:  # acknowledged by `new`: not sent again
        assert later.publishes(within=1.5) == []


def test_twin_requests_echo_the_request_id_unchanged(
    target: Target, device: dict[str, Any]
) -> None:
    with hub_client(target, device) as raw:
        # Answered even before SUBSCRIBE (paho delivers it anyway); the id as sent.
        raw.publish("$iothub/twin/GET/?$rid=a%26b%3Dc", b" ")
        [got] = raw.publishes(within=3)
        assert got.topic == "$iothub/twin/res/200/?$rid=a%26b%3Dc"
        twin = json.loads(got.payload)
        assert twin["desired"]["$version"] >= 1 and "$version" in twin["reported"]

        raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", b'{"x": 1}')
        [ok] = raw.publishes(within=3)
        assert (
            ok.topic == f"$iothub/twin/res/204/?$rid=7&$version={twin['reported']['$version'] + 1}"
        )
        # Over IoT Hub's 32 KiB for reported properties: 400, as for malformed JSON.
        big = json.dumps({"x": "y" * 33_000}).encode()
        raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=8", big)
        raw.publish("$iothub/twin/PATCH/properties/reported/?$rid=9", b"{not json")
        assert [p.topic for p in raw.publishes(within=3)] == [
            "$iothub/twin/res/400/?$rid=8",
            "$iothub/twin/res/400/?$rid=9",
        ]
        assert not raw.closed.is_set()


def test_username_without_query_is_accepted(
    target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """The query (api-version, DeviceClientType, model-id) is informational."""
    token = target.hub_sas(device["id"], primary_key(device), int(time.time()) + 600)
    for username in (f"{target.hub_host}/{device['id']}", f"{target.hub_host}/{device['id']}/"):
        with RawClient(target) as raw:
            assert raw.connect(device["id"], username, token).return_code == 0
            raw.publish(f"devices/{device['id']}/messages/events/", b'{"u": 1}')
            raw.next_event(PubackReceived)
    wait_for(lambda: len(telemetries(admin, device["id"])) == 2, what="both messages")


def test_dps_errors_and_qos2(target: Target, device: dict[str, Any]) -> None:
    reg = device["id"]
    token = sign_sas(
        primary_key(device), f"{target.id_scope}/registrations/{reg}", int(time.time()) + 600
    )
    username = f"{target.id_scope}/registrations/{reg}/api-version=2019-03-31"
    with RawClient(target, server_name=target.dps_host) as raw:
        assert raw.connect(reg, username, token).return_code == 0
        raw.subscribe("$dps/registrations/res/#")
        assert isinstance(raw.wait_suback(), SubackReceived)
        raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=r%201", b"{oops")
        [bad] = raw.publishes(within=3)
        assert bad.topic == "$dps/registrations/res/400/?$rid=r%201"
        body = json.loads(bad.payload)
        assert body["errorCode"] == 400004
        assert set(body) == {"errorCode", "trackingId", "message", "timestampUtc"}
        raw.publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=x", b" ")
        [unknown] = raw.publishes(within=3)
        assert unknown.topic == "$dps/registrations/res/404/?$rid=2"
        assert json.loads(unknown.payload)["errorCode"] == 404202
        qos2 = Publish("$dps/registrations/PUT/iotdps-register/?$rid=3", b"{}", 2, packet_id=5)
        raw.sock.sendall(encode(qos2))  # our client session would refuse to build it
        assert raw.wait_closed(10)
        assert not any(isinstance(e, ProtocolViolation) for e in raw.events)


def test_a_dropped_connection_with_a_will_hands_its_messages_over_once(
    server: StServer, target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """Dropped without DISCONNECT and reconnected at once, while the Will is being stored:
    the unacknowledged C2D message reaches the new connection exactly once, and the Will is
    stored once per dropped connection."""
    did = device["id"]
    will = Will(f"devices/{did}/messages/events/", b'{"will": true}')
    rounds = 6
    for n in range(rounds):
        old = hub_client(target, device, will=will, auto_ack=False)
        old.subscribe(f"devices/{did}/messages/devicebound/#")
        old.wait_suback()
        assert admin.post(f"/v1/devices/{did}/messages", json={"body": f"m{n}"}).status_code == 202
        assert old.wait_publish().publish.payload == f"m{n}".encode()
        ready = RawClient(target)  # TLS up first, so CONNECT follows the drop at once
        old.close()  # no DISCONNECT: the Will stands
        with hub_client(target, device, raw=ready) as new:
            assert [p.payload for p in new.publishes(within=1)] == [f"m{n}".encode()]
            new.disconnect()
    wills = lambda: [t for t in telemetries(admin, did) if t["body"] == {"will": True}]  # noqa: E731
    wait_for(lambda: len(wills()) >= rounds, what="a will per dropped connection")
    time.sleep(0.5)
    assert len(wills()) == rounds


def test_a_will_survives_a_reconnect_during_the_old_connections_drain(
    server: StServer, target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """The old connection still stores its last messages when the device is back: the new
    connection's takeover must not discard the Will of a connection the client broke."""
    did = device["id"]
    will = Will(f"devices/{did}/messages/events/", b'{"will": "last"}')
    old = hub_client(target, device, will=will)
    for seq in range(200):
        old.publish(f"devices/{did}/messages/events/", json.dumps({"seq": seq}).encode())
    ready = RawClient(target)  # TLS up first, so CONNECT follows the drop at once
    old.close()  # mid-stream, no DISCONNECT
    with hub_client(target, device, raw=ready) as new:
        wait_for(
            lambda: any(t["body"] == {"will": "last"} for t in telemetries(admin, did)),
            what="the will of the dropped connection",
        )
        new.disconnect()


def test_a_reported_patch_that_would_overfill_the_section_is_400(
    target: Target, device: dict[str, Any]
) -> None:
    """IoT Hub caps the reported section at 32 KiB: each patch fits, the second overfills."""
    with hub_client(target, device) as raw:
        raw.subscribe("$iothub/twin/res/#")
        raw.wait_suback()
        statuses = []
        for rid, key in ((1, "a"), (2, "b")):
            body = json.dumps({key: "x" * 20_000}).encode()
            raw.publish(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", body)
            answer = raw.wait_publish().publish
            assert f"$rid={rid}" in answer.topic
            statuses.append(answer.topic.split("/")[3])
        assert statuses == ["204", "400"]
        raw.publish("$iothub/twin/GET/?$rid=3", b"")
        twin = raw.wait_publish().publish
        assert set(json.loads(twin.payload)["reported"]) == {"a", "$version"}


def test_a_connection_closes_when_its_sas_token_expires(
    target: Target, admin: httpx.Client, device: dict[str, Any], unique: Callable[[str], str]
) -> None:
    """IoT Hub closes an MQTT connection when its SAS token expires (401003, then the
    connection ends); some device SDKs renew their token only then. A connection with a
    longer token, or an X.509 one, stays."""
    other = create_device(admin, "long token", unique("proj"), unique("dep"))
    expiry = int(time.time()) + 3
    token = target.hub_sas(device["id"], primary_key(device), expiry)
    with RawClient(target) as short, hub_client(target, other) as long:
        assert (
            short.connect(device["id"], target.hub_username(device["id"]), token).return_code == 0
        )
        short.publish(f"devices/{device['id']}/messages/events/", b'{"before": 1}')
        short.next_event(PubackReceived)
        assert short.wait_closed(10), "still open after its token expired"
        assert time.time() >= expiry
        wait_for(
            lambda: connection_states(admin, device["id"])[-1:] == ["deviceDisconnected"],
            what="the expired connection recorded as disconnected",
        )
        # The other device's connection goes on.
        long.publish(f"devices/{other['id']}/messages/events/", b'{"still": 1}')
        long.next_event(PubackReceived)
        assert not long.closed.is_set()
    # A fresh token connects again (the SDK's way back).
    with hub_client(target, device) as again:
        again.publish(f"devices/{device['id']}/messages/events/", b'{"after": 1}')
        again.next_event(PubackReceived)


def test_a_second_dps_registration_on_one_connection_keeps_the_first(
    target: Target, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """A device that registers again on the same DPS connection (a retry after a lost
    answer) without a payload keeps the model id its first registration announced."""
    reg = device["id"]
    token = sign_sas(
        primary_key(device), f"{target.id_scope}/registrations/{reg}", int(time.time()) + 600
    )
    username = f"{target.id_scope}/registrations/{reg}/api-version=2019-03-31"
    model = "dtmi:com:example:Thermostat;1"
    with RawClient(target, server_name=target.dps_host) as raw:
        assert raw.connect(reg, username, token).return_code == 0
        raw.subscribe("$dps/registrations/res/#")
        raw.wait_suback()
        first = {"payload": {"modelId": model}, "registrationId": reg}
        raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", json.dumps(first).encode())
        [accepted] = raw.publishes(within=3)
        assert accepted.topic.startswith("$dps/registrations/res/202/?$rid=1")
        again = {"payload": None, "registrationId": reg}
        raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=2", json.dumps(again).encode())
        [accepted] = raw.publishes(within=3)
        assert accepted.topic.startswith("$dps/registrations/res/202/?$rid=2")
    assert admin.get(f"/v1/devices/{reg}").json()["modelId"] == model


def test_x509_with_an_empty_password_uses_the_certificate(
    target: Target, admin: httpx.Client, device: dict[str, Any], tmp_path: Path
) -> None:
    """Some MQTT libraries send an empty password rather than none with a client
    certificate; IoT Hub (and DPS) then authenticate the certificate."""
    issued = admin.post(f"/v1/devices/{device['id']}/certificates")
    assert issued.status_code == 201, issued.text
    cert, key = tmp_path / "device.pem", tmp_path / "device.key"
    cert.write_text(issued.json()["certificate"])
    key.write_text(issued.json()["privateKey"])
    did = device["id"]
    with RawClient(target, cert=(cert, key)) as raw:
        assert raw.connect(did, target.hub_username(did), "").return_code == 0
        raw.publish(f"devices/{did}/messages/events/", b'{"x509": "empty password"}')
        raw.next_event(PubackReceived)
    username = f"{target.id_scope}/registrations/{did}/api-version=2019-03-31"
    with RawClient(target, server_name=target.dps_host, cert=(cert, key)) as raw:
        assert raw.connect(did, username, "").return_code == 0
    # Without a certificate, an empty password is no credential.
    with RawClient(target) as raw:
        assert raw.connect(did, target.hub_username(did), "").return_code == 5
