"""The records of device files in memory (keys in UTF-8 byte order, as the SQL backends)."""

from __future__ import annotations

from thinghub.domain.device_files import DeviceFile
from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import as_file, file_params, to_us

__all__ = ["MemoryFileStore"]


def _order(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


class MemoryFileStore(MemoryArea):
    async def put(self, file: DeviceFile) -> None:
        self.tables.files[(file.account_id, file.key)] = file_params(file)

    async def get(self, account_id: str, key: str) -> DeviceFile | None:
        row = self.tables.files.get((account_id, key))
        return None if row is None else as_file(row)

    async def delete(self, account_id: str, key: str) -> bool:
        return self.tables.files.pop((account_id, key), None) is not None

    async def scan(
        self, account_id: str, *, prefix: str = "", after: str = "", limit: int
    ) -> list[DeviceFile]:
        low, start = _order(prefix), _order(after)
        rows = sorted(
            (
                row
                for (account, key), row in self.tables.files.items()
                if account == account_id
                and key.startswith(prefix)
                and _order(key) >= low
                and _order(key) > start
            ),
            key=lambda row: _order(row[1]),
        )
        return [as_file(r) for r in rows[:limit]]

    async def older_than(self, account_id: str, before: float, limit: int) -> list[DeviceFile]:
        cut = to_us(before)
        rows = sorted(
            (r for (a, _), r in self.tables.files.items() if a == account_id and r[6] < cut),
            key=lambda r: (r[6], _order(r[1])),
        )
        return [as_file(r) for r in rows[:limit]]
