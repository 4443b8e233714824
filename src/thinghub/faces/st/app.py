"""Routes of the /v1 face: devices, gateways and modules, telemetries, events, methods, auth.

Field names, shapes and status codes follow the ST AIoT Craft IoT API document (see
docs/faces/st.md). The routes translate wire shapes and errors only: who may do what and every
rule of a use case are the services' (services/authz.py, services/*).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Scope

from thinghub.config import Settings
from thinghub.domain.clock import format_ts, parse_ts
from thinghub.domain.errors import Invalid, Unauthorized
from thinghub.domain.events import EventType
from thinghub.domain.json_depth import exceeds_depth
from thinghub.domain.model import ApiToken, Device, DeviceKind, Principal, Retention, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.faces._http import (
    REQUEST_NOTE_KEY,
    OrjsonResponse,
    addresses_of,
    api_base_url,
    authenticate_before_body,
    document_bearer,
    document_page_size,
    face_app,
    principal_of,
    services_of,
    settings_of,
)
from thinghub.faces.face import FaceContext
from thinghub.faces.st import stream
from thinghub.faces.st.ioto import router as ioto_router
from thinghub.faces.st.request_forms import RequestForms
from thinghub.faces.st.schemas import (
    C2DSend,
    DeviceCreate,
    DeviceTags,
    DeviceUpdate,
    EnrollmentGroupCreate,
    MethodRequest,
    ModuleCreate,
    ModuleUpdate,
    PageSize,
    RetentionUpdate,
    TokenCreate,
    UserCreate,
    Ux4iotKeyCreate,
)
from thinghub.fast_path import FastRoute, header
from thinghub.ports import EventQuery, MethodResult, TelemetryQuery
from thinghub.services.core import Services
from thinghub.services.registry import KEEP
from thinghub.services.retention import RetentionView

__all__ = ["create_app", "fast_routes"]

Caller = Annotated[Principal, Depends(principal_of())]
# The ST API's documentation prints its method call as `/v1/devices/  c8dc6706-.../method`;
# ids never hold spaces, so a path id copied with them still names the device.
DeviceId = Annotated[str, Path(), AfterValidator(str.strip)]
# A filter sent empty (`?deploymentID=`) is a filter not given, as an empty `from` already is.
Filter = Annotated[str | None, Query(), AfterValidator(lambda value: value or None)]
_TIME_DOC: dict[str, Any] = {
    "description": "ISO-8601 time (or epoch seconds)",
    "json_schema_extra": {"format": "date-time"},
}
FromTime = Annotated[str | None, Query(alias="from", **_TIME_DOC)]
ToTime = Annotated[str | None, Query(**_TIME_DOC)]
EventTypeFilter = Annotated[
    str | None,
    Query(json_schema_extra={"enum": [t.value for t in EventType]}),
    AfterValidator(lambda value: value or None),
]

# The ST API's events are property changes: connection state and twin changes. thinghub's own
# kinds (device lifecycle, rejected telemetry) are listed when `eventType` names them.
SEED_EVENT_TYPES = frozenset({EventType.CONNECTION_STATE, EventType.CHANGE})


def _ts(value: float | None) -> str | None:
    return None if value is None else format_ts(value)


def _connection_state(is_connected: bool) -> str:
    return "Connected" if is_connected else "Disconnected"


async def _device_json(services: Services, principal: Principal, device: Device) -> dict[str, Any]:
    account = await services.auth.account(device.account_id)
    twin = await services.twins.get(device)
    modules: list[dict[str, Any]] | None = None
    if device.is_gateway:
        modules = [
            await _module_json(services, principal, m)
            for m in await services.registry.list_modules(principal, device.id)
        ]
    return {
        "id": device.id,
        "idScope": account.id_scope,
        "provisioningStatus": "enabled" if device.enabled else "disabled",
        "tags": {
            "name": device.name,
            "project": device.project,
            "deployment": device.deployment,
            "user": device.created_by,
        },
        "isIoTEdgeCapable": device.is_gateway,
        "connectionState": _connection_state(await services.registry.is_connected(device.id)),
        "credentials": _credentials(services, principal, device),
        "properties": {"desired": twin.desired.properties},
        "lastActivityTime": _ts(device.last_activity_at),
        "modelId": device.model_id,
        "modules": modules,
    }


def _credentials(services: Services, principal: Principal, device: Device) -> dict[str, Any]:
    # Viewers see that a device has keys, not the keys (the registry decides).
    keys = services.registry.keys_shown(principal, device)
    shown = (
        None
        if keys is None
        else {"primaryKey": keys.primary_key, "secondaryKey": keys.secondary_key}
    )
    return {"type": "symmetricKey", "symmetricKey": shown}


async def _module_json(services: Services, principal: Principal, module: Device) -> dict[str, Any]:
    twin = await services.twins.get(module)
    return {
        "moduleId": module.module_id,
        "deviceId": module.parent_id,
        "connectionState": _connection_state(await services.registry.is_connected(module.id)),
        "credentials": _credentials(services, principal, module),
        "properties": {"desired": twin.desired.properties},
        "lastActivityTime": _ts(module.last_activity_at),
        "modelId": module.model_id,
    }


def _twin_json(services: Services, twin: Any, device: Device) -> dict[str, Any]:
    return {
        "deviceId": device.parent_id or device.id,
        "moduleId": device.module_id,
        "version": twin.version,
        "properties": {"desired": twin.desired.document(), "reported": twin.reported.document()},
    }


# In a query a `+` is a space (form encoding), so `?from=2025-08-13T13:00:00+02:00` sent
# unencoded, as a time printed into a URL is, arrives as "2025-08-13T13:00:00 02:00". A space
# before a time's last hh:mm can be nothing but that offset's sign.
_SPACED_OFFSET = re.compile(r"(T[0-9:.,]+) ([0-9]{2}(?::?[0-9]{2})?)$")


def _query_time(value: str, field: str) -> float:
    return parse_ts(_SPACED_OFFSET.sub(r"\1+\2", value.strip()), field)


def _range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    start = _query_time(since, "from") if since else None
    end = _query_time(until, "to") if until else None
    if start is not None and end is not None and start > end:
        raise Invalid("from must not be after to", field="from")
    return start, end


def _page_response(items: list[Any], cursor: str | None) -> Response:
    headers = {"x-continuation-token": cursor} if cursor else None
    return OrjsonResponse(items, headers=headers)


def _limit(settings: Settings, limit: int | None) -> int:
    if limit is None:
        return min(100, settings.page_max)
    if not 1 <= limit <= settings.page_max:
        raise Invalid(f"limit must be 1 to {settings.page_max}", field="limit")
    return limit


router = APIRouter()
public = APIRouter()


# The token endpoint reads its body itself (form or JSON), so its document is written here.
_OAUTH_ERROR = {
    "description": "OAuth2 error (RFC 6749 §5.2)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "error_description"],
                "properties": {
                    "error": {"type": "string"},
                    "error_description": {"type": "string"},
                },
            }
        }
    },
}
_NON_EMPTY = {"type": "string", "minLength": 1}
_TOKEN_FORM = {
    "oneOf": [
        {
            "type": "object",
            "required": ["grant_type", "username", "password"],
            "properties": {
                "grant_type": {"const": "password"},
                "username": _NON_EMPTY,
                "password": _NON_EMPTY,
            },
        },
        {
            "type": "object",
            "required": ["grant_type", "client_id", "client_secret"],
            "properties": {
                "grant_type": {"const": "client_credentials"},
                "client_id": _NON_EMPTY,
                "client_secret": _NON_EMPTY,
            },
            "description": "or client_id and client_secret in an Authorization: Basic header",
        },
    ]
}
_TOKEN_DOC: dict[str, Any] = {
    "security": [],
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _TOKEN_FORM},
            "application/json": {"schema": _TOKEN_FORM},
        },
    },
    "responses": {
        "200": {
            "description": "An access token",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                        },
                    }
                }
            },
        },
        "400": _OAUTH_ERROR,
        "401": _OAUTH_ERROR,
        "413": _OAUTH_ERROR,
    },
}


@public.post(
    "/auth/token",
    tags=["auth"],
    summary="OAuth2 token endpoint (RFC 6749)",
    openapi_extra=_TOKEN_DOC,
)
async def issue_token(request: Request) -> Response:
    """password and client_credentials grants; form-encoded (or JSON) as OAuth2 clients send.

    Errors use the OAuth2 shape {"error", "error_description"} (RFC 6749 §5.2).
    """
    services = services_of(request)
    try:
        raw = await request.body()
    except StarletteHTTPException as exc:  # over max_request_bytes (faces._http.BodyLimit)
        return _oauth_error("invalid_request", str(exc.detail), exc.status_code)
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            form = orjson.loads(raw)
            if not isinstance(form, dict):
                raise ValueError
        else:
            form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        return _oauth_error("invalid_request", "the body is not a valid form or JSON object")
    form = {k: v for k, v in form.items() if isinstance(v, str)}
    grant = form.get("grant_type")
    try:
        if grant == "password":
            if not form.get("username") or not form.get("password"):
                return _oauth_error("invalid_request", "username and password are required")
            token, ttl = await services.auth.password_grant(form["username"], form["password"])
        elif grant == "client_credentials":
            client_id, secret = _client_credentials(request, form)
            token, ttl = await services.auth.client_credentials_grant(client_id, secret)
        elif not grant:
            return _oauth_error("invalid_request", "grant_type is required")
        else:
            return _oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")
    except Unauthorized as exc:
        code = "invalid_client" if grant == "client_credentials" else "invalid_grant"
        if code == "invalid_client":  # RFC 6749 §5.2: 401 with the scheme the client tried
            scheme = (
                "Basic"
                if request.headers.get("authorization", "").lower().startswith("basic")
                else "Bearer"
            )
            response = _oauth_error(code, exc.message, 401)
            response.headers["WWW-Authenticate"] = f'{scheme} realm="thinghub"'
            return response
        return _oauth_error(code, exc.message, 400)
    return OrjsonResponse(
        {"access_token": token, "token_type": "Bearer", "expires_in": ttl},
        headers={"Cache-Control": "no-store"},
    )


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials", field="Authorization") from exc
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    if not form.get("client_id") or not form.get("client_secret"):
        raise Unauthorized("client_id and client_secret are required", field="client_id")
    return form["client_id"], form["client_secret"]


def _oauth_error(code: str, description: str, status: int = 400) -> Response:
    return OrjsonResponse(
        {"error": code, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


# -- tokens and users -------------------------------------------------------------------------


@router.post("/tokens", status_code=201, tags=["auth"])
async def create_token(body: TokenCreate, request: Request, caller: Caller) -> Response:
    """Create an API token in the caller's account (admin). The token is shown only here.

    `project` limits the token to one project; a project-limited caller can only create
    tokens for its own project.
    """
    services = services_of(request)
    issued = await services.auth.issue_token(
        caller, Role(body.role), label=body.label, project=body.project
    )
    return OrjsonResponse(
        {
            "id": issued.token.id,
            "role": issued.token.role.value,
            "label": issued.token.label,
            "project": issued.token.project,
            "token": issued.secret,
            "createdAt": format_ts(issued.token.created_at),
        },
        status_code=201,
    )


@router.get("/tokens", tags=["auth"])
async def list_tokens(request: Request, caller: Caller) -> Response:
    services = services_of(request)
    tokens = await services.auth.list_tokens(caller)
    return OrjsonResponse(
        [
            {
                "id": t.id,
                "role": t.role.value,
                "label": t.label,
                "project": t.project,
                "createdAt": format_ts(t.created_at),
            }
            for t in tokens
        ]
    )


@router.delete("/tokens/{token_id}", status_code=204, tags=["auth"])
async def delete_token(token_id: str, request: Request, caller: Caller) -> Response:
    """404 for a token outside the caller's account (or project)."""
    await services_of(request).auth.revoke(caller, token_id)
    return Response(status_code=204)


