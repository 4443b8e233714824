"""Twins in memory, written optimistically (compare and set on the version)."""

from __future__ import annotations

from thinghub.domain.twin import Twin
from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import as_twin, twin_params

__all__ = ["MemoryTwinStore"]


class MemoryTwinStore(MemoryArea):
    async def get(self, device_id: str) -> Twin | None:
        row = self.tables.twins.get(device_id)
        return None if row is None else as_twin(row)

    async def put(self, twin: Twin, expected_version: int) -> bool:
        row = self.tables.twins.get(twin.device_id)
        if row is None or row[1] != expected_version:
            return False
        self.tables.twins[twin.device_id] = twin_params(twin)
        return True
