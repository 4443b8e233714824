"""The master key: made once, then the same on every load (device tokens and credentials
survive a restart); another store (another server) gets another key."""

from __future__ import annotations

from tests.unit.services.conftest import TestClock
from thinghub.ports import Stores
from thinghub.services.master_key import MASTER_KEY_BYTES, load_master_key
from thinghub.storage.memory import memory_stores


async def test_the_key_is_made_once_and_kept(stores: Stores, clock: TestClock) -> None:
    first = await load_master_key(stores, clock)
    assert len(first) == MASTER_KEY_BYTES
    assert await load_master_key(stores, clock) == first
    assert await load_master_key(memory_stores(), clock) != first
