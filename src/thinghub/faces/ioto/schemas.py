"""Wire schemas of the Ioto device API (pydantic, at the edge only), and its small wire rules.

The vendor documents requests and answers but not errors. The real agent shows what its
cloud answers: non-200 statuses with a plain-text message, and it acts on two exact texts
from the update call, ``Cannot find device`` and ``Authentication failed`` (it then drops its
certificate and provisions again). This face answers every error the same way: the status
of the domain error (400, 401, 403, 404, 409, 413, 429) and the message as ``text/plain``,
with those two texts for an unknown device and for a bad device token.

One exception is the vendor's own: a provision refused for a while is a **200** with
``{"error", "delay"}``; the agent reads JSON from 200 answers only, so any other status
would lose the delay.

Paths: the vendor documents ``/device/provision``; the agent calls ``{api}/tok/device/...``
and ``{api}/tok/file/getSignedUrl``. ``route_of`` maps every spelling to one route name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from thinghub.domain import errors
from thinghub.domain.device_files import FileAction, parse_filename, parse_mime_type, parse_size

__all__ = [
    "AUTH_FAILED",
    "DEFAULT_FIND_LIMIT",
    "DEVICE_NOT_FOUND",
    "MAX_FIND_LIMIT",
    "ROUTES",
    "ActionRequest",
    "ClaimRequest",
    "CredsAnswer",
    "DeviceRecord",
    "FindAnswer",
    "FindRequest",
    "GetRequest",
    "ProvisionAnswer",
    "ProvisionBlocked",
    "ProvisionRequest",
    "RegisterClaimed",
    "RegisterRequest",
    "ReleaseRequest",
    "Route",
    "SignedUrlRequest",
    "SignedUrlSpec",
    "UpdateRequest",
    "error_text",
    "parse_bearer",
    "register_unclaimed",
    "route_of",
    "signed_url_body",
    "signed_url_spec",
    "status_of",
]

AUTH_FAILED = "Authentication failed"
DEVICE_NOT_FOUND = "Cannot find device"
DEFAULT_FIND_LIMIT = 100
MAX_FIND_LIMIT = 1000
MAX_CURSOR_CHARS = 2048
MAX_TEXT_CHARS = 256
MAX_REGISTER_FIELDS = 64  # device.json5 is a handful of fields; bound the free-form rest
MAX_EXTRA_FIELD_CHARS = 4096

ClaimId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Text = Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]


class _Body(BaseModel):
    # Apps and agents send fields this face does not model; ignore them.
    model_config = ConfigDict(extra="ignore")


# -- routes -----------------------------------------------------------------------------------


Route = Literal[
    "register", "claim", "release", "get", "find", "provision", "getCreds", "getSignedUrl",
    "update", "invoke",
]  # fmt: skip

# (path below the face prefix, route); each device call also answers under /tok/.
ROUTES: tuple[tuple[str, Route], ...] = (
    ("/device/register", "register"),
    ("/device/claim", "claim"),
    ("/device/release", "release"),
    ("/device/get", "get"),
    ("/device/find", "find"),
    ("/device/provision", "provision"),
    ("/device/getCreds", "getCreds"),
    ("/device/getSignedUrl", "getSignedUrl"),
    ("/file/getSignedUrl", "getSignedUrl"),
    ("/provision/update", "update"),
    ("/action/invoke", "invoke"),
)
_BY_PATH = dict(ROUTES)


def route_of(path: str) -> Route | None:
    """The route a path below the prefix names: ``/tok/device/provision`` is ``provision``."""
    path = path.rstrip("/")
    return _BY_PATH.get(path.removeprefix("/tok") if path.startswith("/tok/") else path)


_BEARER_RE = re.compile(r"bearer[ \t]+(\S+)[ \t]*", re.IGNORECASE)


def parse_bearer(header: str | None) -> str | None:
    """The token of ``Authorization: bearer <token>`` (scheme matched case-insensitively)."""
    if header is None:
        return None
    match = _BEARER_RE.fullmatch(header.strip())
    return match[1] if match else None


# -- errors -----------------------------------------------------------------------------------

_STATUS: tuple[tuple[type[errors.Error], int], ...] = (
    (errors.Invalid, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.RateLimited, 429),
    (errors.DeviceOffline, 404),
    (errors.TimedOut, 504),
)


def status_of(error: errors.Error) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


def error_text(error: errors.Error, *, device_call: bool = False) -> str:
    """The plain-text body of an error answer.

    Args:
        device_call: the caller is a device (``/tok/...``): an unauthenticated call answers
            ``Authentication failed`` and an unknown device ``Cannot find device``, the texts
            the agent acts on.
    """
    if device_call and isinstance(error, errors.Unauthorized):
        return AUTH_FAILED
    if device_call and isinstance(error, errors.NotFound):
        return DEVICE_NOT_FOUND
    return error.message


# -- register ---------------------------------------------------------------------------------


class RegisterRequest(BaseModel):
    """The agent's register body: device.json5 as it is, plus ``created`` (+ account, cloud)."""

    model_config = ConfigDict(extra="allow")

    id: ClaimId
    product: Text | None = None
    created: Text | None = None
    account: Text | None = None
    cloud: Text | None = None
    test: StrictBool = False
    name: Text | None = None
    description: Text | None = None
    model: Text | None = None

    def extra_fields(self) -> dict[str, Any]:
        """The free-form rest of device.json5, bounded in count and size.

        Raises:
            errors.Invalid: too many fields, or one too large (naming it).
        """
        extra = dict(self.model_extra or {})
        if len(extra) > MAX_REGISTER_FIELDS:
            raise errors.Invalid(f"more than {MAX_REGISTER_FIELDS} fields", field="body")
        for name, value in extra.items():
            if len(name) > MAX_TEXT_CHARS or len(json.dumps(value)) > MAX_EXTRA_FIELD_CHARS:
                raise errors.Invalid(
                    f"{name[:64]} is larger than {MAX_EXTRA_FIELD_CHARS} characters of JSON",
                    field=name[:64],
                )
        return extra


