"""The S3-compatible file endpoint's wire: addressing, operations, ListObjectsV2 and error XML.

Pure functions, no I/O. The endpoint serves exactly what a device's temporary credentials
may do (``domain.device_files``): PutObject, GetObject, HeadObject, DeleteObject,
ListObjectsV2 and HeadBucket, path-style only (``{mount}/{bucket}/{key}``). Anything else
is answered ``NotImplemented`` (501), as S3 answers features it does not have.

Shapes follow the Amazon S3 API reference (ListObjectsV2, Error responses); botocore's own
response parser reads them in the unit tests.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from enum import StrEnum
from urllib.parse import quote, unquote_to_bytes
from xml.etree import ElementTree as ET

from thinghub.domain.device_files import MAX_KEY_BYTES
from thinghub.domain.errors import Error, Forbidden, Invalid, NotFound, TooLarge
from thinghub.security.aws_credentials import CredentialError
from thinghub.security.sigv4 import SigV4Error

__all__ = [
    "DEFAULT_MAX_KEYS",
    "ERROR_STATUS",
    "REQUEST_ID_HEADER",
    "S3_NAMESPACE",
    "ListPage",
    "ListRequest",
    "ObjectInfo",
    "Operation",
    "S3Address",
    "S3Error",
    "check_put_headers",
    "error_xml",
    "etag",
    "format_last_modified",
    "from_credentials",
    "from_domain",
    "from_sigv4",
    "http_date",
    "list_page",
    "list_result_xml",
    "object_headers",
    "operation_of",
    "parse_list_request",
    "parse_path",
]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
# Every S3 answer names its request in this header (SDKs read the id from it, not the body).
REQUEST_ID_HEADER = "x-amz-request-id"
DEFAULT_MAX_KEYS = 1000  # S3's default and maximum page size
MAX_DELIMITER_CHARS = 64
MAX_TOKEN_CHARS = 2048

# The status S3 answers each error code with (Amazon S3 API reference, "Error responses").
ERROR_STATUS: Mapping[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidRequest": 400,
    "InvalidToken": 400,
    "InvalidURI": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NotImplemented": 501,
    "RequestTimeTooSkewed": 403,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}

# Bucket names as S3 allows them for new buckets: 3-63 characters of a-z 0-9 . -, starting
# and ending with a letter or digit. An account id (a UUID) is one.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Sub-resources this endpoint does not implement; S3 would act on them, so they must not be
# mistaken for a plain GetObject or PutObject.
_UNSUPPORTED_SUBRESOURCES = frozenset(
    {
        "acl", "attributes", "cors", "delete", "lifecycle", "location", "logging",
        "partNumber", "policy", "restore", "retention", "select", "tagging", "torrent",
        "uploadId", "uploads", "versionId", "versioning", "versions", "website",
        "legal-hold", "object-lock", "encryption", "notification", "replication",
    }
)  # fmt: skip


class S3Error(Exception):
    """An S3 error answer: ``code`` picks the status; extra elements go into the XML."""

    def __init__(self, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown S3 error code {code!r}")
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]


def error_xml(error: S3Error, *, resource: str, request_id: str) -> bytes:
    """The error body S3 sends: ``<Error><Code/><Message/>...<Resource/><RequestId/></Error>``."""
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = error.code
    ET.SubElement(root, "Message").text = error.message
    for name, value in error.extra.items():
        ET.SubElement(root, name).text = value
    ET.SubElement(root, "Resource").text = resource
    ET.SubElement(root, "RequestId").text = request_id
    return _document(root)


def from_sigv4(exc: SigV4Error) -> S3Error:
    return S3Error(exc.code, exc.reason)


def from_credentials(exc: CredentialError) -> S3Error:
    messages = {
        "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
        "InvalidToken": "The provided token is malformed or otherwise invalid.",
        "ExpiredToken": "The provided token has expired.",
    }
    return S3Error(exc.code, messages.get(exc.code, exc.reason))


def from_domain(exc: Error, *, key: str | None = None) -> S3Error:
    """Translate a domain error raised while serving an object request."""
    if isinstance(exc, Forbidden):
        return S3Error("AccessDenied", f"Access Denied: {exc.message}")
    if isinstance(exc, TooLarge):
        return S3Error("EntityTooLarge", exc.message)
    if isinstance(exc, NotFound):
        if key is None:
            return S3Error("NoSuchBucket", "The specified bucket does not exist")
        return S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
    if isinstance(exc, Invalid):
        extra = {"ArgumentName": exc.field} if exc.field else {}
        return S3Error("InvalidArgument", exc.message, **extra)
    return S3Error("InvalidRequest", exc.message)


# -- addressing and operations ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Address:
    bucket: str
    key: str | None  # None: the request is on the bucket


def parse_path(raw_path: str, *, mount: str) -> S3Address:
    """Split a path-style request path ``{mount}/{bucket}[/{key}]`` (percent-encoded).

    Raises:
        S3Error: ``InvalidURI`` (outside the mount, bad encoding), ``InvalidBucketName``,
            ``KeyTooLongError``.
    """
    mount = mount.rstrip("/")
    if not raw_path.startswith(mount + "/"):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.")
    rest = raw_path[len(mount) + 1 :]
    raw_bucket, slash, raw_key = rest.partition("/")
    bucket = _decode(raw_bucket)
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", BucketName=bucket)
    if not slash or not raw_key:
        return S3Address(bucket, None)
    key = _decode(raw_key)
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long", MaxSizeAllowed=str(MAX_KEY_BYTES))
    if _CONTROL_RE.search(key):
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.")
    return S3Address(bucket, key)


def _decode(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.") from exc


class Operation(StrEnum):
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"
    PUT_OBJECT = "PutObject"
    DELETE_OBJECT = "DeleteObject"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    HEAD_BUCKET = "HeadBucket"


_OBJECT_METHODS = {
    "GET": Operation.GET_OBJECT,
    "HEAD": Operation.HEAD_OBJECT,
    "PUT": Operation.PUT_OBJECT,
    "DELETE": Operation.DELETE_OBJECT,
}


def operation_of(method: str, address: S3Address, params: Mapping[str, str]) -> Operation:
    """Which S3 operation a request is.

    Args:
        params: the decoded query parameters (the signature's ``X-Amz-*`` may be included).

    Raises:
        S3Error: ``NotImplemented`` for operations this endpoint lacks (ListObjects v1,
            multipart uploads, ACLs, tagging, copies...), ``MethodNotAllowed`` otherwise.
    """
    method = method.upper()
    unsupported = sorted(_UNSUPPORTED_SUBRESOURCES.intersection(params))
    if unsupported:
        raise S3Error(
            "NotImplemented",
            f"A header or query you provided implies functionality that is not implemented: "
            f"{unsupported[0]}",
        )
    if address.key is None:
        if method == "GET":
            if params.get("list-type") != "2":
                raise S3Error("NotImplemented", "Only ListObjectsV2 (list-type=2) is implemented")
            return Operation.LIST_OBJECTS_V2
        if method == "HEAD":
            return Operation.HEAD_BUCKET
        if method in ("PUT", "DELETE"):
            raise S3Error("NotImplemented", "Buckets cannot be created or deleted here")
        raise S3Error("MethodNotAllowed", f"The specified method {method} is not allowed")
    operation = _OBJECT_METHODS.get(method)
    if operation is None:
        raise S3Error("MethodNotAllowed", f"The specified method {method} is not allowed")
    return operation


def check_put_headers(headers: Mapping[str, str]) -> None:
    """Refuse PutObject variants this endpoint does not implement (copies, SSE-C).

    Args:
        headers: lower-case names.

    Raises:
        S3Error: ``NotImplemented`` naming the header.
    """
    for name in ("x-amz-copy-source", "x-amz-server-side-encryption-customer-algorithm"):
        if name in headers:
            raise S3Error("NotImplemented", f"{name} is not implemented")


# -- objects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    md5_hex: str
    last_modified: float
    content_type: str | None = None


def etag(md5_hex: str) -> str:
    """An S3 ETag of a single-part object: its MD5 in lower-case hex, in double quotes."""
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5_hex):
        raise ValueError(f"not an MD5 hex digest: {md5_hex!r}")
    return f'"{md5_hex.lower()}"'


def format_last_modified(ts: float) -> str:
    """``2009-10-12T17:50:30.000Z``, the form ListObjectsV2 uses."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def http_date(ts: float) -> str:
    """``Mon, 12 Oct 2009 17:50:30 GMT`` for the Last-Modified header."""
    return formatdate(ts, usegmt=True)


def object_headers(info: ObjectInfo) -> dict[str, str]:
    """Headers of a GetObject or HeadObject answer."""
    return {
        "ETag": etag(info.md5_hex),
        "Last-Modified": http_date(info.last_modified),
        "Content-Length": str(info.size),
        "Content-Type": info.content_type or "binary/octet-stream",
    }


# -- ListObjectsV2 ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListRequest:
    prefix: str = ""
    delimiter: str | None = None
    max_keys: int = DEFAULT_MAX_KEYS
    continuation_token: str | None = None
    start_after: str | None = None
    encoding_type: str | None = None
    # Where to resume: list keys strictly after `resume_after`; when `skip_prefix` is set,
    # keys starting with it are skipped too (the last page ended on that common prefix).
    resume_after: str = ""
    skip_prefix: str | None = None


def _encode_token(marker: str, *, is_prefix: bool) -> str:
    raw = ("p:" if is_prefix else "k:") + marker
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii")


def _decode_token(token: str) -> tuple[str, bool]:
    bad = S3Error(
        "InvalidArgument",
        "The continuation token provided is incorrect",
        ArgumentName="continuation-token",
    )
    if len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise bad from exc
    if raw[:2] not in ("k:", "p:") or len(raw) < 3:
        raise bad
    return raw[2:], raw[:2] == "p:"


def parse_list_request(params: Mapping[str, str]) -> ListRequest:
    """Read ListObjectsV2's query parameters (decoded).

    Raises:
        S3Error: ``InvalidArgument`` naming the parameter.
    """
    raw_max = params.get("max-keys")
    max_keys = DEFAULT_MAX_KEYS
    if raw_max is not None:
        if not re.fullmatch(r"[0-9]{1,10}", raw_max):
            raise S3Error(
                "InvalidArgument",
                "Provided max-keys not an integer or within integer range",
                ArgumentName="max-keys",
                ArgumentValue=raw_max[:32],
            )
        max_keys = min(int(raw_max), DEFAULT_MAX_KEYS)
    encoding = params.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
        )
    delimiter = params.get("delimiter") or None
    if delimiter is not None and len(delimiter) > MAX_DELIMITER_CHARS:
        raise S3Error("InvalidArgument", "The delimiter is too long", ArgumentName="delimiter")
    prefix = params.get("prefix", "")
    start_after = params.get("start-after") or None
    token = params.get("continuation-token")
    resume_after, skip_prefix = start_after or "", None
    if token is not None:
        marker, is_prefix = _decode_token(token)
        resume_after = max(resume_after, marker)
        skip_prefix = marker if is_prefix else None
    for name, value in (("prefix", prefix), ("start-after", start_after or "")):
        if len(value.encode()) > MAX_KEY_BYTES:
            raise S3Error("InvalidArgument", f"{name} is too long", ArgumentName=name)
    return ListRequest(
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        continuation_token=token,
        start_after=start_after,
        encoding_type=encoding,
        resume_after=resume_after,
        skip_prefix=skip_prefix,
    )


