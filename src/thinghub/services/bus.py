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

    async def subscribe(self, pattern: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        entry = (pattern, queue)
        self._subscribers.append(entry)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(entry)
