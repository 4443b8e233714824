"""Cloud-to-device messages in memory, waiting for their device."""

from __future__ import annotations

from thinghub.ports.store import C2DMessage
from thinghub.storage.memory._tables import MemoryArea, unique
from thinghub.storage.sql._rows import as_c2d, c2d_params

__all__ = ["MemoryC2DStore"]

_DEVICE, _CREATED = 1, 4  # columns of a C2D row


class MemoryC2DStore(MemoryArea):
    async def enqueue(self, message: C2DMessage) -> None:
        unique(message.id in self.tables.c2d)
        self.tables.c2d[message.id] = c2d_params(message)

    async def pending(self, device_id: str) -> list[C2DMessage]:
        rows = [r for r in self.tables.c2d.values() if r[_DEVICE] == device_id]
        return [as_c2d(r) for r in sorted(rows, key=lambda r: r[_CREATED])]

    async def delete(self, message_id: str) -> None:
        self.tables.c2d.pop(message_id, None)
