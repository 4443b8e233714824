"""Connection transitions of many devices written together (group commit).

Every connect and disconnect stores two rows: the device's connection state and its
connection_state_event. Written one transition at a time, that is a write unit (a hop to the
database's writer, a transaction on PostgreSQL) per row, and during a reconnect storm they
take the event loop and writer time the next TLS handshakes need. Here every transition
asked for while a write is in flight waits for it to finish, then they all go in one
`DeviceStore.record_connections` call.

There is no task of its own: the first caller leads (it lets the other callers of the same
loop pass join, then writes), and when its write is done it hands the lead to the oldest
caller still waiting, whose write holds everything that queued meanwhile. Each caller
returns once the write holding its transition is stored. Callers serialize a device's own
transitions (Registry.set_connected holds the device's connection lock across its write), so
a device's changes reach the store in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from thinghub.ports import ConnectionChange, Stores

__all__ = ["MAX_CHANGES_PER_WRITE", "ConnectionWriter"]

logger = logging.getLogger(__name__)

# At most this many transitions in one write (a bounded transaction whatever the storm).
MAX_CHANGES_PER_WRITE = 500

# What a waiting caller's future resolves to.
_STORED: Final = 0  # its transition is stored
_LEAD: Final = 1  # it is its turn to write what is queued


class ConnectionWriter:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._queue: deque[tuple[ConnectionChange, asyncio.Future[int]]] = deque()
        self._writing = False  # a caller leads: the rest wait for it

    async def write(self, change: ConnectionChange) -> None:
        """Store `change` (with whatever else is queued); return once it is stored.

        Raises what storing it raised: a write of many that fails is tried again one
        transition at a time, so each caller hears only what its own transition met.
        """
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((change, future))
        if self._writing:
            try:
                if await future == _STORED:
                    return
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.result() == _LEAD:
                    self._lead()  # handed the lead as we were cancelled: pass it on
                raise
        else:
            self._writing = True
            try:
                await asyncio.sleep(0)  # let the other callers of this loop pass join
            except asyncio.CancelledError:
                future.cancel()  # ours is written with the next caller's, nobody waits for it
                self._lead()
                raise
        try:  # our turn: write what is queued, up to and including our own
            while not await self._write_queued(future):
                pass
        finally:
            self._lead()

    async def _write_queued(self, own: asyncio.Future[int]) -> bool:
        """Write the oldest queued transitions; whether `own`'s was among them (raising what
        storing it raised)."""
        count = min(len(self._queue), MAX_CHANGES_PER_WRITE)
        batch = [self._queue.popleft() for _ in range(count)]
        try:
            errors = await self._store([change for change, _ in batch])
        except asyncio.CancelledError:  # the leader was cancelled: the others must not hang
            cancelled = RuntimeError("the write of connection transitions was cancelled")
            for _, waiting in batch:
                if waiting is not own and not waiting.done():
                    waiting.set_exception(cancelled)
            raise
        own_error: Exception | None = None
        for (_, waiting), error in zip(batch, errors, strict=True):
            if waiting is own:
                own_error = error
            elif waiting.done():
                continue  # a cancelled caller's (written all the same)
            elif error is None:
                waiting.set_result(_STORED)
            else:
                waiting.set_exception(error)
        if own_error is not None:
            raise own_error
        return any(waiting is own for _, waiting in batch)

    async def _store(self, changes: list[ConnectionChange]) -> list[Exception | None]:
        """Store the changes together; if that fails, each alone, so one that cannot be
        stored fails only its own caller. What each raised, in order (None: stored)."""
        try:
            await self.stores.devices.record_connections(changes)
        except Exception as exc:
            if len(changes) == 1:
                return [exc]
            logger.warning(
                "connection transitions of %d devices failed together (%s); writing each alone",
                len(changes),
                exc,
            )
        else:
            return [None] * len(changes)
        errors: list[Exception | None] = []
        for change in changes:
            try:
                await self.stores.devices.record_connections([change])
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def _lead(self) -> None:
        """Hand the lead to the oldest caller still waiting; nobody leads when none is (what
        cancelled callers left queued goes with the next caller's write)."""
        for _, waiting in self._queue:
            if not waiting.done():
                waiting.set_result(_LEAD)
                return
        self._writing = False
