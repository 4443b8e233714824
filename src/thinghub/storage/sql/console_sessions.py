"""The console's sessions and failed sign-ins in SQL (ports.store.ConsoleSessionStore)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinghub.ports.store import StoredConsoleSession
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import from_us, to_us

__all__ = ["SqlConsoleSessionStore", "as_console_session", "console_session_params"]

COLUMNS = "key, user_id, created_at, seen_at, expires_at, sealed, data"


def console_session_params(s: StoredConsoleSession) -> tuple[Any, ...]:
    return (
        s.key,
        s.user_id,
        to_us(s.created_at),
        to_us(s.seen_at),
        to_us(s.expires_at),
        s.sealed,
        s.data,
    )


def as_console_session(row: Sequence[Any]) -> StoredConsoleSession:
    key, user_id, created, seen, expires, sealed, data = row
    return StoredConsoleSession(
        key, user_id, from_us(created) or 0.0, from_us(seen) or 0.0, from_us(expires) or 0.0,
        sealed, data,
    )  # fmt: skip


class SqlConsoleSessionStore(SqlArea):
    async def get(self, key: str) -> StoredConsoleSession | None:
        row = await self.db.fetch_one(
            f"SELECT {COLUMNS} FROM console_sessions WHERE key = ?", (key,)
        )
        return None if row is None else as_console_session(row)

    async def put(self, session: StoredConsoleSession) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO console_sessions ({COLUMNS}) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET user_id = excluded.user_id, "
                "created_at = excluded.created_at, seen_at = excluded.seen_at, "
                "expires_at = excluded.expires_at, sealed = excluded.sealed, "
                "data = excluded.data",
                console_session_params(session),
            )
        )

    async def delete(self, key: str) -> None:
        await self._write(Step("exec", "DELETE FROM console_sessions WHERE key = ?", (key,)))

    async def delete_user(self, user_id: str) -> int:
        (count,) = await self._write(
            Step("exec", "DELETE FROM console_sessions WHERE user_id = ?", (user_id,))
        )
        return int(count)

    async def sweep(self, now: float, idle_s: float, keep: int, failed_since: float) -> int:
        steps = [
            Step(
                "exec",
                "DELETE FROM console_sessions WHERE expires_at <= ? OR seen_at <= ?",
                (to_us(now), to_us(now - idle_s)),
            ),
            Step(
                "exec",
                "DELETE FROM console_login_failures WHERE failed_at <= ?",
                (to_us(failed_since),),
            ),
        ]
        expired, _ = await self._write(*steps)
        deleted = int(expired)
        # Past `keep`: the least recently seen go (a flood of sign-in forms, say).
        row = await self.db.fetch_one(
            "SELECT seen_at FROM console_sessions ORDER BY seen_at DESC LIMIT 1 OFFSET ?",
            (keep,),
        )
        if row is not None:
            (over,) = await self._write(
                Step("exec", "DELETE FROM console_sessions WHERE seen_at <= ?", (row[0],))
            )
            deleted += int(over)
        return deleted

    async def fail(self, key: str, at: float) -> None:
        await self._write(
            Step(
                "exec",
                "INSERT INTO console_login_failures (key, failed_at) VALUES (?,?) "
                "ON CONFLICT (key, failed_at) DO NOTHING",
                (key, to_us(at)),
            )
        )

    async def failures(self, key: str, since: float) -> int:
        row = await self.db.fetch_one(
            "SELECT COUNT(*) FROM console_login_failures WHERE key = ? AND failed_at > ?",
            (key, to_us(since)),
        )
        return 0 if row is None else int(row[0])

    async def forgive(self, key: str) -> None:
        await self._write(Step("exec", "DELETE FROM console_login_failures WHERE key = ?", (key,)))