# -- ux4iot Shared-Access-Keys (docs/faces/ux4iot.md) ----------------------------------------

UX4IOT_FACE = "ux4iot"
UX4IOT_PREFIX = "/ux4iot"  # where the ux4iot face is mounted on this port


def _ux4iot_endpoint(request: Request) -> str:
    """The ux4iot Endpoint of this server (faces._http.api_base_url): under `public_url`
    when set, else on the shared HTTP port, which serves /ux4iot (this face may be on a port
    of its own), at the address the request reached (never the Host header the client
    sent)."""
    return api_base_url(request, settings_of(request), addresses_of(request)) + UX4IOT_PREFIX


def _ux4iot_key_json(token: ApiToken, endpoint: str, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": token.id,
        "label": token.label,
        "createdAt": format_ts(token.created_at),
        "endpoint": endpoint,
    }
    if secret is not None:  # shown once: when created or rotated
        out["key"] = secret
        # The format ux4iot clients parse (docs/faces/ux4iot.md, "Connection string").
        out["connectionString"] = f"Endpoint={endpoint};SharedAccessKey={secret}"
    return out


@router.post("/ux4iot/keys", status_code=201, tags=["ux4iot"])
async def create_ux4iot_key(
    request: Request, caller: Caller, body: Ux4iotKeyCreate | None = None
) -> Response:
    """Create a ux4iot Shared-Access-Key for the caller's account (admin). The key and its
    connection string are shown only here."""
    issued = await services_of(request).auth.create_face_key(
        caller, UX4IOT_FACE, label=body.label if body else ""
    )
    endpoint = _ux4iot_endpoint(request)
    return OrjsonResponse(_ux4iot_key_json(issued.token, endpoint, issued.secret), status_code=201)


