"""DPS symmetric-key registration over MQTT: which hub and device id the gateway is.

The flow of specs the cloud implements (docs/faces/device-mqtt.md, "DPS"): CONNECT as
`{idScope}/registrations/{registrationId}/api-version=...` with a SAS over
`{idScope}/registrations/{registrationId}`, SUBSCRIBE `$dps/registrations/res/#`, PUBLISH the
register request, then poll the operation until it is `assigned` (or fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from thinghub.mqtt import Publish
from thinghub.security import sas

from .credentials import SAS_TTL_S
from .mqtt_link import MqttLink

__all__ = ["DPS_API_VERSION", "DpsError", "Registration", "register"]

logger = logging.getLogger(__name__)

DPS_API_VERSION = "2019-03-31"
#: The whole registration (connect, register, polls) must finish within this.
REGISTRATION_TIMEOUT_S = 60.0
#: Polls of the operation status before giving up.
MAX_POLLS = 30


class DpsError(Exception):
    """Registration failed; the message says how (status, error body)."""


@dataclass(frozen=True, slots=True)
class Registration:
    assigned_hub: str
    device_id: str


def _status_and_query(topic: str) -> tuple[int, dict[str, str]]:
    # $dps/registrations/res/{status}/?$rid={rid}[&retry-after=N]
    head, _, query = topic.partition("?")
    parts = head.split("/")
    status = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
    return status, dict(parse_qsl(query))


async def register(
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    server_hostname: str,
    id_scope: str,
    registration_id: str,
    key: str,
) -> Registration:
    """Register (or re-register) and return the assigned hub and device id."""
    responses: asyncio.Queue[Publish] = asyncio.Queue()
    link = MqttLink(
        host=host,
        port=port,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        client_id=registration_id,
        username=f"{id_scope}/registrations/{registration_id}/api-version={DPS_API_VERSION}",
        password=sas.sign(
            key, f"{id_scope}/registrations/{registration_id}", int(time.time() + SAS_TTL_S)
        ),
        on_publish=responses.put_nowait,
    )
    try:
        async with asyncio.timeout(REGISTRATION_TIMEOUT_S):
            await link.connect()
            try:
                async with asyncio.TaskGroup() as tasks:
                    reader = tasks.create_task(link.run(), name=f"dps[{registration_id}].read")
                    result = await _flow(link, responses, registration_id)
                    reader.cancel()
            except* ConnectionError as group:
                raise DpsError(f"DPS connection lost: {group.exceptions[0]}") from None
    except TimeoutError as exc:
        raise DpsError(f"DPS registration took over {REGISTRATION_TIMEOUT_S} s") from exc
    finally:
        await link.close()
    return result


async def _flow(
    link: MqttLink, responses: asyncio.Queue[Publish], registration_id: str
) -> Registration:
    await link.subscribe([("$dps/registrations/res/#", 1)])
    body = json.dumps({"payload": None, "registrationId": registration_id}, sort_keys=True)
    await link.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", body.encode(), 1)
    for poll in range(MAX_POLLS):
        answer = await responses.get()
        status, query = _status_and_query(answer.topic)
        try:
            result = json.loads(answer.payload)
        except ValueError as exc:
            raise DpsError(f"DPS answered {status} with a body that is not JSON") from exc
        if status >= 300 or not isinstance(result, dict):
            raise DpsError(f"DPS answered {status}: {str(result)[:300]}")
        if result.get("status") == "assigned":
            state = result.get("registrationState") or {}
            hub, device = state.get("assignedHub"), state.get("deviceId")
            if not isinstance(hub, str) or not isinstance(device, str):
                raise DpsError("DPS assigned no hub or device id")
            logger.info("dps %s: assigned to %s as %s", registration_id, hub, device)
            return Registration(hub, device)
        if result.get("status") != "assigning":
            raise DpsError(f"DPS registration ended with status {result.get('status')!r}")
        retry = query.get("retry-after", "2")
        await asyncio.sleep(min(10.0, float(retry)) if retry.isdigit() else 2.0)
        operation = result.get("operationId", "")
        await link.publish(
            f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={poll + 2}"
            f"&operationId={operation}",
            b" ",
            1,
        )
    raise DpsError(f"DPS still assigning after {MAX_POLLS} polls")
