"""Throttles for device connections: token buckets for message rate, bytes and connects.

Theory of operation: every limit is a token bucket. A bucket holds at most `capacity` tokens
and refills at `rate` tokens per second; a full bucket is what a device that has been quiet
can spend at once (a burst). Nothing here sleeps, reads a clock or logs: time is an argument
(`now`, in seconds of any monotonic clock), and the device listener owns the waiting.

Two ways to spend, matching the two things the listener does:

- Traffic shaping (`ThroughputLimiter`): a message is always taken, even when that leaves the
  bucket in debt; `delay_s(now)` then says how long to wait before the next one, which is how
  long the debt takes to repay. The listener stops reading the device's socket for that long,
  so a device over its rate is slowed to it and nothing piles up in memory. Taking into debt
  (rather than refusing) lets a message larger than the whole bucket through, once it has
  waited its turn. This is IoT Hub's documented "traffic shaping": requests over the throttle
  are accepted, then processed at the throttle rate with a growing latency.
- Admission (`ConnectLimiter`): a connect either fits the bucket now or is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["THROTTLE_BURST_S", "ConnectLimiter", "ThroughputLimiter", "TokenBucket"]

#: A device's message and byte budgets hold this many seconds of its rate: what one that has
#: been quiet may send at once before it is shaped to the rate.
THROTTLE_BURST_S = 1.0

#: How many idle entries a ConnectLimiter may hold before it sweeps out the ones whose bucket
#: has refilled (those are the same as a fresh bucket, so forgetting them changes nothing).
CONNECT_SWEEP_MIN = 1024


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; a negative level is a debt.

    Args:
        rate: Tokens added per second (> 0).
        capacity: Most tokens held (> 0); a new bucket starts full.
        now: The current time, in seconds.
    """

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"a token bucket needs rate and capacity > 0: {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, amount: float, now: float) -> None:
        """Spend `amount` tokens, going into debt if there are fewer."""
        self._refill(now)
        self.level -= amount

    def try_take(self, amount: float, now: float) -> bool:
        """Spend `amount` tokens if the bucket holds them; False (nothing spent) if not."""
        self._refill(now)
        if self.level < amount:
            return False
        self.level -= amount
        return True

    def debt_s(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0.0 when it is not in debt)."""
        self._refill(now)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.level >= self.capacity


@dataclass(frozen=True, slots=True)
class Throttled:
    """Why a device is being slowed: the budget it is over."""

    limit: str  # "messages" or "bytes"
    per_s: float


class ThroughputLimiter:
    """One device connection's message rate and byte rate, shaped (never refused).

    Args:
        messages_per_s: PUBLISH packets per second the device may send, sustained.
        bytes_per_s: Topic plus payload bytes per second, sustained.
        now: The current time, in seconds.
        burst_s: Each budget holds this many seconds of its rate.
    """

    __slots__ = ("bytes", "messages")

    def __init__(
        self,
        messages_per_s: float,
        bytes_per_s: float,
        now: float,
        *,
        burst_s: float = THROTTLE_BURST_S,
    ) -> None:
        self.messages = TokenBucket(messages_per_s, messages_per_s * burst_s, now)
        self.bytes = TokenBucket(bytes_per_s, bytes_per_s * burst_s, now)

    def delay_s(self, now: float) -> float:
        """How long to wait before taking the next message (0.0: take it now)."""
        return max(self.messages.debt_s(now), self.bytes.debt_s(now))

    def over(self, now: float) -> Throttled | None:
        """The budget that is in debt, if any (for the log line)."""
        if self.messages.debt_s(now) > 0:
            return Throttled("messages", self.messages.rate)
        if self.bytes.debt_s(now) > 0:
            return Throttled("bytes", self.bytes.rate)
        return None

    def take(self, size: int, now: float) -> None:
        """Count one message of `size` bytes (it may leave a budget in debt)."""
        self.messages.take(1, now)
        self.bytes.take(size, now)

    def try_take(self, size: int, now: float) -> bool:
        """take() when no budget is in debt (delay_s(now) == 0) and True; else False, with
        nothing taken. One call per message (the listener's common case), the refills
        inlined."""
        messages = self.messages
        nbytes = self.bytes
        if now > messages.updated:
            messages.level = min(
                messages.capacity, messages.level + (now - messages.updated) * messages.rate
            )
            messages.updated = now
        if now > nbytes.updated:
            nbytes.level = min(nbytes.capacity, nbytes.level + (now - nbytes.updated) * nbytes.rate)
            nbytes.updated = now
        if messages.level < 0 or nbytes.level < 0:
            return False
        messages.level -= 1
        nbytes.level -= size
        return True


class ConnectLimiter:
    """Accepted connects per client id: `burst` at once, then `per_min` a minute.

    Memory stays bounded by the ids that connected recently: an id whose bucket has refilled
    is swept out (it would start full anyway).
    """

    __slots__ = ("_buckets", "_sweep_at", "burst", "per_min")

    def __init__(self, per_min: float, burst: int) -> None:
        if per_min <= 0 or burst < 1:
            raise ValueError(f"connect limit needs per_min > 0 and burst >= 1: {per_min}, {burst}")
        self.per_min = per_min
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._sweep_at = CONNECT_SWEEP_MIN

    def allow(self, client_id: str, now: float) -> bool:
        """Count a connect of `client_id`; False when it is over its budget (not counted)."""
        bucket = self._buckets.get(client_id)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self._buckets[client_id] = TokenBucket(self.per_min / 60, self.burst, now)
        return bucket.try_take(1, now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
        # Sweep again when the table has doubled: each sweep is paid for by as many inserts.
        self._sweep_at = max(CONNECT_SWEEP_MIN, 2 * len(self._buckets))
