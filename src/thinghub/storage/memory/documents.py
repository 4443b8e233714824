"""Named JSON documents per account and kind, in memory."""

from __future__ import annotations

from typing import Any

import orjson

from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import dumps, to_us

__all__ = ["MemoryDocumentStore"]


class MemoryDocumentStore(MemoryArea):
    async def put(self, account_id: str, kind: str, key: str, body: Any, now: float) -> None:
        self.tables.documents[(account_id, kind, key)] = (dumps(body), to_us(now))

    async def get(self, account_id: str, kind: str, key: str) -> Any | None:
        row = self.tables.documents.get((account_id, kind, key))
        return None if row is None else orjson.loads(row[0])

    async def all(self, account_id: str, kind: str) -> list[tuple[str, Any]]:
        found = [
            (key, row[0])
            for (acc, k, key), row in self.tables.documents.items()
            if (acc, k) == (account_id, kind)
        ]
        return [(key, orjson.loads(text)) for key, text in sorted(found)]

    async def delete(self, account_id: str, kind: str, key: str) -> bool:
        return self.tables.documents.pop((account_id, kind, key), None) is not None
