"""Wire conventions of the IoT Central face: errors, api-version, credentials, object shapes."""

from __future__ import annotations

from email.utils import formatdate
from typing import Annotated, Any

import orjson
from fastapi import Query, Request
from fastapi.responses import Response

from thinghub.config import Settings
from thinghub.domain import errors
from thinghub.domain.clock import format_ts_short, parse_ts
from thinghub.domain.commands import Command
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import ApiToken, Device, Principal
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import TwinSection
from thinghub.faces._http import OrjsonResponse, principal_of
from thinghub.faces.central.odata import FieldType
from thinghub.faces.central.roles import describe_refusal
from thinghub.services.core import Services

__all__ = [
    "DEFAULT_API_VERSION",
    "ERROR_SCHEMA",
    "FILTER_FIELDS",
    "SUPPORTED_API_VERSIONS",
    "api_version",
    "authenticate",
    "caller_dependency",
    "command_json",
    "device_json",
    "device_record",
    "executed_json",
    "page_link",
    "parse_time",
    "render_error",
    "section_stamp",
    "section_time",
    "to_json",
    "token_json",
]

# IoT Central's published versions, oldest first; they all behave the same here. A request
# without api-version gets the newest.
SUPPORTED_API_VERSIONS = (
    "1.0",
    "1.1-preview",
    "1.2-preview",
    "2022-05-31",
    "2022-06-30-preview",
    "2022-07-31",
    "2022-10-31-preview",
    "2023-07-31-preview",
)
DEFAULT_API_VERSION = SUPPORTED_API_VERSIONS[-1]

# IoT Central's error codes by status (its body is {"error": {code, message, requestId, time}}).
_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    504: "GatewayTimeout",
}


# What render_error writes, as a JSON Schema (for the OpenAPI document).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "requestId", "time"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "requestId": {"type": "string"},
                "time": {"type": "string"},
            },
        }
    },
}


def render_error(error: errors.Error, status: int) -> Response:
    """IoT Central's error body; the request id is also in the x-ms-request-id header and the
    code in x-ms-error-code (where the real API's generated clients read it)."""
    request_id = new_uuid()
    message = describe_refusal(error) if isinstance(error, errors.Forbidden) else error.message
    code = _CODES.get(status, error.code)
    body = {
        "error": {
            "code": code,
            "message": message,
            "requestId": request_id,
            "time": formatdate(usegmt=True),
        }
    }
    headers = {"x-ms-request-id": request_id, "x-ms-error-code": code}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer, SharedAccessSignature"
    return OrjsonResponse(body, status_code=status, headers=headers)


async def api_version(
    version: Annotated[
        str | None,
        Query(
            alias="api-version",
            description=f"One of {', '.join(SUPPORTED_API_VERSIONS)}; default "
            f"{DEFAULT_API_VERSION}",
            json_schema_extra={"enum": list(SUPPORTED_API_VERSIONS)},
        ),
    ] = None,
) -> str:
    """The request's api-version: missing means the newest; unknown is a 400."""
    if version is None:
        return DEFAULT_API_VERSION
    if version not in SUPPORTED_API_VERSIONS:
        raise errors.Invalid(
            f"api-version {version!r} is not supported; supported versions are "
            f"{', '.join(SUPPORTED_API_VERSIONS)}",
            field="api-version",
        )
    return version


async def authenticate(services: Services, header: str | None) -> Principal:
    """`Bearer <token>`, or the token itself (IoT Central sends `SharedAccessSignature sr=...`)."""
    value = (header or "").strip()
    if not value:
        raise errors.Unauthorized(
            "missing Authorization header; send the API token, or Bearer <token>",
            field="Authorization",
        )
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    return await services.auth.authenticate_bearer(value)


# The face's caller: one dependency object, so FastAPI authenticates a request once whichever
# router of the face declares it.
caller_dependency = principal_of(authenticate)


