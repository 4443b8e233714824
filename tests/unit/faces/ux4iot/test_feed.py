"""The ux4iot feed: one watch of services.live per account, subscribed before `ensure`
returns, ended by `retain`, surviving a failed delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from thinghub.bus.memory import MemoryBus
from thinghub.domain.live import ConnectionChanged, LiveEvent, TelemetryReceived
from thinghub.faces.ux4iot.feed import Feed
from thinghub.services.live import LiveService

DEADLINE_S = 5.0


def telemetry(account: str, device: str, n: int) -> TelemetryReceived:
    return TelemetryReceived(account, None, device, 1.0 + n, {"n": n}, {}, None, "mqtt", None)


class Inbox:
    def __init__(self) -> None:
        self.events: list[LiveEvent] = []
        self.fail_on: int | None = None
        self.arrived = asyncio.Event()

    async def __call__(self, event: LiveEvent) -> None:
        self.events.append(event)
        self.arrived.set()
        if isinstance(event, TelemetryReceived) and event.body == {"n": self.fail_on}:
            raise RuntimeError("a delivery failed")

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def running() -> AsyncIterator[tuple[MemoryBus, Feed, Inbox]]:
    bus = MemoryBus()
    inbox = Inbox()
    feed = Feed(LiveService(bus), inbox)
    task = asyncio.create_task(feed.run())
    await asyncio.sleep(0)
    yield bus, feed, inbox
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bus.subscriptions == 0  # every watch ended with the feed


async def test_ensure_returns_once_subscribed(running: tuple[MemoryBus, Feed, Inbox]) -> None:
    bus, feed, inbox = running
    await feed.ensure("acc-1")
    await bus.publish(telemetry("acc-1", "d1", 0))  # right after ensure: not missed
    await bus.publish(telemetry("acc-2", "d1", 1))  # another account: not this watch's
    await bus.publish(ConnectionChanged("acc-1", None, "d1", True, 2.0))
    await inbox.wait_for(2)
    assert [e.account_id for e in inbox.events] == ["acc-1", "acc-1"]
    await feed.ensure("acc-1")  # idempotent: still one subscription
    assert bus.subscriptions == 1 and feed.accounts == {"acc-1"}


async def test_retain_ends_the_watches_of_accounts_without_sessions(
    running: tuple[MemoryBus, Feed, Inbox],
) -> None:
    bus, feed, inbox = running
    await feed.ensure("acc-1")
    await feed.ensure("acc-2")
    assert bus.subscriptions == 2
    feed.retain({"acc-2"})
    async with asyncio.timeout(DEADLINE_S):
        while bus.subscriptions != 1:
            await asyncio.sleep(0.001)
    await bus.publish(telemetry("acc-1", "d", 0))
    await bus.publish(telemetry("acc-2", "d", 1))
    await inbox.wait_for(1)
    assert [e.account_id for e in inbox.events] == ["acc-2"]
    assert feed.accounts == {"acc-2"}


async def test_a_failed_delivery_does_not_end_the_watch(
    running: tuple[MemoryBus, Feed, Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    bus, feed, inbox = running
    inbox.fail_on = 0
    await feed.ensure("acc-1")
    await bus.publish(telemetry("acc-1", "d", 0))
    await bus.publish(telemetry("acc-1", "d", 1))
    await inbox.wait_for(2)
    assert "delivering a telemetry event of device d failed" in caplog.text


async def test_a_watch_asked_for_before_the_feed_runs_starts_with_it() -> None:
    bus = MemoryBus()
    inbox = Inbox()
    feed = Feed(LiveService(bus), inbox)
    await feed.ensure("acc-1")  # not running yet: remembered
    assert feed.accounts == {"acc-1"} and bus.subscriptions == 0
    task = asyncio.create_task(feed.run())
    await feed.ensure("acc-1")  # now waits until it is subscribed
    async with asyncio.timeout(DEADLINE_S):
        while bus.subscriptions != 1:
            await asyncio.sleep(0.001)
    await bus.publish(telemetry("acc-1", "d", 0))
    await inbox.wait_for(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bus.subscriptions == 0
