"""Device files: where a device's files live, what a file grant allows, and the upload rules.

Every device has one folder of files in the account's file store. On the S3-compatible wire
(the Ioto face) the account is the bucket and the device is the first key segment:

    bucket = account id            (a UUID: a valid S3 bucket name, and the agent knows it)
    key    = {device id}/{filename}

A ``FileGrant`` is what a device holds: temporary credentials (any of its own files) or a
signed URL (one file, one action, optionally an exact size and a content type). The grant
is checked for every request; anything outside the device's folder is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from thinghub.domain.errors import Forbidden, Invalid, TooLarge

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "MAX_KEY_BYTES",
    "MAX_MIME_TYPE_CHARS",
    "DeviceFile",
    "FileAction",
    "FileGrant",
    "parse_content_length",
    "parse_filename",
    "parse_mime_type",
    "parse_size",
]

# S3's own limit on an object key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
# The largest upload accepted unless a setting says otherwise: device files are logs, images
# and firmware dumps, not backups; 64 MiB is generous for them and bounds the disk one
# signed URL can fill.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
# RFC 6838 caps type and subtype at 127 characters each.
MAX_MIME_TYPE_CHARS = 255

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MIME_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_DIGITS_RE = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class DeviceFile:
    """A stored file of a device: where it is, what it holds, when it was last written.

    Attributes:
        account_id: the bucket.
        key: ``{device id}/{filename}``, the object key.
        md5_hex: the MD5 of the content (the S3 ETag of a single-part object).
        content_type: the declared media type, None when the upload named none.
        modified_at: when the upload finished (epoch seconds): the time retention counts from.
    """

    account_id: str
    key: str
    device_id: str
    size: int
    md5_hex: str
    content_type: str | None
    modified_at: float

    @property
    def filename(self) -> str:
        return self.key.removeprefix(self.device_id + "/")


class FileAction(StrEnum):
    GET = "get"
    PUT = "put"
    DELETE = "delete"
    LIST = "list"


def parse_filename(value: object, *, device_id: str, field: str = "filename") -> str:
    """Check a file name relative to the device's folder (``a.txt``, ``logs/2025/x.log``).

    Rules: 1 or more characters; no control characters; no empty, ``.`` or ``..`` segment
    (so no leading ``/`` and no ``//``); ``{device_id}/{filename}`` at most MAX_KEY_BYTES
    bytes of UTF-8. Keys are names, never file system paths; a blob store must not use them
    as paths unescaped.

    Raises:
        Invalid: naming the field and the rule.
    """
    if not isinstance(value, str) or not value:
        raise Invalid(f"{field} must be a non-empty string, got {value!r}", field=field)
    if _CONTROL_RE.search(value):
        raise Invalid(f"{field} must not contain control characters", field=field)
    for segment in value.split("/"):
        if segment in ("", ".", ".."):
            raise Invalid(
                f"{field} must not have an empty, '.' or '..' path segment, got {value!r}",
                field=field,
            )
    size = len(device_id.encode()) + 1 + len(value.encode())
    if size > MAX_KEY_BYTES:
        raise Invalid(
            f"{field} is too long: the object key would be {size} bytes, at most {MAX_KEY_BYTES}",
            field=field,
        )
    return value


def parse_mime_type(value: object, field: str = "mimeType") -> str:
    """A ``type/subtype`` media type (parameters such as ``; charset=`` are not accepted).

    Raises:
        Invalid: naming the field.
    """
    if not isinstance(value, str) or not _MIME_RE.fullmatch(value):
        raise Invalid(f"{field} must be a media type like image/jpeg, got {value!r}", field=field)
    return value.lower()


def parse_size(value: object, *, limit: int, field: str = "size") -> int:
    """A byte count given as a JSON number or as a string of digits (the agent sends ``"123"``).

    Raises:
        Invalid: not a whole non-negative number.
        TooLarge: over ``limit``.
    """
    if isinstance(value, bool):
        raise Invalid(f"{field} must be a number of bytes, got {value!r}", field=field)
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()):
        size = int(value.strip())
    else:
        raise Invalid(f"{field} must be a whole number of bytes, got {value!r}", field=field)
    if size < 0:
        raise Invalid(f"{field} must not be negative, got {size}", field=field)
    if size > limit:
        raise TooLarge(f"{field} {size} is over the limit of {limit} bytes", field=field)
    return size


def parse_content_length(value: str | None, *, limit: int) -> int | None:
    """The Content-Length header: None when absent (chunked); TooLarge over ``limit``.

    Raises:
        Invalid: not a number (``field`` is ``Content-Length``).
        TooLarge: over ``limit``.
    """
    if value is None:
        return None
    return parse_size(value, limit=limit, field="Content-Length")


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class FileGrant:
    """What a credential may do with a device's files, until when.

    Attributes:
        account_id, device_id: whose folder; the bucket is the account id.
        actions: what may be done.
        expires_at: epoch seconds; nothing is allowed after it.
        key: when set, only this object (a signed URL); otherwise any key under ``prefix``.
        size: when set, a PUT must carry exactly this many bytes.
        content_type: when set, a PUT's Content-Type, if sent, must be this type; the object
            is stored with it either way.
    """

    account_id: str
    device_id: str
    actions: frozenset[FileAction]
    expires_at: float
    key: str | None = None
    size: int | None = None
    content_type: str | None = None

    @property
    def bucket(self) -> str:
        return self.account_id

    @property
    def prefix(self) -> str:
        return f"{self.device_id}/"

    def key_for(self, filename: str) -> str:
        return self.prefix + filename

    def check(self, action: FileAction, *, bucket: str, key: str, now: float) -> None:
        """Allow ``action`` on ``bucket``/``key`` (for LIST, ``key`` is the listing prefix).

        A listing must name a prefix inside the device's folder, as an IAM policy with an
        ``s3:prefix`` condition would require: ``dev-1/`` or ``dev-1/logs``, not ``dev``.

        Raises:
            Forbidden: expired, another action, another bucket, or a key outside the grant.
        """
        if now > self.expires_at:
            raise Forbidden("the file grant has expired", field="expires")
        if action not in self.actions:
            raise Forbidden(f"this grant does not allow {action.value}", field="action")
        if bucket != self.bucket:
            raise Forbidden(f"bucket {bucket!r} is not this device's bucket", field="bucket")
        if self.key is not None:
            if action is FileAction.LIST or key != self.key:
                raise Forbidden(f"this grant is for {self.key!r} only", field="key")
            return
        if not key.startswith(self.prefix):
            what = "prefix" if action is FileAction.LIST else "key"
            raise Forbidden(
                f"{what} {key!r} is outside this device's folder {self.prefix!r}", field=what
            )

    def check_upload(self, *, content_length: int | None, content_type: str | None) -> str | None:
        """Check a PUT's declared length and type against the grant.

        Returns:
            The content type to store: the grant's, else the request's, else None.

        Raises:
            TooLarge: the length is over the granted size.
            Invalid: the length differs from the granted size, or another content type.
        """
        if self.size is not None and content_length is not None:
            if content_length > self.size:
                raise TooLarge(
                    f"Content-Length {content_length} is over the granted size {self.size}",
                    field="Content-Length",
                )
            if content_length != self.size:
                raise Invalid(
                    f"Content-Length {content_length} is not the granted size {self.size}",
                    field="Content-Length",
                )
        if self.content_type is None:
            return _base_type(content_type) if content_type else None
        if content_type and _base_type(content_type) != self.content_type:
            raise Invalid(
                f"Content-Type {content_type!r} is not the granted type {self.content_type!r}",
                field="Content-Type",
            )
        return self.content_type

    def check_received(self, received: int) -> None:
        """Check the byte count actually received (when there was no Content-Length).

        Raises:
            TooLarge / Invalid: as check_upload.
        """
        self.check_upload(content_length=received, content_type=None)
