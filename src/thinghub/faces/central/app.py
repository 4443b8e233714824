"""Routes of the IoT Central face at /central/api: app, API tokens, devices, device templates,
telemetry, commands and properties.

Field names, paths and status codes follow the Azure IoT Central REST API document (see
docs/faces/central.md); where it is silent, the real IoT Central API. Decisions are written down
in docs/faces/central.md. The routes translate wire shapes and errors only: who may do what
and every rule of a use case are the services' (services/authz.py, services/*).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.security import HTTPBearer
from pydantic import AfterValidator, BaseModel

from thinghub.domain.clock import format_ts_short
from thinghub.domain.commands import METHOD_NAME_PATTERN
from thinghub.domain.dtdl import DeviceTemplate
from thinghub.domain.errors import Conflict, Invalid, NotFound, PreconditionFailed
from thinghub.domain.ids import ID_PATTERN, parse_id
from thinghub.domain.model import Device, Principal
from thinghub.faces._http import (
    OrjsonResponse,
    authenticate_before_body,
    document_page_size,
    face_app,
    services_of,
    settings_of,
)
from thinghub.faces.central._wire import (
    ERROR_SCHEMA,
    FILTER_FIELDS,
    api_version,
    authenticate,
    caller_dependency,
    command_json,
    device_json,
    device_record,
    executed_json,
    page_link,
    parse_time,
    render_error,
    token_json,
)
from thinghub.faces.central.cloud import check_cloud_value, cloud_names
from thinghub.faces.central.components import router as components
from thinghub.faces.central.jobs import router as groups_and_jobs
from thinghub.faces.central.odata import FieldType, parse_filter, parse_orderby
from thinghub.faces.central.query_options import PlainQueryOptions
from thinghub.faces.central.roles import parse_role
from thinghub.faces.central.scheduled import router as scheduled_jobs
from thinghub.faces.central.schemas import (
    READ_ONLY_DEVICE_FIELDS,
    TEMPLATE_ID_SCHEMA,
    ApiTokenCreate,
    DeviceCreate,
    DevicePatch,
    PropertyPatch,
)
from thinghub.faces.central.users import router as roles_and_users
from thinghub.faces.face import FaceContext
from thinghub.services.commands import MAX_HISTORY, CommandFields
from thinghub.services.registry import CLOUD_PROPERTIES, KEEP

__all__ = ["create_app"]

_caller = caller_dependency
_T = TypeVar("_T")
Caller = Annotated[Principal, Depends(_caller)]


def _json_body(value: Any) -> Any:
    # FastAPI parses a body as JSON only when its Content-Type says JSON (or is missing), and
    # hands the raw bytes on otherwise: never a value to store or send (a 500 once the
    # storable check met one; found by tests/e2e/test_abuse_fuzz.py).
    if isinstance(value, bytes | bytearray):
        raise ValueError("the body is not JSON: send it as Content-Type: application/json")
    return value


# Any JSON value (routes that take objects only say so themselves).
AnyBody = Annotated[Any, Body(), AfterValidator(_json_body)]
# Ids a PUT creates: the services check them (naming the rule); the document states it.
NewId = Annotated[str, Path(json_schema_extra={"pattern": "^" + ID_PATTERN.pattern + "$"})]
# A template is IoT Central's document (with a capabilityModel), a DTDL Interface, or an array
# of Interfaces, root first; domain.dtdl.parse_template checks the rest.
TEMPLATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["capabilityModel"],
                            "properties": {"capabilityModel": {"type": "object"}},
                        },
                        {
                            "type": "object",
                            "required": ["@type"],
                            "properties": {"@type": {"const": "Interface"}},
                        },
                        {"type": "array", "minItems": 1, "items": {"type": "object"}},
                    ]
                }
            }
        },
    }
}
NewTemplateId = Annotated[str, Path(json_schema_extra=TEMPLATE_ID_SCHEMA)]
CommandName = Annotated[str, Path(json_schema_extra={"pattern": METHOD_NAME_PATTERN})]
OBJECT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
# Only for the OpenAPI document: the docs page sends `Bearer <token>`, which is accepted too.
_bearer = HTTPBearer(auto_error=False, description="An IoT Central API token")

TOKEN_TTL_S = 365 * 86_400.0  # IoT Central's default API token lifetime: one year
# Routes that honour If-Match answer 412 when it names another state.
IF_MATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: {"description": "If-Match names another state than the current one; nothing changed"}
}
# The real API's form of a command is answered 201 (the specification's form 200).
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "Sent and waited for: the outcome (the real API's form)"}
}
# A command history's paging (read from the query by _history; documented here).
HISTORY_PAGE_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "$maxpagesize",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY},
            "description": "Commands per page (default and most: 100)",
        },
        {
            "name": "$skiptoken",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "From a nextLink",
        },
    ]
}
# A `$skiptoken` that is an offset (in an `$orderby` order) starts with this.
OFFSET_TOKEN = "~"
# A command body holding only these keys is IoT Central's envelope, not the arguments.
COMMAND_ENVELOPE = frozenset({"request", "connectionTimeout", "responseTimeout"})
# What a command's inputs are called here (errors name them).
COMMAND_FIELDS = CommandFields(
    name="commandName", payload="request", timeout="responseTimeout", ttl="connectionTimeout"
)

# Credentials first (401), then api-version (400): a caller without credentials learns
# nothing else. FastAPI runs a route's dependencies once each, in this order.
router = APIRouter(dependencies=[Depends(_caller), Depends(api_version), Depends(_bearer)])
# Device groups and jobs (faces/central/jobs.py), behind the same dependencies.
jobs_router = APIRouter(dependencies=[Depends(_caller), Depends(api_version), Depends(_bearer)])
jobs_router.include_router(groups_and_jobs)
# Scheduled jobs (faces/central/scheduled.py), likewise.
scheduled_router = APIRouter(
    dependencies=[Depends(_caller), Depends(api_version), Depends(_bearer)]
)
scheduled_router.include_router(scheduled_jobs)
# Roles and users (faces/central/users.py), likewise.
users_router = APIRouter(dependencies=[Depends(_caller), Depends(api_version), Depends(_bearer)])
users_router.include_router(roles_and_users)
# Components of a device's or module's model (faces/central/components.py), likewise.
router.include_router(components)


# -- application --------------------------------------------------------------------------------


@router.get("/apps/app", tags=["apps"], summary="Get the application")
async def get_app(request: Request, caller: Caller) -> Response:
    account = await services_of(request).auth.account_for(caller)
    created = format_ts_short(account.created_at)
    return OrjsonResponse(
        {
            "id": account.id,
            "displayName": account.name,
            "template": "iotc-default",
            "location": "self-hosted",
            "state": "Running",
            "createdTime": created,
            "lastUpdatedTime": created,
        }
    )


# -- API tokens ---------------------------------------------------------------------------------


def _sas_token(account_id: str, token_id: str, expiry: float) -> str:
    """An opaque secret shaped like IoT Central's API tokens (only its hash is stored)."""
    sig = quote(secrets.token_urlsafe(32), safe="")
    return (
        f"SharedAccessSignature sr={account_id}&sig={sig}&skn={quote(token_id, safe='')}"
        f"&se={int(expiry * 1000)}"
    )


