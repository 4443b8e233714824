"""Tests for thinghub.services.bus: NATS-style subject patterns and the in-process bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from thinghub.services import bus as bus_module
from thinghub.services.bus import MemoryBus, subject_matches

Message = tuple[str, dict[str, Any]]
DEADLINE_S = 5.0


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("telemetry.a1", "telemetry.a1", True),
        ("telemetry.a1", "telemetry.a2", False),
        ("telemetry.a1", "telemetry.a1.dev", False),
        ("telemetry.a1.dev", "telemetry.a1", False),
        ("telemetry.*", "telemetry.a1", True),
        ("telemetry.*", "telemetry.a1.dev", False),
        ("telemetry.*", "telemetry", False),
        ("*.a1", "event.a1", True),
        ("event.*.dev", "event.a1.dev", True),
        ("event.*.dev", "event.a1.other", False),
        ("*", "telemetry", True),
        ("*", "telemetry.a1", False),
        ("telemetry.>", "telemetry.a1", True),
        ("telemetry.>", "telemetry.a1.dev.x", True),
        ("telemetry.>", "telemetry", False),  # `>` needs at least one more token
        ("telemetry.>", "event.a1", False),
        (">", "telemetry.a1.dev", True),
        ("*.a1.>", "event.a1.dev", True),
        ("*.a1.>", "event.a2.dev", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


async def subscribe(
    bus: MemoryBus, pattern: str
) -> tuple[AsyncIterator[Message], asyncio.Future[Message]]:
    """Start a subscription; it is registered once its generator reaches its first wait."""
    it = bus.subscribe(pattern)
    first: asyncio.Future[Message] = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0)  # one turn of the loop, not a delay: lets the generator register
    return it, first


async def take(it: AsyncIterator[Message], first: asyncio.Future[Message], n: int) -> list[Message]:
    async with asyncio.timeout(DEADLINE_S):
        got = [await first]
        while len(got) < n:
            got.append(await anext(it))
    return got


async def test_publish_with_no_subscribers_is_fine() -> None:
    await MemoryBus().publish("telemetry.a1", {"x": 1})


async def test_every_matching_subscriber_gets_every_message_in_order() -> None:
    bus = MemoryBus()
    one, one_first = await subscribe(bus, "telemetry.a1")
    two, two_first = await subscribe(bus, "telemetry.*")
    for i in range(3):
        await bus.publish("telemetry.a1", {"i": i})
    expected = [("telemetry.a1", {"i": i}) for i in range(3)]
    assert await take(one, one_first, 3) == expected
    assert await take(two, two_first, 3) == expected
    await one.aclose()  # type: ignore[attr-defined]
    await two.aclose()  # type: ignore[attr-defined]


async def test_patterns_filter_subjects() -> None:
    bus = MemoryBus()
    mine, mine_first = await subscribe(bus, "event.a1.>")
    other, other_first = await subscribe(bus, "event.a2.>")
    await bus.publish("event.a2.dev", {"to": "a2"})
    await bus.publish("telemetry.a1", {"to": "nobody"})
    await bus.publish("event.a1.dev", {"to": "a1"})
    assert await take(mine, mine_first, 1) == [("event.a1.dev", {"to": "a1"})]
    assert await take(other, other_first, 1) == [("event.a2.dev", {"to": "a2"})]
    await mine.aclose()  # type: ignore[attr-defined]
    await other.aclose()  # type: ignore[attr-defined]


async def test_a_slow_subscriber_loses_its_oldest_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bus_module, "SUBSCRIBER_QUEUE", 3)
    bus = MemoryBus()
    slow, slow_first = await subscribe(bus, "telemetry.>")
    # publish() never waits for a subscriber: six messages go out while this one reads none.
    for i in range(6):
        await bus.publish("telemetry.a1", {"i": i})
    assert [m["i"] for _, m in await take(slow, slow_first, 3)] == [3, 4, 5]
    await bus.publish("telemetry.a1", {"i": 6})  # and it is still subscribed
    async with asyncio.timeout(DEADLINE_S):
        assert await anext(slow) == ("telemetry.a1", {"i": 6})
    await slow.aclose()  # type: ignore[attr-defined]


async def test_a_closed_subscription_gets_nothing_more() -> None:
    bus = MemoryBus()
    gone, gone_first = await subscribe(bus, "telemetry.>")
    await bus.publish("telemetry.a1", {"i": 0})
    assert await take(gone, gone_first, 1) == [("telemetry.a1", {"i": 0})]
    await gone.aclose()  # type: ignore[attr-defined]
    stays, stays_first = await subscribe(bus, "telemetry.>")
    await bus.publish("telemetry.a1", {"i": 1})
    assert await take(stays, stays_first, 1) == [("telemetry.a1", {"i": 1})]
    with pytest.raises(StopAsyncIteration):
        await anext(gone)
    await stays.aclose()  # type: ignore[attr-defined]
