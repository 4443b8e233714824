"""The IoT Central face's scheduler: runs scheduled jobs at their time.

Theory of operation: one worker per node (FaceParts.workers, in the server's TaskGroup) asks
ScheduledJobService which scheduled jobs are due, and for each resolves its device group (a
filter in this face's language, hence here and not in the service) as the scheduled job's
owner and makes the job through JobService, which runs it like any other. It then records the
occurrence as run, and sleeps until the next one is due, at most TICK_S, or until a scheduled
job is saved. The job of an occurrence has an id derived from the scheduled job and the
occurrence, the same on every node: when two nodes both see an occurrence due, the second
one's job is refused as existing (409), so one job runs per occurrence (save in the rare case
that both check at the same moment). It runs as its owner as the owner stands now (a user's
current role; a revoked or expired token runs nothing). A failure (the group deleted, the
owner gone or no longer allowed) skips the occurrence and is logged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from thinghub.domain.errors import Conflict, Error, Forbidden
from thinghub.domain.scheduled_jobs import ScheduledJob
from thinghub.faces.central.jobs import group_members
from thinghub.ports import Clock
from thinghub.services.core import Services

__all__ = ["TICK_S", "Scheduler"]

logger = logging.getLogger(__name__)

# The longest the scheduler sleeps without looking (a change made on another node is seen
# within this).
TICK_S = 30.0
# Ids of the jobs of occurrences: uuid5 in this namespace.
RUN_NAMESPACE = uuid.UUID("6f1c3a52-9d1e-4c43-8a53-1b2c3d4e5f60")


def run_id(job: ScheduledJob) -> str:
    """The id of the job of the scheduled job's next occurrence, the same on every node."""
    key = f"{job.account_id}/{job.id}/{job.created_at!r}/{job.next_index}"
    return str(uuid.uuid5(RUN_NAMESPACE, key))


class Scheduler:
    name = "scheduler"

    def __init__(self, services: Services, clock: Clock) -> None:
        self.services = services
        self.clock = clock

    async def run(self) -> None:
        changed = self.services.scheduled_jobs.changed
        while True:
            changed.clear()
            now = self.clock.now()
            try:
                due, upcoming = await self.services.scheduled_jobs.due(now)
                for job in due:
                    await self._run(job)
            except Exception:
                logger.exception("central scheduler: a pass failed")
                due, upcoming = [], None
            if due:
                continue  # look again: running took time
            wait = TICK_S if upcoming is None else min(TICK_S, max(0.0, upcoming - now))
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                pass

    async def stop(self) -> None:
        return None

    async def _run(self, job: ScheduledJob) -> None:
        services = self.services
        job_id = run_id(job)
        try:
            owner = await services.auth.current(job.owner)
            if owner is None:
                raise Forbidden(f"{job.owner.kind} {job.owner.subject!r} is no longer valid")
            group = await services.device_groups.get(owner, job.group)
            members = await group_members(services, owner, group)
            await services.jobs.create(
                owner,
                job_id,
                display_name=f"{job.display_name} - {job.next_index + 1}",
                group=group.id,
                device_ids=[d.id for d in members],
                steps=list(job.steps),
                description=job.description,
                batch=job.batch,
                threshold=job.threshold,
                scheduled_job=job.id,
            )
            logger.info(
                "scheduled job %s (account %s) ran occurrence %d as job %s",
                job.id,
                job.account_id,
                job.next_index,
                job_id,
            )
        except Conflict:
            logger.debug("scheduled job %s: occurrence %d already ran", job.id, job.next_index)
        except Error as exc:
            logger.warning(
                "scheduled job %s (account %s) skipped occurrence %d: %s",
                job.id,
                job.account_id,
                job.next_index,
                exc.message,
            )
        await services.scheduled_jobs.ran(job)
