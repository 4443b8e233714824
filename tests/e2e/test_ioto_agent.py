"""The Ioto agent's path end to end, replayed step by step against the real server.

register (unclaimed: two fields) → claim → register (api + token) → provision (X.509) →
MQTT over TLS with the client certificate (clean session 0) → the three wildcard
subscriptions → syncDown/SYNCDOWN → syncToDynamo/SYNC (Store items become reported
properties) → metric/set (an observation on /v1, ux4iot and metric/get) → a desired patch
arrives as sync/UPSERT → an ST method arrives as a Command row → release → provision/release
received, the connection closed, reconnecting refused, the device token dead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt  # type: ignore[import-untyped]
import pytest

from tests.e2e.ioto import (
    DEADLINE_S,
    EPOCH_ISO,
    RULES,
    Agent,
    claimed_agent,
    create_product,
)
from tests.e2e.server import ServerProcess
from tests.e2e.ux4iot import Ux, create_key

pytestmark = pytest.mark.e2e

ISO_MS = "%Y-%m-%dT%H:%M:%S"


def poll(check: Callable[[], Any], what: str, within: float = DEADLINE_S) -> Any:
    """`check()` until it answers something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.05)


def is_iso_ms(text: Any) -> bool:
    """The agent's date form: 2025-10-09T08:53:20.000Z (it compares them with strcmp)."""
    if not isinstance(text, str) or len(text) != 24 or not text.endswith("Z"):
        return False
    time.strptime(text[:19], ISO_MS)
    return text[19] == "." and text[20:23].isdigit()