@router.get("/ux4iot/keys", tags=["ux4iot"])
async def list_ux4iot_keys(request: Request, caller: Caller) -> Response:
    """The account's ux4iot keys, without their secrets (admin)."""
    keys = await services_of(request).auth.list_face_keys(caller, UX4IOT_FACE)
    endpoint = _ux4iot_endpoint(request)
    return OrjsonResponse([_ux4iot_key_json(key, endpoint) for key in keys])


@router.post("/ux4iot/keys/{key_id}/rotate", tags=["ux4iot"])
async def rotate_ux4iot_key(key_id: str, request: Request, caller: Caller) -> Response:
    """A new secret for the key (admin); the old one stops working at once."""
    issued = await services_of(request).auth.rotate_face_key(caller, UX4IOT_FACE, key_id)
    endpoint = _ux4iot_endpoint(request)
    return OrjsonResponse(_ux4iot_key_json(issued.token, endpoint, issued.secret))


@router.delete("/ux4iot/keys/{key_id}", status_code=204, tags=["ux4iot"])
async def revoke_ux4iot_key(key_id: str, request: Request, caller: Caller) -> Response:
    """Revoke the key (admin): ux4iot calls with it get 401 from now on."""
    await services_of(request).auth.revoke_face_key(caller, UX4IOT_FACE, key_id)
    return Response(status_code=204)


