"""ScheduledJobService on the memory stores: keeping scheduled jobs, who may, what is due
and how a run moves a scheduled job on."""

from __future__ import annotations

import pytest

from tests.unit.services.conftest import TestClock
from thinghub.domain.errors import Forbidden, Invalid, NotFound, PreconditionFailed
from thinghub.domain.jobs import JobStep, StepKind
from thinghub.domain.model import Principal, Role
from thinghub.domain.scheduled_jobs import DAY_S, Recurrence, Schedule
from thinghub.services.core import Services
from thinghub.services.scheduled_jobs import etag_of

STEP = JobStep(StepKind.CLOUD_PROPERTY, "site", "x")


async def admin_of(services: Services) -> Principal:
    account = await services.auth.create_account("sched")
    return Principal(account.id, Role.ADMIN, "admin")


async def test_keep_list_and_delete(services: Services, clock: TestClock) -> None:
    admin = await admin_of(services)
    schedule = Schedule(clock.now() + 60, Recurrence.DAILY, end_occurrences=2)
    made = await services.scheduled_jobs.put(
        admin, "s1", display_name="S", group="g", steps=[STEP], schedule=schedule
    )
    assert made.owner == admin
    assert (made.next_index, made.completed, made.next_run_at) == (0, False, clock.now() + 60)
    assert services.scheduled_jobs.changed.is_set()
    assert await services.scheduled_jobs.get(admin, "s1") == made
    assert [s.id for s in await services.scheduled_jobs.list(admin)] == ["s1"]
    with pytest.raises(PreconditionFailed):
        await services.scheduled_jobs.delete(admin, "s1", if_match='"stale"')
    await services.scheduled_jobs.delete(admin, "s1", if_match=f'"{etag_of(made)}"')
    with pytest.raises(NotFound):
        await services.scheduled_jobs.get(admin, "s1")


async def test_who_may(services: Services, clock: TestClock) -> None:
    admin = await admin_of(services)
    schedule = Schedule(clock.now() + 60)
    for principal, error in (
        (Principal(admin.account_id, Role.VIEWER, "v"), Forbidden),
        (Principal(admin.account_id, Role.ADMIN, "p", project="p1"), Forbidden),
    ):
        with pytest.raises(error):
            await services.scheduled_jobs.put(
                principal, "s", display_name="S", group="g", steps=[STEP], schedule=schedule
            )
    with pytest.raises(Invalid) as caught:
        await services.scheduled_jobs.put(
            admin, "s", display_name="S", group="g", steps=[STEP], schedule=Schedule(1.0)
        )
    assert caught.value.field == "schedule.start"
    with pytest.raises(Invalid):
        await services.scheduled_jobs.put(
            admin, "s", display_name="S", group="g", steps=[], schedule=schedule
        )


async def test_due_and_ran(services: Services, clock: TestClock) -> None:
    admin = await admin_of(services)
    start = clock.now() + 10
    weekly = Schedule(start, Recurrence.WEEKLY, end_occurrences=3)
    await services.scheduled_jobs.put(
        admin, "w", display_name="W", group="g", steps=[STEP], schedule=weekly
    )
    await services.scheduled_jobs.put(
        admin,
        "off",
        display_name="Off",
        group="g",
        steps=[STEP],
        schedule=Schedule(start),
        enabled=False,
    )
    due, upcoming = await services.scheduled_jobs.due(clock.now())
    assert (due, upcoming) == ([], start)
    clock.t = start + 8 * DAY_S  # two occurrences missed
    (job,) = (await services.scheduled_jobs.due(clock.now()))[0]
    assert job.id == "w" and job.next_index == 0
    moved = await services.scheduled_jobs.ran(job)
    assert moved is not None and moved.next_index == 2 and not moved.completed
    # The same occurrence is recorded once.
    assert await services.scheduled_jobs.ran(job) is None
    clock.t = start + 14 * DAY_S
    (job,) = (await services.scheduled_jobs.due(clock.now()))[0]
    done = await services.scheduled_jobs.ran(job)
    assert done is not None and done.completed
    assert (await services.scheduled_jobs.due(clock.now() + 365 * DAY_S))[0] == []
    # A change that keeps the schedule keeps its place; re-enabling starts from now.
    same = await services.scheduled_jobs.put(
        admin, "w", display_name="Renamed", group="g", steps=[STEP], schedule=weekly
    )
    assert same.completed
    again = await services.scheduled_jobs.put(
        admin, "off", display_name="Off", group="g", steps=[STEP], schedule=Schedule(start)
    )
    assert again.completed  # its one occurrence passed while it was off
