"""Routes of the ux4iot face, as the ux4iot clients use them (docs/faces/ux4iot.md): sessions,
grants, subscriptions, last values, twin, connection state, direct methods and desired properties.

Credentials (docs/faces/ux4iot.md, "Credentials"): `Shared-Access-Key` is one of the
account's keys (services.auth face keys) and reaches every device of that account with no
grant check; `sessionId` is a session, which reaches only what its grants allow. A request
carrying the key is judged by the key (4.x's dev mode sends both). Another account's device
is 404 to a key; to a session it is a device it holds no grant for (403), exactly like a
device that does not exist, so neither tells that it exists.

Bodies are read after the caller is known (a wrong key is 401 whatever the body) and parsed
here, not by FastAPI, so both bulk body forms and the DELETE bodies take one path; every
malformed body is 400 naming the field (faces._http's error body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware

from thinghub import __version__
from thinghub.domain import live as core
from thinghub.domain.errors import Forbidden, Invalid, NotFound, Unauthorized
from thinghub.domain.json_depth import exceeds_depth
from thinghub.domain.model import Device, Principal
from thinghub.faces._http import OrjsonResponse, face_app, services_of, settings_of
from thinghub.faces.face import FaceContext
from thinghub.faces.ux4iot.grants import Grant, GrantType, Subscription, SubscriptionType
from thinghub.faces.ux4iot.payloads import (
    connection_state_response,
    device_twin_response,
    last_value_response,
    last_values_response,
    method_response,
    twin_document,
)
from thinghub.faces.ux4iot.reference import REFERENCE_PATH, socketio_reference
from thinghub.faces.ux4iot.runtime import Ux4iotRuntime, session_principal
from thinghub.faces.ux4iot.schemas import (
    KEY_HEADER,
    SESSION_HEADER,
    DesiredPropertiesPatchRequest,
    DirectMethodRequest,
    GrantRequest,
    SubscriptionRequest,
    parse_body,
    parse_bulk_subscriptions,
    parse_log_level,
)

__all__ = ["API_VERSION", "FACE_NAME", "create_app"]

logger = logging.getLogger(__name__)

FACE_NAME = "ux4iot"
# `GET /version`: the ux4iot API generation this face speaks (4.x, with v2 grants accepted),
# and thinghub's version as semver build metadata.
API_VERSION = f"4.0.0+thinghub.{__version__}"
# The account whose keys may change the server's log level: the operator's (a server-wide
# setting is no tenant's to change).
OPERATOR_ACCOUNT = "default"

router = APIRouter()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the key's account (no grant checks) or a bound session (grants checked)."""

    principal: Principal
    session_id: str | None  # None: the Shared-Access-Key

    def is_key(self) -> bool:
        return self.session_id is None


def runtime_of(request: Request) -> Ux4iotRuntime:
    runtime: Ux4iotRuntime = request.app.state.ux4iot
    return runtime


async def _key(request: Request) -> Principal:
    return await services_of(request).auth.authenticate_face_key(
        FACE_NAME, request.headers.get(KEY_HEADER), KEY_HEADER
    )


async def _caller(request: Request) -> Caller:
    """The key when the request carries one, else its `sessionId` header's session.

    Raises:
        Unauthorized: neither header, or a wrong key.
        NotFound: an unknown or expired session.
        Forbidden: a session no grant has bound to an account yet (it may read nothing).
    """
    if KEY_HEADER in request.headers:
        return Caller(await _key(request), None)
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise Unauthorized(
            f"send the {KEY_HEADER} header, or the {SESSION_HEADER} header of a session",
            field=KEY_HEADER,
        )
    runtime = runtime_of(request)
    if not await runtime.store.touch(session_id, runtime.now()):
        raise NotFound(f"unknown session {session_id!r}", field=SESSION_HEADER)
    account_id = await runtime.store.session_account(session_id, runtime.now())
    if account_id is None:
        raise Forbidden(f"session {session_id} holds no grant", field=SESSION_HEADER)
    return Caller(session_principal(session_id, account_id), session_id)


