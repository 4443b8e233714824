"""next_entry: a cancellation that lands as an entry arrives still stops the watch."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.kv import KeyValue

from thinghub.services.kv_watch import next_entry


async def _watch_forever(watcher: KeyValue.KeyWatcher, read: list[object], raw: bool) -> None:
    while True:
        try:
            if raw:
                entry = await watcher.updates(timeout=5.0)  # type: ignore[no-untyped-call]
            else:
                entry = await next_entry(watcher, 5.0)
        except TimeoutError:
            continue
        read.append(entry)


async def _cancel_as_an_entry_arrives(raw: bool) -> tuple[asyncio.Task[None], list[object]]:
    watcher = KeyValue.KeyWatcher(js=None)  # type: ignore[no-untyped-call]
    read: list[object] = []
    task = asyncio.create_task(_watch_forever(watcher, read, raw))
    await asyncio.sleep(0)  # the watch waits for its next entry
    watcher._updates.put_nowait("entry")  # noqa: SLF001 - what the subscription callback does
    task.cancel()  # in the same step: the entry and the cancellation race
    await asyncio.wait({task}, timeout=0.5)
    return task, read


async def test_the_library_alone_drops_that_cancellation() -> None:
    """Why next_entry exists: without it the watch reads the entry and goes on."""
    task, read = await _cancel_as_an_entry_arrives(raw=True)
    try:
        assert not task.done()
        assert read == ["entry"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_next_entry_raises_the_cancellation() -> None:
    task, _ = await _cancel_as_an_entry_arrives(raw=False)
    assert task.cancelled()


async def test_next_entry_hands_over_entries_and_timeouts() -> None:
    watcher = KeyValue.KeyWatcher(js=None)  # type: ignore[no-untyped-call]
    watcher._updates.put_nowait(None)  # noqa: SLF001
    assert await next_entry(watcher, 1.0) is None
    with pytest.raises(TimeoutError):
        await next_entry(watcher, 0.01)
