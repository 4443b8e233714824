"""throttle: token buckets, traffic shaping and connect admission (time is an argument)."""

from __future__ import annotations

import pytest

from thinghub.config import (
    MQTT_DEVICE_BYTES_PER_S,
    MQTT_DEVICE_CONNECT_BURST,
    MQTT_DEVICE_CONNECTS_PER_MIN,
    MQTT_DEVICE_MAX_INFLIGHT,
    MQTT_DEVICE_MESSAGES_PER_S,
)
from thinghub.devices.throttle import (
    CONNECT_SWEEP_MIN,
    ConnectLimiter,
    ThroughputLimiter,
    TokenBucket,
)


def test_a_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    assert bucket.try_take(5, 0.0)
    assert not bucket.try_take(1, 0.0)  # empty: refused, nothing taken
    assert bucket.try_take(1, 0.1)  # 0.1 s at 10/s is one token
    assert not bucket.try_take(1, 0.1)
    assert bucket.is_full(10.0)  # never above capacity, however long it waited
    assert bucket.try_take(5, 10.0)
    assert not bucket.try_take(1, 10.0)


def test_debt_is_repaid_at_the_rate() -> None:
    bucket = TokenBucket(rate=100, capacity=100, now=0.0)
    bucket.take(300, 0.0)  # more than it holds: 200 in debt
    assert bucket.debt_s(0.0) == pytest.approx(2.0)
    assert bucket.debt_s(1.5) == pytest.approx(0.5)
    assert bucket.debt_s(2.0) == 0.0


@pytest.mark.parametrize(("rate", "capacity"), [(0, 1), (1, 0), (-1, 1)])
def test_a_bucket_needs_a_positive_rate_and_capacity(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="rate and capacity"):
        TokenBucket(rate, capacity, 0.0)


def test_a_burst_passes_then_the_device_is_shaped_to_its_rate() -> None:
    limiter = ThroughputLimiter(messages_per_s=100, bytes_per_s=1e9, now=0.0)
    now = 0.0
    for _ in range(100):  # a second's worth at once
        assert limiter.delay_s(now) == 0.0
        limiter.take(10, now)
    limiter.take(10, now)  # the 101st leaves it in debt
    assert limiter.delay_s(now) == pytest.approx(0.01)
    over = limiter.over(now)
    assert over is not None
    assert (over.limit, over.per_s) == ("messages", 100)
    # Read as fast as it allows for 10 s: waiting each delay paces it at exactly 100/s.
    taken = 0
    while now < 10.0:
        now += limiter.delay_s(now)
        limiter.take(10, now)
        taken += 1
    assert taken == pytest.approx(1000, abs=2)


def test_try_take_is_delay_then_take_in_one_call() -> None:
    fused = ThroughputLimiter(messages_per_s=100, bytes_per_s=2_000, now=0.0)
    plain = ThroughputLimiter(messages_per_s=100, bytes_per_s=2_000, now=0.0)
    now = 0.0
    outcomes = []
    for step in range(2_000):  # bursts over both budgets, then pauses that repay them
        now += 0.02 if step % 50 == 49 else 0.0001
        size = 5 if step % 3 else 300
        may = plain.delay_s(now) == 0.0
        if may:
            plain.take(size, now)
        assert fused.try_take(size, now) is may
        outcomes.append(may)
        assert (fused.messages.level, fused.bytes.level) == pytest.approx(
            (plain.messages.level, plain.bytes.level)
        )
    assert True in outcomes and False in outcomes


def test_bytes_are_shaped_too_and_a_message_larger_than_the_budget_gets_through() -> None:
    limiter = ThroughputLimiter(messages_per_s=1e6, bytes_per_s=65_536, now=0.0)
    limiter.take(262_144, 0.0)  # 4 s worth of bytes in one message: taken, into debt
    assert limiter.delay_s(0.0) == pytest.approx(3.0)
    over = limiter.over(0.0)
    assert over is not None and over.limit == "bytes"
    assert limiter.delay_s(3.0) == 0.0
    assert limiter.over(3.0) is None


def test_the_flood_of_the_issue_is_held_to_the_default_byte_rate() -> None:
    """QoS 0 64 KiB messages without pause: at most the byte budget gets through per second."""
    limiter = ThroughputLimiter(MQTT_DEVICE_MESSAGES_PER_S, MQTT_DEVICE_BYTES_PER_S, now=0.0)
    now, size, sent = 0.0, 65_536 + 60, 0
    while now < 7.0:
        now += limiter.delay_s(now)
        limiter.take(size, now)
        sent += 1
    # 7 s at 2 MiB/s plus the first second's burst (and the one that went into debt).
    assert sent * size <= MQTT_DEVICE_BYTES_PER_S * 8 + 2 * size  # one may be in debt


def test_an_honest_device_is_never_slowed_by_the_defaults() -> None:
    """1,000 small QoS 1 messages a second with 16 in flight (what the benchmarks do)."""
    assert MQTT_DEVICE_MAX_INFLIGHT >= 16  # the window alone never stops its reads
    limiter = ThroughputLimiter(MQTT_DEVICE_MESSAGES_PER_S, MQTT_DEVICE_BYTES_PER_S, now=0.0)
    topic_and_body = len("devices/sim-0001/messages/events/%24.ct=application%2Fjson") + 200
    for n in range(60_000):  # a minute, evenly spaced, one every millisecond
        now = n / 1000
        assert limiter.delay_s(now) == 0.0, f"throttled at message {n}"
        limiter.take(topic_and_body, now)
    # Even a whole second's messages sent at once (a burst after a network hiccup) pass.
    burst = ThroughputLimiter(MQTT_DEVICE_MESSAGES_PER_S, MQTT_DEVICE_BYTES_PER_S, now=0.0)
    for _ in range(1000):
        assert burst.delay_s(0.0) == 0.0
        burst.take(topic_and_body, 0.0)


def test_connects_get_a_burst_then_the_rate_per_client_id() -> None:
    limiter = ConnectLimiter(per_min=12, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another device has its own budget
    assert not limiter.allow("a", 4.9)  # 12 a minute: one every 5 s
    assert limiter.allow("a", 5.0)
    assert not limiter.allow("a", 5.0)


def test_a_device_reconnecting_in_a_loop_is_held_to_the_default_rate() -> None:
    limiter = ConnectLimiter(MQTT_DEVICE_CONNECTS_PER_MIN, MQTT_DEVICE_CONNECT_BURST)
    # One attempt every 10 ms for ten minutes.
    accepted = sum(limiter.allow("loop", n / 100) for n in range(60_000))
    assert accepted <= MQTT_DEVICE_CONNECT_BURST + MQTT_DEVICE_CONNECTS_PER_MIN * 10 + 1


def test_connect_limiter_forgets_ids_whose_budget_refilled() -> None:
    limiter = ConnectLimiter(per_min=60, burst=2)
    for n in range(CONNECT_SWEEP_MIN):
        assert limiter.allow(f"d{n}", 0.0)
    assert len(limiter) == CONNECT_SWEEP_MIN
    assert limiter.allow("late", 10.0)  # 10 s later every earlier bucket is full again
    assert len(limiter) == 1
    with pytest.raises(ValueError):
        ConnectLimiter(per_min=0, burst=1)
