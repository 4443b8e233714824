"""The ux4iot live feed: one watch of `services.live` per account that has sessions.

Theory of operation
-------------------
Live data reaches sessions through the session index, never through a bus subscription per
socket: the feed holds ONE `services.live.watch(account)` per account that has bound
sessions (telemetry, twin and connection events of every device of the account) and hands
each event to `deliver`, which asks the index who watches that device (a dictionary lookup;
an event of a device nobody watches ends there) and sends the payloads.

`ensure(account)` is awaited when a grant binds a session to an account; it returns once the
watch is subscribed (`watch` subscribes eagerly), so nothing published after the grant
answered is missed. The subscription is made inside the watch's own task, right before its
`async for` starts it, so a watch ended early (cancelled) never leaves a subscription behind.
`retain(accounts)` ends the watches of accounts that no longer have sessions (the sweeper
calls it after expiring sessions, the routes after deleting them).

The watches run as tasks of the feed's own TaskGroup, which lives in `run()` (itself a task
of the server's TaskGroup, cancelled at shutdown). A watch asked for before `run()` started
waits for it. A delivery that fails is logged and the watch goes on: one bad event must not
silence an account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from thinghub.domain.live import LiveEvent
from thinghub.services.live import LiveService

__all__ = ["KINDS", "Feed"]

logger = logging.getLogger(__name__)

# What ux4iot sessions can watch: telemetry and d2c messages, twin changes, connections.
KINDS = frozenset({"telemetry", "twin", "connection"})

Deliver = Callable[[LiveEvent], Awaitable[None]]


class _Watch:
    __slots__ = ("subscribed", "task")

    def __init__(self, task: asyncio.Task[None], subscribed: asyncio.Event) -> None:
        self.task = task
        self.subscribed = subscribed


class Feed:
    def __init__(self, live: LiveService, deliver: Deliver) -> None:
        self._live = live
        self._deliver = deliver
        self._tasks: asyncio.TaskGroup | None = None
        self._watches: dict[str, _Watch] = {}
        self._pending: set[str] = set()  # asked for before run() started

    @property
    def accounts(self) -> frozenset[str]:
        """The accounts watched now (or as soon as the feed runs)."""
        return frozenset(self._watches) | self._pending

    async def ensure(self, account_id: str) -> None:
        """Watch this account's events from now on (idempotent); returns once subscribed."""
        watch = self._watches.get(account_id)
        if watch is None:
            if self._tasks is None:
                self._pending.add(account_id)
                return
            watch = self._watches[account_id] = self._start(account_id)
        await watch.subscribed.wait()

    def retain(self, accounts: Collection[str]) -> None:
        """End the watches of every account not in `accounts`."""
        self._pending.intersection_update(accounts)
        for account_id in [a for a in self._watches if a not in accounts]:
            self._watches.pop(account_id).task.cancel()
            logger.debug("ux4iot feed: no sessions of account %s left", account_id)

    async def run(self) -> None:
        """Own the watches until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for account_id in sorted(self._pending):
                    self._watches[account_id] = self._start(account_id)
                self._pending.clear()
                await asyncio.Event().wait()  # until cancelled; the watches are the work
        finally:
            self._tasks = None
            self._watches.clear()

    def _start(self, account_id: str) -> _Watch:
        if self._tasks is None:
            raise RuntimeError("the feed is not running")
        subscribed = asyncio.Event()
        task = self._tasks.create_task(
            self._watch(account_id, subscribed), name=f"ux4iot.feed[{account_id}]"
        )
        # A watch cancelled before it ran never subscribes: nobody may wait on it for ever.
        task.add_done_callback(lambda _: subscribed.set())
        return _Watch(task, subscribed)

    async def _watch(self, account_id: str, subscribed: asyncio.Event) -> None:
        stream = self._live.watch(account_id, kinds=KINDS)
        subscribed.set()
        try:
            async for event in stream:  # no await between watch() and here: see above
                try:
                    await self._deliver(event)
                except Exception:
                    logger.exception(
                        "ux4iot: delivering a %s event of device %s failed",
                        event.kind,
                        event.device_id,
                    )
        finally:
            await stream.aclose()