@router.post("/users", status_code=201, tags=["auth"])
async def create_user(body: UserCreate, request: Request, caller: Caller) -> Response:
    user = await services_of(request).auth.add_user(
        caller, body.username, body.password, Role(body.role)
    )
    return OrjsonResponse(
        {"id": user.id, "username": user.username, "role": user.role.value}, status_code=201
    )


# -- projects -----------------------------------------------------------------------------


@router.get("/projects", tags=["projects"])
async def list_projects(request: Request, caller: Caller) -> Response:
    services = services_of(request)
    projects = await services.registry.list_projects(caller)
    out = []
    for project in projects:
        deployments = await services.registry.list_deployments(caller, project.name)
        out.append(
            {
                "name": project.name,
                "createdTime": format_ts(project.created_at),
                "deployments": [d.name for d in deployments],
            }
        )
    return OrjsonResponse(out)


@router.get("/projects/{project}/deployments", tags=["projects"])
async def list_deployments(project: str, request: Request, caller: Caller) -> Response:
    deployments = await services_of(request).registry.list_deployments(caller, project)
    return OrjsonResponse(
        [
            {"name": d.name, "project": d.project, "createdTime": format_ts(d.created_at)}
            for d in deployments
        ]
    )


# -- devices ------------------------------------------------------------------------------


@router.post("/devices", tags=["devices"])
async def create_device(body: DeviceCreate, request: Request, caller: Caller) -> Response:
    """Register a device (or, with isIoTEdgeCapable, a gateway) in a project and deployment."""
    services = services_of(request)
    device = await services.registry.create_device(
        caller,
        name=body.name,
        project=body.project,
        deployment=body.deployment,
        kind=DeviceKind.GATEWAY if body.isIoTEdgeCapable else DeviceKind.DEVICE,
    )
    return OrjsonResponse(await _device_json(services, caller, device))


@router.get("/devices", tags=["devices"])
async def list_devices(
    request: Request,
    caller: Caller,
    projectID: Filter = None,
    deploymentID: Filter = None,
) -> Response:
    services = services_of(request)
    devices = await services.registry.list_devices(
        caller, project=projectID, deployment=deploymentID
    )
    return OrjsonResponse([await _device_json(services, caller, d) for d in devices])


