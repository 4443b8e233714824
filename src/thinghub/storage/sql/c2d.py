"""Cloud-to-device messages in SQL, waiting for their device."""

from __future__ import annotations

from thinghub.ports.store import C2DMessage
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import as_c2d, c2d_params

__all__ = ["SqlC2DStore"]


class SqlC2DStore(SqlArea):
    async def enqueue(self, message: C2DMessage) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO c2d_messages (id, device_id, body, properties, created_at, "
                "expires_at) VALUES (?,?,?,?,?,?)",
                c2d_params(message),
            )
        )

    async def pending(self, device_id: str) -> list[C2DMessage]:
        rows = await self.db.fetch_all(
            "SELECT id, device_id, body, properties, created_at, expires_at FROM c2d_messages "
            "WHERE device_id = ? ORDER BY created_at",
            (device_id,),
        )
        return [as_c2d(r) for r in rows]

    async def delete(self, message_id: str) -> None:
        await self._write(Step("exec", "DELETE FROM c2d_messages WHERE id = ?", (message_id,)))
