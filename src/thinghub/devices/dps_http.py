"""DPS over HTTPS: the Device Provisioning Service's device REST API, as the C, .NET, Java
and Node provisioning clients' HTTP transports call it.

PUT /{idScope}/registrations/{registrationId}/register?api-version=... with
`Authorization: SharedAccessSignature sr={idScope}%2Fregistrations%2F{registrationId}&...`
and a body `{"registrationId", "payload"?}` registers (the same enrollment checks as DPS
over MQTT, devices/dps.py) and answers 202 `{"operationId", "status": "assigning"}`;
GET /{idScope}/registrations/{registrationId}/operations/{operationId} answers 200 with
the assigned RegistrationOperationStatus. Errors use DPS's shape
{"errorCode", "trackingId", "message", "timestampUtc"}.

Operations are kept in memory by the node that registered (for OPERATION_TTL_S), as a
connection keeps them over MQTT.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from thinghub.devices.dps import RETRY_AFTER_S, assigned
from thinghub.devices.errors import codes_for
from thinghub.devices.http_ingest import read_small_body
from thinghub.domain import errors
from thinghub.domain.clock import format_ts
from thinghub.domain.json_depth import check_depth
from thinghub.ports import Clock
from thinghub.services.provisioning import Enrollment, ProvisioningService, new_operation_id

__all__ = ["routes"]

logger = logging.getLogger(__name__)

OPERATION_TTL_S = 600.0  # how long a registration's operation can be polled
MAX_OPERATIONS = 10_000  # operations kept at most (the oldest go first)
MAX_REQUEST_BYTES = 64 * 1024  # a registration request: an id and a small payload


class _Operations:
    """Registration operations by (idScope, registrationId, operationId), expiring."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._by_key: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}

    def add(self, key: tuple[str, str, str], status: dict[str, Any]) -> None:
        now = self.clock.now()
        for old, (expires, _) in list(self._by_key.items()):
            if expires <= now:
                del self._by_key[old]
        while len(self._by_key) >= MAX_OPERATIONS:
            del self._by_key[next(iter(self._by_key))]
        self._by_key[key] = (now + OPERATION_TTL_S, status)

    def get(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        found = self._by_key.get(key)
        if found is None or found[0] <= self.clock.now():
            return None
        return found[1]


def _error(error: errors.Error, clock: Clock) -> Response:
    """DPS's error body, with the status and errorCode the device-side mapper gives."""
    codes = codes_for(error)
    body = {
        "errorCode": codes.error_code,
        "trackingId": new_operation_id().rsplit(".", 1)[-1],
        "message": error.message,
        "timestampUtc": format_ts(clock.now()),
    }
    return Response(orjson.dumps(body), status_code=codes.status, media_type="application/json")


async def _enrollment(provisioning: ProvisioningService, request: Request) -> Enrollment:
    """The enrollment the request's SAS token signs for (its path's registration).

    Raises:
        Unauthorized: no or a bad token, an unknown scope or registration.
    """
    params = request.path_params
    token = request.headers.get("authorization") or None
    return await provisioning.authenticate(params["id_scope"], params["registration_id"], token)


def _refused(request: Request, exc: errors.Unauthorized, clock: Clock) -> Response:
    """One answer for every refused credential (the detail goes to the log only), as DPS
    over MQTT refuses them with one CONNACK code."""
    logger.info("dps https %s: refused: %s", request.path_params["registration_id"], exc.message)
    return _error(errors.Unauthorized("unauthorized", field="Authorization"), clock)


async def _request_body(request: Request, max_json_depth: int) -> dict[str, Any]:
    """The registration request: a JSON object (an empty body is `{}`).

    Raises:
        Invalid: not a JSON object; TooLarge: over MAX_REQUEST_BYTES.
    """
    raw = await read_small_body(request, MAX_REQUEST_BYTES)
    if not raw.strip():
        return {}
    check_depth(raw, max_json_depth, "the request body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.Invalid(f"the request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise errors.Invalid("the request body is not a JSON object", field="body")
    return body


def _register(
    provisioning: ProvisioningService,
    operations: _Operations,
    hub_hostname: str,
    clock: Clock,
    max_json_depth: int,
) -> Callable[[Request], Awaitable[Response]]:
    async def register(request: Request) -> Response:
        id_scope = request.path_params["id_scope"]
        registration_id = request.path_params["registration_id"]
        try:
            enrollment = await _enrollment(provisioning, request)
            body = await _request_body(request, max_json_depth)
            if body.get("registrationId", registration_id) != registration_id:
                raise errors.Invalid(
                    "registrationId does not match the path", field="registrationId"
                )
            device = await provisioning.register(enrollment, body.get("payload"))
        except errors.Unauthorized as exc:
            return _refused(request, exc, clock)
        except errors.Error as exc:
            return _error(exc, clock)
        except ClientDisconnect:
            return Response(status_code=400)
        operation_id = new_operation_id()
        status = assigned(operation_id, device, hub_hostname, clock.now())
        operations.add((id_scope, registration_id, operation_id), status)
        logger.info("dps https %s: assigned to %s", registration_id, hub_hostname)
        return Response(
            orjson.dumps({"operationId": operation_id, "status": "assigning"}),
            status_code=202,
            media_type="application/json",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    return register


def _operation_status(
    provisioning: ProvisioningService, operations: _Operations, clock: Clock
) -> Callable[[Request], Awaitable[Response]]:
    async def operation_status(request: Request) -> Response:
        params = request.path_params
        try:
            await _enrollment(provisioning, request)
            key = (params["id_scope"], params["registration_id"], params["operation_id"])
            status = operations.get(key)
            if status is None:
                raise errors.NotFound("unknown operationId", field="operationId")
        except errors.Unauthorized as exc:
            return _refused(request, exc, clock)
        except errors.Error as exc:
            return _error(exc, clock)
        return Response(orjson.dumps(status), media_type="application/json")

    return operation_status


def routes(
    provisioning: ProvisioningService, hub_hostname: str, clock: Clock, max_json_depth: int
) -> list[Route]:
    """The DPS routes, to be placed after every face's mount (their first segment, the id
    scope, is any name)."""
    operations = _Operations(clock)
    return [
        Route(
            "/{id_scope}/registrations/{registration_id}/register",
            _register(provisioning, operations, hub_hostname, clock, max_json_depth),
            methods=["PUT"],
        ),
        Route(
            "/{id_scope}/registrations/{registration_id}/operations/{operation_id}",
            _operation_status(provisioning, operations, clock),
            methods=["GET"],
        ),
    ]
