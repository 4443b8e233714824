"""Twins in SQL, written optimistically (compare and set on the version)."""

from __future__ import annotations

from thinghub.domain.twin import Twin
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import as_twin, section_json

__all__ = ["SqlTwinStore"]


class SqlTwinStore(SqlArea):
    async def get(self, device_id: str) -> Twin | None:
        row = await self.db.fetch_one(
            "SELECT device_id, version, desired, reported FROM twins WHERE device_id = ?",
            (device_id,),
        )
        return None if row is None else as_twin(row)

    async def put(self, twin: Twin, expected_version: int) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE twins SET version = ?, desired = ?, reported = ? "
                "WHERE device_id = ? AND version = ?",
                (
                    twin.version,
                    section_json(twin.desired),
                    section_json(twin.reported),
                    twin.device_id,
                    expected_version,
                ),
            )
        )
        return bool(count)
