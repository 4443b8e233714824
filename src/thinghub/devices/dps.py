"""DPS over MQTT: register -> 202 assigning -> poll -> 200 assigned (spec §7).

Shares the device port with the hub; a CONNECT whose username is
`{idScope}/registrations/{registrationId}/api-version=...` lands here. The result body is the
RegistrationOperationStatus the SDK reads, with `assignedHub` = the configured hub host name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from thinghub.devices.errors import codes_for
from thinghub.devices.hub_topics import parse_dps_username, parse_query, request_id
from thinghub.devices.mqtt_server import Connection, DropConnection
from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Error, Invalid, NotFound, Unauthorized
from thinghub.domain.json_depth import check_depth
from thinghub.domain.model import Device
from thinghub.mqtt import Publish
from thinghub.mqtt.packets import Connect
from thinghub.ports import Clock
from thinghub.security.ca import device_identity_of
from thinghub.services.provisioning import Enrollment, ProvisioningService, new_operation_id

__all__ = ["Dps", "assigned"]

logger = logging.getLogger(__name__)

REGISTER = "$dps/registrations/PUT/iotdps-register/"
POLL = "$dps/registrations/GET/iotdps-get-operationstatus/"
RESPONSES = "$dps/registrations/res/#"
RETRY_AFTER_S = 1
# DPS answers that are not errors (errors: devices/errors.py).
DPS_ASSIGNED = 200  # the operation status, assigned
DPS_ASSIGNING = 202  # registration accepted: poll its operation


def assigned(operation_id: str, device: Device, hub_hostname: str, now: float) -> dict[str, Any]:
    """The RegistrationOperationStatus of an assigned registration, as DPS answers a status
    poll (over MQTT and HTTPS alike)."""
    return {
        "operationId": operation_id,
        "status": "assigned",
        "registrationState": {
            "registrationId": device.id,
            "createdDateTimeUtc": format_ts(device.created_at),
            "assignedHub": hub_hostname,
            "deviceId": device.id,
            "status": "assigned",
            "substatus": "initialAssignment",
            "lastUpdatedDateTimeUtc": format_ts(now),
            "etag": operation_id.rsplit(".", 1)[-1][:16],
        },
    }


@dataclass
class _DpsState:
    enrollment: Enrollment
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)


class Dps:
    def __init__(
        self,
        provisioning: ProvisioningService,
        hub_hostname: str,
        *,
        clock: Clock,
        max_json_depth: int,
    ) -> None:
        self.provisioning = provisioning
        self.hub_hostname = hub_hostname
        self.clock = clock  # the times written into DPS answers
        self.max_json_depth = max_json_depth

    async def on_connect(self, conn: Connection, connect: Connect) -> int:
        identity = parse_dps_username(connect.username or "")
        if identity is None:
            error: Error = Invalid(
                "the username is not {idScope}/registrations/{registrationId}/...",
                field="username",
            )
            return codes_for(error).connack
        if connect.client_id != identity.registration_id:
            error = Invalid("the client id is not the registration id", field="clientId")
            return codes_for(error).connack
        # An empty password is no token (an X.509 client's library may send one).
        token = connect.password.decode("utf-8", "replace") if connect.password else None
        cn, ou = device_identity_of(conn.peer_cert) if conn.peer_cert is not None else (None, None)
        try:
            enrollment = await self.provisioning.authenticate(
                identity.id_scope, identity.registration_id, token, cn, ou
            )
        except Unauthorized as exc:
            logger.info("dps %s: authentication failed: %s", connect.client_id, exc.message)
            return codes_for(exc).connack
        conn.state = _DpsState(enrollment)
        conn.session_present = False  # DPS keeps no session
        return 0

    async def on_accepted(self, conn: Connection) -> None:
        logger.info("dps %s: connected from %s", conn.client_id, conn.peer)

    async def on_subscribe(
        self, conn: Connection, filters: tuple[tuple[str, int], ...]
    ) -> list[int]:
        for topic_filter, _ in filters:
            if topic_filter != RESPONSES:
                raise DropConnection(f"DPS subscribe to {topic_filter!r} is not allowed")
        return [min(qos, 1) for _, qos in filters]

    async def on_unsubscribe(self, conn: Connection, filters: tuple[str, ...]) -> None:
        return None

    async def on_puback(self, conn: Connection, publish: Publish) -> None:
        return None

    async def on_close(self, conn: Connection) -> None:
        return None

    def publish_now(self, conn: Connection, publish: Publish) -> asyncio.Future[Any] | None:
        return None  # every PUBLISH goes to on_publish

    async def on_publish(self, conn: Connection, publish: Publish) -> None:
        state: _DpsState = conn.state
        if publish.qos == 2:
            raise DropConnection("QoS 2 publish: DPS supports QoS 0 and 1")
        query = parse_query(publish.topic)
        rid = request_id(publish.topic)
        if publish.topic.startswith(REGISTER):
            await self._register(conn, state, publish.payload, rid)
        elif publish.topic.startswith(POLL):
            operation = state.operations.get(query.get("operationId", ""))
            if operation is None:
                self._error(conn, rid, NotFound("unknown operationId", field="operationId"))
            else:
                self._respond(conn, DPS_ASSIGNED, rid, operation)
        else:
            raise DropConnection(f"DPS publish to {publish.topic!r} is not allowed")
        return None

    async def _register(self, conn: Connection, state: _DpsState, payload: bytes, rid: str) -> None:
        try:  # the depth first: the parser recurses into what it parses
            check_depth(payload, self.max_json_depth, "the request body")
        except Invalid as exc:
            self._error(conn, rid, exc)
            return
        try:  # orjson: no NaN, no integer past 64 bits, no lone surrogate, nothing unstorable
            request = orjson.loads(payload) if payload.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            message = f"the request body is not valid JSON: {exc}"
            self._error(conn, rid, Invalid(message, field="body"))
            return
        reg_id = request.get("registrationId", state.enrollment.registration_id)
        if reg_id != state.enrollment.registration_id:
            message = "registrationId does not match the connection"
            self._error(conn, rid, Invalid(message, field="registrationId"))
            return
        try:
            device = await self.provisioning.register(state.enrollment, request.get("payload"))
        except Error as exc:
            self._error(conn, rid, exc)
            return
        # The device as registered from now on: a second registration on this connection
        # starts from it, not from the record read at CONNECT (which would undo this one).
        state.enrollment = dataclasses.replace(state.enrollment, device=device)
        op_id = new_operation_id()
        state.operations[op_id] = assigned(op_id, device, self.hub_hostname, self.clock.now())
        logger.info("dps %s: assigned to %s", reg_id, self.hub_hostname)
        self._respond(
            conn,
            DPS_ASSIGNING,
            rid,
            {"operationId": op_id, "status": "assigning"},
            retry_after=RETRY_AFTER_S,
        )

    def _error(self, conn: Connection, rid: str, error: Error) -> None:
        """An error in DPS's shape (errorCode, trackingId, message, timestampUtc), with the
        status and errorCode the device-side mapper gives `error`."""
        codes = codes_for(error)
        body = {
            "errorCode": codes.error_code,
            "trackingId": new_operation_id().rsplit(".", 1)[-1],
            "message": error.message,
            "timestampUtc": format_ts(self.clock.now()),
        }
        self._respond(conn, codes.status, rid, body)

    @staticmethod
    def _respond(
        conn: Connection,
        status: int,
        rid: str,
        body: dict[str, Any],
        retry_after: int | None = None,
    ) -> None:
        # No `$` but the one in `$rid`: the SDK splits DPS response topics on `$`.
        topic = f"$dps/registrations/res/{status}/?$rid={rid}"
        if retry_after is not None:
            topic += f"&retry-after={retry_after}"
        conn.publish(topic, json.dumps(body).encode(), 0)