def test_the_agent_registers_is_claimed_provisions_connects_syncs_and_is_released(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "thermostat-line")
    agent = Agent(server, product["token"])
    did = agent.device_id

    # 1. register before any claim: exactly two fields, so the agent keeps asking
    first = agent.register()
    assert first.status_code == 200, first.text
    assert first.json() == {"id": did, "registered": True}
    assert agent.register().json() == {"id": did, "registered": True}  # idempotent
    # ... and it is no thinghub device yet
    assert admin.get(f"/v1/devices/{did}").status_code == 404

    # 2. a cloud user claims it (the admin token holds claimDevice)
    claimed = admin.post("/ioto/api/device/claim", json={"id": did})
    assert claimed.status_code == 200, claimed.text
    record = claimed.json()
    assert record["id"] == did and record["productId"] == product["id"]
    assert record["product"] == "thermostat-line" and record["test"] is False
    assert is_iso_ms(record["created"])
    account_id = record["accountId"]

    # 3. register again: claimed, with what the agent saves in provision.json5
    answer = agent.register().json()
    assert len(answer) >= 3
    assert answer["api"] == f"{server.http_url}/ioto/api"
    assert answer["token"] and answer["accountId"] == account_id and answer["id"] == did
    assert answer["cloudType"] == "dedicated"
    # a lost answer is asked for again and gets the same token
    assert agent.register().json()["token"] == answer["token"]

    # 4. provision: an X.509 certificate and key from the hub CA, and the MQTT endpoint
    prov = agent.provision_cert(tmp_path / did)
    assert prov["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY-----" in prov["key"]
    assert prov["endpoint"] == "localhost" and prov["port"] == server.mqtt_port
    assert prov["accountId"] == account_id and prov["id"] == did and prov["thing"] == did

    # the device is now a thinghub device of the account, on /v1 and IoT Central
    device = admin.get(f"/v1/devices/{did}")
    assert device.status_code == 200, device.text
    assert device.json()["tags"]["project"] == "thermostat-line"
    central = admin.get(f"/central/api/devices/{did}", params={"api-version": "2022-07-31"})
    assert central.status_code == 200, central.text
    assert central.json()["id"] == did

    with agent.mqtt() as link:
        # 5. connect with the client certificate, no user name, clean session 0
        assert link.connect() == 0
        poll(
            lambda: admin.get(f"/v1/devices/{did}").json()["connectionState"] == "Connected",
            "connected on /v1",
        )
        # a connection state event, as for Azure-dialect devices
        connected = poll(
            lambda: admin.get(
                "/v1/events", params={"deviceID": did, "eventType": "connection_state_event"}
            ).json(),
            "connection_state_event",
        )
        assert connected[0]["body"]["state"] == "deviceConnected", connected
        # 6. the agent's wildcard subscriptions are granted (QoS 1); others are refused
        assert link.subscribe_agent(account_id) == (1, 1, 1)
        assert link.subscribe("ioto/device/OTHER/#") == (0x80,)
        assert link.subscribe(f"ioto/account/{account_id}/x/#") == (1,)  # narrower: fine

        # 7. syncDown → SYNCDOWN {updated} (the agent is not ready before it)
        syncdown = link.sync_down(EPOCH_ISO)
        assert is_iso_ms(syncdown["updated"])

        # 8. syncToDynamo: Store items become reported properties; acknowledged with SYNC
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        link.service(
            "db/syncToDynamo",
            {
                "seq": 7,
                "changes": [
                    {
                        "cmd": "upsert",
                        "key": "s#counter",
                        "item": {
                            "key": "counter",
                            "value": "42",
                            "type": "number",
                            "deviceId": did,
                            "accountId": account_id,
                            "sk": "s#counter",
                            "_type": "Store",
                            "updated": now,
                        },
                    },
                    {
                        "cmd": "upsert",
                        "key": "s#mode",
                        "item": {
                            "key": "mode",
                            "value": "eco",
                            "type": "string",
                            "sk": "s#mode",
                            "_type": "Store",
                            "updated": now,
                        },
                    },  # fmt: skip
                ],
            },
        )
        ack = link.expect_json(f"ioto/device/{did}/sync/SYNC")
        assert ack["seq"] == 7 and sorted(ack["keys"]) == ["s#counter", "s#mode"]
        assert is_iso_ms(ack["updated"])
        twin = admin.get(f"/v1/devices/{did}/twin").json()
        reported = twin["properties"]["reported"]
        assert reported["counter"] == 42 and reported["mode"] == "eco"

        # 9. metric/set: an observation of the metric, visible on /v1 telemetries ...
        link.service(
            "metric/set",
            {"metric": "temperature", "value": 21.5,
             "dimensions": [{"Device": "${deviceId}"}], "buffer": {"elapsed": 0}},
        )  # fmt: skip
        telemetry = poll(
            lambda: admin.get("/v1/telemetries", params={"deviceID": did}).json(),
            "metric on /v1 telemetries",
        )
        assert telemetry[0]["body"] == {"temperature": 21.5}
        # ... on ux4iot's last values ...
        with Ux(server.http_url, create_key(server)["connectionString"].split("=")[-1]) as ux:
            session = ux.session()
            assert ux.grant(session, did, "telemetry", telemetryKey="temperature").status_code == (
                204
            )
            last = ux.as_session("GET", f"/lastValue/{did}/temperature", session)
            assert last.status_code == 200, last.text
            assert last.json()["data"] == {"temperature": 21.5}
        # ... and to the device itself: metric/get answered in plain text on its reply topic
        link.publish(
            f"ioto/service/{did}/metric/get/100",
            {"metric": "temperature", "dimensions": {"Device": "${deviceId}"},
             "period": 3600, "statistic": "max"},
        )  # fmt: skip
        assert float(link.expect(f"ioto/device/{did}/metric/get/100")) == 21.5

        # 10. a desired property set on /v1 arrives as sync/UPSERT of a Store item
        put = admin.put(f"/v1/devices/{did}", json={"properties": {"setpoint": 19}})
        assert put.status_code == 200, put.text
        upsert = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert upsert["_type"] == "Store" and upsert["sk"] == "s#setpoint"
        assert upsert["key"] == "setpoint" and str(upsert["value"]) == "19"
        assert upsert["deviceId"] == did and is_iso_ms(upsert["updated"])

        # 11. an ST method becomes a Command row (command = the name), pushed the same way
        method = admin.post(
            f"/v1/devices/{did}/method",
            json={"name": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10},
        )
        assert method.status_code == 200, method.text
        assert method.json()["command"] == "reboot"
        row = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert row["_type"] == "Command" and row["command"] == "reboot"

        # 12. release: provision/release (a millisecond timestamp) first, then the close
        released = admin.post("/ioto/api/device/release", json={"id": did})
        assert released.status_code == 200, released.text
        stamp = int(link.expect(f"ioto/device/{did}/provision/release"))
        assert abs(stamp - time.time() * 1000) < 10_000
        assert link.disconnected.wait(DEADLINE_S), "the connection stays open after release"

    # the certificate works no more: CONNACK refuses it (not authorized)
    with agent.mqtt() as again:
        assert again.connect() == mqtt.CONNACK_REFUSED_NOT_AUTHORIZED
    # the device token is dead, and register answers "unclaimed" again
    assert agent.call("/device/provision", {"id": did}).status_code == 401
    assert agent.call("/device/provision", {"id": did}).text == "Authentication failed"
    assert agent.register().json() == {"id": did, "registered": True}
    events = poll(
        lambda: [
            e["body"]["state"]
            for e in admin.get(
                "/v1/events", params={"deviceID": did, "eventType": "connection_state_event"}
            ).json()
        ].count("deviceDisconnected"),
        "the Disconnected event",
    )
    assert events >= 1


def test_a_second_connection_of_the_device_keeps_its_session_subscriptions(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """Clean session 0: after a reconnect the subscriptions are still there (session present),
    so a desired patch reaches the device without it subscribing again."""
    product = create_product(admin, "session-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        assert link.subscribe_agent(agent.provision["accountId"]) == (1, 1, 1)
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.sync_down()
        assert admin.put(f"/v1/devices/{did}", json={"properties": {"fan": "on"}}).status_code == (
            200
        )
        item = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert item["key"] == "fan" and item["value"] == "on"
        # a deleted desired property: sync/REMOVE of the Store item
        gone = admin.put(f"/v1/devices/{did}", json={"properties": {"fan": None}})
        assert gone.status_code == 200, gone.text
        removed = link.expect_json(f"ioto/device/{did}/sync/REMOVE")
        assert removed["sk"] == "s#fan" and removed["_type"] == "Store"


def test_syncdown_sends_desired_properties_set_while_the_device_was_away(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "away-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    put = admin.put(f"/v1/devices/{did}", json={"properties": {"brightness": 80}})
    assert put.status_code == 200, put.text
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        link.service("db/syncDown", {"timestamp": EPOCH_ISO})
        item = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert item["key"] == "brightness" and str(item["value"]) == "80"
        link.expect_json(f"ioto/device/{did}/sync/SYNCDOWN")


def test_central_commands_properties_and_store_items_of_an_ioto_device(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "central-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        link.sync_down()
        response = admin.post(
            f"/central/api/devices/{did}/commands/identify",
            params={"api-version": "2022-07-31"},
            json={"request": {"seconds": 3}},
        )
        # the real API's form waits for the outcome: an Ioto device gets a Command row
        assert response.status_code == 201, response.text
        assert response.json()["responseCode"] == 200
        assert response.json()["response"]["status"] == "delivered"
        row = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert row["_type"] == "Command" and row["command"] == "identify"
        assert row["deviceId"] == did
        # Store items are reported properties on Central; a Central property patch arrives
        # as a Store item
        link.service(
            "db/syncToDynamo",
            {"seq": 1, "changes": [{"cmd": "upsert", "key": "s#mode",
                                    "item": {"key": "mode", "value": "eco", "_type": "Store"}}]},
        )  # fmt: skip
        link.expect_json(f"ioto/device/{did}/sync/SYNC")
        props = admin.get(
            f"/central/api/devices/{did}/properties/mode", params={"api-version": "2022-07-31"}
        )
        assert props.status_code == 200, props.text
        assert props.json()["value"] == "eco"
        patched = admin.patch(
            f"/central/api/devices/{did}/properties/fanSpeed",
            params={"api-version": "2022-07-31"},
            json={"value": 3},
        )
        assert patched.status_code == 200, patched.text
        item = link.expect_json(f"ioto/device/{did}/sync/UPSERT")
        assert item["_type"] == "Store" and item["key"] == "fanSpeed"


def test_a_certificate_for_another_client_id_or_without_one_is_refused(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "cert-line")
    one = claimed_agent(server, admin, product["token"], tmp_path)
    two = claimed_agent(server, admin, product["token"], tmp_path)
    # device two's certificate with device one's client id: not authorized
    with two.mqtt() as link:
        link.client._client_id = one.device_id.encode()
        assert link.connect() == mqtt.CONNACK_REFUSED_NOT_AUTHORIZED
    # its own certificate with a user name and password (the agent sends none): refused
    with one.mqtt() as link:
        link.client.username_pw_set(one.device_id, "secret")
        assert link.connect() != 0
    # a re-provisioned device: the old certificate stops working, the new one works
    old = one.certs_dir
    assert old is not None
    (tmp_path / "old").mkdir()
    for name in ("device.crt", "device.key"):
        (tmp_path / "old" / name).write_bytes((old / name).read_bytes())
    one.provision_cert(old)
    stale = Agent(server, product["token"], one.device_id, dict(one.provision), tmp_path / "old")
    with stale.mqtt() as link:
        assert link.connect() == mqtt.CONNACK_REFUSED_NOT_AUTHORIZED
    with one.mqtt() as link:
        assert link.connect() == 0


def test_a_publish_naming_another_device_closes_only_that_connection(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "rogue-line")
    one = claimed_agent(server, admin, product["token"], tmp_path)
    two = claimed_agent(server, admin, product["token"], tmp_path)
    with one.mqtt() as a, two.mqtt() as b:
        assert a.connect() == 0 and b.connect() == 0
        b.subscribe_agent(two.provision["accountId"])
        a.publish(
            f"{RULES}/ioto/service/{two.device_id}/metric/set",
            {"metric": "x", "value": 1},
            wait=False,
        )
        assert a.disconnected.wait(DEADLINE_S)
        # the other device is untouched (still connected) and nothing was stored for it
        assert b.sync_down()["updated"] and not b.disconnected.is_set()
        telemetry = admin.get("/v1/telemetries", params={"deviceID": two.device_id}).json()
        assert telemetry == []
        # QoS 2 (the agent uses QoS 1 only) closes the connection too
        b.publish(f"{RULES}/ioto/service/{two.device_id}/metric/set", b"{}", wait=False, qos=2)
        assert b.disconnected.wait(DEADLINE_S)


def test_bad_payloads_are_acknowledged_and_recorded_not_stored(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """A payload that cannot be used is acknowledged (resending cannot fix it) and recorded
    as a telemetry_rejected_event; the connection stays up."""
    product = create_product(admin, "bad-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        link.service("metric/set", b"{not json")
        link.service("metric/set", b'{"metric":"t","value":nan}')
        link.service("db/syncToDynamo", {"seq": "x"})
        assert link.sync_down()["updated"]  # still connected, still answered
        events = poll(
            lambda: [
                e
                for e in admin.get(
                    "/v1/events",
                    params={"deviceID": did, "eventType": "telemetry_rejected_event"},
                ).json()
            ],
            "telemetry_rejected_event",
        )
        assert all(e["deviceID"] == did for e in events)
        assert admin.get("/v1/telemetries", params={"deviceID": did}).json() == []


def test_the_device_and_its_data_stay_in_its_account(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """Another account sees nothing of it on /v1, Central or the Ioto API, and cannot claim,
    get, find or release it."""
    product = create_product(admin, "iso-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    other_name = f"other-{did.lower()}"
    server.cli("account", "create", other_name)
    token = server.cli("token", "create", "--quiet", "--role", "admin", "--account", other_name)
    with server.client(token) as other:
        assert other.get(f"/v1/devices/{did}").status_code == 404
        central = other.get(f"/central/api/devices/{did}", params={"api-version": "2022-07-31"})
        assert central.status_code == 404
        for route in ("get", "release", "claim"):
            response = other.post(f"/ioto/api/device/{route}", json={"id": did})
            assert response.status_code == 404, (route, response.text)
        found = other.post("/ioto/api/device/find", json={})
        assert found.status_code == 200 and found.json()["data"] == []
        # an owner naming the other account finds nothing either
        account_id = agent.provision["accountId"]
        get = other.post("/ioto/api/device/get", json={"id": did, "accountId": account_id})
        assert get.status_code == 404
        assert json.dumps(other.get("/v1/devices").json()).find(did) == -1
    # the device is still A's
    assert admin.post("/ioto/api/device/get", json={"id": did}).status_code == 200


def test_metric_get_answers_each_statistic_in_plain_text(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "metric-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        for value in (1, 2, 6):
            link.service("metric/set", {"metric": "load", "value": value})  # default dimensions
        seq = iter(range(100, 200))

        def ask(statistic: str, metric: str = "load", dimensions: Any = None) -> str:
            n = next(seq)
            dims = dimensions if dimensions is not None else [{"Device": did}]
            body = {"metric": metric, "period": 3600, "statistic": statistic, "dimensions": dims}
            link.publish(f"ioto/service/{did}/metric/get/{n}", body)
            return link.expect(f"ioto/device/{did}/metric/get/{n}").decode()

        poll(lambda: float(ask("count")) == 3, "three values counted")
        assert float(ask("sum")) == 9 and float(ask("avg")) == 3
        assert float(ask("min")) == 1 and float(ask("max")) == 6
        assert float(ask("current", dimensions={"Device": "${deviceId}"})) in (1, 2, 6)
        assert ask("avg", metric="never-sent") == "nan"
        assert float(ask("count", metric="never-sent")) == 0


def test_store_get_answers_the_newest_store_value_in_plain_text(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """ioGetNum and ioGetBool (and ioGet without sync) ask ioto/service/{id}/store/get/{seq}
    {"key"} and wait for the value in plain text on ioto/device/{id}/store/get/{seq}."""
    product = create_product(admin, "store-get-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        seq = iter(range(100, 200))

        def ask(key: str) -> str:
            n = next(seq)
            link.publish(f"ioto/service/{did}/store/get/{n}", {"key": key})
            return link.expect(f"ioto/device/{did}/store/get/{n}").decode()

        link.service("store/set", {"key": "door", "value": "open", "type": "string"})
        link.service("store/set", {"key": "lux", "value": 12.5, "type": "number"})
        link.service("store/set", {"key": "armed", "value": 1.0, "type": "boolean"})
        poll(lambda: ask("armed") == "true", "the device's own value")
        assert ask("door") == "open" and float(ask("lux")) == 12.5
        assert ask("never-set") == ""
        # a value set by the cloud (desired) after the device's own is the newer one
        put = admin.put(f"/v1/devices/{did}", json={"properties": {"lux": 40}})
        assert put.status_code == 200, put.text
        assert link.expect_json(f"ioto/device/{did}/sync/UPSERT")["key"] == "lux"
        assert ask("lux") == "40"
        link.service("store/set", {"key": "lux", "value": 7, "type": "number"})
        poll(lambda: ask("lux") == "7", "the device's newer value")


def test_a_second_connection_of_the_same_device_replaces_the_first(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    product = create_product(admin, "twice-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    with agent.mqtt() as first:
        assert first.connect() == 0
        first.subscribe_agent(agent.provision["accountId"])
        with agent.mqtt() as second:
            assert second.connect() == 0
            assert first.disconnected.wait(DEADLINE_S), "the old connection stays open"
            assert second.sync_down()["updated"]


def test_the_session_certificate_and_token_survive_a_server_restart(
    start_server: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_server(data_dir=data)
    with server.client() as admin:
        product = create_product(admin, "restart-line")
        agent = claimed_agent(server, admin, product["token"], tmp_path)
    with agent.mqtt() as link:
        assert link.connect() == 0
        assert link.subscribe_agent(agent.provision["accountId"]) == (1, 1, 1)
    assert server.stop() == 0
    again = start_server(data_dir=data, admin_token=server.admin_token)
    agent.server = again
    agent.provision["port"] = again.mqtt_port
    agent.provision["api"] = f"{again.http_url}/ioto/api"
    # the device token still works, and register still says claimed with the same token
    token = agent.provision["token"]
    assert agent.register().json()["token"] == token
    assert agent.call("/device/getCreds").status_code == 200
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.sync_down()
        with again.client() as admin:
            put = admin.put(f"/v1/devices/{agent.device_id}", json={"properties": {"x": 1}})
            assert put.status_code == 200, put.text
        item = link.expect_json(f"ioto/device/{agent.device_id}/sync/UPSERT")
        assert item["key"] == "x"  # subscriptions kept with the session (clean session 0)
    again.stop()


def test_store_set_removes_and_other_tables(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """store/set (sync off) is a reported property; a `remove` change deletes one; a change
    to another table is kept as a telemetry message; an oversized payload is refused alone."""
    product = create_product(admin, "store-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        link.service("store/set", {"key": "door", "value": "open", "type": "string"})
        link.service("store/set", {"key": "lux", "value": 12.5, "type": "number"})
        poll(lambda: "lux" in admin.get(f"/v1/devices/{did}/twin").json()["properties"]
             ["reported"], "lux reported")  # fmt: skip
        reported = admin.get(f"/v1/devices/{did}/twin").json()["properties"]["reported"]
        assert reported["door"] == "open" and reported["lux"] == 12.5
        link.service(
            "db/syncToDynamo",
            {"seq": 3, "changes": [
                {"cmd": "remove", "key": "s#door", "item": {"key": "door", "_type": "Store"}},
                {"cmd": "create", "key": "log#1",
                 "item": {"_type": "Log", "message": "boot", "sk": "log#1"}},
            ]},
        )  # fmt: skip
        ack = link.expect_json(f"ioto/device/{did}/sync/SYNC")
        assert ack["seq"] == 3 and sorted(ack["keys"]) == ["log#1", "s#door"]
        reported = admin.get(f"/v1/devices/{did}/twin").json()["properties"]["reported"]
        assert "door" not in reported and reported["lux"] == 12.5
        kept = poll(
            lambda: admin.get("/v1/telemetries", params={"deviceID": did}).json(),
            "the Log row as telemetry",
        )
        assert kept[0]["body"]["model"] == "Log" and kept[0]["body"]["item"]["message"] == "boot"
        # over 128 KiB: refused (recorded), acknowledged, the connection stays up
        link.service("metric/set", {"metric": "big", "value": 1, "pad": "x" * 140_000})
        assert link.sync_down()["updated"]
        bodies = [t["body"] for t in admin.get("/v1/telemetries", params={"deviceID": did}).json()]
        assert all("big" not in body for body in bodies)


def test_azure_and_ioto_certificates_open_only_their_own_dialect(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """An Ioto certificate with an IoT Hub user name is refused by the hub dialect, and an
    Azure device's X.509 certificate without a user name is no Ioto certificate."""
    product = create_product(admin, "dialect-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        link.client.username_pw_set(f"localhost/{did}/?api-version=2021-04-12")
        assert link.connect() == mqtt.CONNACK_REFUSED_NOT_AUTHORIZED
    created = admin.post("/v1/devices", json={"name": "az", "project": "az", "deployment": "d"})
    assert created.status_code == 200, created.text
    azure_id = created.json()["id"]
    issued = admin.post(f"/v1/devices/{azure_id}/certificates")
    assert issued.status_code == 201, issued.text
    folder = tmp_path / "azure"
    folder.mkdir()
    (folder / "device.crt").write_text(issued.json()["certificate"])
    (folder / "device.key").write_text(issued.json()["privateKey"])
    azure = Agent(server, product["token"], azure_id, dict(agent.provision), folder)
    with azure.mqtt() as link:
        assert link.connect() == mqtt.CONNACK_REFUSED_NOT_AUTHORIZED


def test_an_ioto_metric_is_itwin_data(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """metric/set is an observation: iTwin's getData reads it from the device's sensor."""
    from tests.e2e.itwin import Ws, sensor_id, ws_url

    product = create_product(admin, "itwin-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.service("metric/set", {"metric": "humidity", "value": 41.5})
    poll(
        lambda: admin.get("/v1/telemetries", params={"deviceID": did}).json(),
        "the metric stored",
    )
    ws = Ws(ws_url(server), server.admin_token)
    try:
        sensor = sensor_id(did)
        metrics = ws.call("getMetrics", {"sensors": [sensor]})["result"][sensor]
        unit = {m["id"]: m["defaultUnit"] for m in metrics}["humidity"]
        chunks, _ = ws.stream("getData", {"sensor": sensor, "metric": "humidity", "unit": unit})
        values = [value for chunk in chunks for value in chunk["data"].values()]
        assert values == [41.5]
    finally:
        ws.close()


def test_the_agents_named_shadow_is_served(
    server: ServerProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    """With services.shadow on (and cloudType dedicated, which provisioning answers), the agent
    subscribes to $aws/things/{id}/shadow/name/default/{get,update}/{accepted,rejected} (one
    SUBSCRIBE each; a refused one makes it close its connection), publishes an empty get and
    later its whole shadow as {"state":{"reported":...}} with bare keys (JSON_QUOTES)."""
    product = create_product(admin, "shadow-line")
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    base = f"$aws/things/{did}/shadow/name/default"
    with agent.mqtt() as link:
        assert link.connect() == 0
        link.subscribe_agent(agent.provision["accountId"])
        assert link.sync_down()["updated"]
        for reply in ("get/accepted", "get/rejected", "update/accepted", "update/rejected"):
            assert link.subscribe(f"{base}/{reply}") == (1,), reply
        # another device's shadow stays out of reach
        assert link.subscribe("$aws/things/OTHER/shadow/name/default/get/accepted") == (0x80,)
        assert not link.disconnected.is_set()

        link.publish(f"{base}/get", b"")
        missing = link.expect_json(f"{base}/get/rejected")
        assert missing["code"] == 404 and "default" in missing["message"]

        link.publish(f"{base}/update", b'{"state":{"reported":{temp:"42",mode:"eco"}}}', qos=0)
        accepted = link.expect_json(f"{base}/update/accepted")
        assert accepted["state"] == {"reported": {"temp": "42", "mode": "eco"}}
        assert isinstance(accepted["version"], int) and isinstance(accepted["timestamp"], int)

        link.publish(f"{base}/get", b"")
        got = link.expect_json(f"{base}/get/accepted")
        assert got["state"]["reported"] == {"temp": "42", "mode": "eco"}
        assert got["metadata"]["reported"]["temp"]["timestamp"] > 0

        # the shadow is the device's reported state on the other faces too
        reported = admin.get(f"/v1/devices/{did}/twin").json()["properties"]["reported"]
        assert reported["shadow"] == {"default": {"temp": "42", "mode": "eco"}}

        # a merge, as AWS IoT merges: null deletes a key
        link.publish(f"{base}/update", b'{"state":{"reported":{mode:null,fan:1}}}', qos=0)
        link.expect_json(f"{base}/update/accepted")
        link.publish(f"{base}/get", b"")
        assert link.expect_json(f"{base}/get/accepted")["state"]["reported"] == {
            "temp": "42",
            "fan": 1,
        }

        link.publish(f"{base}/update", b'{"state":{"desired":{"x":1}}}', qos=0)
        assert link.expect_json(f"{base}/update/rejected")["code"] == 400
        link.publish(f"{base}/update", b"{not json", qos=0)
        assert link.expect_json(f"{base}/update/rejected")["code"] == 400
        assert not link.disconnected.is_set()
