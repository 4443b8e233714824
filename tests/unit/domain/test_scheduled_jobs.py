"""Schedules of scheduled jobs (domain/scheduled_jobs.py): occurrences, ends, runs missed."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from thinghub.domain.jobs import JobStep, StepKind
from thinghub.domain.model import Principal, Role
from thinghub.domain.scheduled_jobs import DAY_S, Recurrence, Schedule, ScheduledJob


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def day(value: float) -> str:
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M")


START = ts("2030-01-31T06:00:00")


def test_occurrences() -> None:
    once = Schedule(START)
    assert once.has(0) and not once.has(1)
    daily = Schedule(START, Recurrence.DAILY)
    assert daily.occurrence(3) == START + 3 * DAY_S
    weekly = Schedule(START, Recurrence.WEEKLY)
    assert day(weekly.occurrence(1)) == "2030-02-07 06:00"
    monthly = Schedule(START, Recurrence.MONTHLY)
    # The 31st: the last day of shorter months, and the 31st again when there is one.
    assert [day(monthly.occurrence(k)) for k in range(4)] == [
        "2030-01-31 06:00",
        "2030-02-28 06:00",
        "2030-03-31 06:00",
        "2030-04-30 06:00",
    ]
    assert day(monthly.occurrence(13)) == "2031-02-28 06:00"


def test_ends() -> None:
    by_count = Schedule(START, Recurrence.DAILY, end_occurrences=2)
    assert by_count.has(1) and not by_count.has(2)
    by_date = Schedule(START, Recurrence.DAILY, end_date=START + 2.5 * DAY_S)
    assert by_date.has(2) and not by_date.has(3)
    assert by_date.first_after(2, START) is None
    assert by_date.first_from(START + 10 * DAY_S) is None


def test_first_from_and_first_after() -> None:
    daily = Schedule(START, Recurrence.DAILY)
    assert daily.first_from(START - 1) == 0
    assert daily.first_from(START) == 0
    assert daily.first_from(START + 1) == 1
    assert daily.first_from(START + 100.5 * DAY_S) == 101
    assert Schedule(START).first_from(START + 1) is None
    assert Schedule(START, Recurrence.MONTHLY).first_after(0, START + 40 * DAY_S) == 2


def job(schedule: Schedule, now: float) -> ScheduledJob:
    owner = Principal("acc", Role.ADMIN, "tok")
    step = JobStep(StepKind.PROPERTY, "p", 1)
    made = ScheduledJob("s", "acc", "S", "g", (step,), schedule, owner, now, now)
    return made.rescheduled(schedule, now)


def test_runs_and_missed_occurrences() -> None:
    weekly = Schedule(START, Recurrence.WEEKLY, end_occurrences=5)
    j = job(weekly, START - 60)
    assert j.next_index == 0 and not j.is_due(START - 1) and j.is_due(START)
    # Run three weeks late: once, and on to the first occurrence still ahead.
    late = START + 3 * 7 * DAY_S + 60
    j = j.after_run(late)
    assert j.next_index == 4 and not j.completed
    assert j.next_run_at == START + 4 * 7 * DAY_S
    j = j.after_run(START + 4 * 7 * DAY_S)
    assert j.completed and j.next_run_at is None and not j.is_due(late * 2)
    # Disabled: never due.
    assert not dataclasses.replace(job(Schedule(START), START - 1), enabled=False).is_due(START)
    # A schedule set after its start begins at its next occurrence.
    assert job(Schedule(START, Recurrence.DAILY), START + 1).next_index == 1
    assert job(Schedule(START), START + 1).completed
