"""A device made through the IoT Central face, driven by the real azure-iot-device SDK.

It provisions through DPS with the credentials the face shows, answers a command queued while
it was offline once it connects, sees property patches made here (root and component, with
the PnP `__t` marker), reports properties read back here, and is refused while disabled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.iot.device import Message, MethodResponse
from azure.iot.device.exceptions import ClientError

from tests.e2e.azure import (
    HUB_HOST,
    SERVER_ARGS,
    Inbox,
    Target,
    closing_client,
    connected,
    telemetries,
    wait_connection_state,
    wait_event,
    wait_for,
)
from tests.e2e.server import ServerProcess, running
from tests.e2e.test_central_api import API, TIME_RE, VERSION, template_body

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module, with the fake hub and DPS names in its certificate."""
    with running(ServerProcess(tmp_path_factory.mktemp("thinghub-central"), *SERVER_ARGS)) as p:
        yield p


@pytest.fixture(scope="module")
def target(server: ServerProcess) -> Target:
    return Target.of(server.addresses)


@pytest.fixture
def central(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def template_id(server: ServerProcess) -> str:
    tid = "dtmi:thinghub:sdk:thermostat;1"
    with httpx.Client(
        base_url=server.http_url + API,
        timeout=30,
        headers={"Authorization": f"Bearer {server.admin_token}"},
    ) as client:
        response = client.put(f"/deviceTemplates/{tid}", json=template_body(tid))
    assert response.status_code == 200, response.text
    return tid


@pytest.fixture
def device(central: httpx.Client, template_id: str, unique: Callable[[str], str]) -> dict[str, Any]:
    """A templated device made here, with the key the face shows as its credentials."""
    device_id = unique("central")
    made = central.put(
        f"/devices/{device_id}", json={"displayName": "SDK thermostat", "template": template_id}
    )
    assert made.status_code == 200, made.text
    creds = central.get(f"/devices/{device_id}/credentials")
    assert creds.status_code == 200, creds.text
    return {
        "id": device_id,
        "key": creds.json()["symmetricKey"]["primaryKey"],
        "idScope": creds.json()["idScope"],
    }


def command_status(central: httpx.Client, device_id: str, command_id: str) -> dict[str, Any]:
    response = central.get(f"/devices/{device_id}/commands/{command_id}/status")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def wait_final(central: httpx.Client, device_id: str, command_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            s
            if (s := command_status(central, device_id, command_id))["status"] != "Pending"
            else None
        ),
        what=f"command {command_id} to finish",
    )


