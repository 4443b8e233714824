"""The blob port: where the bytes of device files live (their records are in FileStore).

A blob is named by a bucket (the account id) and a key (``{device}/{filename}``). Keys are
names, not paths: an implementation must never use one as a file system path unescaped.
Writes are all or nothing: a writer's bytes replace the blob only when it commits, so a
reader sees the old content or the new, never a part, and an upload that fails leaves
nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["BlobStore", "BlobWriter"]


class BlobWriter(Protocol):
    """One upload: write the bytes in order, then commit (or abort)."""

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None:
        """Make the bytes written the blob's content, replacing what it held."""

    async def abort(self) -> None:
        """Drop what was written; the blob keeps what it held. Safe after commit (no-op)."""


class BlobStore(Protocol):
    def writer(self, bucket: str, key: str) -> BlobWriter:
        """A writer for the blob (nothing changes until it commits)."""

    async def read(self, bucket: str, key: str) -> AsyncIterator[bytes] | None:
        """The blob's content in chunks, or None when there is no such blob."""

    async def delete(self, bucket: str, key: str) -> bool:
        """Remove the blob; False when there was none."""
