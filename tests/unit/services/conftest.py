"""Services on the memory stores: the whole core over fresh in-memory storage and one node's
in-memory live ports, no sockets, no database, and a clock the test moves."""

from __future__ import annotations

import pytest

from tests.unit.services.node import Node, node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.ports import Stores
from thinghub.services.core import Services
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
def stores() -> Stores:
    return memory_stores()


@pytest.fixture
def live(clock: TestClock) -> Node:
    """This node's bus, presence, links, locks and counter (no device connected)."""
    return node(clock)


@pytest.fixture
async def services(clock: TestClock, stores: Stores, live: Node) -> Services:
    """Every service, wired as the composition root wires them, with the default settings."""
    built = build_services(
        Settings.defaults(),
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    await built.start()
    return built
