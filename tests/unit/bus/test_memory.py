"""Tests for thinghub.bus.memory: the in-process bus, presence, locks and counter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from thinghub.bus import memory as memory_module
from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.domain.live import (
    ConnectionChanged,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
    live_pattern,
)

DEADLINE_S = 5.0
A1, A2 = "acc-1", "acc-2"


def telemetry(i: int, account: str = A1, device: str = "d1") -> TelemetryReceived:
    return TelemetryReceived(account, None, device, float(i), {"i": i}, {}, None, "mqtt", None)


async def take(it: AsyncGenerator[LiveEvent, None], n: int) -> list[LiveEvent]:
    async with asyncio.timeout(DEADLINE_S):
        return [await anext(it) for _ in range(n)]


# -- MemoryBus ---------------------------------------------------------------------------------


async def test_publish_with_no_subscribers_is_fine() -> None:
    await MemoryBus().publish(telemetry(0))


async def test_listens_says_whether_a_subscription_matches_a_subject() -> None:
    """A publisher may skip building events nobody would get; the answer follows
    subscriptions as they start and end."""
    bus = MemoryBus()
    subject = telemetry(0).subject
    assert bus.listens(subject) is False  # no subscriptions at all
    twins = bus.subscribe(live_pattern("twin"))
    assert bus.listens(subject) is False  # one that does not match
    it = bus.subscribe(live_pattern("telemetry", A1, None, "d1"))
    assert bus.listens(subject) is True
    assert bus.listens(telemetry(0, device="d2").subject) is False
    del it  # never iterated: dropping it ends it
    assert bus.listens(subject) is False  # ended: forgotten
    del twins


async def test_subscribing_is_eager() -> None:
    """Subscribed when subscribe() returns, before the first read: nothing is missed."""
    bus = MemoryBus()
    it = bus.subscribe(live_pattern("telemetry"))
    assert bus.subscriptions == 1
    await bus.publish(telemetry(0))
    assert await take(it, 1) == [telemetry(0)]
    await it.aclose()


async def test_every_matching_subscriber_gets_every_event_in_order() -> None:
    bus = MemoryBus()
    one = bus.subscribe(live_pattern("telemetry", A1))
    two = bus.subscribe("telemetry.>")
    for i in range(3):
        await bus.publish(telemetry(i))
    expected = [telemetry(i) for i in range(3)]
    assert await take(one, 3) == expected
    assert await take(two, 3) == expected
    await one.aclose()
    await two.aclose()


async def test_patterns_filter_subjects() -> None:
    bus = MemoryBus()
    mine = bus.subscribe(live_pattern(account_id=A1))
    other = bus.subscribe(live_pattern(account_id=A2))
    connected = ConnectionChanged(A1, "p", "d1", True, 1.0)
    await bus.publish(telemetry(0, A2))
    await bus.publish(TwinChanged(A2, None, "d9", "desired", {}, 1))
    await bus.publish(connected)
    assert await take(mine, 1) == [connected]
    assert await take(other, 1) == [telemetry(0, A2)]
    # and nothing else is waiting for either: the next one each gets is the next published
    await bus.publish(telemetry(1, A1))
    await bus.publish(telemetry(2, A2))
    assert await take(mine, 1) == [telemetry(1, A1)]
    assert await take(other, 1) == [TwinChanged(A2, None, "d9", "desired", {}, 1)]
    await mine.aclose()
    await other.aclose()


async def test_a_slow_subscriber_loses_its_oldest_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "SUBSCRIBER_QUEUE", 3)
    bus = MemoryBus()
    slow = bus.subscribe("telemetry.>")
    # publish() never waits for a subscriber: six events go out while this one reads none.
    for i in range(6):
        await bus.publish(telemetry(i))
    assert await take(slow, 3) == [telemetry(3), telemetry(4), telemetry(5)]
    await bus.publish(telemetry(6))  # and it is still subscribed
    assert await take(slow, 1) == [telemetry(6)]
    await slow.aclose()


async def test_a_closed_subscription_gets_nothing_more() -> None:
    bus = MemoryBus()
    gone = bus.subscribe("telemetry.>")
    await bus.publish(telemetry(0))
    assert await take(gone, 1) == [telemetry(0)]
    await gone.aclose()
    assert bus.subscriptions == 0  # structurally gone: nothing can be queued for it
    stays = bus.subscribe("telemetry.>")
    await bus.publish(telemetry(1))
    assert await take(stays, 1) == [telemetry(1)]
    with pytest.raises(StopAsyncIteration):
        await anext(gone)
    await stays.aclose()


async def test_leaving_an_async_for_unsubscribes() -> None:
    bus = MemoryBus()
    it = bus.subscribe("telemetry.>")
    await bus.publish(telemetry(0))
    async with asyncio.timeout(DEADLINE_S):
        async for event in it:
            assert event == telemetry(0)
            break
    await it.aclose()
    assert bus.subscriptions == 0


async def test_a_subscription_closed_before_it_was_read_unsubscribes() -> None:
    # aclose() of a never-started generator runs no finally: the subscription must still go
    # (a caller that checks a state right after subscribing may not need to read at all).
    bus = MemoryBus()
    unread = bus.subscribe("connection.>")
    assert bus.subscriptions == 1
    await unread.aclose()
    del unread
    assert bus.subscriptions == 0
    dropped = bus.subscribe("connection.>")
    del dropped
    assert bus.subscriptions == 0
    await bus.publish(telemetry(0))  # nothing is queued for them


# -- MemoryPresence ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


async def test_presence_claim_release_and_owner() -> None:
    presence = MemoryPresence(Clock())
    assert not await presence.is_connected("d1")
    assert await presence.claim("d1", "n1") is None
    assert await presence.owner("d1") == "n1"
    assert await presence.is_connected("d1")
    assert await presence.claim("d1", "n2") == "n1"  # the device moved to n2
    assert not await presence.release("d1", "n1")  # n1 no longer owns it: nothing changes
    assert await presence.owner("d1") == "n2"
    assert await presence.release("d1", "n2")
    assert await presence.owner("d1") is None
    assert not await presence.is_connected("d1")
    assert not await presence.release("d1", "n2")


async def test_presence_leases_lapse_unless_claimed_again() -> None:
    clock = Clock()
    presence = MemoryPresence(clock)
    await presence.claim("d1", "n1", lease_s=30)
    await presence.claim("d2", "n1")  # no lease: until released
    clock.t += 20
    assert await presence.claim("d1", "n1", lease_s=30) == "n1"  # renewed at 20 s
    clock.t += 29
    assert await presence.owner("d1") == "n1"
    clock.t += 1
    assert await presence.owner("d1") is None  # 30 s after the renewal
    assert not await presence.is_connected("d1")
    assert await presence.claim("d1", "n2") is None  # a lapsed claim is no previous owner
    assert await presence.is_connected("d2")


# -- MemoryLocks -------------------------------------------------------------------------------


async def test_a_named_lock_admits_one_holder_at_a_time() -> None:
    locks = MemoryLocks()
    order: list[str] = []
    first_in, second_trying, release_first = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with locks.hold("c2d/d1"):
            order.append("first in")
            first_in.set()
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        second_trying.set()  # then straight on to the lock, without yielding
        async with locks.hold("c2d/d1"):
            order.append("second in")

    async with asyncio.timeout(DEADLINE_S), asyncio.TaskGroup() as tasks:
        tasks.create_task(first())
        tasks.create_task(second())
        await second_trying.wait()  # resumes only once `second` is parked on the lock
        assert order == ["first in"]
        async with locks.hold("c2d/d2"):  # another name is free meanwhile
            order.append("other name")
        release_first.set()
    assert order == ["first in", "other name", "first out", "second in"]


async def test_idle_lock_names_cost_nothing() -> None:
    locks = MemoryLocks()
    for i in range(100):
        async with locks.hold(f"c2d/d{i}"):
            assert locks.is_held(f"c2d/d{i}")
    assert not any(locks.is_held(f"c2d/d{i}") for i in range(100))
    assert len(locks._locks) == 0  # weak values: released locks are gone


# -- MemoryCounter -----------------------------------------------------------------------------


async def test_counters_count_from_one_per_name() -> None:
    counter = MemoryCounter()
    assert [await counter.next("a") for _ in range(3)] == [1, 2, 3]
    assert await counter.next("b") == 1
    assert await counter.next("a") == 4


async def test_subscriptions_made_or_ended_after_a_publish_are_routed_afresh() -> None:
    """publish remembers which subscriptions a subject matches; a subscription that starts
    or ends later changes who gets the next event of that same subject."""
    bus = MemoryBus()
    first = bus.subscribe(live_pattern("telemetry", A1))
    await bus.publish(telemetry(0))  # the subject's route is remembered: [first]
    second = bus.subscribe("telemetry.>")
    await bus.publish(telemetry(1))
    assert await take(first, 2) == [telemetry(0), telemetry(1)]
    assert await take(second, 1) == [telemetry(1)]
    await first.aclose()
    await bus.publish(telemetry(2))
    assert await take(second, 1) == [telemetry(2)]
    assert bus.subscriptions == 1
    await second.aclose()


async def test_many_subjects_are_routed_past_the_memo_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory_module, "ROUTES_MAX", 2)
    bus = MemoryBus()
    mine = bus.subscribe(live_pattern("telemetry", A1))
    devices = [f"d{i}" for i in range(5)]
    for i, name in enumerate(devices * 2):
        await bus.publish(telemetry(i, device=name))
    await bus.publish(telemetry(99, account=A2))  # matches nothing
    got = await take(mine, 10)
    assert [e.device_id for e in got if isinstance(e, TelemetryReceived)] == devices * 2
    await mine.aclose()
