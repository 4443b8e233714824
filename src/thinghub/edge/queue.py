"""Store-and-forward: observations on disk (SQLite) until the cloud has acknowledged them.

Theory of operation
-------------------
A parsed line is "accepted" once its row is committed here (WAL, synchronous=FULL: the commit
survives `kill -9` and a power cut). The cloud link reads rows per module in `seq` order,
publishes them with QoS 1 and deletes a row only after its PUBACK, so a crash at any point
leaves every accepted, unacknowledged row in place to be sent again. A row sent twice (PUBACK
lost with the connection) carries the same message id `{epoch}-{seq}` both times and the cloud
stores it once. `seq` is AUTOINCREMENT, never reused; `epoch` is drawn when the file is made,
so a fresh file never repeats an old message id.

The queue is bounded (`max_items`): a full queue drops its oldest row for each new one and
counts it in `dropped` (persisted with the rows, in the same transaction).

All SQLite work runs on one thread of its own (one connection, never shared), off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["DEFAULT_MAX_ITEMS", "ForwardQueue", "QueueStats", "QueuedObservation"]

logger = logging.getLogger(__name__)

#: Rows kept while the cloud is away: at one line a second per port this is a day of three
#: ports, a few tens of MB on disk.
DEFAULT_MAX_ITEMS = 250_000

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    module TEXT NOT NULL,
    port INTEGER NOT NULL,
    body BLOB NOT NULL,
    read_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS observations_module ON observations (module, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COUNTERS = ("accepted", "sent", "dropped")


@dataclass(frozen=True, slots=True)
class QueuedObservation:
    seq: int
    module: str
    port: int
    body: bytes
    read_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued: int  # rows waiting for the cloud
    accepted: int  # rows ever committed
    sent: int  # rows acknowledged by the cloud
    dropped: int  # oldest rows dropped because the queue was full

    def as_json(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "accepted": self.accepted,
            "sent": self.sent,
            "dropped": self.dropped,
        }


class ForwardQueue:
    """The on-disk queue. Use `async with ForwardQueue(path) as queue:`."""

    def __init__(self, path: Path, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.path = path
        self.max_items = max_items
        self.epoch = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-queue")
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._signals: dict[str, asyncio.Event] = {}

    async def __aenter__(self) -> ForwardQueue:
        await self._run(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- on the queue's thread -------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "epoch" not in rows:
            rows["epoch"] = secrets.token_hex(4)
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (rows["epoch"],))
        self.epoch = rows["epoch"]
        for name in _COUNTERS:
            self._counters[name] = int(rows.get(name, 0))
        self._count = db.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
        self._db = db
        logger.info(
            "queue %s: %d observations waiting, %d dropped so far",
            self.path,
            self._count,
            self._counters["dropped"],
        )

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def _save_counters(db: sqlite3.Connection, values: dict[str, int]) -> None:
        db.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(name, str(value)) for name, value in values.items()],
        )

    def _put(self, items: list[tuple[str, int, bytes, float]]) -> list[int]:
        db = self._require()
        seqs = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for module, port, body, read_at in items:
                cursor = db.execute(
                    "INSERT INTO observations (module, port, body, read_at) VALUES (?, ?, ?, ?)",
                    (module, port, body, read_at),
                )
                seqs.append(int(cursor.lastrowid or 0))
            overflow = self._count + len(items) - self.max_items
            dropped = 0
            if overflow > 0:  # the oldest go, even rows of this very batch
                cursor = db.execute(
                    "DELETE FROM observations WHERE seq IN "
                    "(SELECT seq FROM observations ORDER BY seq LIMIT ?)",
                    (overflow,),
                )
                dropped = cursor.rowcount
            counters = {
                "accepted": self._counters["accepted"] + len(items),
                "dropped": self._counters["dropped"] + dropped,
            }
            self._save_counters(db, counters)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._counters.update(counters)
        self._count += len(items) - dropped
        if dropped:
            logger.warning(
                "queue full (%d): dropped the %d oldest observations", self.max_items, dropped
            )
        return seqs

    def _peek(self, module: str, after: int, limit: int) -> list[QueuedObservation]:
        rows = (
            self._require()
            .execute(
                "SELECT seq, module, port, body, read_at FROM observations "
                "WHERE module = ? AND seq > ? ORDER BY seq LIMIT ?",
                (module, after, limit),
            )
            .fetchall()
        )
        return [QueuedObservation(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def _remove(self, seqs: list[int]) -> None:
        db = self._require()
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            for seq in seqs:
                removed += db.execute("DELETE FROM observations WHERE seq = ?", (seq,)).rowcount
            sent = self._counters["sent"] + removed
            self._save_counters(db, {"sent": sent})
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._counters["sent"] = sent
        self._count -= removed

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the queue is not open")
        return self._db

    # -- on the loop -----------------------------------------------------------------------

    async def put(self, module: str, port: int, body: bytes, read_at: float) -> int:
        """Commit one observation; returns its seq once it is on disk ("accepted")."""
        seqs: list[int] = await self._run(self._put, [(module, port, body, read_at)])
        self.signal(module).set()
        return seqs[0]

    async def put_many(self, items: list[tuple[str, int, bytes, float]]) -> list[int]:
        """Commit (module, port, body, read_at) rows in one transaction, in order."""
        if not items:
            return []
        seqs: list[int] = await self._run(self._put, items)
        for module in {item[0] for item in items}:
            self.signal(module).set()
        return seqs

    async def peek(self, module: str, after: int, limit: int) -> list[QueuedObservation]:
        """Up to `limit` rows of `module` with seq > `after`, oldest first."""
        rows: list[QueuedObservation] = await self._run(self._peek, module, after, limit)
        return rows

    async def remove(self, seqs: list[int]) -> None:
        """Delete acknowledged rows (a row already dropped is simply not there)."""
        if seqs:
            await self._run(self._remove, seqs)

    def signal(self, module: str) -> asyncio.Event:
        """Set whenever a row for `module` is added; the sender clears it before reading."""
        event = self._signals.get(module)
        if event is None:
            event = self._signals[module] = asyncio.Event()
        return event

    def message_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def stats(self) -> QueueStats:
        return QueueStats(
            queued=self._count,
            accepted=self._counters["accepted"],
            sent=self._counters["sent"],
            dropped=self._counters["dropped"],
        )