@router.get("/devices/{device_id}", tags=["devices"])
async def get_device(device_id: DeviceId, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    return OrjsonResponse(await _device_json(services, caller, device))


def fast_routes(context: FaceContext) -> tuple[FastRoute, ...]:
    """`GET /v1/devices/{id}` (get_device above) without FastAPI when all goes well
    (thinghub.fast_path): the same authentication, the same lookup, the same body; any
    error, and a browser's call, is left to get_device."""
    services = context.services

    async def device(scope: Scope, device_id: str) -> bytes | None:
        if header(scope, b"origin") is not None:
            return None  # a browser's call: the full stack adds the CORS headers (create_app)
        caller = await services.auth.authenticate_header(header(scope, b"authorization"))
        note = scope.get(REQUEST_NOTE_KEY)
        if isinstance(note, dict):  # as principal_of does
            note["principal"] = caller.subject
        found = await services.registry.get_device(caller, device_id.strip())
        return orjson.dumps(await _device_json(services, caller, found))

    return (FastRoute("GET", "/devices/", device),)


def _desired(properties: dict[str, Any] | None) -> dict[str, Any] | None:
    """The desired patch of a PUT: `properties` itself (the ST API's form), or, when it holds
    only a `desired` object (the shape GET shows), that object."""
    if properties is not None and set(properties) == {"desired"}:
        desired = properties["desired"]
        if isinstance(desired, dict):
            return desired
    return properties


# Read-only fields of the GET shape that describe a moment (any value is taken).
_MOMENTARY = frozenset({"connectionState", "lastActivityTime"})


def _check_read_only(body: BaseModel, shown: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Fields GET shows that a PUT cannot change must hold what the device has."""
    for name in fields:
        if name not in body.model_fields_set or name in _MOMENTARY:
            continue
        given = getattr(body, name)
        current = shown.get(name)
        if name == "modules":
            given = sorted(m.get("moduleId") for m in given or [])
            current = sorted(m["moduleId"] for m in current or [])
        if given != current:
            raise Invalid(
                f"{name} is read-only here (it is {current!r}); it cannot be set to {given!r}",
                field=name,
            )


_DEVICE_READ_ONLY = ("id", "idScope", "isIoTEdgeCapable", "credentials", "modelId", "modules")
_MODULE_READ_ONLY = ("moduleId", "deviceId", "credentials", "modelId")


@router.put("/devices/{device_id}", tags=["devices"])
async def update_device(
    device_id: DeviceId, body: DeviceUpdate, request: Request, caller: Caller
) -> Response:
    """Patch desired properties (`properties`, or `properties.desired` as GET shows them),
    rename (`name` or `tags.name`), move (`tags.project`, `tags.deployment`), or
    enable/disable the device (a disabled device is disconnected). A GET answer sent back
    is taken; a field that cannot be applied is a 400 naming it."""
    services = services_of(request)
    tags = body.tags or DeviceTags()
    if body.model_fields_set - {"properties", "name", "tags", "provisioningStatus"} or (
        "user" in tags.model_fields_set
    ):
        current = await _device_json(
            services, caller, await services.registry.get_device(caller, device_id)
        )
        _check_read_only(body, current, _DEVICE_READ_ONLY)
        if "user" in tags.model_fields_set and tags.user != current["tags"]["user"]:
            raise Invalid(
                f"tags.user is read-only (it is {current['tags']['user']!r})", field="tags.user"
            )
    enabled = None if body.provisioningStatus is None else body.provisioningStatus == "enabled"
    device = await services.registry.edit_device(
        caller,
        device_id,
        desired=_desired(body.properties),
        name=body.name or tags.name,
        enabled=enabled,
        project=tags.project if tags.project is not None else KEEP,
        deployment=tags.deployment if tags.deployment is not None else KEEP,
    )
    return OrjsonResponse(await _device_json(services, caller, device))


@router.delete("/devices/{device_id}", status_code=204, tags=["devices"])
async def delete_device(device_id: DeviceId, request: Request, caller: Caller) -> Response:
    """Deletes the device (a gateway with its modules) and closes its connections."""
    await services_of(request).registry.delete_device(caller, device_id)
    return Response(status_code=204)


@router.get("/devices/{device_id}/twin", tags=["devices"])
async def get_twin(device_id: DeviceId, request: Request, caller: Caller) -> Response:
    """The whole twin: desired and reported with `$metadata` and `$version`."""
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    return OrjsonResponse(_twin_json(services, await services.twins.get(device), device))


@router.post("/devices/{device_id}/method", tags=["devices"])
async def invoke_method(
    device_id: DeviceId, body: MethodRequest, request: Request, caller: Caller
) -> Response:
    """Call a direct method and answer with the device's response body.

    The device's status code is in the `x-method-status` header. 404 DeviceNotOnline when the
    device is not connected, 504 GatewayTimeout when it does not answer in time.
    """
    result = await services_of(request).commands.invoke(
        caller, device_id, body.name, body.payload, body.responseTimeoutInSeconds
    )
    return _method_response(settings_of(request), result)


def _method_response(settings: Settings, result: MethodResult) -> Response:
    """The device's answer as the response body.

    The Azure SDK's samples serialize their answer themselves and the SDK serializes it again,
    so the wire carries a JSON string holding JSON (docs/faces/device-mqtt.md, "Direct
    methods"); the API document shows the object, so a string that holds a JSON object or
    array is unwrapped (unless it nests deeper than max_json_depth: then it stays the string
    it is).
    """
    payload = result.payload
    if (
        isinstance(payload, str)
        and payload.lstrip()[:1] in ("{", "[")
        and not exceeds_depth(payload, settings.max_json_depth)
    ):
        with contextlib.suppress(orjson.JSONDecodeError):
            payload = orjson.loads(payload)
    return OrjsonResponse(payload, headers={"x-method-status": str(result.status)})


@router.post("/devices/{device_id}/messages", status_code=202, tags=["devices"])
async def send_c2d(
    device_id: DeviceId, body: C2DSend, request: Request, caller: Caller
) -> Response:
    """Send a cloud-to-device message; queued until the device is connected."""
    message = await services_of(request).c2d.send(
        caller, device_id, body.body, body.properties, body.ttlInSeconds
    )
    return OrjsonResponse(
        {"messageId": message.id, "expiryTime": format_ts(message.expires_at)}, status_code=202
    )


@router.post("/devices/{device_id}/certificates", status_code=201, tags=["devices"])
async def issue_certificate(device_id: DeviceId, request: Request, caller: Caller) -> Response:
    """Issue an X.509 client certificate (CN = device id) signed by the hub CA.

    The device can then connect over MQTT with the certificate instead of a SAS token.
    """
    issued = await services_of(request).certificates.issue_for(caller, device_id)
    return OrjsonResponse(
        {
            "deviceId": issued.device_id,
            "certificate": issued.certificate,
            "privateKey": issued.private_key,
            "caCertificate": issued.ca_certificate,
        },
        status_code=201,
    )


# -- enrollment groups (DPS) --------------------------------------------------------------


@router.post("/enrollmentGroups", status_code=201, tags=["provisioning"])
async def create_enrollment_group(
    body: EnrollmentGroupCreate, request: Request, caller: Caller
) -> Response:
    """A DPS group: devices signing with HMAC(group key, registration id) register into it."""
    services = services_of(request)
    group = await services.provisioning.create_group(
        caller,
        body.enrollmentGroupId,
        project=body.project,
        deployment=body.deployment,
        is_edge=body.isIoTEdgeCapable,
    )
    account = await services.auth.account(caller.account_id)
    return OrjsonResponse({**group, "idScope": account.id_scope}, status_code=201)


@router.get("/enrollmentGroups", tags=["provisioning"])
async def list_enrollment_groups(request: Request, caller: Caller) -> Response:
    services = services_of(request)
    groups = await services.provisioning.list_groups(caller)
    account = await services.auth.account(caller.account_id)
    return OrjsonResponse([{**group, "idScope": account.id_scope} for group in groups])


@router.get("/enrollmentGroups/{group_id}", tags=["provisioning"])
async def get_enrollment_group(group_id: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    group = await services.provisioning.get_group(caller, group_id)
    account = await services.auth.account(caller.account_id)
    return OrjsonResponse({**group, "idScope": account.id_scope})


@router.delete("/enrollmentGroups/{group_id}", status_code=204, tags=["provisioning"])
async def delete_enrollment_group(group_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).provisioning.delete_group(caller, group_id)
    return Response(status_code=204)


# -- modules ------------------------------------------------------------------------------


@router.get("/devices/{device_id}/modules", tags=["modules"])
async def list_modules(device_id: DeviceId, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    modules = await services.registry.list_modules(caller, device_id)
    return OrjsonResponse([await _module_json(services, caller, m) for m in modules])


@router.post("/devices/{device_id}/modules", tags=["modules"])
async def create_module(
    device_id: DeviceId, body: ModuleCreate, request: Request, caller: Caller
) -> Response:
    services = services_of(request)
    module = await services.registry.create_module(caller, device_id, body.moduleId)
    return OrjsonResponse(await _module_json(services, caller, module))


@router.get("/devices/{device_id}/modules/{module_id}", tags=["modules"])
async def get_module(
    device_id: DeviceId, module_id: str, request: Request, caller: Caller
) -> Response:
    services = services_of(request)
    module = await services.registry.get_module(caller, device_id, module_id)
    return OrjsonResponse(await _module_json(services, caller, module))


@router.put("/devices/{device_id}/modules/{module_id}", tags=["modules"])
async def update_module(
    device_id: DeviceId, module_id: str, body: ModuleUpdate, request: Request, caller: Caller
) -> Response:
    """Patch the module's desired properties (as for a device)."""
    services = services_of(request)
    if body.model_fields_set - {"properties"}:
        current = await _module_json(
            services, caller, await services.registry.get_module(caller, device_id, module_id)
        )
        _check_read_only(body, current, _MODULE_READ_ONLY)
    module = await services.registry.edit_module(
        caller, device_id, module_id, desired=_desired(body.properties)
    )
    return OrjsonResponse(await _module_json(services, caller, module))


@router.delete("/devices/{device_id}/modules/{module_id}", status_code=204, tags=["modules"])
async def delete_module(
    device_id: DeviceId, module_id: str, request: Request, caller: Caller
) -> Response:
    """Deletes the module and closes its connection."""
    await services_of(request).registry.delete_module(caller, device_id, module_id)
    return Response(status_code=204)


@router.get("/devices/{device_id}/modules/{module_id}/twin", tags=["modules"])
async def get_module_twin(
    device_id: DeviceId, module_id: str, request: Request, caller: Caller
) -> Response:
    services = services_of(request)
    module = await services.registry.get_module(caller, device_id, module_id)
    return OrjsonResponse(_twin_json(services, await services.twins.get(module), module))


@router.post("/devices/{device_id}/modules/{module_id}/method", tags=["modules"])
async def invoke_module_method(
    device_id: DeviceId, module_id: str, body: MethodRequest, request: Request, caller: Caller
) -> Response:
    services = services_of(request)
    module = await services.registry.get_module(caller, device_id, module_id)
    result = await services.commands.invoke(
        caller, module, body.name, body.payload, body.responseTimeoutInSeconds
    )
    return _method_response(settings_of(request), result)


# -- telemetries and events ---------------------------------------------------------------


def _entity(device_id: str | None, module_id: str | None) -> str | None:
    """The entity key a deviceID/moduleID filter names (a module needs its device)."""
    if module_id is None:
        return device_id
    if device_id is None:
        raise Invalid("moduleID needs deviceID", field="moduleID")
    return f"{device_id}/{module_id}"


def _device_ref(device_id: str) -> dict[str, Any]:
    device, _, module = device_id.partition("/")
    return {"deviceID": device, "moduleID": module} if module else {"deviceID": device}


def _telemetry_body(message: TelemetryMessage) -> Any:
    """A message's body as listed: its JSON value or text, and a payload that is not UTF-8
    (binary) as its base64 text, as IoT Hub's routing stores a body it cannot read as JSON.
    Without this a binary message would list as `null`, which a JSON `null` body also is."""
    if message.body is None and message.raw:
        try:
            message.raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(message.raw).decode("ascii")
    return message.body


@router.get("/telemetries", tags=["telemetries"])
async def list_telemetries(
    request: Request,
    caller: Caller,
    projectID: Filter = None,
    deploymentID: Filter = None,
    deviceID: Filter = None,
    moduleID: Filter = None,
    from_: FromTime = None,
    to: ToTime = None,
    limit: Annotated[PageSize, Query()] = None,
    continuationToken: Filter = None,
) -> Response:
    """Telemetry of the account, newest first; filter by project, deployment, device, time.

    Pages hold `limit` items (default 100); `x-continuation-token` names the next page.
    """
    services = services_of(request)
    since, until = _range(from_, to)
    page = await services.queries.telemetry(
        caller,
        TelemetryQuery(
            caller.account_id,
            projectID,
            deploymentID,
            _entity(deviceID, moduleID),
            since,
            until,
            _limit(settings_of(request), limit),
            continuationToken,
        ),
    )
    items = [
        {
            **_device_ref(m.device_id),
            "timestamp": format_ts(m.enqueued_at),
            "body": _telemetry_body(m),
        }
        for m in page.items
    ]
    return _page_response(items, page.next_cursor)


@router.get("/events", tags=["events"])
async def list_events(
    request: Request,
    caller: Caller,
    projectID: Filter = None,
    deploymentID: Filter = None,
    deviceID: Filter = None,
    moduleID: Filter = None,
    eventType: EventTypeFilter = None,
    from_: FromTime = None,
    to: ToTime = None,
    limit: Annotated[PageSize, Query()] = None,
    continuationToken: Filter = None,
) -> Response:
    """Events, newest first, paged like telemetry.

    connection_state_event and change_event, as in the ST API; `eventType` picks one type,
    thinghub's device_lifecycle_event and telemetry_rejected_event included.
    """
    services = services_of(request)
    kinds = SEED_EVENT_TYPES
    if eventType is not None:
        try:
            kinds = frozenset({EventType(eventType)})
        except ValueError:
            raise Invalid(
                f"eventType must be one of {', '.join(t.value for t in EventType)}",
                field="eventType",
            ) from None
    since, until = _range(from_, to)
    page = await services.queries.events(
        caller,
        EventQuery(
            caller.account_id,
            projectID,
            deploymentID,
            _entity(deviceID, moduleID),
            kinds,
            since,
            until,
            _limit(settings_of(request), limit),
            continuationToken,
        ),
    )
    items = [
        {
            "eventType": e.type.value,
            **_device_ref(e.device_id),
            "timestamp": format_ts(e.ts),
            "body": e.body,
        }
        for e in page.items
    ]
    return _page_response(items, page.next_cursor)


# -- retention and deleting a device's data -----------------------------------------------


def _days(retention: Retention) -> dict[str, float | None]:
    return {
        "telemetryDays": retention.telemetry_days,
        "eventsDays": retention.events_days,
        "filesDays": retention.files_days,
    }


def _retention_json(view: RetentionView) -> dict[str, Any]:
    return {**_days(view.effective), "account": _days(view.account), "server": _days(view.server)}


@router.get("/account/retention", tags=["retention"])
async def get_retention(request: Request, caller: Caller) -> Response:
    """How many days the account keeps telemetry, events and device files (0 = forever): the
    days that apply, the account's own setting (`null` = the server's default) and the
    server's."""
    return OrjsonResponse(_retention_json(await services_of(request).retention.get(caller)))


@router.put("/account/retention", tags=["retention"])
async def put_retention(body: RetentionUpdate, request: Request, caller: Caller) -> Response:
    """Set the account's retention (admin, not limited to a project). A field left out stays
    as it is; `null` returns to the server's default; `0` keeps that data forever."""
    given = body.model_fields_set
    changes: dict[str, float | None] = {}
    if "telemetryDays" in given:
        changes["telemetry_days"] = body.telemetryDays
    if "eventsDays" in given:
        changes["events_days"] = body.eventsDays
    if "filesDays" in given:
        changes["files_days"] = body.filesDays
    view = await services_of(request).retention.set(caller, **changes)
    return OrjsonResponse(_retention_json(view))


@router.delete("/devices/{device_id}/telemetries", tags=["telemetries"])
async def delete_device_telemetries(
    device_id: DeviceId,
    request: Request,
    caller: Caller,
    moduleID: Filter = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
) -> Response:
    """Delete a device's telemetry (its modules' too, or only `moduleID`'s), with its
    observations, optionally only `from`..`to`; answers how many messages went."""
    since, until = _range(from_, to)
    count = await services_of(request).retention.delete_device_data(
        caller, "telemetry", device_id, moduleID, since, until
    )
    return OrjsonResponse({"deleted": count})


@router.delete("/devices/{device_id}/events", tags=["events"])
async def delete_device_events(
    device_id: DeviceId,
    request: Request,
    caller: Caller,
    moduleID: Filter = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
) -> Response:
    """Delete a device's events of every type (its modules' too, or only `moduleID`'s),
    optionally only `from`..`to`; answers how many events went."""
    since, until = _range(from_, to)
    count = await services_of(request).retention.delete_device_data(
        caller, "events", device_id, moduleID, since, until
    )
    return OrjsonResponse({"deleted": count})


def create_app(context: FaceContext) -> FastAPI:
    app = face_app(
        context, title="thinghub /v1 (ST AIoT Craft IoT API)", version="1",
        form_paths=("/auth/token",),
    )  # fmt: skip
    authenticate_before_body(app)
    document_bearer(app, "An API token, or an access token from POST /v1/auth/token")
    app.state.openapi_patches.append(document_page_size("limit", context.settings.page_max))
    app.include_router(public)
    app.include_router(router)
    app.include_router(stream.router)
    app.include_router(ioto_router)
    # A trailing slash names the same route (RequestForms), never a redirect to the Host.
    app.router.redirect_slashes = False
    app.add_middleware(RequestForms, query_names=_query_names(app))
    # The ST API serves a browser portal on another origin: any origin may call it with a
    # bearer token (no cookies are used), and read the headers the answers carry.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["*"],
        expose_headers=["x-continuation-token", "x-method-status"],
        max_age=600,
    )
    return app


def _query_names(app: FastAPI) -> list[str]:
    """The query parameter names the routes declare (each name in one case only)."""
    names: dict[str, str] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            for param in route.dependant.query_params:
                other = names.setdefault(param.alias.lower(), param.alias)
                if other != param.alias:
                    raise ValueError(f"query names {other!r} and {param.alias!r} differ in case")
    return list(names.values())
