"""Routes of the IoT Central face at /central/api: app, API tokens, devices, device templates,
telemetry, commands and properties.

Field names, paths and status codes follow the Azure IoT Central REST API document (see
docs/faces/central.md); where it is silent, the real IoT Central API. Decisions are written down
in docs/faces/central.md. The routes translate wire shapes and errors only: who may do what
and every rule of a use case are the services' (services/authz.py, services/*).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.security import HTTPBearer
from pydantic import AfterValidator

from thinghub.domain.clock import format_ts_short
from thinghub.domain.commands import METHOD_NAME_PATTERN
from thinghub.domain.errors import Invalid
from thinghub.domain.ids import ID_PATTERN, parse_id
from thinghub.domain.model import Device, Principal
from thinghub.faces._http import (
    OrjsonResponse,
    authenticate_before_body,
    document_page_size,
    face_app,
    principal_of,
    services_of,
    settings_of,
)
from thinghub.faces.central._wire import (
    ERROR_SCHEMA,
    api_version,
    authenticate,
    command_json,
    device_json,
    device_record,
    page_link,
    parse_time,
    render_error,
    token_json,
)
from thinghub.faces.central.odata import FieldType, parse_filter
from thinghub.faces.central.roles import parse_role
from thinghub.faces.central.schemas import (
    TEMPLATE_ID_SCHEMA,
    ApiTokenCreate,
    DeviceCreate,
    DevicePatch,
    PropertyPatch,
)
from thinghub.faces.face import FaceContext
from thinghub.services.commands import CommandFields
from thinghub.services.registry import KEEP

__all__ = ["create_app"]

_caller = principal_of(authenticate)
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
FILTER_FIELDS: dict[str, FieldType] = {
    "id": "string",
    "displayName": "string",
    "template": "string",
    "simulated": "boolean",
    "provisioned": "boolean",
    "enabled": "boolean",
}
# A command body holding only these keys is IoT Central's envelope, not the arguments.
COMMAND_ENVELOPE = frozenset({"request", "connectionTimeout", "responseTimeout"})
# What a command's inputs are called here (errors name them).
COMMAND_FIELDS = CommandFields(
    name="commandName", payload="request", timeout="responseTimeout", ttl="connectionTimeout"
)

# Credentials first (401), then api-version (400): a caller without credentials learns
# nothing else. FastAPI runs a route's dependencies once each, in this order.
router = APIRouter(dependencies=[Depends(_caller), Depends(api_version), Depends(_bearer)])


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


@router.get("/devices", tags=["devices"], summary="List devices")
async def list_devices(
    request: Request,
    caller: Caller,
    filter_: Annotated[
        str | None,
        Query(
            alias="$filter",
            description="OData filter, e.g. simulated eq true",
            json_schema_extra={"minLength": 1},
        ),
    ] = None,
    top: Annotated[int | None, Query(alias="$top", description="Page size")] = None,
    skiptoken: Annotated[
        str | None, Query(alias="$skiptoken", description="From a nextLink")
    ] = None,
) -> Response:
    """Devices ordered by id; `nextLink` (the link to the next page: relative, or under the
    public_url setting) when `$top` cut."""
    services = services_of(request)
    page_max = settings_of(request).page_max
    if top is not None and not 1 <= top <= page_max:
        raise Invalid(f"$top must be 1 to {page_max}", field="$top")
    size = top or page_max
    matcher = None if filter_ is None else parse_filter(filter_, FILTER_FIELDS)
    devices = sorted(await services.registry.list_devices(caller), key=lambda d: d.id)
    chosen: list[Device] = []
    more = False
    for device in devices:
        if skiptoken is not None and device.id <= skiptoken:
            continue
        if matcher is not None and not matcher.matches(device_record(device)):
            continue
        if len(chosen) == size:
            more = True
            break
        chosen.append(device)
    out: dict[str, Any] = {"devices": [await device_json(services, d) for d in chosen]}
    if more:
        out["nextLink"] = page_link(settings_of(request), request, **{"$skiptoken": chosen[-1].id})
    return OrjsonResponse(out)


@router.put("/devices/{device_id}", tags=["devices"], summary="Create a device")
async def create_device(
    device_id: NewId, request: Request, caller: Caller, body: DeviceCreate | None = None
) -> Response:
    """200 with the device; 409 when a device with this id exists (ids are global). The
    template need not exist yet (the API document's example names one an application need not
    have): the device is checked against it once it does."""
    services = services_of(request)
    body = body or DeviceCreate()
    device = await services.registry.create_device(
        caller,
        name=body.displayName or device_id,
        device_id=device_id,
        template=body.template,
        simulated=body.simulated,
        enabled=body.enabled,
        id_field="deviceId",
    )
    return OrjsonResponse(await device_json(services, device))


@router.get("/devices/{device_id}", tags=["devices"], summary="Get a device")
async def get_device(device_id: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    device = await services.registry.get_device(caller, device_id)
    return OrjsonResponse(await device_json(services, device))


@router.patch("/devices/{device_id}", tags=["devices"], summary="Update a device")
async def update_device(
    device_id: str, body: DevicePatch, request: Request, caller: Caller
) -> Response:
    """displayName, enabled, simulated, template (null unassigns). Disabling disconnects."""
    services = services_of(request)
    device = await services.registry.edit_device(
        caller,
        device_id,
        name=body.displayName,
        enabled=body.enabled,
        simulated=body.simulated,
        template=body.template if "template" in body.model_fields_set else KEEP,
    )
    return OrjsonResponse(await device_json(services, device))


@router.delete("/devices/{device_id}", status_code=204, tags=["devices"], summary="Delete a device")
async def delete_device(device_id: str, request: Request, caller: Caller) -> Response:
    """Deletes the device and closes its connection."""
    await services_of(request).registry.delete_device(caller, device_id)
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


def _command_body(body: Any) -> tuple[Any, Any, Any]:
    """(arguments, response timeout, TTL) from the API document's bare arguments or IoT
    Central's {"request", "connectionTimeout", "responseTimeout"} envelope (the command
    service checks the values, naming these fields)."""
    if not (isinstance(body, dict) and body and set(body) <= COMMAND_ENVELOPE):
        return body, None, None
    return body.get("request"), body.get("responseTimeout"), body.get("connectionTimeout")


async def _submit(
    request: Request, caller: Principal, device_id: str, name: str, body: Any
) -> Response:
    payload, timeout, ttl = _command_body(body)
    command = await services_of(request).commands.submit(
        caller, device_id, name, payload, timeout, ttl, fields=COMMAND_FIELDS
    )
    return OrjsonResponse({"commandId": command.id, "status": command.status.value})


@router.post(
    "/devices/{device_id}/commands/{command_name}",
    tags=["commands"],
    summary="Run a command (queued until the device is connected)",
)
async def run_command(
    device_id: str,
    command_name: CommandName,
    request: Request,
    caller: Caller,
    body: AnyBody = None,
) -> Response:
    """At once `{commandId, status: "Pending"}`. The body is the arguments, or IoT Central's
    envelope {request, responseTimeout, connectionTimeout}. `component*command` names a
    component's command; the device receives a direct method of that name."""
    return await _submit(request, caller, device_id, command_name, body)


