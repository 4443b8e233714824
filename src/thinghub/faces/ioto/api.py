"""Routes of the Ioto device API at /ioto/api: register, claim, release, get, find, provision,
getCreds, getSignedUrl, and the agent's update check.

Every call is a POST with a JSON body (as the vendor documents it) and a bearer token, whose scheme
is matched in any case (the agent sends ``bearer``). Each route answers under its vendor path
(``/device/claim``) and under ``/tok/...``, where the agent calls its cloud. Three kinds of
caller:

- register: the product token (``device.json5`` ``product``);
- claim, release, get, find: a cloud user, with a thinghub API token or access token; the
  vendor's roles map onto thinghub's (domain.claims.ROLE_GRANTS);
- provision, getCreds, getSignedUrl, update: the device, with the token register gave it.

The caller is authenticated before the body is read, so a caller without a valid token gets
401 whatever it sends. Errors are plain text with the status of the error
(faces/ioto/schemas.py); device calls answer ``Authentication failed`` (401) and ``Cannot
find device`` (404), the texts the agent acts on. A provision refused for a while is a 200
``{"error", "delay"}``, as the agent reads it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.middleware.cors import CORSMiddleware

from thinghub.domain.clock import format_ts_ms
from thinghub.domain.device_files import FileAction
from thinghub.domain.errors import Error, Invalid, NotFound, Unauthorized
from thinghub.domain.model import Principal
from thinghub.domain.storable import check_storable
from thinghub.faces._http import OrjsonResponse, face_app, services_of, settings_of
from thinghub.faces.face import FaceContext
from thinghub.faces.ioto import json5
from thinghub.faces.ioto.schemas import (
    AUTH_FAILED,
    DEVICE_NOT_FOUND,
    ROUTES,
    ActionRequest,
    ClaimRequest,
    CredsAnswer,
    DeviceRecord,
    FindAnswer,
    FindRequest,
    GetRequest,
    ProvisionAnswer,
    ProvisionBlocked,
    ProvisionRequest,
    RegisterClaimed,
    RegisterRequest,
    ReleaseRequest,
    SignedUrlRequest,
    UpdateRequest,
    error_text,
    parse_bearer,
    register_unclaimed,
    signed_url_body,
    signed_url_spec,
)
from thinghub.services.claims import ClaimedDevice
from thinghub.services.claims import ProvisionBlocked as Blocked

__all__ = ["ERROR_SCHEMA", "create_app", "render_error"]

M = TypeVar("M", bound=BaseModel)

# The error body as the OpenAPI document states it: plain text.
ERROR_SCHEMA: dict[str, Any] = {"type": "string"}
TEXT = "text/plain; charset=utf-8"


def render_error(error: Error, status: int) -> Response:
    """The face's error answer: the status of the error, its message as plain text."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(error_text(error), status_code=status, media_type=TEXT, headers=headers)


def _invalid(exc: ValidationError) -> Invalid:
    problems = exc.errors()
    if not problems:
        return Invalid("the body is invalid", field="body")
    first = problems[0]
    loc = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "missing":
        return Invalid(f"{loc} is required", field=loc)
    return Invalid(f"{loc}: {first['msg']}", field=loc)


#: The largest body read as JSON5 when it is not JSON. The JSON5 reader is Python, about 1 s
#: of the event loop per 400 KB: a bigger body that is not JSON is refused (400) unread, so an
#: unauthenticated caller cannot stall the server with a few MiB of it. The agent's JSON5
#: bodies (ioAutomation's {name, context}) are far smaller.
JSON5_MAX_BYTES = 64 * 1024


def _parse(request: Request, raw: bytes) -> Any:
    """The body's value: JSON, or the JSON5 the agent's own JSON library writes (its
    ioAutomation body is JSON5: single quotes, bare keys); an empty body is `{}`."""
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if len(raw) > JSON5_MAX_BYTES:
            raise Invalid("the body is not valid JSON", field="body") from None
    try:
        return json5.loads(raw, max_depth=settings_of(request).max_json_depth)
    except json5.Json5Error:
        raise Invalid("the body is not valid JSON", field="body") from None


async def _body(request: Request, model: type[M], extra: dict[str, Any] | None = None) -> M:
    """The JSON object body as `model` (an empty body is `{}`); `extra` fields (query-string
    options) are taken where the body does not give them."""
    data = _parse(request, await request.body())
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object", field="body")
    if extra:
        data = {**extra, **data}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _json(value: Any) -> Response:
    return OrjsonResponse(value)


def _date(ts: float | None) -> str | None:
    return None if ts is None else format_ts_ms(ts)


def _record(found: ClaimedDevice) -> dict[str, Any]:
    registration = found.registration
    return DeviceRecord(
        accessed=_date(found.accessed_at),
        accountId=registration.account_id,
        created=_date(registration.claimed_at),
        id=registration.id,
        product=None if found.product is None else found.product.name,
        productId=registration.product_id,
        test=registration.test,
        version=registration.version,
        checked=registration.checked,
    ).wire()


# -- callers -------------------------------------------------------------------------------------


