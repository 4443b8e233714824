"""A simulated plug-and-play thermostat, as the Azure SDK's samples/pnp/simple_thermostat.py.

Written from the sample's observed behaviour (not a copy of it): the same
environment variables, model id, provisioning payload, property names, commands, payload
shapes and the same console lines a user (or a test) watches for.

    IOTHUB_DEVICE_SECURITY_TYPE   DPS (or connectionString with IOTHUB_DEVICE_CONNECTION_STRING)
    IOTHUB_DEVICE_DPS_ID_SCOPE    the id scope
    IOTHUB_DEVICE_DPS_DEVICE_ID   the registration id
    IOTHUB_DEVICE_DPS_DEVICE_KEY  the device key (individual or derived from a group key)
    IOTHUB_DEVICE_DPS_ENDPOINT    the provisioning host
                                  (default global.azure-devices-provisioning.net)
    THERMOSTAT_INTERVAL_S         seconds between telemetry messages (default 8)

Like the sample it passes no server_verification_cert (trust comes from SSL_CERT_FILE) and no
proxy_options (paho takes MQTT_PROXY from the environment). Type Q and Enter to quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import random
import sys
import threading
from pathlib import Path
from typing import Any

# This file sits next to tests/e2e/azure.py, which would shadow the `azure` package when the
# script is run directly (its directory comes first on sys.path).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from azure.iot.device import Message, MethodRequest, MethodResponse  # noqa: E402
from azure.iot.device.aio import IoTHubDeviceClient, ProvisioningDeviceClient  # noqa: E402

MODEL_ID = "dtmi:com:example:Thermostat;1"
DEFAULT_DPS_ENDPOINT = "global.azure-devices-provisioning.net"
INITIAL_MAX_TEMP = 10.96


class Thermostat:
    """Temperature readings and the max/min/avg report over them."""

    def __init__(self) -> None:
        self.max_temp: float | None = None
        self.min_temp: float | None = None
        self.total = 0.0
        self.count = 0
        self.avg_temp = 0.0
        self.start = datetime.datetime.now()

    def read(self) -> int:
        temp = random.randrange(10, 50)
        self.max_temp = temp if self.max_temp is None else max(self.max_temp, temp)
        self.min_temp = temp if self.min_temp is None else min(self.min_temp, temp)
        self.total += temp
        self.count += 1
        self.avg_temp = self.total / self.count
        return temp

    def report(self) -> str:
        """The getMaxMinReport result, serialized here (the SDK serializes it once more)."""
        return json.dumps(
            {
                "maxTemp": self.max_temp,
                "minTemp": self.min_temp,
                "avgTemp": self.avg_temp,
                "startTime": self.start.isoformat(),
                "endTime": datetime.datetime.now().isoformat(),
            },
            sort_keys=True,
        )


async def provision(host: str, registration_id: str, id_scope: str, key: str) -> Any:
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=host,
        registration_id=registration_id,
        id_scope=id_scope,
        symmetric_key=key,
    )
    client.provisioning_payload = {"modelId": MODEL_ID}
    return await client.register()


async def make_client() -> IoTHubDeviceClient:
    security = os.environ.get("IOTHUB_DEVICE_SECURITY_TYPE", "DPS")
    if security == "connectionString":
        return IoTHubDeviceClient.create_from_connection_string(
            os.environ["IOTHUB_DEVICE_CONNECTION_STRING"], product_info=MODEL_ID
        )
    if security != "DPS":
        raise RuntimeError("IOTHUB_DEVICE_SECURITY_TYPE must be DPS or connectionString")
    key = os.environ["IOTHUB_DEVICE_DPS_DEVICE_KEY"]
    result = await provision(
        os.environ.get("IOTHUB_DEVICE_DPS_ENDPOINT") or DEFAULT_DPS_ENDPOINT,
        os.environ["IOTHUB_DEVICE_DPS_DEVICE_ID"],
        os.environ["IOTHUB_DEVICE_DPS_ID_SCOPE"],
        key,
    )
    if result.status != "assigned":
        raise RuntimeError("Could not provision device. Aborting Plug and Play device connection.")
    print("Device was assigned")
    print(result.registration_state.assigned_hub)
    print(result.registration_state.device_id)
    return IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key,
        hostname=result.registration_state.assigned_hub,
        device_id=result.registration_state.device_id,
        product_info=MODEL_ID,
    )


def wait_for_quit(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """Read stdin in a thread until Q (or end of input)."""
    while True:
        line = sys.stdin.readline()
        if not line or line.strip().upper() == "Q":
            print("Quitting...")
            loop.call_soon_threadsafe(done.set)
            return


async def main() -> None:
    print("Starting at:", datetime.datetime.now(datetime.UTC).isoformat())
    interval = float(os.environ.get("THERMOSTAT_INTERVAL_S", "8"))
    thermostat = Thermostat()
    client = await make_client()
    loop = asyncio.get_running_loop()
    await client.connect()

    await client.patch_twin_reported_properties({"maxTempSinceLastReboot": INITIAL_MAX_TEMP})
    print(f"Reported maxTempSinceLastReboot {INITIAL_MAX_TEMP}")

    async def on_method(request: MethodRequest) -> None:
        print(f"Command request received with payload ({request.name})")
        print(request.payload if request.payload is not None else "Payload was empty.")
        if request.name == "getMaxMinReport":
            report = thermostat.report()
            print("Done generating")
            print(report)
            response = MethodResponse.create_from_method_request(request, 200, report)
        elif request.name == "reboot":
            print(f"Rebooting after delay of {request.payload} secs")
            response = MethodResponse.create_from_method_request(
                request, 200, {"result": True, "data": "reboot succeeded"}
            )
        else:
            print(f"Unknown command {request.name}: not answered")
            return
        await client.send_method_response(response)
        print(f"Sent response to {request.name}")

    async def on_patch(patch: dict[str, Any]) -> None:
        print(f"the data in the desired properties patch was: {patch}")
        version = patch.get("$version")
        ack = {
            name: {"ac": 200, "ad": "Successfully executed patch", "av": version, "value": value}
            for name, value in patch.items()
            if name not in ("$version", "__t")
        }
        if ack:
            await client.patch_twin_reported_properties(ack)
            print(f"Acknowledged desired patch version {version}: {json.dumps(ack)}")

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_patch
    print("Listening for command requests and property updates")
    print("Press Q to quit")

    done = asyncio.Event()
    threading.Thread(target=wait_for_quit, args=(loop, done), daemon=True).start()

    async def send_telemetry() -> None:
        while True:
            print("Sending telemetry for temperature")
            message = Message(json.dumps({"temperature": thermostat.read()}))
            message.content_encoding = "utf-8"
            message.content_type = "application/json"
            await client.send_message(message)
            print("Sent message")
            await asyncio.sleep(interval)

    telemetry = asyncio.create_task(send_telemetry())
    await done.wait()
    telemetry.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await telemetry
    await client.shutdown()
    print("Shut down")


if __name__ == "__main__":
    asyncio.run(main())