@router.put("/apiTokens/{token_id}", tags=["apiTokens"], summary="Create an API token")
async def create_token(
    token_id: NewId, body: ApiTokenCreate, request: Request, caller: Caller
) -> Response:
    """The response holds `token`, the secret, this once. 409 when the id is taken.

    IoT Central has no projects: its tokens belong to the whole application."""
    services = services_of(request)
    parse_id(token_id, "tokenId")
    if body.id is not None and body.id != token_id:
        raise Invalid(f"id is read-only (it is {token_id!r})", field="id")
    role = parse_role(body.roles[0].role)
    requested = None if body.expiry is None else parse_time(body.expiry, "expiry")
    expiry = services.auth.token_expiry(requested, default_ttl_s=TOKEN_TTL_S)
    issued = await services.auth.issue_token(
        caller,
        role.core,
        whole_account=True,
        label=f"central:{token_id}",
        secret=_sas_token(caller.account_id, token_id, expiry),
        token_id=token_id,
        face="central",
        face_role=role.id,
        expires_at=expiry,
    )
    return OrjsonResponse(token_json(issued.token, issued.secret))


@router.get("/apiTokens", tags=["apiTokens"], summary="List API tokens (without secrets)")
async def list_tokens(request: Request, caller: Caller) -> Response:
    tokens = await services_of(request).auth.list_tokens(caller, face="central", whole_account=True)
    return OrjsonResponse({"value": [token_json(t) for t in tokens]})


@router.get("/apiTokens/{token_id}", tags=["apiTokens"], summary="Get an API token")
async def get_token(token_id: str, request: Request, caller: Caller) -> Response:
    token = await services_of(request).auth.get_token(
        caller, token_id, face="central", whole_account=True
    )
    return OrjsonResponse(token_json(token))


@router.delete(
    "/apiTokens/{token_id}", status_code=204, tags=["apiTokens"], summary="Revoke an API token"
)
async def delete_token(token_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).auth.revoke(caller, token_id, face="central", whole_account=True)
    return Response(status_code=204)


# -- devices ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ListOptions:
    """A list's OData options: `$filter`, `$orderby` (over the list's records), the page size
    (`$top` or `$maxpagesize`, the smaller when both; at most page_max) and `$skiptoken`."""

    filter: str | None
    orderby: str | None
    top: int | None
    maxpagesize: int | None
    skiptoken: str | None

    def page_size(self, page_max: int) -> int:
        size = page_max
        for name, value in (("top", self.top), ("maxpagesize", self.maxpagesize)):
            if value is None:
                continue
            if not 1 <= value <= page_max:
                raise Invalid(f"${name} must be 1 to {page_max}", field=f"${name}")
            size = min(size, value)
        return size

    def select(
        self, items: list[_T], record: Callable[[_T], dict[str, Any]], fields: dict[str, FieldType]
    ) -> list[_T]:
        """`items` (in their order) that match `$filter`, in `$orderby`'s order if given."""
        if self.filter is None and self.orderby is None:
            return items
        records = [(record(item), item) for item in items]
        if self.filter is not None:
            matcher = parse_filter(self.filter, fields)
            records = [pair for pair in records if matcher.matches(pair[0])]
        if self.orderby is not None:
            order = parse_orderby(self.orderby, fields)
            by_record = {id(rec): item for rec, item in records}
            return [by_record[id(rec)] for rec in order.sort([rec for rec, _ in records])]
        return [item for _, item in records]