@dataclass(frozen=True, slots=True)
class ListPage:
    contents: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    next_continuation_token: str | None = None
    key_count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_count", len(self.contents) + len(self.common_prefixes))


def list_page(objects: Iterable[ObjectInfo], request: ListRequest) -> ListPage:
    """One page of a listing.

    Args:
        objects: the bucket's objects in ascending key order (UTF-8 byte order, as S3; for
            keys without surrogates that is Python's string order). They may start anywhere
            at or before ``request.resume_after`` and may hold keys outside the prefix; a
            store will usually pass only keys under ``request.prefix`` after
            ``request.resume_after``.

    Each object and each common prefix counts as one of ``max_keys`` entries, as in S3.
    """
    contents: list[ObjectInfo] = []
    prefixes: list[str] = []
    last_marker: tuple[str, bool] | None = None
    limit = request.max_keys
    prefix, delimiter = request.prefix, request.delimiter
    for info in objects:
        key = info.key
        if not key.startswith(prefix) or key <= request.resume_after:
            continue
        if request.skip_prefix is not None and key.startswith(request.skip_prefix):
            continue
        common: str | None = None
        if delimiter is not None:
            at = key.find(delimiter, len(prefix))
            if at >= 0:
                common = key[: at + len(delimiter)]
                if prefixes and prefixes[-1] == common:
                    continue
        if len(contents) + len(prefixes) >= limit:
            token = None
            if last_marker is not None:
                token = _encode_token(last_marker[0], is_prefix=last_marker[1])
            return ListPage(tuple(contents), tuple(prefixes), True, token)
        if common is not None:
            prefixes.append(common)
            last_marker = (common, True)
        else:
            contents.append(info)
            last_marker = (key, False)
    return ListPage(tuple(contents), tuple(prefixes), False)


