"""The in-process bus: live fan-out of core events to subscribers on this node.

Subjects are dot-separated (telemetry.<account>.<device>); a pattern may end in `>` to match
any rest, or hold `*` for one token, as in NATS, so the NATS bus is a drop-in replacement.
A slow subscriber loses its oldest messages rather than stalling publishers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["MemoryBus", "subject_matches"]

SUBSCRIBER_QUEUE = 10_000


def subject_matches(pattern: str, subject: str) -> bool:
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: list[tuple[str, asyncio.Queue[tuple[str, dict[str, Any]]]]] = []

    async def publish(self, subject: str, message: dict[str, Any]) -> None:
        for pattern, queue in self._subscribers:
            if subject_matches(pattern, subject):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait((subject, message))

    def subscribe(self, pattern: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Subscribe now (not at the first read): nothing published after this call is missed.

        Close the iterator (aclose, or leave an `async for`) to unsubscribe.
        """
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        entry = (pattern, queue)
        self._subscribers.append(entry)
        return self._iterate(entry)

    async def _iterate(
        self, entry: tuple[str, asyncio.Queue[tuple[str, dict[str, Any]]]]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        try:
            while True:
                yield await entry[1].get()
        finally:
            if entry in self._subscribers:
                self._subscribers.remove(entry)