def _list_options(
    filter_: Annotated[
        str | None,
        Query(
            alias="$filter",
            description="OData filter, e.g. contains(tolower(displayName), 'pump')",
            json_schema_extra={"minLength": 1},
        ),
    ] = None,
    top: Annotated[int | None, Query(alias="$top", description="Page size")] = None,
    maxpagesize: Annotated[
        int | None, Query(alias="$maxpagesize", description="Page size (the real API's name)")
    ] = None,
    orderby: Annotated[
        str | None,
        Query(
            alias="$orderby",
            description="field [asc|desc], ... (default: by id)",
            json_schema_extra={"minLength": 1},
        ),
    ] = None,
    skiptoken: Annotated[
        str | None, Query(alias="$skiptoken", description="From a nextLink")
    ] = None,
) -> _ListOptions:
    return _ListOptions(filter_, orderby, top, maxpagesize, skiptoken)


ListOptions = Annotated[_ListOptions, Depends(_list_options)]


@router.get("/devices", tags=["devices"], summary="List devices")
async def list_devices(request: Request, caller: Caller, options: ListOptions) -> Response:
    """Devices by id (or `$orderby`), in `value` (the real API's name) and `devices` (the API
    document's); `nextLink` (relative, or under the public_url setting) when the page size
    (`$top` or `$maxpagesize`, the smaller when both) cut."""
    services = services_of(request)
    size = options.page_size(settings_of(request).page_max)
    devices = sorted(await services.registry.list_devices(caller), key=lambda d: d.id)
    devices = options.select(devices, device_record, FILTER_FIELDS)
    chosen, token = _page(devices, size, options.skiptoken, by_offset=options.orderby is not None)
    items = [await device_json(services, d) for d in chosen]
    out: dict[str, Any] = {"value": items, "devices": items}
    if token is not None:
        out["nextLink"] = page_link(settings_of(request), request, **{"$skiptoken": token})
    return OrjsonResponse(out)


def _page(
    devices: list[Device], size: int, token: str | None, *, by_offset: bool
) -> tuple[list[Device], str | None]:
    """A page and the token of the next one. By id, the token is the last id shown (stable
    while devices come and go); in another order, `~` and the offset (`~` is in no id)."""
    if by_offset or (token is not None and token.startswith(OFFSET_TOKEN)):
        return _offset_page(devices, size, token)
    rest = devices if token is None else [d for d in devices if d.id > token]
    chosen = rest[:size]
    return chosen, chosen[-1].id if len(rest) > size else None


def _offset_page(items: list[_T], size: int, token: str | None) -> tuple[list[_T], str | None]:
    """A page from the offset a `$skiptoken` of `~` and a number names, and the next one's."""
    start = 0
    if token is not None:
        digits = token.removeprefix(OFFSET_TOKEN)
        if not token.startswith(OFFSET_TOKEN) or not digits.isdigit() or len(digits) > 9:
            raise Invalid("$skiptoken is not one this server gave", field="$skiptoken")
        start = int(digits)
    more = len(items) > start + size
    return items[start : start + size], f"{OFFSET_TOKEN}{start + size}" if more else None


def _if_match(request: Request, body_etag: str | None = None) -> str | None:
    """The If-Match header, else the etag of a body that carries one (a GET answer sent
    back)."""
    header = request.headers.get("if-match")
    return header if header is not None else body_etag


def _check_read_only(body: BaseModel, shown: dict[str, Any]) -> None:
    """A read-only field in a body must hold what the device has (a GET answer sent back);
    else it is a 400 naming it, since it cannot be applied."""
    for name in READ_ONLY_DEVICE_FIELDS:
        if name in body.model_fields_set and getattr(body, name) != shown.get(name):
            raise Invalid(
                f"{name} is read-only (it is {shown.get(name)!r}); it cannot be set to "
                f"{getattr(body, name)!r}",
                field=name,
            )


def _device_response(shown: dict[str, Any]) -> Response:
    return OrjsonResponse(shown, headers={"ETag": f'"{shown["etag"]}"'})


@router.put(
    "/devices/{device_id}",
    tags=["devices"],
    summary="Create a device",
    responses=IF_MATCH_RESPONSES,
)
async def create_device(
    device_id: NewId, request: Request, caller: Caller, body: DeviceCreate | None = None
) -> Response:
    """200 with the device; 409 when a device with this id exists (ids are global). The
    template need not exist yet (the API document's example names one an application need not
    have): the device is checked against it once it does."""
    services = services_of(request)
    body = body or DeviceCreate()
    _check_read_only(body, {"id": device_id, "provisioned": False})
    condition = _if_match(request, body.etag)
    if condition is not None:
        # PUT only creates here (an existing id stays the specification's 409): there is no device
        # whose etag a condition could match.
        if await services.registry.find(device_id) is not None:
            raise Conflict(f"device {device_id!r} already exists", field="deviceId")
        raise PreconditionFailed(
            f"If-Match {condition!r}: PUT /devices/{{id}} only creates a device; update one "
            "with PATCH",
            field="If-Match",
        )
    device = await services.registry.create_device(
        caller,
        name=body.displayName or device_id,
        device_id=device_id,
        template=body.template,
        simulated=body.simulated,
        enabled=body.enabled,
        id_field="deviceId",
    )
    return _device_response(await device_json(services, device))


