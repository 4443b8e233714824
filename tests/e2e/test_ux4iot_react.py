"""The real, installable ux4iot client, `ux4iot-react@2.0.2` (its `Ux4iot` class, from npm at
an exact version with a lockfile: tests/e2e/ux4iot_client), against a real server and an
Azure IoT SDK device: telemetry, connection state, twin and d2c callbacks fire, direct
methods and desired patches reach the device, a wrong key is UNAUTHORIZED, and the client
recovers when the server restarts.

2.0.2 speaks the legacy v2 protocol (docs/faces/ux4iot.md, "The v2 protocol"): its grants carry
`grantType`, the grant is the subscription, the present value is pushed at once, and the connection
state arrives as `{connected: bool}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import Message, MethodResponse

from tests.e2e.azure import (  # noqa: F401 -- collect_sdk_garbage is a fixture
    SERVER_ARGS,
    Inbox,
    Target,
    collect_sdk_garbage,
    connected,
    paho_socket_leaks,
)
from tests.e2e.server import ServerProcess, running
from tests.e2e.ux4iot import create_key, new_device, send_https
from tests.e2e.ux4iot_node import NodeDriver

pytestmark = [
    pytest.mark.backend_agnostic,
    pytest.mark.e2e,
    pytest.mark.slow,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]

EVENT_S = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("ux4iot-react"), *SERVER_ARGS)) as proc:
        yield proc


def connection_string(server: ServerProcess, key: str) -> str:
    return f"Endpoint={server.http_url}/ux4iot;SharedAccessKey={key}"


def test_react_2_0_2_drives_an_azure_sdk_device(server: ServerProcess) -> None:
    key = create_key(server)["key"]
    device = new_device(server, name="react")
    dev = device["id"]
    methods, patches = Inbox(), Inbox()
    client = Target.of(server.addresses).device_client(device)

    def on_method(request: Any) -> None:
        methods(request)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"rebooted": request.payload})
        )

    with connected(client):
        client.on_method_request_received = on_method
        client.on_twin_desired_properties_patch_received = patches
        client.send_message(Message('{"temp": 20.5}', content_type="application/json"))
        scenario = {"connectionString": connection_string(server, key), "timeoutMs": 120_000}
        with NodeDriver("v2", scenario) as ux:
            ux.event("state", connected=True, timeout=EVENT_S)
            # the grant is the subscription, and the present state is pushed at once
            ux.send({"cmd": "subscribeConnectionState", "deviceId": dev})
            ux.event("subscribed", cmd="subscribeConnectionState")
            ux.event("connectionState", deviceId=dev, connected=True, timeout=EVENT_S)
            ux.send({"cmd": "subscribeTelemetry", "deviceId": dev, "telemetryKey": "temp"})
            last = ux.event("telemetry", deviceId=dev, timeout=EVENT_S)
            assert last["value"] == {"temp": 20.5}  # the last value, pushed on the grant
            client.send_message(
                Message('{"temp": 21.5, "other": 1}', content_type="application/json")
            )
            live = ux.event("telemetry", deviceId=dev, timeout=EVENT_S)
            assert live["value"] == {"temp": 21.5}  # only the granted key
            assert live["timestamp"].endswith("Z")
            ux.send({"cmd": "subscribeD2C", "deviceId": dev})
            ux.event("subscribed", cmd="subscribeD2C")
            client.send_message(Message('{"alarm": "hot"}', content_type="application/json"))
            d2c = ux.event("d2cMessage", deviceId=dev, timeout=EVENT_S)
            assert d2c["message"] == {"alarm": "hot"}
            ux.send({"cmd": "subscribeDeviceTwin", "deviceId": dev})
            first_twin = ux.event("deviceTwin", deviceId=dev, timeout=EVENT_S)
            assert set(first_twin["twin"]["properties"]) == {"reported", "desired"}
            client.patch_twin_reported_properties({"firmware": "2.0.2"})
            ux.expect(
                lambda e: (
                    e["event"] == "deviceTwin"
                    and e["twin"]["properties"]["reported"].get("firmware") == "2.0.2"
                ),
                timeout=EVENT_S,
            )
            params = {
                "methodName": "reboot",
                "payload": {"delay": 1},
                "responseTimeoutInSeconds": 10,
            }
            ux.send({"cmd": "invokeDirectMethod", "deviceId": dev, "params": params})
            result = ux.event("result", cmd="invokeDirectMethod", timeout=EVENT_S)
            assert result["result"] == {"status": 200, "payload": {"rebooted": {"delay": 1}}}
            assert methods.wait(what="the method").name == "reboot"
            ux.send({"cmd": "patchDesiredProperties", "deviceId": dev, "patch": {"interval": 7}})
            patched = ux.event("result", cmd="patchDesiredProperties", timeout=EVENT_S)
            assert patched["result"]["status"] == 200
            got = patches.wait(lambda p: p.get("interval") == 7, what="the desired patch")
            assert got["$version"] >= 2
            client.disconnect()
            ux.event("connectionState", deviceId=dev, connected=False, timeout=EVENT_S)


def test_a_wrong_key_is_unauthorized(server: ServerProcess) -> None:
    device = new_device(server, name="react-wrong-key")
    scenario = {"connectionString": connection_string(server, "wrong"), "timeoutMs": 60_000}
    with NodeDriver("v2", scenario) as ux:
        ux.event("state", connected=True, timeout=EVENT_S)  # sessions need no key
        ux.send({"cmd": "subscribeTelemetry", "deviceId": device["id"], "telemetryKey": "t"})
        error = ux.event("grantError", timeout=EVENT_S)
        assert error["error"] == "UNAUTHORIZED"


def test_the_client_recovers_after_the_server_restarts(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "restarting", *SERVER_ARGS).start()
    try:
        key = create_key(server)["key"]
        device = new_device(server, name="react-restart")
        dev = device["id"]
        scenario = {"connectionString": connection_string(server, key), "timeoutMs": 120_000}
        with NodeDriver("v2", scenario) as ux:
            first = ux.event("state", connected=True, timeout=EVENT_S)["sessionId"]
            ux.send({"cmd": "subscribeTelemetry", "deviceId": dev, "telemetryKey": "n"})
            ux.event("subscribed", cmd="subscribeTelemetry")
            send_https(server, device, {"n": 1})
            ux.expect(lambda e: e["event"] == "telemetry" and e["value"] == {"n": 1}, EVENT_S)
            # same data directory, same port: sessions are gone, keys and devices are not
            port = str(server.addresses["http"]["port"])
            assert server.stop() == 0
            server = ServerProcess(server.data_dir, *SERVER_ARGS, "--http-port", port).start()
            session = ux.expect(
                lambda e: e["event"] == "session" and e["sessionId"] != first, timeout=45
            )
            ux.expect(
                lambda e: (
                    e["event"] == "socket"
                    and e["type"] == "connect"
                    and e["sessionId"] == session["sessionId"]
                ),
                timeout=EVENT_S,
            )
            # it grants again on the new session (right after connecting): data flows again
            for n in range(2, 40):
                send_https(server, device, {"n": n})
                try:
                    ux.expect(
                        lambda e, n=n: e["event"] == "telemetry" and e["value"] == {"n": n}, 1.0
                    )
                    break
                except AssertionError:
                    continue
            else:
                raise AssertionError(f"no telemetry after the restart\n{ux.transcript()}")
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()
