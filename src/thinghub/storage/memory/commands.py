"""Commands in memory: queued or awaited method calls and their outcome."""

from __future__ import annotations

from thinghub.domain.commands import Command, CommandStatus
from thinghub.storage.memory._tables import MemoryArea, unique
from thinghub.storage.sql._rows import as_command, command_params, to_us

__all__ = ["MemoryCommandStore"]

# Columns of a command row (COMMAND_COLUMNS): the device, the status, the creation time, and
# from the status on what `update` writes (status, ..., completed_at, response_code, result).
_ID, _DEVICE, _NAME, _STATUS, _CREATED, _COMPLETED = 0, 2, 3, 6, 7, 10


class MemoryCommandStore(MemoryArea):
    async def insert(self, command: Command) -> None:
        unique(command.id in self.tables.commands, f"command {command.id!r} already exists")
        self.tables.commands[command.id] = command_params(command)

    async def get(self, command_id: str) -> Command | None:
        row = self.tables.commands.get(command_id)
        return None if row is None else as_command(row)

    async def update(self, command: Command) -> None:
        row = self.tables.commands.get(command.id)
        if row is None:
            return
        new = command_params(command)
        self.tables.commands[command.id] = (
            *row[:_STATUS], new[_STATUS], *row[_STATUS + 1 : _COMPLETED], *new[_COMPLETED:]
        )  # fmt: skip

    async def pending(self, device_id: str) -> list[Command]:
        rows = [
            r
            for r in self.tables.commands.values()
            if r[_DEVICE] == device_id and r[_STATUS] == CommandStatus.PENDING.value
        ]
        return [as_command(r) for r in sorted(rows, key=lambda r: r[_CREATED])]

    async def history(
        self, device_id: str, name: str, limit: int, before: tuple[float, str] | None = None
    ) -> list[Command]:
        rows = [
            r for r in self.tables.commands.values() if r[_DEVICE] == device_id and r[_NAME] == name
        ]
        if before is not None:
            key = (to_us(before[0]), before[1])
            rows = [r for r in rows if (r[_CREATED], r[_ID]) < key]
        rows.sort(key=lambda r: (r[_CREATED], r[_ID]), reverse=True)
        return [as_command(r) for r in rows[:limit]]
