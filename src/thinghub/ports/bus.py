"""The Bus port: live fan-out of typed events (thinghub.domain.live) by subject pattern.

The in-memory implementation is thinghub.bus.memory.MemoryBus (one process); a multi-node
implementation (NATS) implements the same protocol, so it is an addition, not a rewrite.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from thinghub.domain.live import LiveEvent

__all__ = ["Bus"]


class Bus(Protocol):
    """Live fan-out of typed events (telemetry, twin changes, connections, events, devices).

    Subjects and patterns are described in thinghub.domain.live. Delivery is at most once and
    best effort: the store is the record; the bus is for what is happening now.
    """

    async def publish(self, event: LiveEvent) -> None: ...

    def listens(self, subject: str) -> bool:
        """False only when an event published on `subject` now would reach nobody, so a
        publisher of many events may skip building them (an upload of 100,000 values).
        A bus shared between nodes answers True: another node may be listening."""
        ...

    def close(self) -> None:
        """End every subscription on this node (at shutdown: live streams to clients end
        before the HTTP servers wait for their requests); later ones end at once."""
        ...

    def subscribe(self, pattern: str) -> AsyncGenerator[LiveEvent, None]:
        """Subscribe at once (eagerly: nothing published after this returns is missed).
        Close the generator to unsubscribe."""
        ...
