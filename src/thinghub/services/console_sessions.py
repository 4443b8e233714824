"""The web console's sign-in sessions and failed sign-ins, kept in the store so that every
node on the database sees them (faces/console/sessions.py says what a session holds).

The face hands this service records that hold no usable secret (the cookie's hash, its
secrets sealed); this service only keeps them, so the face never reaches the store itself.
Nothing is cached: a session ended on one node is gone for the next request on every node.
"""

from __future__ import annotations

from thinghub.ports import StoredConsoleSession, Stores

__all__ = ["ConsoleSessionService"]


class ConsoleSessionService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    async def get(self, key: str) -> StoredConsoleSession | None:
        return await self.stores.console_sessions.get(key)

    async def put(self, session: StoredConsoleSession) -> None:
        await self.stores.console_sessions.put(session)

    async def delete(self, key: str) -> None:
        await self.stores.console_sessions.delete(key)

    async def delete_user(self, user_id: str) -> int:
        """End every session of a user, on every node; returns how many."""
        return await self.stores.console_sessions.delete_user(user_id)

    async def sweep(self, now: float, idle_s: float, keep: int, failed_since: float) -> int:
        """Delete ended sessions (expired, idle), all but the `keep` most recently used, and
        failed sign-ins before `failed_since`; returns the sessions deleted."""
        return await self.stores.console_sessions.sweep(now, idle_s, keep, failed_since)

    async def fail(self, key: str, at: float) -> None:
        await self.stores.console_sessions.fail(key, at)

    async def failures(self, key: str, since: float) -> int:
        return await self.stores.console_sessions.failures(key, since)

    async def forgive(self, key: str) -> None:
        await self.stores.console_sessions.forgive(key)
