"""The records of device files in SQL (the bytes are in a BlobStore).

Keys sort in UTF-8 byte order, as S3 lists them: SQLite compares text with its BINARY
collation (the bytes of UTF-8), and on PostgreSQL the key column has the "C" collation
(migration 0006), which compares bytes too.
"""

from __future__ import annotations

from thinghub.domain.device_files import DeviceFile
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import FILE_COLUMNS, as_file, file_params, to_us

__all__ = ["SqlFileStore"]

_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in FILE_COLUMNS.split(", ")[2:])


class SqlFileStore(SqlArea):
    async def put(self, file: DeviceFile) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO device_files ({FILE_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
                f"ON CONFLICT (account_id, key) DO UPDATE SET {_UPDATE}",
                file_params(file),
            )
        )

    async def get(self, account_id: str, key: str) -> DeviceFile | None:
        row = await self.db.fetch_one(
            f"SELECT {FILE_COLUMNS} FROM device_files WHERE account_id = ? AND key = ?",
            (account_id, key),
        )
        return None if row is None else as_file(row)

    async def delete(self, account_id: str, key: str) -> bool:
        (count,) = await self._write(
            Step("exec", "DELETE FROM device_files WHERE account_id = ? AND key = ?",
                 (account_id, key))
        )  # fmt: skip
        return bool(count)

    async def scan(
        self, account_id: str, *, prefix: str = "", after: str = "", limit: int
    ) -> list[DeviceFile]:
        # The keys from `prefix` on, in order; the first that does not start with it ends
        # the run (every later key sorts after it too).
        rows = await self.db.fetch_all(
            f"SELECT {FILE_COLUMNS} FROM device_files WHERE account_id = ? AND key >= ? "
            "AND key > ? ORDER BY key LIMIT ?",
            (account_id, prefix, after, limit),
            bulk=True,
        )
        out = []
        for row in rows:
            file = as_file(row)
            if not file.key.startswith(prefix):
                break
            out.append(file)
        return out

    async def older_than(self, account_id: str, before: float, limit: int) -> list[DeviceFile]:
        rows = await self.db.fetch_all(
            f"SELECT {FILE_COLUMNS} FROM device_files WHERE account_id = ? AND modified_at < ? "
            "ORDER BY modified_at, key LIMIT ?",
            (account_id, to_us(before), limit),
            bulk=True,
        )
        return [as_file(r) for r in rows]
