"""Sans-IO decoder of ``aws-chunked`` bodies with an unsigned checksum trailer.

botocore 1.36 and later upload PutObject bodies over HTTPS as
``x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`` with
``Content-Encoding: aws-chunked``: the body is a series of chunks followed by trailers:

    <hex size>\\r\\n<size bytes>\\r\\n ... 0\\r\\n<name>:<value>\\r\\n ... \\r\\n

The trailer (named up front by ``x-amz-trailer``) is a checksum of the decoded data, e.g.
``x-amz-checksum-crc32:<base64 of the big-endian CRC-32>``. Chunks are not signed in this
mode (the signed-chunk modes are refused in ``security.sigv4``). The decoder takes bytes in
and gives decoded bytes out; ``finish`` checks the length and the checksum.

Supported checksums: CRC-32 (botocore's default), SHA-1 and SHA-256. CRC-32C and CRC-64/NVME
need native code; a request naming them is refused before its body is read.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable
from typing import Protocol

__all__ = ["CHECKSUM_TRAILERS", "AwsChunkedDecoder", "AwsChunkedError"]

MAX_CHUNK_HEADER_BYTES = 4096  # "<hex>;chunk-signature=<64 hex>\r\n" is < 100 bytes
MAX_TRAILER_BYTES = 4096
MAX_TRAILERS = 4
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,16}")


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


CHECKSUM_TRAILERS: dict[str, Callable[[], _Hash]] = {
    "x-amz-checksum-crc32": _Crc32,
    "x-amz-checksum-sha1": hashlib.sha1,
    "x-amz-checksum-sha256": hashlib.sha256,
}


class AwsChunkedError(ValueError):
    """A malformed or inconsistent aws-chunked body; ``code`` is the S3 error code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class AwsChunkedDecoder:
    """Decode one aws-chunked body.

    Args:
        trailer: the ``x-amz-trailer`` header value (lower-cased), or None.
        decoded_length: ``x-amz-decoded-content-length``, when given.
        max_bytes: refuse more decoded data than this (``EntityTooLarge``).

    Raises:
        AwsChunkedError: ``NotImplemented`` for a checksum this decoder cannot compute.
    """

    def __init__(self, *, trailer: str | None, decoded_length: int | None, max_bytes: int) -> None:
        self._checksum_name = trailer.strip().lower() if trailer else None
        self._hash: _Hash | None = None
        if self._checksum_name is not None:
            factory = CHECKSUM_TRAILERS.get(self._checksum_name)
            if factory is None:
                raise AwsChunkedError(
                    "NotImplemented",
                    f"the checksum trailer {self._checksum_name!r} is not supported; use "
                    + ", ".join(sorted(CHECKSUM_TRAILERS)),
                )
            self._hash = factory()
        self._decoded_length = decoded_length
        self._max_bytes = max_bytes
        self._buffer = b""
        self._state = "size"  # size | data | data-crlf | trailers | done
        self._remaining = 0
        self._received = 0
        self.trailers: dict[str, str] = {}

    @property
    def received(self) -> int:
        return self._received

    @property
    def is_done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> bytes:
        """Add encoded bytes; return the decoded bytes they complete (maybe none)."""
        if self._state == "done" and data:
            raise AwsChunkedError("IncompleteBody", "data after the end of the aws-chunked body")
        self._buffer += data
        out: list[bytes] = []
        while True:
            if self._state == "size":
                line = self._line(MAX_CHUNK_HEADER_BYTES)
                if line is None:
                    break
                size_text = line.split(b";", 1)[0].strip()
                if not _HEX_RE.fullmatch(size_text):
                    raise AwsChunkedError("IncompleteBody", "malformed aws-chunked chunk size")
                self._remaining = int(size_text, 16)
                self._state = "data" if self._remaining else "trailers"
            elif self._state == "data":
                if not self._buffer:
                    break
                piece = self._buffer[: self._remaining]
                self._buffer = self._buffer[len(piece) :]
                self._remaining -= len(piece)
                self._count(piece)
                out.append(piece)
                if self._remaining == 0:
                    self._state = "data-crlf"
            elif self._state == "data-crlf":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise AwsChunkedError("IncompleteBody", "chunk data is longer than its size")
                self._buffer = self._buffer[2:]
                self._state = "size"
            elif self._state == "trailers":
                line = self._line(MAX_TRAILER_BYTES)
                if line is None:
                    break
                if not line:
                    self._state = "done"
                    if self._buffer:
                        raise AwsChunkedError(
                            "IncompleteBody", "data after the end of the aws-chunked body"
                        )
                    break
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep or len(self.trailers) >= MAX_TRAILERS:
                    raise AwsChunkedError("IncompleteBody", "malformed aws-chunked trailer")
                self.trailers[name.strip().lower()] = value.strip()
            else:
                break
        return b"".join(out)

    def finish(self) -> None:
        """Check that the body ended, its length and its checksum.

        Raises:
            AwsChunkedError: ``IncompleteBody`` (truncated, wrong decoded length),
                ``InvalidRequest`` (the announced trailer is missing), ``BadDigest``.
        """
        if self._state != "done":
            raise AwsChunkedError("IncompleteBody", "the aws-chunked body ended early")
        if self._decoded_length is not None and self._received != self._decoded_length:
            raise AwsChunkedError(
                "IncompleteBody",
                f"decoded {self._received} bytes, x-amz-decoded-content-length says "
                f"{self._decoded_length}",
            )
        if self._checksum_name is None or self._hash is None:
            return
        sent = self.trailers.get(self._checksum_name)
        if sent is None:
            raise AwsChunkedError(
                "InvalidRequest", f"the announced trailer {self._checksum_name} is missing"
            )
        if base64.b64encode(self._hash.digest()).decode("ascii") != sent:
            raise AwsChunkedError(
                "BadDigest", f"the {self._checksum_name} you specified did not match the body"
            )

    def _line(self, limit: int) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > limit:
                raise AwsChunkedError("IncompleteBody", "aws-chunked header line too long")
            return None
        if end > limit:
            raise AwsChunkedError("IncompleteBody", "aws-chunked header line too long")
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _count(self, piece: bytes) -> None:
        self._received += len(piece)
        if self._received > self._max_bytes:
            raise AwsChunkedError(
                "EntityTooLarge",
                f"Your proposed upload exceeds the maximum allowed size of {self._max_bytes}",
            )
        if self._hash is not None:
            self._hash.update(piece)
