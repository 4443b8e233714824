"""Reading a JetStream key-value watch without losing a cancellation.

nats-py's `KeyWatcher.updates` waits with `asyncio.wait_for`, which on Python 3.11 returns the
entry and drops the cancellation when the task is cancelled just as an entry arrives. A loop
that watches forever would then never stop (a node's shutdown waits on it). `next_entry`
raises the dropped cancellation: the task still counts it (`Task.cancelling()`).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["next_entry"]


async def next_entry(watcher: Any, timeout_s: float) -> Any:
    """The watcher's next entry (None at the end of what the bucket held when the watch
    began); raises `TimeoutError` after `timeout_s` and `CancelledError` if the task was
    cancelled meanwhile, even when the entry arrived at the same moment."""
    try:
        return await watcher.updates(timeout=timeout_s)
    finally:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
