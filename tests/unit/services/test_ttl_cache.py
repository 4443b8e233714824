"""Tests for thinghub.services.ttl_cache: expiry by the clock, bounds, negative caching."""

from __future__ import annotations

import math

import pytest

from thinghub.services.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(clock, ttl_s=5.0, max_entries=10)
    cache.put("a", 1)
    clock.t += 4.999
    assert cache.get("a") == 1
    clock.t += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0  # a stale entry is dropped when seen


def test_a_put_restarts_the_ttl() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(clock, ttl_s=5.0, max_entries=10)
    cache.put("a", 1)
    clock.t += 4
    cache.put("a", 2)
    clock.t += 4
    assert cache.get("a") == 2


def test_a_cached_none_is_told_from_a_miss() -> None:
    clock = Clock()
    cache: TtlCache[str, str | None] = TtlCache(clock, ttl_s=5.0, max_entries=10)
    assert cache.lookup("gone") is None  # a miss
    cache.put("gone", None)  # "not found", remembered
    hit = cache.lookup("gone")
    assert hit is not None and hit.value is None
    clock.t += 5
    assert cache.lookup("gone") is None


def test_an_entry_may_expire_at_its_own_time() -> None:
    clock = Clock()
    cache: TtlCache[str, str] = TtlCache(clock, ttl_s=math.inf, max_entries=10)
    cache.put("token", "key", expires_at=clock.t + 60)
    cache.put("forever", "value")
    clock.t += 59.9
    assert cache.get("token") == "key"
    clock.t += 0.1
    assert cache.get("token") is None
    clock.t += 1e9
    assert cache.get("forever") == "value"


def test_at_the_bound_the_oldest_written_entry_goes() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(clock, ttl_s=5.0, max_entries=3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    cache.put("a", 10)  # rewritten: now the newest
    cache.put("d", 4)  # full: "b", the oldest written, goes
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(k) for k in ("a", "c", "d")] == [10, 3, 4]
    for i in range(100):
        cache.put(f"k{i}", i)
    assert len(cache) == 3  # bounded, whatever is written


def test_invalidate_and_invalidate_prefix() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(clock, ttl_s=5.0, max_entries=10)
    for key in ("gw", "gw/m1", "gw/m2", "gw2", "other"):
        cache.put(key, 1)
    cache.invalidate("gw")
    cache.invalidate_prefix("gw/")
    cache.invalidate("never-there")
    assert [k for k in ("gw", "gw/m1", "gw/m2", "gw2", "other") if cache.get(k)] == [
        "gw2",
        "other",
    ]
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize(("ttl_s", "max_entries"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_bounds_are_refused(ttl_s: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        TtlCache(Clock(), ttl_s=ttl_s, max_entries=max_entries)