def page_link(settings: Settings, request: Request, **params: str) -> str:
    """A link to this route with `params` set (a nextLink): under the `public_url` setting
    when one is set; else absolute, as the real API's nextLink is, when the request reached
    this server directly (its Host names the very address it came in on, see _own_origin);
    else relative to the server. Never built from a Host the client made up."""
    url = request.url.include_query_params(**params)
    relative = f"{url.path}?{url.query}" if url.query else url.path
    base = settings.public_url or _own_origin(request)
    return f"{base}{relative}" if base else relative


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _own_origin(request: Request) -> str | None:
    """`scheme://host:port` of the socket a request came in on, written as its Host header
    writes it, when that header names this very socket: its IP and port, or `localhost` and
    the port of a loopback socket. A client that follows a link so built reaches the address
    it already reached. None for any other Host (a reverse proxy, a port mapping, or a name
    the client made up), where only a relative link is safe."""
    server = request.scope.get("server")
    host = request.headers.get("host")
    if not server or not host or server[1] is None:
        return None
    ip, port = str(server[0]), int(server[1])
    scheme = request.url.scheme
    name, sep, given_port = host.rpartition(":")
    if not sep or name.endswith(":"):  # no port, or a bare IPv6 literal
        name, given_port = host, ""
    if not given_port.isdigit():
        return None
    if int(given_port) != port:
        return None
    name = name.lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if bare == ip.lower() or (bare == "localhost" and ip in _LOOPBACK):
        return f"{scheme}://{name}:{port}"
    return None


def parse_time(value: Any, field: str) -> float:
    """An ISO-8601 time string from a body (parse_ts bounds it to years 1..9999); IoT Central
    times before 1970 are mistakes, not data."""
    if not isinstance(value, str):
        raise errors.Invalid(f"{field} must be an ISO-8601 time string", field=field)
    ts = parse_ts(value, field)
    if ts < 0:
        raise errors.Invalid(f"{field} is out of range: {value!r}", field=field)
    return ts


def to_json(value: Any, field: str) -> bytes:
    """Serialize a request value, or 400 when it cannot be stored as it is (domain/storable:
    NaN and Infinity, integers beyond 64 bits, lone surrogates, too deep)."""
    check_storable(value, field)
    return orjson.dumps(value)


def _ts(value: float | None) -> str | None:
    return None if value is None else format_ts_short(value)


def token_json(token: ApiToken, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": token.id, "roles": [{"role": token.face_role}]}
    if token.expires_at is not None:
        out["expiry"] = format_ts_short(token.expires_at)
    if secret is not None:
        out["token"] = secret
    return out


# The device fields $filter and $orderby (and device groups' filters) see, with their types.
FILTER_FIELDS: dict[str, FieldType] = {
    "id": "string",
    "displayName": "string",
    "template": "string",
    "simulated": "boolean",
    "provisioned": "boolean",
    "enabled": "boolean",
}


def device_record(device: Device) -> dict[str, Any]:
    """The specification's device fields, also what $filter sees."""
    return {
        "id": device.id,
        "displayName": device.name,
        "template": device.template,
        "simulated": device.simulated,
        "provisioned": device.provisioned,
        "enabled": device.enabled,
    }


def _firmware(reported: dict[str, Any]) -> str | None:
    """firmwareVersion as devices report it: flat, or as PnP deviceInformation.swVersion."""
    for node in (reported, reported.get("deviceInformation")):
        if isinstance(node, dict):
            for key in ("firmwareVersion", "swVersion"):
                if isinstance(node.get(key), str):
                    return str(node[key])
    return None


async def device_json(services: Services, device: Device) -> dict[str, Any]:
    out = device_record(device)
    out["etag"] = device.etag
    if device.last_activity_at is not None:
        out["lastSeen"] = format_ts_short(device.last_activity_at)
    twin = await services.twins.get(device)
    firmware = _firmware(twin.reported.properties)
    if firmware is not None:
        out["firmwareVersion"] = firmware
    return out


def command_json(command: Command) -> dict[str, Any]:
    out: dict[str, Any] = {"commandId": command.id, "status": command.status.value}
    if command.result is not None:
        out["result"] = command.result
    if command.response_code is not None:
        out["responseCode"] = command.response_code
    if command.completed_at is not None:
        out["completedTime"] = format_ts_short(command.completed_at)
    return out


def executed_json(command: Command) -> dict[str, Any]:
    """A command in the real API's shape (id, request, response, responseCode, the timeouts)
    with the API document's commandId and status."""
    out: dict[str, Any] = {
        "id": command.id,
        "commandId": command.id,
        "status": command.status.value,
        "request": command.payload,
        "responseTimeout": int(command.response_timeout_s),
    }
    if command.response_code is not None:
        out["responseCode"] = command.response_code
    if command.result is not None:
        out["response"] = command.result
    if command.completed_at is not None:
        out["completedTime"] = format_ts_short(command.completed_at)
    return out


def section_stamp(section: TwinSection, component: str | None, name: str) -> float | None:
    """When a twin property last changed (epoch seconds), from its `$metadata`."""
    return section.changed_at(*(key for key in (component, name) if key is not None))


def section_time(section: TwinSection, component: str | None, name: str) -> str | None:
    """When a twin property last changed, in the specification's time format."""
    return _ts(section_stamp(section, component, name))