async def _require(request: Request, caller: Caller, need: Grant) -> None:
    """A session must hold a grant covering `need`; the key needs none."""
    if caller.session_id is None:
        return
    runtime = runtime_of(request)
    if not await runtime.store.allows(caller.session_id, need, runtime.now()):
        what = need.type.value
        if need.telemetry_key is not None:
            what += f" {need.telemetry_key!r}"
        if need.method_name is not None:
            what += f" {need.method_name!r}"
        raise Forbidden(
            f"session {caller.session_id} has no grant for {what} of device {need.device_id!r}",
            field="deviceId",
        )


async def _device(request: Request, caller: Caller, device_id: str) -> Device:
    return await services_of(request).registry.get_device(caller.principal, device_id)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise Invalid("a JSON body is required", field="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Invalid("the body is not valid JSON", field="body") from None


def _subscription_json(session_id: str, sub: Subscription) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sessionId": session_id,
        "deviceId": sub.device_id,
        "type": sub.type.value,
    }
    if sub.type is SubscriptionType.TELEMETRY:
        out["telemetryKey"] = sub.telemetry_key
    return out


# -- OpenAPI: the bodies parsed by hand, documented from their models --------------------------

_COMPONENTS: dict[str, Any] = {}


def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _COMPONENTS.update(schema.pop("$defs", {}))
    _COMPONENTS[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_SUBSCRIPTION = _schema_of(SubscriptionRequest)
GRANT_DOC = _body_doc(_schema_of(GrantRequest))
SUBSCRIPTION_DOC = _body_doc(_SUBSCRIPTION)
BULK_DOC = _body_doc(
    {
        "anyOf": [
            {"type": "array", "items": _SUBSCRIPTION},
            {
                "type": "object",
                "required": ["subscriptionRequests"],
                "properties": {"subscriptionRequests": {"type": "array", "items": _SUBSCRIPTION}},
            },
        ]
    }
)
METHOD_DOC = _body_doc(_schema_of(DirectMethodRequest))
PATCH_DOC = _body_doc(_schema_of(DesiredPropertiesPatchRequest))


def _add_components(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {}).update(_COMPONENTS)


# -- common --------------------------------------------------------------------------------------


@router.get("/version", tags=["common"], response_class=PlainTextResponse)
async def version() -> Response:
    """The API version, without credentials."""
    return PlainTextResponse(API_VERSION)


@router.get("/status", tags=["common"])
async def status() -> Response:
    """Whether the face is up, without credentials."""
    return OrjsonResponse({"status": "ok", "version": API_VERSION})


@router.put("/logLevel/{level}", status_code=204, tags=["common"])
async def log_level(level: str, request: Request) -> Response:
    """Change the server's log level at run time (error, warn, info, verbose, debug). A
    server-wide setting: only keys of the operator's `default` account may (403 else)."""
    principal = await _key(request)
    value = parse_log_level(level)
    operator = await services_of(request).auth.find_account(OPERATOR_ACCOUNT)
    if operator is None or operator.id != principal.account_id:
        raise Forbidden(
            "the log level is the server's: only a key of the operator's account may set it",
            field=KEY_HEADER,
        )
    logging.getLogger().setLevel(value)
    logger.warning("ux4iot: log level set to %s by key %s", level, principal.subject)
    return Response(status_code=204)


# -- sessions ------------------------------------------------------------------------------------


@router.post("/session", tags=["sessions"])
async def open_session(request: Request) -> Response:
    """Open a session (no credentials, any body or none): `{sessionId}`."""
    runtime = runtime_of(request)
    info = await runtime.store.create(runtime.now())
    return OrjsonResponse({"sessionId": info.id})


@router.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
async def delete_session(session_id: str, request: Request) -> Response:
    """Delete a session of the key's account: its sockets are disconnected."""
    principal = await _key(request)
    runtime = runtime_of(request)
    if not await runtime.store.delete(session_id, principal.account_id):
        raise NotFound(f"unknown session {session_id!r}", field="sessionId")
    await runtime.sessions_deleted([session_id])
    return Response(status_code=204)


@router.delete("/sessions", status_code=204, tags=["sessions"])
async def delete_sessions(request: Request) -> Response:
    """Delete every session of the key's account."""
    principal = await _key(request)
    runtime = runtime_of(request)
    gone = await runtime.store.delete_account(principal.account_id)
    await runtime.sessions_deleted(gone)
    return Response(status_code=204)


# -- grants --------------------------------------------------------------------------------------


@router.put("/grants", status_code=204, tags=["grants"], openapi_extra=GRANT_DOC)
async def put_grant(request: Request) -> Response:
    """Forward a grant (`type`, or v2's `grantType`, which also subscribes and pushes the
    present value). 404 for an unknown session only: the device need not exist (yet)."""
    principal = await _key(request)
    runtime = runtime_of(request)
    session_id, grant, protocol = parse_body(GrantRequest, await _json(request)).to_domain()
    # Like ux4iot, which stores grants by device id without asking IoT Hub: a backend may
    # grant a device before it is registered (the grant then covers it once it is). The
    # grant is within the key's account: a device id of another account stays out of reach
    # (its reads are 404, its events go to that account's sessions only), and the answer is
    # the same 204 whether or not such a device exists anywhere.
    implied = await runtime.store.grant(
        session_id, principal.account_id, grant, runtime.now(), protocol
    )
    await runtime.bound(principal.account_id)
    if implied is not None:
        await runtime.push_current(session_id, principal.account_id, [implied])
    return Response(status_code=204)


@router.delete("/grants", status_code=204, tags=["grants"], openapi_extra=GRANT_DOC)
async def revoke_grant(request: Request) -> Response:
    """Revoke the grant in the body: the subscriptions no other grant covers end at once.
    204 also when the session does not hold it, or the device does not exist."""
    principal = await _key(request)
    runtime = runtime_of(request)
    session_id, grant, _ = parse_body(GrantRequest, await _json(request)).to_domain()
    await runtime.store.revoke(session_id, principal.account_id, grant, runtime.now())
    return Response(status_code=204)


# -- subscriptions -------------------------------------------------------------------------------


async def _one_subscription(request: Request) -> tuple[str, Subscription]:
    body = parse_body(SubscriptionRequest, await _json(request))
    return body.to_domain(request.headers.get(SESSION_HEADER))


@router.put(
    "/subscription", status_code=204, tags=["subscriptions"], openapi_extra=SUBSCRIPTION_DOC
)
async def subscribe(request: Request) -> Response:
    """Subscribe a session (sessionId in the body) to live data it holds a grant for."""
    runtime = runtime_of(request)
    session_id, sub = await _one_subscription(request)
    await runtime.store.subscribe(session_id, sub, runtime.now())
    return Response(status_code=204)


@router.delete(
    "/subscription", status_code=204, tags=["subscriptions"], openapi_extra=SUBSCRIPTION_DOC
)
async def unsubscribe(request: Request) -> Response:
    runtime = runtime_of(request)
    session_id, sub = await _one_subscription(request)
    await runtime.store.unsubscribe(session_id, sub, runtime.now())
    return Response(status_code=204)


@router.put("/subscriptions", tags=["subscriptions"], openapi_extra=BULK_DOC)
async def subscribe_all(request: Request) -> Response:
    """Bulk subscribe: a bare array (sessionId in each element) or `{subscriptionRequests}`
    with a `sessionId` header. Any malformed element fails the call and nothing is applied;
    elements without a grant are skipped; the answer lists what was applied."""
    runtime = runtime_of(request)
    requests = parse_bulk_subscriptions(await _json(request), request.headers.get(SESSION_HEADER))
    applied = await runtime.store.subscribe_many(requests, runtime.now())
    return OrjsonResponse([_subscription_json(sid, sub) for sid, sub in applied])


@router.delete("/subscriptions", tags=["subscriptions"], openapi_extra=BULK_DOC)
async def unsubscribe_all(request: Request) -> Response:
    runtime = runtime_of(request)
    requests = parse_bulk_subscriptions(await _json(request), request.headers.get(SESSION_HEADER))
    applied = await runtime.store.unsubscribe_many(requests, runtime.now())
    return OrjsonResponse([_subscription_json(sid, sub) for sid, sub in applied])


# -- last values, twin, connection state ---------------------------------------------------------


@router.get("/lastValue/{device_id}/{telemetry_key}", tags=["last values"])
async def last_value(device_id: str, telemetry_key: str, request: Request) -> Response:
    """`{deviceId, data: {key: value}, timestamp}`; 404 when the device never sent the key."""
    caller = await _caller(request)
    await _require(request, caller, Grant(device_id, GrantType.TELEMETRY, telemetry_key))
    device = await _device(request, caller, device_id)
    values = await services_of(request).queries.latest_values(
        caller.principal, device, frozenset({telemetry_key})
    )
    found = values.get(telemetry_key)
    if found is None:
        raise NotFound(
            f"no value of {telemetry_key!r} from device {device_id!r}", field="telemetryKey"
        )
    return OrjsonResponse(last_value_response(device.id, telemetry_key, found[0], found[1]))


async def _readable_keys(request: Request, caller: Caller, device_id: str) -> frozenset[str] | None:
    """The telemetry keys of the device a session's grants name (None: every key, as for
    the key itself or a grant with a null key); 403 when the session holds no telemetry
    grant of the device."""
    if caller.session_id is None:
        return None
    runtime = runtime_of(request)
    keys = await runtime.store.granted_telemetry_keys(caller.session_id, device_id, runtime.now())
    if keys is not None and not keys:
        await _require(request, caller, Grant(device_id, GrantType.TELEMETRY))
    return keys


@router.get("/lastValue/{device_id}", tags=["last values"])
async def last_values(device_id: str, request: Request) -> Response:
    """`{deviceId, data: {key: {value, timestamp}}, timestamp: ''}`: every key the caller
    may read (a session: those its telemetry grants name, or all with a null key)."""
    caller = await _caller(request)
    keys = await _readable_keys(request, caller, device_id)
    device = await _device(request, caller, device_id)
    values = await services_of(request).queries.latest_values(caller.principal, device, keys)
    if keys is not None:
        values = {key: value for key, value in values.items() if key in keys}
    return OrjsonResponse(last_values_response(device.id, values))


@router.delete("/lastValue/{device_id}", status_code=204, tags=["last values"])
async def clear_last_values(device_id: str, request: Request) -> Response:
    """Forget the device's last values (the stored telemetry stays). With the key, or with a
    session that holds a telemetry grant of the device (any key: the seed asks only that "a
    grant for the device telemetry exists")."""
    caller = await _caller(request)
    await _readable_keys(request, caller, device_id)
    device = await _device(request, caller, device_id)
    await services_of(request).queries.clear_latest(caller.principal, device)
    return Response(status_code=204)


@router.get("/deviceTwin/{device_id}", tags=["twin"])
async def device_twin(device_id: str, request: Request) -> Response:
    """`{deviceId, data: {version, properties: {reported, desired}}, timestamp}`."""
    caller = await _caller(request)
    await _require(request, caller, Grant(device_id, GrantType.DEVICE_TWIN))
    device = await _device(request, caller, device_id)
    runtime = runtime_of(request)
    document = await runtime.twin_document(device)
    return OrjsonResponse(
        device_twin_response(device.id, document, await runtime.twin_time(device))
    )


@router.get("/connectionState/{device_id}", tags=["connection state"])
async def connection_state(device_id: str, request: Request) -> Response:
    """`{deviceId, data: true|false, timestamp}` (the time of the device's last activity)."""
    caller = await _caller(request)
    await _require(request, caller, Grant(device_id, GrantType.CONNECTION_STATE))
    device = await _device(request, caller, device_id)
    connected = await services_of(request).registry.is_connected(device.id)
    when = await runtime_of(request).connection_time(device)
    return OrjsonResponse(connection_state_response(device.id, connected, when))


# -- direct methods and desired properties -------------------------------------------------------


async def _await_connection(request: Request, device: Device, timeout_s: float) -> None:
    """IoT Hub's connectTimeoutInSeconds: wait that long at most for an offline device to
    connect (its connection event, watched before the state is read, so none is missed)."""
    services = services_of(request)
    events = services.live.watch(device.account_id, kinds={"connection"}, device_id=device.id)
    try:
        if await services.registry.is_connected(device.id):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                async for event in events:
                    if isinstance(event, core.ConnectionChanged) and event.connected:
                        return
    finally:
        await events.aclose()


def _method_payload(payload: Any, max_depth: int) -> Any:
    """The device's answer as the application sees it. The Azure SDK's samples serialize
    their answer themselves and the SDK serializes it again, so a JSON string holding a JSON
    object or array is unwrapped (unless it nests deeper than max_json_depth)."""
    if (
        isinstance(payload, str)
        and payload.lstrip()[:1] in ("{", "[")
        and not exceeds_depth(payload, max_depth)
    ):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(payload)
    return payload


@router.post("/directMethod", tags=["IoT Hub methods"], openapi_extra=METHOD_DOC)
async def direct_method(request: Request) -> Response:
    """Invoke a direct method: `{status, payload}` as the device answered. 404 when the
    device is not connected (after connectTimeoutInSeconds), 504 when it does not answer
    within responseTimeoutInSeconds."""
    caller = await _caller(request)
    body = parse_body(DirectMethodRequest, await _json(request))
    device_id, need = body.to_domain()
    await _require(request, caller, need)
    device = await _device(request, caller, device_id)
    params = body.methodParams
    if params.connectTimeoutInSeconds:
        await _await_connection(request, device, params.connectTimeoutInSeconds)
    result = await services_of(request).commands.invoke(
        caller.principal,
        device,
        params.methodName,
        params.payload,
        params.responseTimeoutInSeconds,
    )
    payload = _method_payload(result.payload, settings_of(request).max_json_depth)
    return OrjsonResponse(method_response(result.status, payload))


@router.patch("/deviceTwinDesiredProperties", tags=["IoT Hub methods"], openapi_extra=PATCH_DOC)
async def patch_desired(request: Request) -> Response:
    """Patch the device's desired properties (null deletes a key); the device gets the patch
    over MQTT when it is connected, or when it next connects. `{status: 200, payload: twin}`."""
    caller = await _caller(request)
    device_id, patch, need = parse_body(
        DesiredPropertiesPatchRequest, await _json(request)
    ).to_domain()
    await _require(request, caller, need)
    device = await _device(request, caller, device_id)
    services = services_of(request)
    # The registry's rules for an application's desired patch (size, storable; an empty
    # patch changes nothing), as for every face.
    await services.registry.edit_device(
        caller.principal, device.id, desired=patch, desired_field="desiredPropertyPatch"
    )
    twin = await services.twins.get(device)
    document = twin_document(twin.version, twin.reported.document(), twin.desired.document())
    return OrjsonResponse(method_response(200, document))


def create_app(context: FaceContext, runtime: Ux4iotRuntime) -> FastAPI:
    app = face_app(context, title="thinghub ux4iot API", version=API_VERSION)
    app.state.ux4iot = runtime
    app.state.openapi_patches.append(_add_components)
    # `/sessions/` (an empty id) is no route, not a redirect built from the Host header.
    app.router.redirect_slashes = False
    # Browser apps on other origins call these routes with the sessionId / Shared-Access-Key
    # headers and JSON bodies (a CORS preflight). No cookies are used: any origin may.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["*"],
        max_age=600,
    )
    app.include_router(router)
    app.add_api_route(REFERENCE_PATH, socketio_reference, methods=["GET"], include_in_schema=False)
    return app