def test_provisions_through_dps_with_the_shown_credentials(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    assert device["idScope"] == target.id_scope
    result = target.provisioning_client(device["id"], device["key"]).register()
    assert result.status == "assigned", result
    state = result.registration_state
    assert state is not None
    assert state.device_id == device["id"]
    assert state.assigned_hub == HUB_HOST
    shown = central.get(f"/devices/{device['id']}").json()
    assert shown["provisioned"] is True
    assert shown["template"] is not None


def test_queued_commands_reach_a_device_that_connects_late(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    base = f"/devices/{device_id}/commands"
    reboot = central.post(f"{base}/reboot", json={"rebootInterval": 60})
    assert reboot.status_code == 200, reboot.text
    assert reboot.json()["status"] == "Pending"
    report = central.post(
        f"/devices/{device_id}/components/thermostat1/commands/getMaxMinReport",
        json={"since": "2023-10-26T15:00:00Z"},
    )
    ping = central.post(f"{base}/ping", json=None)
    ids = {
        "reboot": reboot.json()["commandId"],
        "report": report.json()["commandId"],
        "ping": ping.json()["commandId"],
    }
    for command_id in ids.values():
        assert command_status(central, device_id, command_id)["status"] == "Pending"

    calls = Inbox()
    client = target.device_client({"id": device_id}, key=device["key"])

    def on_method(request: Any) -> None:
        calls((request.name, request.payload))
        if request.name == "ping":
            response = MethodResponse.create_from_method_request(request, 500, {"error": "no"})
        else:
            response = MethodResponse.create_from_method_request(
                request, 200, {"done": request.name, "got": request.payload}
            )
        client.send_method_response(response)

    with connected(client):
        client.on_method_request_received = on_method
        done = wait_final(central, device_id, ids["reboot"])
        assert done["status"] == "Completed", done
        assert done["result"] == {"done": "reboot", "got": 60}
        assert done["responseCode"] == 200
        assert TIME_RE.fullmatch(done["completedTime"])
        component = wait_final(central, device_id, ids["report"])
        assert component["status"] == "Completed", component
        assert component["result"] == {
            "done": "thermostat1*getMaxMinReport",
            "got": "2023-10-26T15:00:00Z",
        }
        failed = wait_final(central, device_id, ids["ping"])
        assert failed["status"] == "Failed", failed
        assert failed["result"] == {"error": "no"}
        assert failed["responseCode"] == 500

        # Connected: a new command is delivered at once.
        live = central.post(f"{base}/reboot", json={"rebootInterval": 5})
        assert live.status_code == 200, live.text
        assert wait_final(central, device_id, live.json()["commandId"])["result"] == {
            "done": "reboot",
            "got": 5,
        }
    assert sorted(calls.items) == sorted(
        [
            ("reboot", 60),
            ("thermostat1*getMaxMinReport", "2023-10-26T15:00:00Z"),
            ("ping", None),
            ("reboot", 5),
        ]
    )


def test_a_command_the_device_does_not_answer_times_out(
    target: Target, central: httpx.Client, device: dict[str, Any]
) -> None:
    calls = Inbox()
    client = target.device_client({"id": device["id"]}, key=device["key"])
    with connected(client):
        client.on_method_request_received = calls  # receives, never answers
        # IoT Central's envelope waits for the answer (responseTimeout), then tells.
        response = central.post(
            f"/devices/{device['id']}/commands/reboot",
            json={"request": 1, "responseTimeout": 5},
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "TimedOut"
        status = command_status(central, device["id"], response.json()["commandId"])
        assert [r.name for r in calls.items] == ["reboot"]
    assert status["status"] == "TimedOut", status
    assert set(status) == {"commandId", "status", "completedTime"}
    assert TIME_RE.fullmatch(status["completedTime"])


def test_properties_both_ways_and_device_fields(
    target: Target, central: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    base = f"/devices/{device_id}/properties"
    patches = Inbox()
    client = target.device_client({"id": device_id}, key=device["key"])
    with connected(client):
        client.on_twin_desired_properties_patch_received = patches
        response = central.patch(f"{base}/targetTemperature", json={"value": 22.5})
        assert response.status_code == 200, response.text
        patch = patches.wait(lambda p: "targetTemperature" in p, what="the root patch")
        version = patch["$version"]
        assert patch == {"targetTemperature": 22.5, "$version": version}
        response = central.patch(f"{base}/thermostat1*targetTemperature", json={"value": 19})
        assert response.status_code == 200, response.text
        patch = patches.wait(lambda p: "thermostat1" in p, what="the component patch")
        assert patch == {
            "thermostat1": {"__t": "c", "targetTemperature": 19},
            "$version": version + 1,
        }

        # The device acknowledges as PnP does and reports its firmware.
        client.patch_twin_reported_properties(
            {
                "targetTemperature": {"value": 22.0, "ac": 200, "av": version, "ad": "clamped"},
                "firmwareVersion": "1.2.0",
                "thermostat1": {
                    "__t": "c",
                    "targetTemperature": {"value": 19, "ac": 200, "av": version + 1},
                },
            }
        )
        reported = central.get(f"{base}/targetTemperature")
        assert reported.status_code == 200, reported.text
        assert set(reported.json()) == {"value", "lastReportedTime"}
        assert reported.json()["value"] == 22.0  # the device's word is newer than the 22.5 set
        assert TIME_RE.fullmatch(reported.json()["lastReportedTime"])
        assert central.get(f"{base}/firmwareVersion").json()["value"] == "1.2.0"
        assert central.get(f"{base}/thermostat1*targetTemperature").json()["value"] == 19
        # A value set after the device's report is what GET shows, until the device answers.
        again = central.patch(f"{base}/targetTemperature", json={"value": 23.5})
        assert central.get(f"{base}/targetTemperature").json() == again.json()
        assert again.json()["value"] == 23.5

        shown = central.get(f"/devices/{device_id}").json()
        assert shown["firmwareVersion"] == "1.2.0"
        assert shown["provisioned"] is True
        assert TIME_RE.fullmatch(shown["lastSeen"])
        assert set(shown) == {
            "id",
            "etag",
            "displayName",
            "template",
            "simulated",
            "provisioned",
            "enabled",
            "lastSeen",
            "firmwareVersion",
        }

        # MQTT telemetry meets the same template as POST /telemetry.
        for body in ('{"temperature": 20.5}', '{"temperature": "warm"}'):
            client.send_message(
                Message(body, content_type="application/json", content_encoding="utf-8")  # type: ignore[no-untyped-call]
            )
        rejected = wait_event(admin, device_id, "telemetry_rejected_event")
        assert "temperature must be a double" in rejected["body"]["reason"]
        items = wait_for(lambda: telemetries(admin, device_id), what="the good telemetry")
        assert [t["body"] for t in items] == [{"temperature": 20.5}]


def test_disabled_devices_are_refused(
    target: Target, central: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    device_id = device["id"]
    client = target.device_client({"id": device_id}, key=device["key"])
    # The server drops this connection; the SDK's shutdown may then race its own reconnect.
    with closing_client(client):
        client.connect()
        wait_connection_state(admin, device_id, "deviceConnected")
        response = central.patch(f"/devices/{device_id}", json={"enabled": False})
        assert response.status_code == 200, response.text
        assert response.json()["enabled"] is False
        wait_connection_state(admin, device_id, "deviceDisconnected")

    refused = target.device_client({"id": device_id}, key=device["key"])
    with closing_client(refused), pytest.raises(ClientError):
        refused.connect()

    assert central.patch(f"/devices/{device_id}", json={"enabled": True}).status_code == 200
    again = target.device_client({"id": device_id}, key=device["key"])
    with connected(again):
        again.send_message(json.dumps({"temperature": 1.0}))
        wait_for(lambda: telemetries(admin, device_id), what="telemetry after re-enabling")
