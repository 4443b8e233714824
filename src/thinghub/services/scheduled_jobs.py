"""Scheduled jobs: job definitions kept per account that run at their time (domain/
scheduled_jobs.py says when).

Theory of operation: a scheduled job is a per-account document (kind DOCUMENT_KIND), so it
survives a restart. This service keeps them and says which are due (`due`); the face that
speaks their filter language runs them (faces/central/scheduler.py: it resolves the group,
makes the job through JobService as the scheduled job's owner, then calls `ran`). `changed`
is set whenever one is saved, so the scheduler wakes at once instead of at its next tick.
Scheduled jobs belong to the whole account, as jobs do.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from dataclasses import replace
from typing import Any

from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.etags import check_if_match, document_etag
from thinghub.domain.ids import parse_id
from thinghub.domain.jobs import Batch, CancellationThreshold, JobStep
from thinghub.domain.model import Principal, Role
from thinghub.domain.roles import Permission
from thinghub.domain.scheduled_jobs import Recurrence, Schedule, ScheduledJob
from thinghub.ports import Clock, Stores
from thinghub.services.authz import WHOLE_ACCOUNT, authorize
from thinghub.services.jobs import (
    batch_from_json,
    batch_json,
    check_steps,
    steps_from_json,
    steps_json,
    threshold_from_json,
    threshold_json,
)

__all__ = ["DOCUMENT_KIND", "MAX_SCHEDULED_JOBS", "ScheduledJobService", "etag_of"]

logger = logging.getLogger(__name__)

DOCUMENT_KIND = "scheduled_job"
# The most scheduled jobs of one account (each is looked at on every tick).
MAX_SCHEDULED_JOBS = 1000


def etag_of(job: ScheduledJob) -> str:
    """Changes whenever what the caller set does (not when it runs)."""
    return document_etag(_definition(job))


def _definition(job: ScheduledJob) -> dict[str, Any]:
    return {
        "displayName": job.display_name,
        "description": job.description,
        "group": job.group,
        "steps": steps_json(job.steps),
        "batch": batch_json(job.batch),
        "threshold": threshold_json(job.threshold),
        "schedule": {
            "start": job.schedule.start,
            "recurrence": None if job.schedule.recurrence is None else job.schedule.recurrence,
            "endDate": job.schedule.end_date,
            "endOccurrences": job.schedule.end_occurrences,
        },
        "enabled": job.enabled,
    }


class ScheduledJobService:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock
        self.changed = asyncio.Event()

    async def put(
        self,
        principal: Principal,
        job_id: str,
        *,
        display_name: str,
        group: str,
        steps: list[JobStep],
        schedule: Schedule,
        description: str | None = None,
        batch: Batch | None = None,
        threshold: CancellationThreshold | None = None,
        enabled: bool = True,
        if_match: str | None = None,
        create_only: bool = False,
    ) -> ScheduledJob:
        """Create or replace a scheduled job (Permission.DEVICES_WRITE); it runs as
        `principal` from now on.

        Raises:
            Invalid: a bad id, step or schedule (a one-time schedule already past).
            Conflict: `create_only` and the id is taken; too many scheduled jobs.
            PreconditionFailed: `if_match` names another state.
        """
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        parse_id(job_id, "scheduledJobId")
        check_steps(steps)
        now = self.clock.now()
        prior = await self._load(principal.account_id, job_id)
        # The same schedule keeps its place (what ran, what is next); a new one starts from
        # its first occurrence not yet past, and must have one.
        same = prior is not None and prior.schedule == schedule
        if not same and schedule.first_from(now) is None:
            raise Invalid(
                "schedule.start: the schedule has no occurrence ahead (its start, end date or "
                "occurrences are past)",
                field="schedule.start",
            )
        if if_match is not None:
            check_if_match(if_match, etag_of(prior) if prior else "", f"scheduled job {job_id!r}")
        if prior is None:
            count = len(await self.stores.documents.all(principal.account_id, DOCUMENT_KIND))
            if count >= MAX_SCHEDULED_JOBS:
                raise Conflict(
                    f"an account has at most {MAX_SCHEDULED_JOBS} scheduled jobs",
                    field="scheduledJobId",
                )
        job = ScheduledJob(
            id=job_id,
            account_id=principal.account_id,
            display_name=display_name,
            group=group,
            steps=tuple(steps),
            schedule=schedule,
            owner=principal,
            created_at=prior.created_at if prior else now,
            updated_at=now,
            description=description,
            batch=batch,
            threshold=threshold,
            enabled=enabled,
        )
        if prior is not None and same and (prior.enabled or not enabled):
            job = replace(job, next_index=prior.next_index, completed=prior.completed)
        else:  # a new schedule, or enabled again: what passed meanwhile is skipped
            job = job.rescheduled(schedule, now)
        await self._save(job)
        logger.info(
            "scheduled job %s saved (account %s), next run at %s",
            job.id,
            job.account_id,
            job.next_run_at,
        )
        return job

    async def get(self, principal: Principal, job_id: str) -> ScheduledJob:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        job = await self._load(principal.account_id, job_id)
        if job is None:
            raise NotFound(f"scheduled job {job_id!r} not found", field="scheduledJobId")
        return job

    async def list(self, principal: Principal) -> list[ScheduledJob]:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        rows = await self.stores.documents.all(principal.account_id, DOCUMENT_KIND)
        return [_from_document(principal.account_id, key, row) for key, row in rows]

    async def delete(
        self, principal: Principal, job_id: str, *, if_match: str | None = None
    ) -> None:
        """Delete it (Permission.DEVICES_WRITE); the jobs it ran stay."""
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        job = await self.get(principal, job_id)
        if if_match is not None:
            check_if_match(if_match, etag_of(job), f"scheduled job {job_id!r}")
        await self.stores.documents.delete(principal.account_id, DOCUMENT_KIND, job_id)
        self.changed.set()

    # -- the scheduler's side ------------------------------------------------------------

    async def due(self, now: float) -> tuple[builtins.list[ScheduledJob], float | None]:
        """Every account's scheduled jobs due at `now`, and when the next one that is not
        yet due is (None: none)."""
        due: builtins.list[ScheduledJob] = []
        upcoming: float | None = None
        for account in await self.stores.accounts.all():
            for key, row in await self.stores.documents.all(account.id, DOCUMENT_KIND):
                job = _from_document(account.id, key, row)
                at = job.next_run_at
                if not job.enabled or at is None:
                    continue
                if at <= now:
                    due.append(job)
                elif upcoming is None or at < upcoming:
                    upcoming = at
        return due, upcoming

    async def ran(self, job: ScheduledJob) -> ScheduledJob | None:
        """Record that the occurrence `job.next_index` ran; None when the scheduled job was
        deleted or changed meanwhile (then nothing is recorded)."""
        current = await self._load(job.account_id, job.id)
        if current is None or current.next_index != job.next_index:
            return None
        moved = current.after_run(self.clock.now())
        await self._save(moved, wake=False)
        return moved

    # -- storage -------------------------------------------------------------------------

    async def _load(self, account_id: str, job_id: str) -> ScheduledJob | None:
        row = await self.stores.documents.get(account_id, DOCUMENT_KIND, job_id)
        return None if row is None else _from_document(account_id, job_id, row)

    async def _save(self, job: ScheduledJob, *, wake: bool = True) -> None:
        document = {
            **_definition(job),
            "owner": {
                "role": job.owner.role.value,
                "subject": job.owner.subject,
                "kind": job.owner.kind,
                "faceRole": job.owner.face_role,
            },
            "createdAt": job.created_at,
            "updatedAt": job.updated_at,
            "nextIndex": job.next_index,
            "completed": job.completed,
        }
        await self.stores.documents.put(
            job.account_id, DOCUMENT_KIND, job.id, document, job.updated_at
        )
        if wake:
            self.changed.set()


def _from_document(account_id: str, job_id: str, row: dict[str, Any]) -> ScheduledJob:
    schedule = row["schedule"]
    owner = row["owner"]
    return ScheduledJob(
        id=job_id,
        account_id=account_id,
        display_name=row["displayName"],
        group=row["group"],
        steps=steps_from_json(row["steps"]),
        schedule=Schedule(
            schedule["start"],
            None if schedule["recurrence"] is None else Recurrence(schedule["recurrence"]),
            schedule["endDate"],
            schedule["endOccurrences"],
        ),
        owner=Principal(
            account_id, Role(owner["role"]), owner["subject"], owner["kind"], owner["faceRole"]
        ),
        created_at=row["createdAt"],
        updated_at=row["updatedAt"],
        description=row["description"],
        batch=batch_from_json(row["batch"]),
        threshold=threshold_from_json(row["threshold"]),
        enabled=row["enabled"],
        next_index=row["nextIndex"],
        completed=row["completed"],
    )