def register_unclaimed(device_id: str) -> dict[str, Any]:
    """The answer for a registered but unclaimed device: exactly two fields.

    Exactly two fields is what tells the agent "registered, not claimed yet" (it retries with
    a growing backoff). ``registered`` is saved in provision.json5 by the agent.
    """
    return {"id": device_id, "registered": True}


class RegisterClaimed(BaseModel):
    """The answer for a claimed device: what the agent saves in provision.json5.

    ``api`` + ``token`` are what make it a claim; the agent then calls
    ``{api}/tok/device/provision``. ``cloudType`` is ``dedicated`` because only then does the
    agent ask for temporary credentials (getCreds) when its keys service is on.
    """

    api: str
    token: str
    id: str
    accountId: str
    cloudType: Literal["dedicated", "hosted"] = "dedicated"
    cloudName: str
    cloudRegion: str
    registered: bool = True


# -- user calls -------------------------------------------------------------------------------


class ClaimRequest(_Body):
    id: ClaimId
    test: StrictBool = False


class ReleaseRequest(_Body):
    id: ClaimId


class GetRequest(_Body):
    id: ClaimId
    accountId: Text | None = None


def _limit(value: Any) -> Any:
    # limit arrives as a JSON number in a body or as text in a query string.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        return int(value)
    return value


class FindRequest(_Body):
    """Body fields and query options of /device/find (the options may come either way).

    ``next`` and ``prev`` are the opaque cursors this face answered with; the vendor's
    object-shaped DynamoDB keys are not accepted (400 naming the field).
    """

    id: ClaimId | None = None
    accountId: Text | None = None
    productId: Text | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_FIND_LIMIT)] = DEFAULT_FIND_LIMIT
    next: Annotated[StrictStr, Field(max_length=MAX_CURSOR_CHARS)] | None = None
    prev: Annotated[StrictStr, Field(max_length=MAX_CURSOR_CHARS)] | None = None
    index: Literal["primary", "gs1"] | None = None

    _limit_text = field_validator("limit", mode="before")(_limit)


