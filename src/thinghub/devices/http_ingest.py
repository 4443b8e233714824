"""HTTPS device API compatible with IoT Hub's device REST API.

POST /devices/{id}/messages/events?api-version=... (and /devices/{d}/modules/{m}/...) with
`Authorization: SharedAccessSignature sr=...&sig=...&se=...`; message properties come from
`iothub-app-*`, `iothub-messageid`, `iothub-correlationid`, `iothub-contenttype` and
`iothub-contentencoding` headers, or, for a batch (application/vnd.microsoft.iothub.json),
from each element's `properties`. Success is 204. Cloud-to-device messages are polled:
GET /devices/{id}/messages/deviceBound, settled by DELETE .../{etag} (complete; `?reject`
rejects) or POST .../{etag}/abandon. Errors use IoT Hub's shape
{"Message": "ErrorCode:<code>;<text>", "ExceptionMessage": ""}.

The device route (not the module one) is also a FastEndpoint (thinghub.fast_path): requests
to it skip the root app's router and middleware; the handler is the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Literal

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from thinghub.devices.errors import codes_for
from thinghub.domain import errors
from thinghub.domain.clock import format_ts
from thinghub.domain.json_depth import check_depth
from thinghub.domain.model import Device
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.fast_path import FastEndpoint
from thinghub.services.core import Services
from thinghub.services.device_auth import DeviceAuth
from thinghub.services.ingest import IngestService, message_size

__all__ = ["authenticated_device", "fast_endpoints", "hub_error", "refused", "routes"]

logger = logging.getLogger(__name__)


def hub_error(error: errors.Error) -> Response:
    """IoT Hub's error body, with the status and code name the device-side mapper gives; the
    code name also in the `iothub-errorcode` header, where the .NET SDK looks first."""
    codes = codes_for(error)
    body = {"Message": f"ErrorCode:{codes.hub_code};{error.message}", "ExceptionMessage": ""}
    return Response(
        orjson.dumps(body),
        status_code=codes.status,
        media_type="application/json",
        headers={"iothub-errorcode": codes.hub_code},
    )


APP_PREFIX = "iothub-app-"  # headers whose values are the message's application properties
APP_PREFIX_BYTES = APP_PREFIX.encode()
# Headers whose values are system properties of the message (their size counts).
SYSTEM_HEADERS = ("iothub-messageid", "iothub-correlationid", "iothub-contentencoding")


def _too_large(limit: int) -> errors.TooLarge:
    return errors.TooLarge(f"the message is over {limit} bytes with its properties", field="body")


async def _read_capped(request: Request, declared: str, budget: int) -> bytes | None:
    """The body, or None as soon as it is over `budget` bytes (a `declared` Content-Length
    is judged before anything is read; a chunked body after at most one chunk too many)."""
    if budget < 0 or (declared.isdigit() and int(declared) > budget):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > budget:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_body(request: Request, declared: str, budget: int, limit: int) -> bytes:
    """The message body within `budget` bytes, or TooLarge naming the message `limit`."""
    body = await _read_capped(request, declared, budget)
    if body is None:
        raise _too_large(limit)
    return body


async def read_small_body(request: Request, limit: int) -> bytes:
    """A small request body (a registration, a blob name, a notification), or TooLarge as
    soon as it is over `limit` bytes."""
    body = await _read_capped(request, request.headers.get("content-length", ""), limit)
    if body is None:
        raise errors.TooLarge(f"the request is over {limit} bytes", field="body")
    return body


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name, the first of repeated ones (as Starlette's
    `Headers.get` gives them), read once."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}


BATCH_CONTENT_TYPE = "application/vnd.microsoft.iothub.json"


def _batch_messages(ingest: IngestService, device: Device, raw: bytes) -> list[TelemetryMessage]:
    """The messages of a batch body, as the device SDKs' HTTPS transports write it: a JSON
    array of `{"body": <text>, "base64Encoded": <bool>, "properties": {<header>: <value>}}`,
    the body base64 unless `base64Encoded` is false, the properties named as the headers of a
    single message are (`iothub-app-<name>`, `iothub-messageid`, ...).

    Raises:
        Invalid: not such an array, or nested deeper than a message may be; TooLarge: a
            message over the size limit.
    """
    # The array and its objects around each body: a body may nest as deep as one sent alone.
    check_depth(raw, ingest.max_json_depth + 2, "body")
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.Invalid("a batch is a JSON array of messages", field="body") from None
    if not isinstance(items, list) or not items:
        raise errors.Invalid("a batch is a non-empty JSON array of messages", field="body")
    messages = []
    for index, item in enumerate(items):
        where = f"message {index} of the batch"
        if not isinstance(item, dict) or "body" not in item:
            raise errors.Invalid(f"{where} is not an object with a body", field="body")
        body, encoded, properties = item["body"], item.get("base64Encoded"), item.get("properties")
        if encoded is None or encoded is True:  # base64 unless it says not (.NET leaves it out)
            if not isinstance(body, str):
                raise errors.Invalid(f"{where}: a base64 body is a string", field="body")
            try:
                payload = base64.b64decode(body, validate=True)
            except binascii.Error:
                raise errors.Invalid(f"{where}: the body is not base64", field="body") from None
        elif encoded is False:
            payload = body.encode() if isinstance(body, str) else orjson.dumps(body)
        else:
            raise errors.Invalid(f"{where}: base64Encoded is true or false", field="body")
        if properties is None:
            properties = {}
        if not isinstance(properties, dict) or not all(
            isinstance(value, str) for value in properties.values()
        ):
            raise errors.Invalid(f"{where}: properties map names to strings", field="body")
        lowered = {name.lower(): value for name, value in properties.items()}
        app = {  # a property's name keeps its case here (a header's cannot)
            name[len(APP_PREFIX) :]: value
            for name, value in properties.items()
            if name.lower().startswith(APP_PREFIX)
        }
        messages.append(
            ingest.build(
                device,
                payload,
                properties=app,
                message_id=lowered.get("iothub-messageid"),
                correlation_id=lowered.get("iothub-correlationid"),
                content_type=lowered.get("iothub-contenttype"),
                content_encoding=lowered.get("iothub-contentencoding"),
                component=app.pop("$.sub", None),
                source="http",
            )
        )
    return messages


async def _send_batch(ingest: IngestService, device: Device, raw: bytes) -> None:
    """Store every message of a batch (each as a single message is), in order; every one is
    built and checked (shape, sizes, ids) before any is stored."""
    messages = _batch_messages(ingest, device, raw)
    await asyncio.gather(*(ingest.ingest(device, message) for message in messages))


def _send_event(services: Services) -> Callable[[Request], Awaitable[Response]]:
    auth = services.device_auth
    ingest = services.ingest

    async def send_event(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        module_id = request.path_params.get("module_id")
        try:
            headers = _headers(request.scope)
            header = headers.get("authorization")
            if not header:
                raise errors.Unauthorized("missing Authorization header", field="Authorization")
            device = await auth.with_sas(device_id, module_id, header)
            # In order, so a repeated property keeps its last value (as it always did).
            props = {
                k.decode("latin-1")[len(APP_PREFIX) :]: v.decode("latin-1")
                for k, v in request.scope["headers"]
                if k.startswith(APP_PREFIX_BYTES)
            }
            content_type = headers.get("iothub-contenttype") or headers.get("content-type")
            # The properties count toward the message size (ingest.message_size): the body
            # may use what they leave, and reading stops as soon as it is over.
            budget = ingest.max_payload_bytes - message_size(
                b"",
                props,
                (*(headers.get(h) for h in SYSTEM_HEADERS), content_type),
            )
            raw = await _read_body(
                request, headers.get("content-length", ""), budget, ingest.max_payload_bytes
            )
            if content_type is not None and content_type.startswith(BATCH_CONTENT_TYPE):
                await _send_batch(ingest, device, raw)
            else:
                message = ingest.build(
                    device,
                    raw,
                    properties=props,
                    message_id=headers.get("iothub-messageid"),
                    correlation_id=headers.get("iothub-correlationid"),
                    content_type=content_type,
                    content_encoding=headers.get("iothub-contentencoding"),
                    component=props.pop("$.sub", None),
                    source="http",
                )
                await ingest.ingest(device, message)
        except errors.Unauthorized as exc:
            return refused(device_id, exc)
        except errors.Error as exc:
            return hub_error(exc)
        except ClientDisconnect:  # gone (or timed out) before its body arrived: nobody to answer
            return Response(status_code=400)
        return Response(status_code=204)

    return send_event


def refused(device_id: str, exc: errors.Unauthorized) -> Response:
    """One answer for an unknown id, a disabled device and a bad or expired token, so nobody
    can learn which device ids exist (the detail goes to the log only)."""
    logger.info("https request of %r refused: %s", device_id, exc.message)
    if exc.field != "Authorization":
        exc = errors.Unauthorized("unknown device or bad credentials", field="deviceId")
    return hub_error(exc)


async def authenticated_device(auth: DeviceAuth, request: Request) -> Device:
    """The device the request's SAS token signs for (its path's device).

    Raises:
        Unauthorized: no, a bad or an expired token; an unknown or disabled device.
    """
    header = request.headers.get("authorization")
    if not header:
        raise errors.Unauthorized("missing Authorization header", field="Authorization")
    return await auth.with_sas(request.path_params["device_id"], None, header)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # printable ASCII: no CR, LF or NUL


def _receive(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """GET /devices/{id}/messages/deviceBound: the next cloud-to-device message, locked to
    this receiver until settled (200, its lock token the quoted ETag), or 204 when none
    waits (IoT Hub's HTTPS receive, as the SDKs' HTTPS transports poll it)."""
    auth, c2d = services.device_auth, services.c2d

    async def receive(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        try:
            device = await authenticated_device(auth, request)
            received = await c2d.receive(device.id)
        except errors.Unauthorized as exc:
            return refused(device_id, exc)
        except errors.Error as exc:
            return hub_error(exc)
        if received is None:
            return Response(status_code=204)
        message = received.message
        headers = {
            "ETag": f'"{received.lock_token}"',
            "iothub-messageid": message.id,
            "iothub-to": f"/devices/{device_id}/messages/deviceBound",
            "iothub-deliverycount": str(received.delivery_count),
            "iothub-enqueuedtime": format_ts(message.created_at),
            "iothub-expiry": format_ts(message.expires_at),
        }
        for name, value in message.properties.items():
            # Only what a header can carry as it is: a property that is not stays out.
            if _HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value):
                headers[f"{APP_PREFIX}{name}"] = value
        return Response(message.body, status_code=200, headers=headers)

    return receive


def _settle(
    services: Services, outcome: Literal["complete", "reject", "abandon"] | None
) -> Callable[[Request], Awaitable[Response]]:
    """DELETE /devices/{id}/messages/deviceBound/{etag} (complete, or reject with `?reject`)
    and POST .../{etag}/abandon: 204, or 412 DeviceMessageLockLost when the lock is gone."""
    auth, c2d = services.device_auth, services.c2d

    async def settle(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        lock_token = request.path_params["etag"].strip('"')
        action = outcome or ("reject" if "reject" in request.query_params else "complete")
        try:
            device = await authenticated_device(auth, request)
            await c2d.settle(device.id, lock_token, action)
        except errors.Unauthorized as exc:
            return refused(device_id, exc)
        except errors.Error as exc:
            return hub_error(exc)
        return Response(status_code=204)

    return settle


DEVICE_PREFIX = "/devices/"
EVENTS_SUFFIX = "/messages/events"


def _device_events(path: str) -> dict[str, str] | None:
    """The path parameters of `/devices/{device_id}/messages/events`, as Starlette's router
    matches that route (an id is one non-empty path segment), or None."""
    if path.startswith(DEVICE_PREFIX) and path.endswith(EVENTS_SUFFIX):
        device_id = path[len(DEVICE_PREFIX) : -len(EVENTS_SUFFIX)]
        if device_id and "/" not in device_id:
            return {"device_id": device_id}
    return None


def fast_endpoints(services: Services) -> list[FastEndpoint]:
    """The device route of `routes`, for thinghub.fast_path."""
    send_event = _send_event(services)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await send_event(Request(scope, receive))
        await response(scope, receive, send)

    return [FastEndpoint("POST", _device_events, app)]


def routes(services: Services) -> list[Route]:
    send_event = _send_event(services)
    receive, complete = _receive(services), _settle(services, None)
    abandon = _settle(services, "abandon")
    # IoT Hub takes the C2D path in any case; the SDKs write `deviceBound` or `devicebound`.
    c2d = [
        route
        for bound in ("deviceBound", "devicebound")
        for route in (
            Route(f"/devices/{{device_id}}/messages/{bound}", receive, methods=["GET"]),
            Route(
                f"/devices/{{device_id}}/messages/{bound}/{{etag}}", complete, methods=["DELETE"]
            ),
            Route(
                f"/devices/{{device_id}}/messages/{bound}/{{etag}}/abandon",
                abandon,
                methods=["POST"],
            ),
        )
    ]
    return [
        *c2d,
        Route("/devices/{device_id}/messages/events", send_event, methods=["POST"]),
        Route(
            "/devices/{device_id}/modules/{module_id}/messages/events", send_event, methods=["POST"]
        ),
    ]
