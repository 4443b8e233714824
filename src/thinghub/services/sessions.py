"""MQTT sessions: what a device adapter keeps per client id between connections.

The state is the adapter's own JSON object (subscriptions, the last desired version sent);
this service stores it, so adapters never reach the store themselves.
"""

from __future__ import annotations

from typing import Any

from thinghub.ports import Stores

__all__ = ["SessionService"]


class SessionService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    async def load(self, client_id: str) -> dict[str, Any] | None:
        """The saved state of a persistent session, or None."""
        return await self.stores.sessions.load(client_id)

    async def save(self, client_id: str, state: dict[str, Any]) -> None:
        await self.stores.sessions.save(client_id, state)

    async def delete(self, client_id: str) -> None:
        """End a session (a clean-session CONNECT starts from nothing)."""
        await self.stores.sessions.delete(client_id)
