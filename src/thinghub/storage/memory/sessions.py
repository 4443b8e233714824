"""MQTT persistent sessions in memory: per client id, the adapter's JSON state."""

from __future__ import annotations

from typing import Any

import orjson

from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import dumps

__all__ = ["MemorySessionStore"]


class MemorySessionStore(MemoryArea):
    async def save(self, client_id: str, state: dict[str, Any]) -> None:
        self.tables.sessions[client_id] = dumps(state)

    async def load(self, client_id: str) -> dict[str, Any] | None:
        text = self.tables.sessions.get(client_id)
        return None if text is None else dict(orjson.loads(text))

    async def delete(self, client_id: str) -> None:
        self.tables.sessions.pop(client_id, None)
