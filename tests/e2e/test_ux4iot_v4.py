"""The ux4iot 4.x protocol through the real transport libraries of ux4iot-react 4.x:
socket.io-client@4 and axios from npm (tests/e2e/ux4iot_client/driver_v4.js), replaying the
call order of every hook (grant -> last value -> subscribe -> `data`), both bulk body forms,
methods, desired patches, unsubscribe, revoke and session delete, against an Azure SDK
device; and 4.x's reconnect (a new session, every hook again) after its session is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from tests.e2e.ux4iot_node import Line, NodeDriver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]

EVENT_S = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("ux4iot-v4"), *SERVER_ARGS)) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(create_key(server, label="v4")["key"])


def http(ux: NodeDriver, cmd: str, path: str | None = None) -> Line:
    """The next HTTP answer the driver got for `cmd` (and `path` when given)."""
    return ux.expect(
        lambda e: (
            e["event"] == "http"
            and e["cmd"] == cmd
            and (path is None or e["path"].startswith(path))
        ),
        EVENT_S,
    )


def data(ux: NodeDriver, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    line = ux.expect(lambda e: e["event"] == "data" and match(e["payload"]), EVENT_S)
    payload: dict[str, Any] = line["payload"]
    return payload


@pytest.mark.parametrize("transports", [["websocket", "polling"], ["polling"]])
def test_every_4x_hook_with_socket_io_client(
    server: ServerProcess, key: str, transports: list[str]
) -> None:
    device = new_device(server, name="v4")
    dev = device["id"]
    methods, patches = Inbox(), Inbox()
    client = Target.of(server.addresses).device_client(device)

    def on_method(request: Any) -> None:
        methods(request)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})
        )

    scenario = {
        "connectionString": f"Endpoint={server.http_url}/ux4iot;SharedAccessKey={key}",
        "transports": transports,
        "timeoutMs": 120_000,
        "commands": [{"cmd": "session"}, {"cmd": "connect"}],
    }
    with connected(client), NodeDriver("v4", scenario) as ux:
        client.on_method_request_received = on_method
        client.on_twin_desired_properties_patch_received = patches
        socket = ux.event("socket", type="connect", timeout=EVENT_S)
        assert socket["transport"] == transports[0]

        # useTelemetry: grant, last value (none yet: 404), subscription, then data
        ux.send({"cmd": "useTelemetry", "deviceId": dev, "telemetryKey": "temp"})
        assert http(ux, "useTelemetry", "/grants")["status"] == 204
        assert http(ux, "useTelemetry", "/lastValue")["status"] == 404
        assert http(ux, "useTelemetry", "/subscription")["status"] == 204
        client.send_message(Message('{"temp": 19.5, "hum": 40}', content_type="application/json"))
        got = data(ux, lambda p: "telemetry" in p)
        assert got["deviceId"] == dev and got["telemetry"] == {"temp": 19.5}

        # useMultiTelemetry: the all-keys grant, all last values, the bulk path (react's form)
        ux.send({"cmd": "useMultiTelemetry", "deviceId": dev, "telemetryKeys": ["hum", "co2"]})
        assert http(ux, "useMultiTelemetry", "/grants")["status"] == 204
        values = http(ux, "useMultiTelemetry", "/lastValue")
        assert values["status"] == 200
        assert values["body"]["data"]["temp"]["value"] == 19.5
        bulk = http(ux, "subscribeAll")
        assert bulk["status"] == 200 and [r["telemetryKey"] for r in bulk["body"]] == ["hum", "co2"]
        client.send_message(Message('{"temp": 20, "hum": 41, "co2": 400, "x": 1}'))
        got = data(ux, lambda p: p.get("telemetry", {}).get("co2") == 400)
        assert got["telemetry"] == {"temp": 20, "hum": 41, "co2": 400}  # never "x"
        # admin-node's form: {subscriptionRequests} with the sessionId header
        ux.send(
            {
                "cmd": "useMultiTelemetry",
                "deviceId": dev,
                "telemetryKeys": ["x"],
                "form": "envelope",
            }
        )
        bulk = http(ux, "subscribeAll")
        assert bulk["status"] == 200 and bulk["body"][0]["telemetryKey"] == "x"

        # useConnectionState, useDeviceTwin, useD2CMessages
        ux.send({"cmd": "useConnectionState", "deviceId": dev})
        assert http(ux, "useConnectionState", "/grants")["status"] == 204
        state = http(ux, "useConnectionState", "/connectionState")
        assert state["status"] == 200 and state["body"]["data"] is True
        assert http(ux, "useConnectionState", "/subscription")["status"] == 204
        ux.send({"cmd": "useDeviceTwin", "deviceId": dev})
        assert http(ux, "useDeviceTwin", "/grants")["status"] == 204
        twin = http(ux, "useDeviceTwin", "/deviceTwin")
        assert twin["status"] == 200 and "reported" in twin["body"]["data"]["properties"]
        assert http(ux, "useDeviceTwin", "/subscription")["status"] == 204
        ux.send({"cmd": "useD2CMessages", "deviceId": dev})
        assert http(ux, "useD2CMessages", "/grants")["status"] == 204
        assert http(ux, "useD2CMessages", "/subscription")["status"] == 204
        client.patch_twin_reported_properties({"mode": "v4"})
        pushed = data(ux, lambda p: "deviceTwin" in p)
        assert pushed["deviceTwin"]["properties"]["reported"]["mode"] == "v4"
        client.send_message(Message('{"raw": [1, 2]}'))
        assert data(ux, lambda p: "message" in p)["message"] == {"raw": [1, 2]}

        # useDirectMethod and usePatchDesiredProperties
        params = {"methodName": "ping", "payload": {"n": 1}, "responseTimeoutInSeconds": 10}
        ux.send({"cmd": "useDirectMethod", "deviceId": dev, "params": params})
        assert http(ux, "useDirectMethod", "/grants")["status"] == 204
        answer = http(ux, "directMethod")
        assert answer["status"] == 200
        assert answer["body"] == {"status": 200, "payload": {"echo": {"n": 1}}}
        assert methods.wait(what="the method").name == "ping"
        ux.send({"cmd": "usePatchDesiredProperties", "deviceId": dev, "patch": {"rate": 2}})
        assert http(ux, "usePatchDesiredProperties", "/grants")["status"] == 204
        assert http(ux, "patchDesired")["status"] == 200
        patches.wait(lambda p: p.get("rate") == 2, what="the desired patch")

        # unmount, revoke, and the session's end
        ux.send({"cmd": "unuseTelemetry", "deviceId": dev, "telemetryKey": "temp"})
        assert http(ux, "unuseTelemetry")["status"] == 204
        ux.send(
            {
                "cmd": "unuseMultiTelemetry",
                "deviceId": dev,
                "telemetryKeys": ["hum"],
                "form": "arrayWithHeader",
            }
        )
        removed = http(ux, "unsubscribeAll")
        assert removed["status"] == 200 and removed["body"][0]["telemetryKey"] == "hum"
        ux.send({"cmd": "revokeGrant", "grant": {"deviceId": dev, "type": "d2cMessages"}})
        assert http(ux, "revokeGrant")["status"] == 204
        # the next message: co2 still subscribed (the all-keys grant), d2c no longer; a
        # later message of the same device is the sentinel (one socket, in order)
        client.send_message(Message('{"temp": 1, "hum": 1, "co2": 1}'))
        got = data(ux, lambda p: p.get("telemetry", {}).get("co2") == 1)
        assert got["telemetry"] == {"co2": 1}
        client.send_message(Message('{"co2": 2}'))
        data(ux, lambda p: p.get("telemetry") == {"co2": 2})
        d2c = [line["payload"]["message"] for line in ux.lines if line["event"] == "data"
               and "message" in line["payload"]]  # fmt: skip
        assert d2c == [{"raw": [1, 2]}]  # the one sent before the revoke
        ux.send({"cmd": "deleteSession"})
        assert http(ux, "deleteSession")["status"] == 204
        gone = ux.event("socket", type="disconnect", timeout=EVENT_S)
        assert gone["reason"] == "io server disconnect"


def test_4x_reconnects_with_a_new_session_and_runs_its_hooks_again(
    server: ServerProcess, key: str
) -> None:
    device = new_device(server, name="v4-reconnect")
    dev = device["id"]
    scenario = {
        "connectionString": f"Endpoint={server.http_url}/ux4iot;SharedAccessKey={key}",
        "reconnect": True,
        "reconnectMs": 300,
        "timeoutMs": 60_000,
        "commands": [{"cmd": "session"}, {"cmd": "connect"}],
    }
    with NodeDriver("v4", scenario) as ux:
        first = ux.event("socket", type="connect", timeout=EVENT_S)["sessionId"]
        ux.send({"cmd": "useTelemetry", "deviceId": dev, "telemetryKey": "k"})
        assert http(ux, "useTelemetry", "/subscription")["status"] == 204
        send_https(server, device, {"k": 1})
        data(ux, lambda p: p.get("telemetry") == {"k": 1})
        ux.send({"cmd": "deleteSessions"})  # the admin ends every session of the account
        assert http(ux, "deleteSessions")["status"] == 204
        ux.event("socket", type="disconnect", timeout=EVENT_S)
        again = ux.expect(
            lambda e: e["event"] == "socket" and e["type"] == "connect" and e["sessionId"] != first,
            EVENT_S,
        )
        # the hook ran again on the new session: grant, last value (now 200), subscription
        assert http(ux, "useTelemetry", "/lastValue")["body"]["data"] == {"k": 1}
        assert http(ux, "useTelemetry", "/subscription")["status"] == 204
        send_https(server, device, {"k": 2})
        data(ux, lambda p: p.get("telemetry") == {"k": 2})
        assert again["sessionId"] != first


def test_an_endpoint_ending_with_a_slash_works_too(server: ServerProcess, key: str) -> None:
    """`Endpoint=http://host/ux4iot/`: axios still calls `/ux4iot/...`, and socket.io-client
    joins namespace `/ux4iot/` (the URL's path, slash and all), which is served as well."""
    device = new_device(server, name="v4-slash")
    dev = device["id"]
    scenario = {
        "connectionString": f"Endpoint={server.http_url}/ux4iot/;SharedAccessKey={key}",
        "timeoutMs": 60_000,
        "commands": [{"cmd": "session"}, {"cmd": "connect"}],
    }
    with NodeDriver("v4", scenario) as ux:
        socket = ux.event("socket", type="connect", timeout=EVENT_S)
        assert socket["type"] == "connect"
        ux.send({"cmd": "useTelemetry", "deviceId": dev, "telemetryKey": "k"})
        assert http(ux, "useTelemetry", "/subscription")["status"] == 204
        send_https(server, device, {"k": 1})
        got = data(ux, lambda p: "telemetry" in p)
        assert got["deviceId"] == dev and got["telemetry"] == {"k": 1}
        assert not [e for e in ux.lines if e["event"] == "socket" and e["type"] == "disconnect"]
