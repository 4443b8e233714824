"""Services on the memory stores: the whole core over fresh in-memory storage, no sockets,
no database, and a clock the test moves."""

from __future__ import annotations

import pytest

from thinghub.services.bus import MemoryBus
from thinghub.services.core import Core, CoreOptions
from thinghub.storage.memory import memory_stores


class TestClock:
    """Time stands still until the test moves it."""

    __test__ = False  # not a test class

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def core(clock: TestClock) -> Core:
    core = Core(memory_stores(), MemoryBus(), clock, CoreOptions())
    await core.start()
    return core
