"""Scheduled jobs: a job's definition that runs at a time, once or on a recurrence.

A schedule starts at `start` and, with a recurrence, repeats daily, weekly (every 7 days) or
monthly (the same day of the month, the month's last day when it is shorter; times in UTC).
It ends after so many occurrences or at a date, or never. Occurrence k (0-based) is due at
`occurrence(k)`. A scheduled job remembers the next occurrence it has to run (`next_index`):
when its schedule is set, the first one not yet past. When it runs late (the server was
down), it runs once and moves on to the first occurrence still ahead: the missed ones are
skipped and count as occurrences. A scheduled job with no occurrence left is `completed`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from thinghub.domain.jobs import Batch, CancellationThreshold, JobStep
from thinghub.domain.model import Principal

__all__ = ["Recurrence", "Schedule", "ScheduledJob"]

DAY_S = 86_400.0
# An occurrence is looked for at most this far ahead (a recurrence over ten thousand years).
MAX_OCCURRENCES = 3_700_000


class Recurrence(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


def _add_months(ts: float, months: int) -> float:
    start = datetime.fromtimestamp(ts, tz=UTC)
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    if year > 9999:
        return float("inf")
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day).timestamp()


@dataclass(frozen=True, slots=True)
class Schedule:
    start: float
    recurrence: Recurrence | None = None
    end_date: float | None = None  # no occurrence after this time
    end_occurrences: int | None = None  # at most this many occurrences

    def occurrence(self, k: int) -> float:
        """When occurrence k (0-based) is due."""
        if k == 0 or self.recurrence is None:
            return self.start if k == 0 else float("inf")
        if self.recurrence is Recurrence.DAILY:
            return self.start + k * DAY_S
        if self.recurrence is Recurrence.WEEKLY:
            return self.start + k * 7 * DAY_S
        return _add_months(self.start, k)

    def has(self, k: int) -> bool:
        """Whether occurrence k is in the schedule."""
        if k > 0 and self.recurrence is None:
            return False
        if self.end_occurrences is not None and k >= self.end_occurrences:
            return False
        at = self.occurrence(k)
        return at != float("inf") and (self.end_date is None or at <= self.end_date)

    def first_from(self, now: float) -> int | None:
        """The first occurrence at or after `now`; None when none is left."""
        if self.has(0) and self.start >= now:
            return 0
        return self.first_after(0, now)

    def first_after(self, k: int, now: float) -> int | None:
        """The first occurrence after k that is still ahead of `now`; None when the
        schedule has none left."""
        if self.recurrence is None:
            return None
        # Daily and weekly occurrences are evenly spaced: jump close, then step.
        step = {Recurrence.DAILY: DAY_S, Recurrence.WEEKLY: 7 * DAY_S}.get(self.recurrence)
        candidate = k + 1
        if step is not None and now > self.start:
            candidate = max(candidate, int((now - self.start) // step))
        while candidate < MAX_OCCURRENCES:
            if not self.has(candidate):
                return None
            if self.occurrence(candidate) > now:
                return candidate
            candidate += 1
        return None


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    id: str
    account_id: str
    display_name: str
    group: str
    steps: tuple[JobStep, ...]
    schedule: Schedule
    owner: Principal  # who made or last changed it: its runs act as this principal
    created_at: float
    updated_at: float
    description: str | None = None
    batch: Batch | None = None
    threshold: CancellationThreshold | None = None
    enabled: bool = True
    next_index: int = 0  # the next occurrence to run
    completed: bool = False  # no occurrence left

    @property
    def next_run_at(self) -> float | None:
        return None if self.completed else self.schedule.occurrence(self.next_index)

    def is_due(self, now: float) -> bool:
        at = self.next_run_at
        return self.enabled and at is not None and at <= now

    def after_run(self, now: float) -> ScheduledJob:
        """Moved on past the occurrence it ran (and any it missed)."""
        following = self.schedule.first_after(self.next_index, now)
        if following is None:
            return replace(self, completed=True, next_index=self.next_index + 1, updated_at=now)
        return replace(self, next_index=following, updated_at=now)

    def rescheduled(self, schedule: Schedule, now: float) -> ScheduledJob:
        """With a new schedule, from its first occurrence not yet past (completed when it
        has none)."""
        first = schedule.first_from(now)
        return replace(
            self,
            schedule=schedule,
            next_index=0 if first is None else first,
            completed=first is None,
            updated_at=now,
        )
