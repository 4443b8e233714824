"""The Clock port: the time services read (the composition root picks bus.clock.SystemClock)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Clock"]


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...
