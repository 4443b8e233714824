"""Commands in SQL: queued or awaited method calls and their outcome."""

from __future__ import annotations

from thinghub.domain.commands import Command, CommandStatus
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import COMMAND_COLUMNS, as_command, command_params, dumps, to_us

__all__ = ["SqlCommandStore"]


class SqlCommandStore(SqlArea):
    async def insert(self, command: Command) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO commands ({COMMAND_COLUMNS}) VALUES ({','.join('?' * 13)})",
                command_params(command),
            ),
            conflict=f"command {command.id!r} already exists",
        )

    async def get(self, command_id: str) -> Command | None:
        row = await self.db.fetch_one(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        )
        return None if row is None else as_command(row)

    async def update(self, command: Command) -> None:
        c = command
        await self._write(
            Step(
                "exec",
                "UPDATE commands SET status = ?, completed_at = ?, response_code = ?, "
                "result = ? WHERE id = ?",
                (
                    c.status.value,
                    None if c.completed_at is None else to_us(c.completed_at),
                    c.response_code,
                    None if c.result is None else dumps(c.result),
                    c.id,
                ),
            )
        )

    async def pending(self, device_id: str) -> list[Command]:
        rows = await self.db.fetch_all(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE device_id = ? AND status = ? "
            "ORDER BY created_at",
            (device_id, CommandStatus.PENDING.value),
        )
        return [as_command(r) for r in rows]

    async def history(
        self, device_id: str, name: str, limit: int, before: tuple[float, str] | None = None
    ) -> list[Command]:
        after = ""
        params: tuple[object, ...] = (device_id, name)
        if before is not None:
            created = to_us(before[0])
            after = "AND (created_at < ? OR (created_at = ? AND id < ?)) "
            params += (created, created, before[1])
        rows = await self.db.fetch_all(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE device_id = ? AND name = ? {after}"
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [as_command(r) for r in rows]
