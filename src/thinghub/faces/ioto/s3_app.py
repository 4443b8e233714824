"""The S3-compatible file endpoint at /ioto/s3: signed URLs and temporary credentials at work.

Path-style only: ``/ioto/s3/{bucket}/{key}``, the bucket being the account id and the key
``{device id}/{filename}``. Each request goes through the same steps, whether a presigned URL
(``curl -T file "$URL"``) or an AWS SDK with getCreds credentials signed it:

1. ``sigv4.parse`` reads the signature from the raw path, query and headers as received;
2. the file service opens the session token, checks that the device's claim still holds,
   and verifies the signature (services.files.authenticate);
3. ``s3.parse_path`` and ``s3.operation_of`` name the bucket, key and operation;
4. the file service checks the grant and does the operation; an upload streams to the blob
   store, checked against its signed payload hash (or decoded from ``aws-chunked``), its
   checksum headers and the granted size and type.

Answers are S3's: object bytes, ``ListBucketResult`` XML, or ``<Error>`` XML with S3's status
for the code, every one with an ``x-amz-request-id`` header.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from thinghub.domain.device_files import DeviceFile, FileGrant, parse_content_length
from thinghub.domain.errors import Error
from thinghub.faces.ioto import s3
from thinghub.faces.ioto.aws_chunked import CHECKSUM_TRAILERS, AwsChunkedDecoder, AwsChunkedError
from thinghub.faces.ioto.s3 import ObjectInfo, Operation, S3Address, S3Error
from thinghub.security import sigv4
from thinghub.security.aws_credentials import CredentialError
from thinghub.services.core import Services
from thinghub.services.files import S3_MOUNT

__all__ = ["S3_MOUNT", "S3App"]

logger = logging.getLogger(__name__)

XML = "application/xml"
# Records read per step while a listing collects its page (each common prefix is skipped over).
LIST_BATCH = 1000
# A key sorts before this + anything: the end of a common prefix's run of keys.
_PAST = "\U0010ffff"


class _BodyTracker:
    """Wraps an ASGI `receive` to tell whether the whole request body was read."""

    def __init__(self, receive: Receive, scope: Scope) -> None:
        self._receive = receive
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"0").strip()
        self.is_consumed = b"transfer-encoding" not in headers and length in (b"0", b"")

    async def receive(self) -> Any:
        message = await self._receive()
        if message.get("type") == "http.request" and not message.get("more_body", False):
            self.is_consumed = True
        return message


class S3App:
    """The endpoint as an ASGI app (mounted at S3_MOUNT on the HTTP port)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = _BodyTracker(receive, scope)
        request = Request(scope, body.receive)
        request_id = secrets.token_hex(8).upper()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        try:
            response = await self._handle(request, path)
        except S3Error as exc:
            response = _error(exc, path, request_id)
        except sigv4.SigV4Error as exc:
            response = _error(s3.from_sigv4(exc), path, request_id)
        except CredentialError as exc:
            response = _error(s3.from_credentials(exc), path, request_id)
        except AwsChunkedError as exc:
            response = _error(S3Error(exc.code, exc.reason), path, request_id)
        except Error as exc:
            response = _error(s3.from_domain(exc, key=_key_of(path)), path, request_id)
        response.headers[s3.REQUEST_ID_HEADER] = request_id
        if not body.is_consumed:
            # An answer before the body was read (an error, say): the client may still send
            # it (botocore waits for `100 Continue`, then gives up on it), so the connection
            # cannot carry another request. S3 closes it too.
            response.headers["Connection"] = "close"
        await response(scope, body.receive, send)

    async def _handle(self, request: Request, path: str) -> Response:
        files = self.services.files
        method = request.method.upper()
        query = request.scope.get("query_string", b"").decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        signed = sigv4.parse(method, path, query, headers)
        opened = await files.authenticate(signed)
        address = s3.parse_path(path, mount=S3_MOUNT)
        params = dict(parse_qsl(query, keep_blank_values=True))
        operation = s3.operation_of(method, address, params)
        grant = opened.grant
        lower = {name.lower(): value for name, value in headers}
        if operation is Operation.PUT_OBJECT:
            return await self._put(request, grant, address, signed, lower)
        if operation in (Operation.GET_OBJECT, Operation.HEAD_OBJECT):
            return await self._get(grant, address, head=operation is Operation.HEAD_OBJECT)
        if operation is Operation.DELETE_OBJECT:
            await files.delete(grant, address.bucket, _object_key(address))
            return Response(status_code=204)
        if operation is Operation.LIST_OBJECTS_V2:
            return await self._list(grant, address.bucket, params)
        files.check_bucket(grant, address.bucket)  # HeadBucket
        return Response(status_code=200)

    async def _put(
        self,
        request: Request,
        grant: FileGrant,
        address: S3Address,
        signed: sigv4.SignedRequest,
        headers: dict[str, str],
    ) -> Response:
        files = self.services.files
        s3.check_put_headers(headers)
        limit = files.max_file_bytes
        chunks: AsyncIterator[bytes] = request.stream()
        if signed.is_streaming:
            decoded = headers.get("x-amz-decoded-content-length")
            length = parse_content_length(decoded, limit=limit)
            decoder = AwsChunkedDecoder(
                trailer=headers.get("x-amz-trailer"), decoded_length=length, max_bytes=limit
            )
            chunks = _decoded(chunks, decoder)
        else:
            length = parse_content_length(headers.get("content-length"), limit=limit)
            if signed.payload_sha256 is not None:
                chunks = _checked(chunks, hashlib.sha256, signed.payload_sha256, _sha256_mismatch)
        for name, factory in CHECKSUM_TRAILERS.items():
            sent = headers.get(name)
            if sent is not None and not signed.is_streaming:
                chunks = _checked(chunks, factory, sent, _bad_digest(name), b64=True)
        record = await files.put(
            grant,
            address.bucket,
            _object_key(address),
            chunks,
            content_length=length,
            content_type=headers.get("content-type"),
        )
        return Response(status_code=200, headers={"ETag": s3.etag(record.md5_hex)})

    async def _get(self, grant: FileGrant, address: S3Address, *, head: bool) -> Response:
        files = self.services.files
        key = _object_key(address)
        if head:
            record = await files.head(grant, address.bucket, key)
            return Response(status_code=200, headers=s3.object_headers(_info(record)))
        record, chunks = await files.get(grant, address.bucket, key)
        # The stored type as it is (Starlette would add a charset to a text/* media_type).
        return StreamingResponse(chunks, status_code=200, headers=s3.object_headers(_info(record)))

    async def _list(self, grant: FileGrant, bucket: str, params: dict[str, str]) -> Response:
        """ListObjectsV2: collect enough records for a page, jumping over each common prefix
        (so a folder of a million keys under one prefix costs one read), then let
        s3.list_page cut the page."""
        request = s3.parse_list_request(params)
        files = self.services.files
        collected: list[ObjectInfo] = []
        entries = 0
        after = request.resume_after
        if request.skip_prefix is not None:
            after = max(after, request.skip_prefix + _PAST)
        while entries <= request.max_keys:
            batch = await files.list_keys(
                grant, bucket, prefix=request.prefix, after=after, limit=LIST_BATCH
            )
            if not batch:
                break
            for record in batch:
                collected.append(_info(record))
                entries += 1
                after = record.key
                common = _common_prefix(record.key, request)
                if common is not None:
                    after = common + _PAST  # the rest under this prefix is one entry
                    break
                if entries > request.max_keys:
                    break
            if len(batch) < LIST_BATCH and after == batch[-1].key:
                break
        page = s3.list_page(collected, request)
        body = s3.list_result_xml(bucket, request, page)
        return Response(body, status_code=200, media_type=XML)


