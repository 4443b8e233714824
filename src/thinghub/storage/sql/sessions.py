"""MQTT persistent sessions in SQL: per client id, the adapter's JSON state."""

from __future__ import annotations

from typing import Any

import orjson

from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import dumps

__all__ = ["SqlSessionStore"]


class SqlSessionStore(SqlArea):
    async def save(self, client_id: str, state: dict[str, Any]) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO mqtt_sessions (client_id, subscriptions, updated_at) "
                "VALUES (?,?,?) ON CONFLICT (client_id) DO UPDATE SET "
                "subscriptions = excluded.subscriptions, updated_at = excluded.updated_at",
                (client_id, dumps(state), 0),
            )
        )

    async def load(self, client_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            "SELECT subscriptions FROM mqtt_sessions WHERE client_id = ?", (client_id,)
        )
        return None if row is None else dict(orjson.loads(row[0]))

    async def delete(self, client_id: str) -> None:
        # Every clean-session CONNECT deletes, and almost always finds nothing: a read costs
        # no commit, and the CONNACK waits for this. (Only the client's own connections
        # write its session, and the CONNECT being handled is the newest of them.)
        row = await self.db.fetch_one(
            "SELECT 1 FROM mqtt_sessions WHERE client_id = ?", (client_id,)
        )
        if row is None:
            return
        await self._write(
            Step("exec", "DELETE FROM mqtt_sessions WHERE client_id = ?", (client_id,))
        )
