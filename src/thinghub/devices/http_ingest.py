"""HTTPS device ingest compatible with IoT Hub's device REST API (send device event).

POST /devices/{id}/messages/events?api-version=... (and /devices/{d}/modules/{m}/...) with
`Authorization: SharedAccessSignature sr=...&sig=...&se=...`; message properties come from
`iothub-app-*`, `iothub-messageid`, `iothub-correlationid`, `iothub-contenttype` and
`iothub-contentencoding` headers. Success is 204. Errors use IoT Hub's shape
{"Message": "ErrorCode:<code>;<text>", "ExceptionMessage": ""}.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from thinghub.devices.errors import codes_for
from thinghub.domain import errors
from thinghub.services.core import Services
from thinghub.services.ingest import message_size

__all__ = ["routes"]

logger = logging.getLogger(__name__)


def _error(error: errors.Error) -> Response:
    """IoT Hub's error body, with the status and code name the device-side mapper gives."""
    codes = codes_for(error)
    body = {"Message": f"ErrorCode:{codes.hub_code};{error.message}", "ExceptionMessage": ""}
    return Response(orjson.dumps(body), status_code=codes.status, media_type="application/json")


# Headers whose values are system properties of the message (their size counts).
SYSTEM_HEADERS = ("iothub-messageid", "iothub-correlationid", "iothub-contentencoding")


async def _read_body(request: Request, budget: int, limit: int) -> bytes:
    """The body, or TooLarge as soon as it is over `budget` bytes (a declared Content-Length
    is judged before anything is read; a chunked body after at most one chunk too many)."""
    too_large = errors.TooLarge(
        f"the message is over {limit} bytes with its properties",
        field="body",
    )
    declared = request.headers.get("content-length", "")
    if budget < 0 or (declared.isdigit() and int(declared) > budget):
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > budget:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def routes(services: Services) -> list[Route]:
    auth = services.device_auth
    ingest = services.ingest

    async def send_event(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        module_id = request.path_params.get("module_id")
        try:
            header = request.headers.get("authorization")
            if not header:
                raise errors.Unauthorized("missing Authorization header", field="Authorization")
            device = await auth.with_sas(device_id, module_id, header)
            props = {
                k[len("iothub-app-") :]: v
                for k, v in request.headers.items()
                if k.startswith("iothub-app-")
            }
            content_type = request.headers.get("iothub-contenttype") or (
                request.headers.get("content-type")
            )
            # The properties count toward the message size (ingest.message_size): the body
            # may use what they leave, and reading stops as soon as it is over.
            budget = ingest.max_payload_bytes - message_size(
                b"",
                props,
                (*(request.headers.get(h) for h in SYSTEM_HEADERS), content_type),
            )
            raw = await _read_body(request, budget, ingest.max_payload_bytes)
            message = ingest.build(
                device,
                raw,
                properties=props,
                message_id=request.headers.get("iothub-messageid"),
                correlation_id=request.headers.get("iothub-correlationid"),
                content_type=content_type,
                content_encoding=request.headers.get("iothub-contentencoding"),
                component=props.pop("$.sub", None),
                source="http",
            )
            await ingest.ingest(device, message)
        except errors.Unauthorized as exc:
            # One answer for an unknown id, a disabled device and a bad or expired token, so
            # nobody can learn which device ids exist (the detail goes to the log only).
            logger.info("https ingest for %r refused: %s", device_id, exc.message)
            if exc.field != "Authorization":
                exc = errors.Unauthorized("unknown device or bad credentials", field="deviceId")
            return _error(exc)
        except errors.Error as exc:
            return _error(exc)
        except ClientDisconnect:  # gone (or timed out) before its body arrived: nobody to answer
            return Response(status_code=400)
        return Response(status_code=204)

    return [
        Route("/devices/{device_id}/messages/events", send_event, methods=["POST"]),
        Route(
            "/devices/{device_id}/modules/{module_id}/messages/events", send_event, methods=["POST"]
        ),
    ]