async def _user(request: Request) -> Principal:
    return await services_of(request).auth.authenticate_header(request.headers.get("authorization"))


async def _device(request: Request) -> Any:
    """The calling device's registration; any failure is the agent's "Authentication failed"."""
    services = services_of(request)
    token = parse_bearer(request.headers.get("authorization"))
    try:
        registration = await services.claims.authenticate_device(token)
    except Unauthorized as exc:
        raise Unauthorized(AUTH_FAILED, field=exc.field) from exc
    await services.claims.touch(registration)
    return registration


class _DeviceErrors:
    """Inside a device call, an unknown device is the agent's "Cannot find device"."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, NotFound):
            raise NotFound(DEVICE_NOT_FOUND, field=exc.field) from exc
        if isinstance(exc, Unauthorized):
            raise Unauthorized(AUTH_FAILED, field=exc.field) from exc


# -- register (product token) --------------------------------------------------------------------


async def register(request: Request) -> Response:
    """Register a device with its product token. Unclaimed: exactly two fields; claimed: what
    the agent saves in provision.json5 (`api`, `token`, ...)."""
    services = services_of(request)
    token = parse_bearer(request.headers.get("authorization"))
    if token is None and request.headers.get("authorization") is None:
        # No header: the agent's device.json5 `product` field names the product.
        try:
            body = _parse(request, await request.body())
        except Invalid:
            body = {}
        candidate = body.get("product") if isinstance(body, dict) else None
        token = candidate if isinstance(candidate, str) else None
    product = await services.products.authenticate(token)
    body_model = await _body(request, RegisterRequest)
    extra = body_model.extra_fields()
    version = extra.get("version")
    registered = await services.claims.register(
        product,
        body_model.id,
        test=body_model.test,
        account=body_model.account,
        version=version if isinstance(version, str) and len(version) <= 256 else None,
    )
    registration = registered.registration
    if registered.token is None or registration.account_id is None:
        return _json(register_unclaimed(registration.id))
    answer = RegisterClaimed(
        api=registered.api_url,
        token=registered.token,
        id=registration.id,
        accountId=registration.account_id,
        cloudName=services.claims.cloud_name,
        cloudRegion=services.claims.region,
    )
    return _json(answer.model_dump())


# -- users: claim, release, get, find ------------------------------------------------------------


async def claim(request: Request) -> Response:
    """Claim a registered device into the caller's account (role claimDevice)."""
    caller = await _user(request)
    body = await _body(request, ClaimRequest)
    found = await services_of(request).claims.claim(caller, body.id, test=body.test)
    return _json(_record(found))


async def release(request: Request) -> Response:
    """Release a device back to unclaimed (role releaseDevice); answers its record as it was."""
    caller = await _user(request)
    body = await _body(request, ReleaseRequest)
    found = await services_of(request).claims.release(caller, body.id)
    return _json(_record(found))


async def get(request: Request) -> Response:
    """A device of the caller's account (role user)."""
    caller = await _user(request)
    body = await _body(request, GetRequest)
    found = await services_of(request).claims.get(caller, body.id, account_id=body.accountId)
    return _json(_record(found))


async def find(request: Request) -> Response:
    """The account's devices, paged: `limit`, `next`, `prev`, `index` in the body or query."""
    caller = await _user(request)
    options = {
        k: v for k, v in request.query_params.items() if k in ("limit", "next", "prev", "index")
    }
    body = await _body(request, FindRequest, options)
    page = await services_of(request).claims.find(
        caller,
        claim_id=body.id,
        account_id=body.accountId,
        product_id=body.productId,
        limit=body.limit,
        next_cursor=body.next,
        prev_cursor=body.prev,
        index=body.index,
    )
    answer = FindAnswer(
        data=[DeviceRecord.model_validate(_record(d)) for d in page.devices],
        next=page.next_cursor,
        prev=page.prev_cursor,
    )
    return _json(answer.wire())


# -- devices: provision, getCreds, getSignedUrl, update ------------------------------------------


async def provision(request: Request) -> Response:
    """The device's MQTT certificate, key and endpoint; `{error, delay}` (200) when it must
    wait."""
    services = services_of(request)
    device = await _device(request)
    with _DeviceErrors():
        body = await _body(request, ProvisionRequest)
        outcome = await services.claims.provision(device, body.id)
    if isinstance(outcome, Blocked):
        blocked = ProvisionBlocked(
            error="provisioning too often; try again later", delay=outcome.delay_s
        )
        return _json(blocked.model_dump())
    registration = outcome.registration
    assert registration.account_id is not None
    answer = ProvisionAnswer(
        certificate=outcome.certificate,
        key=outcome.key,
        endpoint=outcome.endpoint,
        port=outcome.port,
        accountId=registration.account_id,
        cloudName=services.claims.cloud_name,
        cloudRegion=services.claims.region,
        id=registration.id,
        thing=registration.id,
    )
    return _json(answer.model_dump())


