"""Tests for thinghub.storage.sqlite's checkpointer thread: committed pages reach the database
file while the WAL is far below the writer's own checkpoint size, so no COMMIT has to copy
them (and no caller of that commit waits for the copy)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from thinghub.storage.database import Step
from thinghub.storage.sqlite import CHECKPOINT_EVERY_S, WAL_AUTOCHECKPOINT_PAGES, SqliteDatabase

ROWS = 2000  # ~1 MiB of WAL: far below WAL_AUTOCHECKPOINT_PAGES (64 MiB)


def size(path: Path) -> int:
    return path.stat().st_size


async def test_committed_pages_reach_the_database_file_without_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = SqliteDatabase(path)
    await db.start()
    try:
        await db.write([Step("exec", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", ())])
        before = size(path)
        rows = [(i, "x" * 400) for i in range(ROWS)]
        await db.write([Step("many", "INSERT INTO t (id, v) VALUES (?, ?)", rows)])
        wal = size(Path(f"{path}-wal"))
        assert wal < WAL_AUTOCHECKPOINT_PAGES * 4096  # the writer's checkpoint cannot run
        deadline = time.monotonic() + 20 * CHECKPOINT_EVERY_S + 5
        while size(path) < before + ROWS * 400 and time.monotonic() < deadline:
            await asyncio.sleep(CHECKPOINT_EVERY_S / 4)
        assert size(path) >= before + ROWS * 400  # copied by the checkpointer
        assert await db.fetch_one("SELECT count(*) FROM t") == (ROWS,)
    finally:
        await db.close()
    assert not any(t.name == "sqlite-checkpointer" and t.is_alive() for t in threading.enumerate())
