"""The console's sessions and failed sign-ins in memory (ports.store.ConsoleSessionStore)."""

from __future__ import annotations

from thinghub.ports.store import StoredConsoleSession
from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import to_us
from thinghub.storage.sql.console_sessions import as_console_session, console_session_params

__all__ = ["MemoryConsoleSessionStore"]

SEEN = 3  # the seen_at column of a row (console_session_params)


class MemoryConsoleSessionStore(MemoryArea):
    async def get(self, key: str) -> StoredConsoleSession | None:
        row = self.tables.console_sessions.get(key)
        return None if row is None else as_console_session(row)

    async def put(self, session: StoredConsoleSession) -> None:
        self.tables.console_sessions[session.key] = console_session_params(session)

    async def delete(self, key: str) -> None:
        self.tables.console_sessions.pop(key, None)

    async def delete_user(self, user_id: str) -> int:
        rows = self.tables.console_sessions
        gone = [key for key, row in rows.items() if row[1] == user_id]
        for key in gone:
            del rows[key]
        return len(gone)

    async def sweep(self, now: float, idle_s: float, keep: int, failed_since: float) -> int:
        rows = self.tables.console_sessions
        now_us, idle_us = to_us(now), to_us(now - idle_s)
        gone = [k for k, r in rows.items() if r[4] <= now_us or r[SEEN] <= idle_us]
        by_seen = sorted((r[SEEN] for k, r in rows.items() if k not in gone), reverse=True)
        if len(by_seen) > keep:
            over = by_seen[keep]
            gone += [k for k, r in rows.items() if r[SEEN] <= over and k not in gone]
        for key in gone:
            del rows[key]
        since = to_us(failed_since)
        failures = self.tables.console_failures
        for key in list(failures):
            failures[key] = {at for at in failures[key] if at > since}
            if not failures[key]:
                del failures[key]
        return len(gone)

    async def fail(self, key: str, at: float) -> None:
        self.tables.console_failures.setdefault(key, set()).add(to_us(at))

    async def failures(self, key: str, since: float) -> int:
        since_us = to_us(since)
        return sum(1 for at in self.tables.console_failures.get(key, ()) if at > since_us)

    async def forgive(self, key: str) -> None:
        self.tables.console_failures.pop(key, None)