async def get_creds(request: Request) -> Response:
    """Temporary credentials for the device's own files on the S3-compatible endpoint."""
    services = services_of(request)
    device = await _device(request)
    with _DeviceErrors():
        creds = services.files.credentials(device)
    answer = CredsAnswer(
        accessKeyId=creds.access_key_id,
        secretAccessKey=creds.secret_access_key,
        sessionToken=creds.session_token,
        expires=format_ts_ms(creds.expires_at),
        region=creds.region,
    )
    return _json(answer.model_dump())


async def get_signed_url(request: Request) -> Response:
    """A presigned URL for one file of the device: the body is the URL as a JSON string."""
    services = services_of(request)
    device = await _device(request)
    with _DeviceErrors():
        body = await _body(request, SignedUrlRequest)
        spec = signed_url_spec(body, device_id=device.id, max_bytes=services.files.max_file_bytes)
        action = spec.action
        if action not in (FileAction.GET, FileAction.PUT, FileAction.DELETE):
            raise Invalid("command must be get, put or delete", field="command")
        url = services.files.signed_url(
            device, action=action, filename=spec.filename, mime_type=spec.mime_type, size=spec.size
        )
    return Response(signed_url_body(url), media_type="application/json")


async def update(request: Request) -> Response:
    """The agent's update check: thinghub serves no firmware, so `{}` (no update). The
    device's `version` and the time of the check are its record's `version` and `checked`."""
    device = await _device(request)
    body = await _body(request, UpdateRequest)
    await services_of(request).claims.update_checked(device, body.firmware_version())
    return _json({})


async def invoke(request: Request) -> Response:
    """The agent's `ioAutomation(name, context)`: thinghub runs no automations, so the call is
    kept as a telemetry message of the device, `{"action": name, "context": context}` (with
    the application property `ioto-action`), for applications on any face; `{}` answers it."""
    services = services_of(request)
    registration = await _device(request)
    body = await _body(request, ActionRequest)
    device = await services.registry.find(registration.id)
    if device is None or device.account_id != registration.account_id or not device.enabled:
        raise Unauthorized(AUTH_FAILED, field="Authorization")
    action = {"action": body.name, "context": body.context}
    check_storable(action, "context")
    message = services.ingest.build(
        device,
        orjson.dumps(action),
        properties={"ioto-action": body.name},
        content_type="application/json",
        source="ioto",
    )
    await services.ingest.ingest(device, message)
    return _json({})


# -- the app -------------------------------------------------------------------------------------

_HANDLERS = {
    "register": register,
    "claim": claim,
    "release": release,
    "get": get,
    "find": find,
    "provision": provision,
    "getCreds": get_creds,
    "getSignedUrl": get_signed_url,
    "update": update,
    "invoke": invoke,
}
_SUMMARIES = {
    "register": "Register a device (product token)",
    "claim": "Claim a device (role claimDevice)",
    "release": "Release a device (role releaseDevice)",
    "get": "Get a device (role user)",
    "find": "Find devices, paged (role user)",
    "provision": "Provision the device's MQTT certificate (device token)",
    "getCreds": "Temporary credentials for the device's files (device token)",
    "getSignedUrl": "A signed URL for one file of the device (device token)",
    "update": "The agent's update check (device token): {} = no update",
    "invoke": "The agent's ioAutomation (device token): kept as a telemetry message",
}
_BODIES: dict[str, type[BaseModel]] = {
    "register": RegisterRequest,
    "claim": ClaimRequest,
    "release": ReleaseRequest,
    "get": GetRequest,
    "find": FindRequest,
    "provision": ProvisionRequest,
    "getSignedUrl": SignedUrlRequest,
    "update": UpdateRequest,
    "invoke": ActionRequest,
}


def create_app(context: FaceContext) -> FastAPI:
    app = face_app(
        context,
        title="thinghub Ioto device API (Embedthis Ioto)",
        version="1",
        render=render_error,
        error_schema=ERROR_SCHEMA,
    )
    for path, route in ROUTES:
        extra: dict[str, Any] = {}
        model = _BODIES.get(route)
        if model is not None:
            extra["requestBody"] = {
                "required": route not in ("find",),
                "content": {"application/json": {"schema": model.model_json_schema()}},
            }
        for spelling in (path, "/tok" + path):
            app.add_api_route(
                spelling,
                _HANDLERS[route],
                methods=["POST"],
                summary=_SUMMARIES[route],
                tags=["device"],
                openapi_extra=extra or None,
                include_in_schema=spelling == path
                or path.startswith(("/file", "/provision", "/action")),
            )
    _document_errors(app)
    # Device-management apps run in a browser on another origin and call these routes with a
    # bearer token and a JSON body (a CORS preflight). No cookies are used: any origin may.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["POST"],
        allow_headers=["*"],
        max_age=600,
    )
    return app


def _document_errors(app: FastAPI) -> None:
    """Errors are plain text: say so in the OpenAPI document (faces._http documents JSON)."""

    def patch(schema: dict[str, Any]) -> None:
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] == "4":
                        response["content"] = {"text/plain": {"schema": ERROR_SCHEMA}}

    app.state.openapi_patches.append(patch)
