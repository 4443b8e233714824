"""Fixtures for the iTwin face's adapter tests: the core services on memory stores (no
sockets, no database), and a transport that records what is written to it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node, node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.faces.itwin.connection import TransportClosed
from thinghub.ports import Stores
from thinghub.services.core import Services
from thinghub.storage.memory import memory_stores

WAIT_S = 5.0


class FakeTransport:
    """Records sent and pushed frames. `gate`, when cleared, holds every send (a reader that
    does not read); `push_room` is how many pushes fit before they are dropped;
    `delimits_messages` as a WebSocket's (True) or a TCP stream's (False)."""

    def __init__(self, push_room: int = 10_000, *, delimits_messages: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pushed: list[dict[str, Any]] = []
        self.frames: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.push_room = push_room
        self.dropped = 0
        self.is_closed = False
        self.arrived = asyncio.Event()
        self._delimits_messages = delimits_messages

    @property
    def peer(self) -> str:
        return "test:1"

    @property
    def delimits_messages(self) -> bool:
        return self._delimits_messages

    async def send(self, frame: bytes) -> None:
        if self.is_closed:
            raise TransportClosed(self.peer)
        await self.gate.wait()
        self.frames.append(frame)
        self.sent.append(orjson.loads(frame))
        self.arrived.set()

    def push(self, frame: bytes) -> bool:
        if self.is_closed or len(self.pushed) >= self.push_room:
            self.dropped += 1
            return False
        self.frames.append(frame)
        self.pushed.append(orjson.loads(frame))
        self.arrived.set()
        return True

    async def close(self) -> None:
        self.is_closed = True

    def messages(self) -> list[dict[str, Any]]:
        """Everything written, in order."""
        return [orjson.loads(f) for f in self.frames]

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        """Wait (WAIT_S at most) until `count` frames were written; return them all."""
        async with asyncio.timeout(WAIT_S):
            while len(self.frames) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages()


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def stores() -> Stores:
    return memory_stores()


@pytest.fixture
def live(clock: TestClock) -> Node:
    return node(clock)


@pytest.fixture
async def services(clock: TestClock, stores: Stores, live: Node) -> Services:
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
