"""The web console's sign-in sessions and failed sign-ins, kept in the store so that every
node on the database sees them (faces/console/sessions.py says what a session holds).

The face hands this service records that hold no usable secret (the cookie's hash, its
secrets sealed); this service only keeps them, so the face never reaches the store itself.
Nothing is cached: a session ended on one node is gone for the next request on every node.

The sign-in form stores nothing: its CSRF token is an HMAC under `form_key`, a key derived
from the server's master key (services.master_key), the same on every node.
"""

from __future__ import annotations

import hashlib
import hmac

from thinghub.ports import Clock, StoredConsoleSession, Stores
from thinghub.services.master_key import load_master_key

__all__ = ["ConsoleSessionService"]


# What the sign-in form's key is derived for (HMAC-SHA256 of this, keyed by the master key).
FORM_KEY_PURPOSE = b"thinghub/console-login-form/v1"


class ConsoleSessionService:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock
        self._form_key: bytes | None = None

    async def form_key(self) -> bytes:
        """The key the sign-in form's CSRF tokens are HMACs under (derived from the master
        key, so every node has it; read once, then kept)."""
        if self._form_key is None:
            master = await load_master_key(self.stores, self.clock)
            self._form_key = hmac.new(master, FORM_KEY_PURPOSE, hashlib.sha256).digest()
        return self._form_key

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
