"""Device file bytes in memory (the BlobStore port), for tests and tools without a disk."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["MemoryBlobStore"]

CHUNK_BYTES = 64 * 1024


class MemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}

    def writer(self, bucket: str, key: str) -> _MemoryWriter:
        return _MemoryWriter(self, (bucket, key))

    async def read(self, bucket: str, key: str) -> AsyncIterator[bytes] | None:
        data = self.blobs.get((bucket, key))
        return None if data is None else _chunks(data)

    async def delete(self, bucket: str, key: str) -> bool:
        return self.blobs.pop((bucket, key), None) is not None


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


class _MemoryWriter:
    def __init__(self, store: MemoryBlobStore, name: tuple[str, str]) -> None:
        self._store = store
        self._name = name
        self._parts = bytearray()
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise ValueError("write after commit or abort")
        self._parts += data

    async def commit(self) -> None:
        if self._done:
            raise ValueError("commit after commit or abort")
        self._done = True
        self._store.blobs[self._name] = bytes(self._parts)

    async def abort(self) -> None:
        self._done = True
        self._parts = bytearray()