@router.post(
    "/devices/{device_id}/components/{component}/commands/{command_name}",
    tags=["commands"],
    summary="Run a component command",
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
    found = await services_of(request).properties.read(caller, device_id, property_name)
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
    written = await services_of(request).properties.write(
        caller, device_id, property_name, body.value
    )
    return OrjsonResponse(_property_json(written.value, written.last_updated))


# -- device templates ---------------------------------------------------------------------------


@router.put(
    "/deviceTemplates/{template_id}",
    tags=["deviceTemplates"],
    summary="Create or replace a device template",
    openapi_extra=TEMPLATE_BODY_DOC,
)
async def put_template(
    template_id: NewTemplateId, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    """IoT Central's template document, a bare DTDL Interface, or an array of Interfaces
    (root first). Answers with the stored document."""
    template = await services_of(request).templates.put(caller, template_id, body)
    return OrjsonResponse(template.document)


@router.get("/deviceTemplates", tags=["deviceTemplates"], summary="List device templates")
async def list_templates(request: Request, caller: Caller) -> Response:
    templates = await services_of(request).templates.list(caller)
    return OrjsonResponse({"value": [t.document for t in templates]})


@router.get(
    "/deviceTemplates/{template_id}", tags=["deviceTemplates"], summary="Get a device template"
)
async def get_template(template_id: str, request: Request, caller: Caller) -> Response:
    template = await services_of(request).templates.get(caller, template_id)
    return OrjsonResponse(template.document)


@router.patch(
    "/deviceTemplates/{template_id}",
    tags=["deviceTemplates"],
    summary="Update a device template (JSON merge patch)",
    openapi_extra=OBJECT_BODY_DOC,
)
async def patch_template(
    template_id: str, request: Request, caller: Caller, body: AnyBody = None
) -> Response:
    template = await services_of(request).templates.patch(caller, template_id, body)
    return OrjsonResponse(template.document)


@router.delete(
    "/deviceTemplates/{template_id}",
    status_code=204,
    tags=["deviceTemplates"],
    summary="Delete a device template (409 while devices use it)",
)
async def delete_template(template_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).templates.delete(caller, template_id)
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
    app.state.openapi_patches.append(document_page_size("$top", context.settings.page_max))
    app.include_router(router)
    # The IoT Central API specification directs requests to
    # https://<app>.azureiotcentral.com/api/v1: answer there too.
    app.include_router(router, prefix="/v1", include_in_schema=False)
    return app
