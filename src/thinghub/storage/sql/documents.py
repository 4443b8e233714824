"""Named JSON documents per account and kind, in SQL."""

from __future__ import annotations

from typing import Any

import orjson

from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import dumps, to_us

__all__ = ["SqlDocumentStore"]


class SqlDocumentStore(SqlArea):
    async def put(self, account_id: str, kind: str, key: str, body: Any, now: float) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO documents (account_id, kind, key, body, updated_at) "
                "VALUES (?,?,?,?,?) ON CONFLICT (account_id, kind, key) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at",
                (account_id, kind, key, dumps(body), to_us(now)),
            )
        )

    async def get(self, account_id: str, kind: str, key: str) -> Any | None:
        row = await self.db.fetch_one(
            "SELECT body FROM documents WHERE account_id = ? AND kind = ? AND key = ?",
            (account_id, kind, key),
        )
        return None if row is None else orjson.loads(row[0])

    async def all(self, account_id: str, kind: str) -> list[tuple[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT key, body FROM documents WHERE account_id = ? AND kind = ? ORDER BY key",
            (account_id, kind),
        )
        return [(r[0], orjson.loads(r[1])) for r in rows]

    async def delete(self, account_id: str, kind: str, key: str) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "DELETE FROM documents WHERE account_id = ? AND kind = ? AND key = ?",
                (account_id, kind, key),
            )
        )
        return bool(count)
