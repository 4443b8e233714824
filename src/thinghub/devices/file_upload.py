"""IoT Hub file upload over HTTPS, onto thinghub's device files.

The three calls a device SDK's `upload_to_blob` makes:

1. POST /devices/{id}/files {"blobName"} (SAS-authenticated like the other device routes):
   answered 200 `{"correlationId", "hostName", "containerName", "blobName", "sasToken"}`;
   the blob name is `{deviceId}/{blobName}`, the container BLOB_CONTAINER.
2. PUT https://{hostName}/{containerName}/{blobName}{sasToken}: the bytes, as Azure Blob
   Storage's Put Blob (`x-ms-blob-type: BlockBlob`) takes them: 201 with `ETag`,
   `Last-Modified` and `Content-MD5`. Errors are Blob Storage's XML `<Error><Code>...`.
3. POST /devices/{id}/files/notifications {"correlationId", "isSuccess", "statusCode",
   "statusDescription"}: 204.

The file is the device's file as an Ioto upload makes it (services/files.py): the same
bucket, record, size limit and retention, listed at GET /v1/devices/{id}/files. The SAS
token is a FileGrant for that one key, sealed by the FileService's credential issuer
(`skoid` the access key id, `sig` the session token), so any node can check it; the
correlation id is the same pair.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from thinghub.devices.http_ingest import (
    authenticated_device,
    hub_error,
    read_small_body,
    refused,
)
from thinghub.domain import errors
from thinghub.domain.device_files import FileAction, FileGrant, parse_filename
from thinghub.domain.ids import new_uuid
from thinghub.security.aws_credentials import CredentialError, OpenedCredentials
from thinghub.services.core import Services
from thinghub.services.files import FileService

__all__ = ["BLOB_CONTAINER", "routes"]

logger = logging.getLogger(__name__)

BLOB_CONTAINER = "device-files"  # the container every upload URL names (a path of ours)
BLOB_API_VERSION = "2020-10-02"  # the x-ms-version answered
MAX_REQUEST_BYTES = 16 * 1024  # a blob name or a notification


async def _json_object(request: Request) -> dict[str, object]:
    """The request's JSON object body.

    Raises:
        Invalid: not a JSON object; TooLarge: over MAX_REQUEST_BYTES.
    """
    raw = await read_small_body(request, MAX_REQUEST_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise errors.Invalid("the request body is not valid JSON", field="body") from None
    if not isinstance(body, dict):
        raise errors.Invalid("the request body is not a JSON object", field="body")
    return body


def _open(files: FileService, correlation: str) -> OpenedCredentials:
    """The grant a correlation id (or a SAS token's `skoid.sig`) carries.

    Raises:
        CredentialError: not one of ours, or expired.
    """
    access_key_id, _, session_token = correlation.partition(".")
    return files.issuer.open(access_key_id, session_token or None, now=files.clock.now())


def _create(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """POST /devices/{id}/files: where to upload a blob, and the SAS token to do it with."""
    auth, files = services.device_auth, services.files

    async def create(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        try:
            device = await authenticated_device(auth, request)
            body = await _json_object(request)
            filename = parse_filename(body.get("blobName"), device_id=device.id, field="blobName")
            now = files.clock.now()
            key = f"{device.id}/{filename}"
            grant = FileGrant(
                device.account_id,
                device.id,
                frozenset({FileAction.PUT}),
                int(now + files.signed_url_ttl_s),
                key,
            )
            creds = files.issuer.issue(grant, region=files.region, now=now)
        except errors.Unauthorized as exc:
            return refused(device_id, exc)
        except errors.Error as exc:
            return hub_error(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        expiry = datetime.fromtimestamp(grant.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sas = urllib.parse.urlencode(
            {
                "sv": BLOB_API_VERSION,
                "sr": "b",
                "sp": "cw",
                "se": expiry,
                "skoid": creds.access_key_id,
                "sig": creds.session_token,
            }
        )
        answer = {
            "correlationId": f"{creds.access_key_id}.{creds.session_token}",
            "hostName": request.headers.get("host", ""),
            "containerName": BLOB_CONTAINER,
            "blobName": key,
            "sasToken": f"?{sas}",
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    return create


def _notify(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """POST /devices/{id}/files/notifications[/{correlationId}]: the device says how its
    upload went (logged; the file is there or not either way)."""
    auth, files = services.device_auth, services.files

    async def notify(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        try:
            device = await authenticated_device(auth, request)
            body = await _json_object(request)
            correlation = body.get("correlationId") or request.path_params.get("correlation_id")
            if not isinstance(correlation, str):
                raise errors.Invalid("correlationId is required", field="correlationId")
            try:
                grant = _open(files, correlation).grant
            except CredentialError:
                grant = None
            if grant is None or grant.device_id != device.id:
                raise errors.Invalid("unknown correlationId", field="correlationId")
        except errors.Unauthorized as exc:
            return refused(device_id, exc)
        except errors.Error as exc:
            return hub_error(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        logger.info(
            "device %s: upload of %r %s (%s %s)",
            device.id,
            grant.key,
            "succeeded" if body.get("isSuccess") is True else "failed",
            body.get("statusCode"),
            body.get("statusDescription"),
        )
        return Response(status_code=204)

    return notify


def _storage_error(status: int, code: str, message: str) -> Response:
    """Azure Blob Storage's error body."""
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return Response(
        xml.encode(),
        status_code=status,
        media_type="application/xml",
        headers={"x-ms-error-code": code, "x-ms-version": BLOB_API_VERSION},
    )


def _put_blob(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """PUT /device-files/{deviceId}/{blobName}?...&skoid=...&sig=...: Put Blob."""
    files = services.files

    async def put_blob(request: Request) -> Response:
        key = request.path_params["key"]
        query = request.query_params
        try:
            opened = _open(files, f"{query.get('skoid', '')}.{query.get('sig', '')}")
        except CredentialError as exc:
            return _storage_error(403, "AuthenticationFailed", exc.reason)
        blob_type = request.headers.get("x-ms-blob-type", "BlockBlob")
        if blob_type != "BlockBlob":
            return _storage_error(400, "InvalidHeaderValue", "only BlockBlob is supported")
        declared = request.headers.get("content-length")
        try:
            record = await files.put(
                opened.grant,
                opened.grant.bucket,
                key,
                request.stream(),
                content_length=int(declared) if declared and declared.isdigit() else None,
                content_type=request.headers.get("x-ms-blob-content-type")
                or request.headers.get("content-type"),
            )
        except errors.Forbidden as exc:
            return _storage_error(403, "AuthorizationPermissionMismatch", exc.message)
        except errors.TooLarge as exc:
            return _storage_error(413, "RequestBodyTooLarge", exc.message)
        except errors.Error as exc:
            return _storage_error(400, "InvalidInput", exc.message)
        except ClientDisconnect:
            return Response(status_code=400)
        md5 = bytes.fromhex(record.md5_hex)
        modified = datetime.fromtimestamp(record.modified_at, UTC)
        return Response(
            status_code=201,
            headers={
                "ETag": f'"0x{record.md5_hex[:16].upper()}"',
                "Last-Modified": format_datetime(modified, usegmt=True),
                "Content-MD5": base64.b64encode(md5).decode(),
                "x-ms-request-server-encrypted": "false",
                "x-ms-request-id": new_uuid(),
                "x-ms-version": BLOB_API_VERSION,
            },
        )

    return put_blob


def routes(services: Services) -> list[Route]:
    notify = _notify(services)
    return [
        Route("/devices/{device_id}/files", _create(services), methods=["POST"]),
        Route("/devices/{device_id}/files/notifications", notify, methods=["POST"]),
        Route(
            "/devices/{device_id}/files/notifications/{correlation_id}", notify, methods=["POST"]
        ),
        Route(f"/{BLOB_CONTAINER}/{{key:path}}", _put_blob(services), methods=["PUT"]),
    ]
