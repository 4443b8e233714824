"""Wire schemas of the ux4iot face (pydantic, at the edge only), and their domain values.

Each request model checks the JSON structure; its `to_domain()` turns it into grants.Grant /
grants.Subscription and raises domain `Invalid` naming the bad field ("unknown grant type X"),
so every route answers the same 400 body through faces._http. Field names are the seed's
camelCase. Unknown fields are ignored, as the real server does (clients send extra ones).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from thinghub.domain.errors import Invalid
from thinghub.domain.ids import parse_id
from thinghub.domain.twin import validate_patch
from thinghub.faces.ux4iot.grants import (
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    WireProtocol,
    parse_grant_type,
    parse_subscription_type,
)

__all__ = [
    "KEY_HEADER",
    "LOG_LEVELS",
    "MAX_BULK_REQUESTS",
    "MAX_NAME_CHARS",
    "MAX_SESSION_ID_CHARS",
    "SESSION_HEADER",
    "DesiredPropertiesPatchRequest",
    "DirectMethodParams",
    "DirectMethodRequest",
    "GrantRequest",
    "SubscriptionRequest",
    "SubscriptionRequests",
    "parse_body",
    "parse_bulk_subscriptions",
    "parse_log_level",
]

# The two credentials of the REST API (docs/faces/ux4iot.md, "Credentials"). HTTP header names are
# case-insensitive; these are the spellings the clients send.
KEY_HEADER = "Shared-Access-Key"
SESSION_HEADER = "sessionId"

MAX_SESSION_ID_CHARS = 128  # ours are 36-character UUIDs; anything far longer is not one
MAX_NAME_CHARS = 256  # telemetry keys and direct method names
# One call subscribes one page's widgets; react sends one element per telemetry key.
MAX_BULK_REQUESTS = 1_000
# IoT Hub's bounds for direct methods (its docs: response 5..300 s, connect 0..300 s).
MIN_RESPONSE_TIMEOUT_S = 5
MAX_RESPONSE_TIMEOUT_S = 300
MAX_CONNECT_TIMEOUT_S = 300

# `PUT /logLevel/:level` (seed) to Python logging levels; ux4iot's `verbose` sits between
# info and debug, and Python has no level there, so it means debug.
LOG_LEVELS: dict[str, int] = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
}

_SessionId = Annotated[StrictStr, Field(min_length=1, max_length=MAX_SESSION_ID_CHARS)]
_Name = Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GrantRequest(_Body):
    """`PUT /grants` and `DELETE /grants` (the grant is the DELETE body).

    v3+ sends `type`; ux4iot-react 2.0.2 sends `grantType` (subscribeToTelemetry, ...).
    A missing `telemetryKey` / `directMethodName` means null: every key / every method
    (the clients' types mark telemetryKey optional).
    """

    sessionId: _SessionId
    deviceId: StrictStr
    type: StrictStr | None = None
    grantType: StrictStr | None = None
    telemetryKey: _Name | None = None
    directMethodName: _Name | None = None

    def to_domain(self) -> tuple[str, Grant, WireProtocol]:
        """Raises: Invalid: unknown or missing grant type, bad deviceId."""
        if self.type is not None and self.grantType is not None:
            raise Invalid("give either type or grantType, not both", field="grantType")
        if self.type is not None:
            kind, protocol = parse_grant_type(self.type, "type"), WireProtocol.V4
        elif self.grantType is not None:
            kind, protocol = parse_grant_type(self.grantType, "grantType"), WireProtocol.V2
        else:
            raise Invalid("type is required", field="type")
        device_id = parse_id(self.deviceId, "deviceId")
        key = self.telemetryKey if kind is GrantType.TELEMETRY else None
        method = self.directMethodName if kind is GrantType.DIRECT_METHOD else None
        return self.sessionId, Grant(device_id, kind, key, method), protocol


class SubscriptionRequest(_Body):
    """`PUT|DELETE /subscription`, and each element of the bulk calls.

    `sessionId` may be missing only in a bulk call that carries the `sessionId` header.
    `telemetryKey` counts for telemetry only; null or missing subscribes to every key.
    """

    sessionId: _SessionId | None = None
    deviceId: StrictStr
    type: StrictStr
    telemetryKey: _Name | None = None

    def to_domain(
        self, header_session_id: str | None = None, where: str = ""
    ) -> tuple[str, Subscription]:
        """`where` prefixes the field names of errors ("[2]." for the third bulk element).

        Raises:
            Invalid: unknown type, bad deviceId, or no session id at all.
        """
        session_id = self.sessionId if self.sessionId is not None else header_session_id
        if session_id is None:
            raise Invalid(f"{where}sessionId is required", field=f"{where}sessionId")
        kind = parse_subscription_type(self.type, f"{where}type")
        device_id = parse_id(self.deviceId, f"{where}deviceId")
        key = self.telemetryKey if kind is SubscriptionType.TELEMETRY else None
        return session_id, Subscription(device_id, kind, key)


class SubscriptionRequests(_Body):
    """The admin-node form of the bulk calls: `{subscriptionRequests: [...]}` plus the
    `sessionId` header (react sends a bare array instead; parse_bulk_subscriptions takes both)."""

    subscriptionRequests: list[SubscriptionRequest] = Field(max_length=MAX_BULK_REQUESTS)


def parse_bulk_subscriptions(
    body: Any, header_session_id: str | None
) -> list[tuple[str, Subscription]]:
    """`PUT|DELETE /subscriptions` in either body form; every element or none.

    Args:
        body: the decoded JSON body: a list of SubscriptionRequest, or SubscriptionRequests.
        header_session_id: the `sessionId` header, used for elements without one.

    Raises:
        Invalid: any malformed element (naming it, e.g. `subscriptionRequests[2].type`), a
            body of another shape, or more than MAX_BULK_REQUESTS elements.
    """
    if isinstance(body, list):
        items, prefix = body, ""
    elif isinstance(body, dict) and "subscriptionRequests" in body:
        items, prefix = body["subscriptionRequests"], "subscriptionRequests"
        if not isinstance(items, list):
            raise Invalid("subscriptionRequests must be an array", field=prefix)
    else:
        raise Invalid(
            "the body must be an array of subscription requests or {subscriptionRequests: [...]}",
            field="body",
        )
    if len(items) > MAX_BULK_REQUESTS:
        raise Invalid(
            f"at most {MAX_BULK_REQUESTS} subscription requests per call, got {len(items)}",
            field=prefix or "body",
        )
    out = []
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]."
        try:
            request = SubscriptionRequest.model_validate(item)
        except ValidationError as exc:
            raise _invalid(exc, where) from None
        out.append(request.to_domain(header_session_id, where))
    return out


class DirectMethodParams(_Body):
    """azure-iothub's DeviceMethodParams, as the clients pass them through."""

    methodName: _Name
    payload: Any = None
    responseTimeoutInSeconds: (
        Annotated[float, Field(strict=True, ge=MIN_RESPONSE_TIMEOUT_S, le=MAX_RESPONSE_TIMEOUT_S)]
        | None
    ) = None
    connectTimeoutInSeconds: (
        Annotated[float, Field(strict=True, ge=0, le=MAX_CONNECT_TIMEOUT_S)] | None
    ) = None


class DirectMethodRequest(_Body):
    """`POST /directMethod`: `{deviceId, methodParams: {methodName, payload?, ...}}`."""

    deviceId: StrictStr
    methodParams: DirectMethodParams

    def to_domain(self) -> tuple[str, Grant]:
        """The device id and the grant a session needs for this call.

        Raises:
            Invalid: bad deviceId.
        """
        device_id = parse_id(self.deviceId, "deviceId")
        return device_id, Grant(
            device_id, GrantType.DIRECT_METHOD, method_name=self.methodParams.methodName
        )


class DesiredPropertiesPatchRequest(_Body):
    """`PATCH /deviceTwinDesiredProperties`: `{deviceId, desiredPropertyPatch: {...}}`."""

    deviceId: StrictStr
    desiredPropertyPatch: dict[str, Any]

    def to_domain(self) -> tuple[str, dict[str, Any], Grant]:
        """The device id, the checked patch, and the grant a session needs.

        Raises:
            Invalid: bad deviceId, or a patch twins refuse (naming the key).
        """
        device_id = parse_id(self.deviceId, "deviceId")
        patch = validate_patch(self.desiredPropertyPatch, "desiredPropertyPatch")
        return device_id, patch, Grant(device_id, GrantType.DESIRED_PROPERTIES)


_M = TypeVar("_M", bound=BaseModel)


def parse_body(model: type[_M], body: Any) -> _M:
    """A decoded JSON body as `model`.

    Raises:
        Invalid: naming the first bad field ("deviceId is required", "body must be a JSON
            object").
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc, "") from None


def parse_log_level(level: str) -> int:
    """`PUT /logLevel/:level` to a logging level.

    Raises:
        Invalid: naming `level` and the accepted values.
    """
    value = LOG_LEVELS.get(level)
    if value is None:
        raise Invalid(
            f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}",
            field="level",
        )
    return value


def _invalid(exc: ValidationError, where: str) -> Invalid:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    field = (where + loc) if loc else where.rstrip(".")
    if first.get("type") == "missing":
        return Invalid(f"{field} is required", field=field)
    if not loc:
        return Invalid(f"{field or 'body'} must be a JSON object", field=field or "body")
    return Invalid(f"{field}: {first.get('msg', 'invalid')}", field=field)
