"""The wall clock behind the Clock port."""

from __future__ import annotations

import time

__all__ = ["SystemClock"]


class SystemClock:
    def now(self) -> float:
        """Epoch seconds in whole microseconds: what storage keeps, so a time handed out at
        creation is the same time read back later."""
        return time.time_ns() // 1000 / 1_000_000
