"""Device file bytes on the local file system (the BlobStore port).

Layout under the root (``<data dir>/files`` unless the ``files_dir`` setting says otherwise):

    {root}/{bucket}/{hh}/{sha256 of the key, hex}     a blob
    {root}/{bucket}/.partial/{random}                 an upload not yet committed

The key never becomes a path: its SHA-256 names the file, so no key (``..``, ``/``, NUL, a
name too long for the file system) can reach outside the bucket's folder, and the records
(FileStore) keep the key itself. The bucket (an account id) is checked against a safe
pattern. An upload is written to a file of its own and renamed over the blob when it
commits (``os.replace``: atomic on one file system), so readers see the old or the new
content, never a part. Blocking file calls run in a thread, in chunks of CHUNK_BYTES.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

__all__ = ["CHUNK_BYTES", "FileBlobStore"]

# Bytes per read and per buffered write handed to a thread.
CHUNK_BYTES = 1024 * 1024
PARTIAL = ".partial"
_BUCKET_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,159}")


def _bucket(bucket: str) -> str:
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(f"not a bucket name: {bucket[:80]!r}")
    return bucket


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, bucket: str, key: str) -> Path:
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / _bucket(bucket) / name[:2] / name

    def writer(self, bucket: str, key: str) -> _FileWriter:
        partial = self.root / _bucket(bucket) / PARTIAL / secrets.token_hex(16)
        return _FileWriter(partial, self.path_of(bucket, key))

    async def read(self, bucket: str, key: str) -> AsyncIterator[bytes] | None:
        path = self.path_of(bucket, key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            return None
        return _chunks(handle)

    async def delete(self, bucket: str, key: str) -> bool:
        path = self.path_of(bucket, key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True


async def _chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


class _FileWriter:
    def __init__(self, partial: Path, final: Path) -> None:
        self._partial = partial
        self._final = final
        self._handle: IO[bytes] | None = None
        self._buffer = bytearray()
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write after commit or abort")
        self._buffer += data
        if len(self._buffer) >= CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        if self._handle is None:
            self._partial.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self._partial.open("xb")
        self._handle.write(data)

    async def commit(self) -> None:
        if self._done:
            raise ValueError("commit after commit or abort")
        await self._flush()
        await asyncio.to_thread(self._commit)
        self._done = True

    def _commit(self) -> None:
        if self._handle is None:  # an empty blob
            self._write(b"")
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._partial, self._final)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            with contextlib.suppress(FileNotFoundError):
                self._partial.unlink()
