"""The deadline wheel: one loop timer for many connections' deadlines."""

from __future__ import annotations

import asyncio

from thinghub.devices.deadlines import TICK_S, DeadlineWheel


class _Item:
    def __init__(self) -> None:
        self.deadline_key: int | None = None
        self.told: list[float] = []

    def on_deadline(self) -> None:
        self.told.append(asyncio.get_running_loop().time())


async def test_items_are_told_once_their_second_has_come_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(loop)
    soon, later = _Item(), _Item()
    start = loop.time()
    wheel.add(soon, start + 0.2)
    wheel.add(later, start + 60)
    deadline = loop.time() + 5
    while not soon.told and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert soon.told and start + 0.2 <= soon.told[0] <= start + 0.2 + 2 * TICK_S
    assert later.told == [] and later.deadline_key is not None
    assert len(wheel) == 1  # `soon` was taken out when told
    wheel.close()


async def test_a_removed_or_refiled_item_is_not_told_at_its_old_deadline() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(loop)
    removed, moved, marker = _Item(), _Item(), _Item()
    now = loop.time()
    wheel.add(removed, now + 0.1)
    wheel.add(moved, now + 0.1)
    wheel.add(marker, now + 0.1)
    wheel.remove(removed)
    wheel.add(moved, now + 3600)  # filed again: only the new deadline counts
    assert removed.deadline_key is None
    deadline = loop.time() + 5
    while not marker.told and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert marker.told  # the old second has come and gone
    assert removed.told == [] and moved.told == []
    assert len(wheel) == 1
    wheel.close()