def _maybe_encode(value: str, request: ListRequest) -> str:
    return quote(value, safe="/") if request.encoding_type == "url" else value


def list_result_xml(bucket: str, request: ListRequest, page: ListPage) -> bytes:
    """The ``ListBucketResult`` body of a ListObjectsV2 answer."""
    root = ET.Element("ListBucketResult", xmlns=S3_NAMESPACE)
    ET.SubElement(root, "Name").text = bucket
    ET.SubElement(root, "Prefix").text = _maybe_encode(request.prefix, request)
    if request.delimiter is not None:
        ET.SubElement(root, "Delimiter").text = _maybe_encode(request.delimiter, request)
    ET.SubElement(root, "MaxKeys").text = str(request.max_keys)
    ET.SubElement(root, "KeyCount").text = str(page.key_count)
    ET.SubElement(root, "IsTruncated").text = "true" if page.is_truncated else "false"
    if request.encoding_type is not None:
        ET.SubElement(root, "EncodingType").text = request.encoding_type
    if request.continuation_token is not None:
        ET.SubElement(root, "ContinuationToken").text = request.continuation_token
    if page.next_continuation_token is not None:
        ET.SubElement(root, "NextContinuationToken").text = page.next_continuation_token
    if request.start_after is not None:
        ET.SubElement(root, "StartAfter").text = _maybe_encode(request.start_after, request)
    for info in page.contents:
        item = ET.SubElement(root, "Contents")
        ET.SubElement(item, "Key").text = _maybe_encode(info.key, request)
        ET.SubElement(item, "LastModified").text = format_last_modified(info.last_modified)
        ET.SubElement(item, "ETag").text = etag(info.md5_hex)
        ET.SubElement(item, "Size").text = str(info.size)
        ET.SubElement(item, "StorageClass").text = "STANDARD"
    for common in page.common_prefixes:
        item = ET.SubElement(root, "CommonPrefixes")
        ET.SubElement(item, "Prefix").text = _maybe_encode(common, request)
    return _document(root)


def _document(root: ET.Element) -> bytes:
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")
