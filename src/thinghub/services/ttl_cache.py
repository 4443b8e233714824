"""TtlCache: the one short-lived cache type of the services (devices, twins, tokens, ...).

Theory of operation: entries live in one dict in insertion order, each with the time it
expires (the clock's `now()` plus `ttl_s`, or a time given by `put`). `lookup` answers a
fresh entry and drops a stale one; a `put` of a key already held moves it to the end. At
`max_entries` a put first evicts the oldest entry (the first in the dict), so memory is
bounded and a busy cache keeps its most recently written keys. A cached value may be None
where a cache remembers "not found" (negative caching): `lookup` returns the entry, so a
miss and a cached None are told apart.

Changes made through the owning service replace or `invalidate` their entries at once;
changes made on another node arrive as bus events and invalidate them there (see the
registry and twins services); whatever is missed is gone after `ttl_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from thinghub.ports import Clock

__all__ = ["Entry", "TtlCache"]

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    value: V
    expires_at: float


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire `ttl_s` after they were put (math.inf: never)."""

    def __init__(self, clock: Clock, *, ttl_s: float, max_entries: int) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be greater than 0, got {ttl_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries!r}")
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, Entry[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: K) -> Entry[V] | None:
        """The fresh entry for `key` (its value may be a cached None), else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock.now():
            del self._entries[key]
            return None
        return entry

    def get(self, key: K) -> V | None:
        """The fresh value for `key`, else None (for caches that never hold None)."""
        entry = self.lookup(key)
        return None if entry is None else entry.value

    def put(self, key: K, value: V, *, expires_at: float | None = None) -> None:
        """Remember `value` until `expires_at`, by default `ttl_s` from now."""
        if expires_at is None:
            expires_at = math.inf if self.ttl_s == math.inf else self.clock.now() + self.ttl_s
        if self._entries.pop(key, None) is None and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = Entry(value, expires_at)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    def invalidate_prefix(self: TtlCache[str, V], prefix: str) -> None:
        """Drop every key that starts with `prefix` (a device and its modules: `d`, `d/`)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