@router.get("/devices/{device_id}", tags=["devices"], summary="Get a device")
async def get_device(device_id: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    return _device_response(await device_json(services, device))


@router.patch(
    "/devices/{device_id}",
    tags=["devices"],
    summary="Update a device",
    responses=IF_MATCH_RESPONSES,
)
async def update_device(
    device_id: str, body: DevicePatch, request: Request, caller: Caller
) -> Response:
    """displayName, enabled, simulated, template (null unassigns). Disabling disconnects.
    If-Match (or the body's etag) must name the current etag: 412 otherwise."""
    services = services_of(request)
    if body.model_fields_set & set(READ_ONLY_DEVICE_FIELDS):
        current = await services.registry.get_device(caller, device_id)
        _check_read_only(body, await device_json(services, current))
    device = await services.registry.edit_device(
        caller,
        device_id,
        name=body.displayName,
        enabled=body.enabled,
        simulated=body.simulated,
        template=body.template if "template" in body.model_fields_set else KEEP,
        if_match=_if_match(request, body.etag),
    )
    return _device_response(await device_json(services, device))


@router.delete(
    "/devices/{device_id}",
    status_code=204,
    tags=["devices"],
    summary="Delete a device",
    responses=IF_MATCH_RESPONSES,
)
async def delete_device(device_id: str, request: Request, caller: Caller) -> Response:
    """Deletes the device and closes its connection (If-Match honoured)."""
    await services_of(request).registry.delete_device(
        caller, device_id, if_match=_if_match(request)
    )
    return Response(status_code=204)


@router.get(
    "/devices/{device_id}/credentials",
    tags=["devices"],
    summary="Get a device's connection credentials",
)
async def get_credentials(device_id: str, request: Request, caller: Caller) -> Response:
    """DPS id scope and symmetric keys, as IoT Central's device connect dialog shows them."""
    services = services_of(request)
    keys = await services.registry.keys(caller, device_id)
    account = await services.auth.account(caller.account_id)
    return OrjsonResponse(
        {
            "idScope": account.id_scope,
            "symmetricKey": {"primaryKey": keys.primary_key, "secondaryKey": keys.secondary_key},
        }
    )


@router.get(
    "/devices/{device_id}/attestation",
    tags=["devices"],
    summary="Get a device's attestation",
)
async def get_attestation(device_id: str, request: Request, caller: Caller) -> Response:
    """The real API's attestation of a device: thinghub's devices have keys of their own
    (an individual symmetric-key attestation), the keys `/credentials` shows."""
    keys = await services_of(request).registry.keys(caller, device_id)
    return OrjsonResponse(
        {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": keys.primary_key, "secondaryKey": keys.secondary_key},
        }
    )


# -- telemetry ----------------------------------------------------------------------------------


@router.post(
    "/devices/{device_id}/telemetry",
    status_code=204,
    tags=["telemetry"],
    summary="Send telemetry as the device",
    openapi_extra=OBJECT_BODY_DOC,
)
async def send_telemetry(
    device_id: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    """Stored like MQTT telemetry. A `timestamp` string sets the message time (unless the
    template declares a telemetry named timestamp). 400 when the template does not match."""
    await services_of(request).ingest.send(
        caller, device_id, body, source="central", time_key="timestamp"
    )
    return Response(status_code=204)


# -- commands -----------------------------------------------------------------------------------


def _envelope(body: Any) -> dict[str, Any] | None:
    """IoT Central's {"request", "connectionTimeout", "responseTimeout"} envelope, or None
    when the body is the API document's bare arguments."""
    if isinstance(body, dict) and body and set(body) <= COMMAND_ENVELOPE:
        return body
    return None


async def _submit(
    request: Request, caller: Principal, device: Device | str, name: str, body: Any
) -> Response:
    """The API document's form (the body is the arguments): queued, answered at once with
    `{commandId, status: "Pending"}`. The real API's envelope: sent and waited for, answered
    201 with the outcome."""
    commands = services_of(request).commands
    envelope = _envelope(body)
    if envelope is None:
        queued = await commands.submit(caller, device, name, body, fields=COMMAND_FIELDS)
        return OrjsonResponse({"commandId": queued.id, "status": queued.status.value})
    done = await commands.execute(
        caller,
        device,
        name,
        envelope.get("request"),
        envelope.get("responseTimeout"),
        envelope.get("connectionTimeout"),
        fields=COMMAND_FIELDS,
    )
    # The real API answers the timeouts it applied, connectionTimeout too (0 by default).
    connect = commands.connect_timeout(envelope.get("connectionTimeout"), COMMAND_FIELDS.ttl)
    shown = executed_json(done)
    shown["connectionTimeout"] = int(connect) if connect.is_integer() else connect
    return OrjsonResponse(shown, status_code=201)


@router.post(
    "/devices/{device_id}/commands/{command_name}",
    tags=["commands"],
    summary="Run a command",
    responses=COMMAND_RESPONSES,
)
async def run_command(
    device_id: str,
    command_name: CommandName,
    request: Request,
    caller: Caller,
    body: AnyBody = None,
) -> Response:
    """The body is the arguments (queued until the device connects: at once `{commandId,
    status: "Pending"}`), or IoT Central's envelope {request, responseTimeout,
    connectionTimeout}: then the device's answer is waited for (up to connectionTimeout
    seconds, default 0, for it to connect) and the answer is 201 `{id, request, response,
    responseCode, commandId, status}`. `component*command` names a component's command."""
    return await _submit(request, caller, device_id, command_name, body)


@router.post(
    "/devices/{device_id}/components/{component}/commands/{command_name}",
    tags=["commands"],
    summary="Run a component command",
    responses=COMMAND_RESPONSES,
)
async def run_component_command(
    device_id: str,
    component: CommandName,
    command_name: CommandName,
    request: Request,
    caller: Caller,
    body: AnyBody = None,
) -> Response:
    return await _submit(request, caller, device_id, f"{component}*{command_name}", body)


@router.get(
    "/devices/{device_id}/commands/{command_name}",
    tags=["commands"],
    summary="Get a command's history",
    openapi_extra=HISTORY_PAGE_DOC,
)
async def command_history(
    device_id: str, command_name: CommandName, request: Request, caller: Caller
) -> Response:
    """`{value: [...]}`: the device's runs of this command, newest first (both forms)."""
    return await _history(request, caller, device_id, command_name)


@router.get(
    "/devices/{device_id}/components/{component}/commands/{command_name}",
    tags=["commands"],
    summary="Get a component command's history",
    openapi_extra=HISTORY_PAGE_DOC,
)
async def component_command_history(
    device_id: str,
    component: CommandName,
    command_name: CommandName,
    request: Request,
    caller: Caller,
) -> Response:
    return await _history(request, caller, device_id, f"{component}*{command_name}")


def _history_token(token: str | None) -> tuple[float, str] | None:
    """A command history's `$skiptoken`: the created time and id of the last one shown."""
    if token is None:
        return None
    created, _, command_id = token.partition(",")
    try:
        value = float(created)
    except ValueError:
        value = float("nan")
    if not command_id or value != value or not 0 <= value < 1e11:
        raise Invalid("$skiptoken is not one this server gave", field="$skiptoken")
    return value, command_id


async def _history(
    request: Request, caller: Principal, device: Device | str, name: str
) -> Response:
    """A page of the history, newest first: `$maxpagesize` (at most MAX_HISTORY) and a
    `nextLink` when there are older ones."""
    params = request.query_params
    raw_size = params.get("$maxpagesize")
    size = MAX_HISTORY
    if raw_size is not None:
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_HISTORY:
            raise Invalid(f"$maxpagesize must be 1 to {MAX_HISTORY}", field="$maxpagesize")
        size = int(raw_size)
    before = _history_token(params.get("$skiptoken"))
    page, more = await services_of(request).commands.history_page(
        caller, device, name, size, before
    )
    out: dict[str, Any] = {"value": [executed_json(c) for c in page]}
    if more and page:
        token = f"{page[-1].created_at!r},{page[-1].id}"
        out["nextLink"] = page_link(settings_of(request), request, **{"$skiptoken": token})
    return OrjsonResponse(out)


@router.get(
    "/devices/{device_id}/commands/{command_id}/status",
    tags=["commands"],
    summary="Get a command's status",
)
async def command_status(
    device_id: str, command_id: str, request: Request, caller: Caller
) -> Response:
    """Pending, Completed (result, completedTime), Failed, TimedOut or Expired."""
    command = await services_of(request).commands.get(caller, device_id, command_id)
    return OrjsonResponse(command_json(command))


# -- properties ---------------------------------------------------------------------------------


def _property_json(value: Any, last_updated: float | None) -> dict[str, Any]:
    stamp = None if last_updated is None else format_ts_short(last_updated)
    return {"value": value, "lastReportedTime": stamp}


@router.get(
    "/devices/{device_id}/properties/{property_name}",
    tags=["properties"],
    summary="Get a property",
)
async def get_property(
    device_id: str, property_name: str, request: Request, caller: Caller
) -> Response:
    """{value, lastReportedTime}: the newer of what the device reported and (for a writable
    property) what was last set here; 404 when neither exists."""
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    if property_name in cloud_names(await services.templates.for_device(device)):
        cloud = device.attributes.get(CLOUD_PROPERTIES)
        if not isinstance(cloud, dict) or property_name not in cloud:
            raise NotFound(
                f"cloud property {property_name!r} of device {device_id!r} has no value yet",
                field="propertyName",
            )
        # Cloud properties keep no time of their own: the record's last change is when the
        # value (or a later change of the device) was saved.
        return OrjsonResponse(_property_json(cloud[property_name], device.updated_at))
    found = await services.properties.read(caller, device, property_name)
    return OrjsonResponse(_property_json(found.value, found.last_updated))


@router.patch(
    "/devices/{device_id}/properties/{property_name}",
    tags=["properties"],
    summary="Set a writable property",
)
async def update_property(
    device_id: str, property_name: str, body: PropertyPatch, request: Request, caller: Caller
) -> Response:
    """Patches the desired twin, which reaches the device (now, or when it reconnects), and
    answers the updated property object, as GET shows it."""
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    template = await services.templates.for_device(device)
    if template is not None and property_name in cloud_names(template):
        check_cloud_value(template, property_name, body.value)
        saved = await services.registry.set_cloud_property(
            caller, device_id, property_name, body.value
        )
        return OrjsonResponse(_property_json(body.value, saved.updated_at))
    written = await services.properties.write(caller, device, property_name, body.value)
    return OrjsonResponse(_property_json(written.value, written.last_updated))


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """`name` and `component*name` keys as the real API's object: components nested."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        component, star, short = name.partition("*")
        if star:
            out.setdefault(component, {})[short] = value
        else:
            out[name] = value
    return out


def _desired_metadata(patch: dict[str, Any]) -> dict[str, Any]:
    """The real API's answer to a properties write: `$metadata` of what was set, per
    component."""
    root: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if isinstance(value, dict) and value.get("__t") == "c":
            out[key] = {
                "$metadata": {k: {"desiredValue": v} for k, v in value.items() if k != "__t"}
            }
        else:
            root[key] = {"desiredValue": value}
    if root:
        out["$metadata"] = root
    return out


async def _read_properties(
    request: Request, caller: Principal, device: Device | str, component: str | None = None
) -> Response:
    """The values, components nested, each level with the real API's `$metadata`:
    `{name: {"lastUpdateTime"}}` for the values whose time is known (a cloud property keeps
    none of its own)."""
    found = await services_of(request).properties.read_all(caller, device, component)
    out = _nest({name: value.value for name, value in found.items()})
    for name, value in found.items():
        if value.last_updated is None:
            continue
        level, star, short = name.partition("*")
        where = out[level] if star else out
        stamp = {"lastUpdateTime": format_ts_short(value.last_updated)}
        where.setdefault(METADATA, {})[short if star else name] = stamp
    return OrjsonResponse(out)


# The real API's bookkeeping beside property values: shown by GET, and taken back (ignored) in
# a write of what GET showed.
METADATA = "$metadata"


def _without_metadata(body: Any) -> Any:
    """A properties write without the `$metadata` objects GET shows (at the top and in
    components): read-only bookkeeping, which no property may be named (names starting with
    `$` are 400s). Anything else under that name stays, and is refused as before."""

    def strip(level: dict[str, Any]) -> dict[str, Any]:
        if isinstance(level.get(METADATA), dict):
            return {k: v for k, v in level.items() if k != METADATA}
        return level

    if not isinstance(body, dict):
        return body
    return {k: strip(v) if isinstance(v, dict) else v for k, v in strip(body).items()}


async def _write_properties(
    request: Request,
    caller: Principal,
    device: Device | str,
    body: Any,
    component: str | None = None,
) -> Response:
    services = services_of(request)
    body = _without_metadata(body)
    cloud: dict[str, Any] = {}
    if component is None and isinstance(device, str) and isinstance(body, dict):
        # The template's cloud properties are kept by the registry, the rest is the patch.
        target = await services.registry.get_device(caller, device)
        template = await services.templates.for_device(target)
        if template is not None:
            names = cloud_names(template)
            cloud = {k: v for k, v in body.items() if k in names}
            for name, value in cloud.items():
                check_cloud_value(template, name, value)
            body = {k: v for k, v in body.items() if k not in names}
    patch = {}
    if body or not cloud:
        patch = await services.properties.write_many(caller, device, body, component)
    for name, value in cloud.items():
        await services.registry.set_cloud_property(caller, str(device), name, value)
    shown = _desired_metadata({**patch, **cloud})
    if component is not None:
        shown = shown.get(component, {})
    return OrjsonResponse(shown, status_code=202)


@router.get("/devices/{device_id}/properties", tags=["properties"], summary="Get properties")
async def get_properties(device_id: str, request: Request, caller: Caller) -> Response:
    """Every property with a value (as GET of one property shows it); a component's
    properties nested under its name."""
    return await _read_properties(request, caller, device_id)


@router.patch(
    "/devices/{device_id}/properties",
    status_code=202,
    tags=["properties"],
    summary="Set writable properties",
    openapi_extra=OBJECT_BODY_DOC,
)
async def patch_properties(
    device_id: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    """`{name: value, component: {name: value}}`, all checked, then one desired patch; 202
    with `$metadata.{name}.desiredValue` per property (per component)."""
    return await _write_properties(request, caller, device_id, body)


@router.put(
    "/devices/{device_id}/properties",
    status_code=202,
    tags=["properties"],
    summary="Set writable properties (as PATCH: a property cannot be unset)",
    openapi_extra=OBJECT_BODY_DOC,
)
async def put_properties(
    device_id: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    return await _write_properties(request, caller, device_id, body)


@router.get(
    "/devices/{device_id}/components/{component}/properties",
    tags=["properties"],
    summary="Get a component's properties",
)
async def get_component_properties(
    device_id: str, component: str, request: Request, caller: Caller
) -> Response:
    return await _read_properties(request, caller, device_id, component)


@router.patch(
    "/devices/{device_id}/components/{component}/properties",
    status_code=202,
    tags=["properties"],
    summary="Set a component's writable properties",
    openapi_extra=OBJECT_BODY_DOC,
)
async def patch_component_properties(
    device_id: str, component: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    return await _write_properties(request, caller, device_id, body, component)


@router.put(
    "/devices/{device_id}/components/{component}/properties",
    status_code=202,
    tags=["properties"],
    summary="Set a component's writable properties (as PATCH)",
    openapi_extra=OBJECT_BODY_DOC,
)
async def put_component_properties(
    device_id: str, component: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    return await _write_properties(request, caller, device_id, body, component)


# -- telemetry: last values ---------------------------------------------------------------------


async def _last_value(
    request: Request, caller: Principal, device: Device, name: str, component: str | None
) -> Response:
    found = await services_of(request).queries.last_value(caller, device, name, component)
    return OrjsonResponse({"value": found.value, "timestamp": format_ts_short(found.timestamp)})


@router.get(
    "/devices/{device_id}/telemetry/{telemetry_name}",
    tags=["telemetry"],
    summary="Get a telemetry's last value",
)
async def get_telemetry(
    device_id: str, telemetry_name: str, request: Request, caller: Caller
) -> Response:
    """`{value, timestamp}` of the newest message that holds the field; 404 when none."""
    device = await services_of(request).registry.get_device(caller, device_id)
    return await _last_value(request, caller, device, telemetry_name, None)


@router.get(
    "/devices/{device_id}/components/{component}/telemetry/{telemetry_name}",
    tags=["telemetry"],
    summary="Get a component telemetry's last value",
)
async def get_component_telemetry(
    device_id: str, component: str, telemetry_name: str, request: Request, caller: Caller
) -> Response:
    device = await services_of(request).registry.get_device(caller, device_id)
    return await _last_value(request, caller, device, telemetry_name, component)


# -- modules (of a gateway) ---------------------------------------------------------------------


def _module_json(module: Device) -> dict[str, Any]:
    """The real API's module (`@type`, `name`: the module's id) with thinghub's `id`,
    `displayName` and `lastSeen`."""
    out: dict[str, Any] = {
        "@type": ["Relationship", "EdgeModule"],
        "name": module.module_id,
        "id": module.module_id,
        "displayName": module.name,
    }
    if module.last_activity_at is not None:
        out["lastSeen"] = format_ts_short(module.last_activity_at)
    return out


@router.get("/devices/{device_id}/modules", tags=["modules"], summary="List a gateway's modules")
async def list_modules(device_id: str, request: Request, caller: Caller) -> Response:
    modules = await services_of(request).registry.list_modules(caller, device_id)
    return OrjsonResponse({"value": [_module_json(m) for m in modules]})


async def _module(request: Request, caller: Principal, device_id: str, module: str) -> Device:
    return await services_of(request).registry.get_module(caller, device_id, module)


@router.get(
    "/devices/{device_id}/modules/{module_name}/properties",
    tags=["modules"],
    summary="Get a module's properties",
)
async def get_module_properties(
    device_id: str, module_name: str, request: Request, caller: Caller
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _read_properties(request, caller, module)


@router.patch(
    "/devices/{device_id}/modules/{module_name}/properties",
    status_code=202,
    tags=["modules"],
    summary="Set a module's writable properties",
    openapi_extra=OBJECT_BODY_DOC,
)
async def patch_module_properties(
    device_id: str, module_name: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _write_properties(request, caller, module, body)


@router.put(
    "/devices/{device_id}/modules/{module_name}/properties",
    status_code=202,
    tags=["modules"],
    summary="Set a module's writable properties (as PATCH)",
    openapi_extra=OBJECT_BODY_DOC,
)
async def put_module_properties(
    device_id: str, module_name: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _write_properties(request, caller, module, body)


@router.post(
    "/devices/{device_id}/modules/{module_name}/commands/{command_name}",
    tags=["modules"],
    summary="Run a module command",
    responses=COMMAND_RESPONSES,
)
async def run_module_command(
    device_id: str,
    module_name: str,
    command_name: CommandName,
    request: Request,
    caller: Caller,
    body: AnyBody = None,
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _submit(request, caller, module, command_name, body)


@router.get(
    "/devices/{device_id}/modules/{module_name}/commands/{command_name}",
    tags=["modules"],
    summary="Get a module command's history",
    openapi_extra=HISTORY_PAGE_DOC,
)
async def module_command_history(
    device_id: str, module_name: str, command_name: CommandName, request: Request, caller: Caller
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _history(request, caller, module, command_name)


@router.get(
    "/devices/{device_id}/modules/{module_name}/telemetry/{telemetry_name}",
    tags=["modules"],
    summary="Get a module telemetry's last value",
)
async def get_module_telemetry(
    device_id: str, module_name: str, telemetry_name: str, request: Request, caller: Caller
) -> Response:
    module = await _module(request, caller, device_id, module_name)
    return await _last_value(request, caller, module, telemetry_name, None)


# -- device templates ---------------------------------------------------------------------------


def _template_json(template: DeviceTemplate) -> dict[str, Any]:
    return {**template.document, "etag": template.etag}


def _template_response(template: DeviceTemplate) -> Response:
    return OrjsonResponse(_template_json(template), headers={"ETag": f'"{template.etag}"'})


def _without_etag(request: Request, body: Any) -> tuple[Any, str | None]:
    """A template body without its `etag` (a GET answer sent back), and the If-Match to
    apply: the header, else that etag."""
    etag = None
    if isinstance(body, dict) and "etag" in body:
        body = dict(body)
        etag = body.pop("etag")
        if not isinstance(etag, str):
            raise Invalid("etag must be a string", field="etag")
    return body, _if_match(request, etag)


@router.put(
    "/deviceTemplates/{template_id}",
    responses=IF_MATCH_RESPONSES,
    tags=["deviceTemplates"],
    summary="Create or replace a device template",
    openapi_extra=TEMPLATE_BODY_DOC,
)
async def put_template(
    template_id: NewTemplateId, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    """IoT Central's template document, a bare DTDL Interface, or an array of Interfaces
    (root first). Answers with the stored document and its etag; If-Match honoured."""
    body, if_match = _without_etag(request, body)
    template = await services_of(request).templates.put(
        caller, template_id, body, if_match=if_match
    )
    return _template_response(template)


# The template fields `$filter` and `$orderby` see on the template list, with their types.
TEMPLATE_FIELDS: dict[str, FieldType] = {
    "@id": "string",
    "displayName": "string",
    "description": "string",
}


def _template_record(template: DeviceTemplate) -> dict[str, Any]:
    description = template.document.get("description")
    return {
        "@id": template.id,
        "displayName": template.display_name,
        "description": description if isinstance(description, str) else None,
    }


@router.get("/deviceTemplates", tags=["deviceTemplates"], summary="List device templates")
async def list_templates(request: Request, caller: Caller, options: ListOptions) -> Response:
    """`{value: [...], nextLink?}` by @id (or `$orderby`), `$filter`ed, a page of `$top` or
    `$maxpagesize` (the smaller when both; at most page_max), as the device list pages."""
    size = options.page_size(settings_of(request).page_max)
    templates = sorted(await services_of(request).templates.list(caller), key=lambda t: t.id)
    templates = options.select(templates, _template_record, TEMPLATE_FIELDS)
    chosen, token = _offset_page(templates, size, options.skiptoken)
    out: dict[str, Any] = {"value": [_template_json(t) for t in chosen]}
    if token is not None:
        out["nextLink"] = page_link(settings_of(request), request, **{"$skiptoken": token})
    return OrjsonResponse(out)


@router.get(
    "/deviceTemplates/{template_id}", tags=["deviceTemplates"], summary="Get a device template"
)
async def get_template(template_id: str, request: Request, caller: Caller) -> Response:
    template = await services_of(request).templates.get(caller, template_id)
    return _template_response(template)


@router.patch(
    "/deviceTemplates/{template_id}",
    responses=IF_MATCH_RESPONSES,
    tags=["deviceTemplates"],
    summary="Update a device template (JSON merge patch)",
    openapi_extra=OBJECT_BODY_DOC,
)
async def patch_template(
    template_id: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    body, if_match = _without_etag(request, body)
    template = await services_of(request).templates.patch(
        caller, template_id, body, if_match=if_match
    )
    return _template_response(template)


@router.delete(
    "/deviceTemplates/{template_id}",
    responses=IF_MATCH_RESPONSES,
    status_code=204,
    tags=["deviceTemplates"],
    summary="Delete a device template (409 while devices use it)",
)
async def delete_template(template_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).templates.delete(caller, template_id, if_match=_if_match(request))
    return Response(status_code=204)


def create_app(context: FaceContext) -> FastAPI:
    app = face_app(
        context,
        title="thinghub /central/api (Azure IoT Central REST API)",
        version="2023-07-31-preview",
        render=render_error,
        error_schema=ERROR_SCHEMA,
    )
    authenticate_before_body(app, authenticate)
    app.add_middleware(PlainQueryOptions)
    app.state.openapi_patches.append(document_page_size("$top", context.settings.page_max))
    app.include_router(router)
    app.include_router(jobs_router)
    app.include_router(users_router)
    app.include_router(scheduled_router)
    # The IoT Central API specification directs requests to
    # https://<app>.azureiotcentral.com/api/v1: answer there too.
    app.include_router(router, prefix="/v1", include_in_schema=False)
    app.include_router(jobs_router, prefix="/v1", include_in_schema=False)
    app.include_router(users_router, prefix="/v1", include_in_schema=False)
    app.include_router(scheduled_router, prefix="/v1", include_in_schema=False)
    return app