def _common_prefix(key: str, request: s3.ListRequest) -> str | None:
    if request.delimiter is None:
        return None
    at = key.find(request.delimiter, len(request.prefix))
    return None if at < 0 else key[: at + len(request.delimiter)]


def _info(record: DeviceFile) -> ObjectInfo:
    return ObjectInfo(
        record.key, record.size, record.md5_hex, record.modified_at, record.content_type
    )


def _object_key(address: S3Address) -> str:
    if address.key is None:  # pragma: no cover - operation_of names object operations only
        raise S3Error("InvalidRequest", "an object operation needs a key")
    return address.key


def _key_of(path: str) -> str | None:
    try:
        return s3.parse_path(path, mount=S3_MOUNT).key
    except S3Error:
        return None


def _error(error: S3Error, path: str, request_id: str) -> Response:
    body = s3.error_xml(error, resource=path, request_id=request_id)
    return Response(body, status_code=error.status, media_type=XML)


async def _decoded(
    chunks: AsyncIterator[bytes], decoder: AwsChunkedDecoder
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        out = decoder.feed(chunk)
        if out:
            yield out
    decoder.finish()


def _sha256_mismatch() -> S3Error:
    return S3Error(
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )


def _bad_digest(name: str) -> Callable[[], S3Error]:
    return lambda: S3Error("BadDigest", f"The {name} you specified did not match the body.")


async def _checked(
    chunks: AsyncIterator[bytes],
    factory: Callable[[], Any],
    expected: str,
    error: Callable[[], S3Error],
    *,
    b64: bool = False,
) -> AsyncIterator[bytes]:
    """Pass the chunks on; after the last, raise `error()` unless their digest is `expected`
    (hex, or base64 with `b64`). Raised before the upload commits, so nothing is stored."""
    digest = factory()
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk
    raw = digest.digest()
    got = base64.b64encode(raw).decode("ascii") if b64 else raw.hex()
    if got != (expected.strip() if b64 else expected.lower()):
        raise error()