class DeviceRecord(BaseModel):
    """The vendor's Device record; dates are ISO-8601 (milliseconds, Z)."""

    accessed: str | None = None
    accountId: str | None = None
    created: str | None = None
    id: str
    product: str | None = None
    productId: str | None = None
    test: bool = False
    version: str | None = None
    checked: str | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class FindAnswer(BaseModel):
    data: list[DeviceRecord]
    next: str | None = None
    prev: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": [d.wire() for d in self.data]}
        if self.next is not None:
            out["next"] = self.next
        if self.prev is not None:
            out["prev"] = self.prev
        return out


# -- device calls -----------------------------------------------------------------------------


class UpdateRequest(BaseModel):
    """The agent's update check: device.json5 as it is, plus ``version`` (its firmware) and
    ``iotoVersion``. A ``version`` that is not text of at most 256 characters is not
    recorded (as on register); the rest is not used."""

    model_config = ConfigDict(extra="allow")

    version: Any = None

    def firmware_version(self) -> str | None:
        version = self.version
        return version if isinstance(version, str) and 0 < len(version) <= MAX_TEXT_CHARS else None


class ActionRequest(_Body):
    """``ioAutomation(name, context)``: the automation to run and its context (JSON)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    context: Any = None


class ProvisionRequest(_Body):
    id: ClaimId


class ProvisionAnswer(BaseModel):
    certificate: str  # PEM
    key: str  # PEM
    endpoint: str  # the MQTT host name (it must be in the server certificate's SANs)
    port: int
    accountId: str
    cloudType: Literal["dedicated", "hosted"] = "dedicated"
    cloudName: str
    cloudRegion: str
    id: str
    thing: str  # the AWS IoT thing name; here the device id


class ProvisionBlocked(BaseModel):
    """Answered with status 200: the agent honours ``delay`` only in a 200 JSON answer."""

    error: str
    delay: Annotated[int, Field(ge=1)]


class CredsAnswer(BaseModel):
    accessKeyId: str
    secretAccessKey: str
    sessionToken: str
    expires: str  # ISO-8601; the agent parses it with rParseIsoDate
    region: str


class SignedUrlRequest(_Body):
    """``{id, command, filename, mimeType, size}``; the agent sends ``size`` as a string."""

    id: ClaimId | None = None
    command: Literal["get", "put", "delete"]
    filename: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    mimeType: Text | None = None
    size: StrictInt | Annotated[StrictStr, Field(max_length=24)] | None = None


@dataclass(frozen=True, slots=True)
class SignedUrlSpec:
    """A checked signed-URL request, in domain terms."""

    action: FileAction
    filename: str
    mime_type: str | None
    size: int | None


def signed_url_spec(body: SignedUrlRequest, *, device_id: str, max_bytes: int) -> SignedUrlSpec:
    """Check a getSignedUrl body for the calling device.

    A ``put`` needs ``size`` (the upload must carry exactly that many bytes) and may name a
    ``mimeType`` (the stored type); ``get`` and ``delete`` ignore both.

    Raises:
        errors.Forbidden: ``id`` names another device.
        errors.Invalid / errors.TooLarge: naming the field.
    """
    if body.id is not None and body.id != device_id:
        raise errors.Forbidden(
            f"device {device_id!r} may not sign URLs for {body.id!r}", field="id"
        )
    filename = parse_filename(body.filename, device_id=device_id)
    action = FileAction(body.command)
    if action is not FileAction.PUT:
        return SignedUrlSpec(action, filename, None, None)
    if body.size is None:
        raise errors.Invalid("size is required for put", field="size")
    size = parse_size(body.size, limit=max_bytes)
    mime = parse_mime_type(body.mimeType) if body.mimeType is not None else None
    return SignedUrlSpec(action, filename, mime, size)


def signed_url_body(url: str) -> bytes:
    """The answer is the URL as a JSON string; the agent strips the quotes."""
    return json.dumps(url).encode("ascii")
