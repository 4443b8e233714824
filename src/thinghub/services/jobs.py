"""Jobs: one change applied to every device of a group, with per-device status, stop,
resume and rerun of the failed devices (domain/jobs.py says what a job is).

Theory of operation: a job is stored as a per-account document (kind DOCUMENT_KIND) holding
every device's outcome, rewritten after each batch, so its progress is visible while it runs.
The face resolves the group to device ids when the job is made (a group is a filter in the
face's language). Running is this node's: `run` takes jobs from a queue and works through
their pending devices a batch at a time (one device without `batch`; a batch's devices at
once, at most MAX_PARALLEL_DEVICES together), as the principal that started the job, through
the same services a single request would use (PropertyService, CommandService, Registry), so
every rule and permission applies per device. Between batches it saves the outcomes and reads
the job again, so a stop (from any node) halts it and the cancellation threshold is checked;
`resume` continues with the pending devices. A job left running by a restart is continued by
`resume` too. Jobs belong to the whole account (they name devices of every project): a caller
limited to one project may not see or make them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from thinghub.domain.commands import CommandStatus
from thinghub.domain.errors import Conflict, Error, Invalid, NotFound, TooLarge
from thinghub.domain.ids import parse_id
from thinghub.domain.jobs import (
    Batch,
    CancellationThreshold,
    DeviceRun,
    DeviceRunStatus,
    Job,
    JobStatus,
    JobStep,
    Portion,
    StepKind,
)
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.ports import Clock, Stores
from thinghub.services.authz import WHOLE_ACCOUNT, authorize
from thinghub.services.commands import CommandService
from thinghub.services.properties import PropertyService
from thinghub.services.registry import Registry

__all__ = ["DOCUMENT_KIND", "MAX_JOB_DEVICES", "MAX_JOB_STEPS", "JobService"]

logger = logging.getLogger(__name__)

DOCUMENT_KIND = "job"
# The most devices one job changes (its document holds every device's outcome).
MAX_JOB_DEVICES = 10_000
# The most steps (changes) one job applies to each device.
MAX_JOB_STEPS = 10
# The most devices of a batch worked on at the same moment (each may wait for a command).
MAX_PARALLEL_DEVICES = 32


class JobService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        registry: Registry,
        properties: PropertyService,
        commands: CommandService,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.properties = properties
        self.commands = commands
        self._queue: asyncio.Queue[tuple[Principal, str]] = asyncio.Queue()
        self._running: set[tuple[str, str]] = set()  # (account, job id) worked on here
        # Set when a job of this node ends (tests and callers wait on it).
        self._ended: dict[tuple[str, str], asyncio.Event] = {}

    # -- making and reading --------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        job_id: str,
        *,
        display_name: str,
        group: str,
        device_ids: list[str],
        steps: list[JobStep],
        description: str | None = None,
        rerun_of: str | None = None,
        batch: Batch | None = None,
        threshold: CancellationThreshold | None = None,
        scheduled_job: str | None = None,
    ) -> Job:
        """Make a job over `device_ids` and start it (Permission.DEVICES_WRITE).

        Raises:
            Invalid: a bad id or step, no steps, too many steps or devices.
            Conflict: a job with this id exists.
        """
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        parse_id(job_id, "jobId")
        check_steps(steps)
        if len(device_ids) > MAX_JOB_DEVICES:
            raise TooLarge(
                f"the group has {len(device_ids)} devices; a job changes at most {MAX_JOB_DEVICES}",
                field="group",
            )
        if await self.stores.documents.get(principal.account_id, DOCUMENT_KIND, job_id):
            raise Conflict(f"job {job_id!r} already exists", field="jobId")
        now = self.clock.now()
        job = Job(
            id=job_id,
            account_id=principal.account_id,
            display_name=display_name,
            group=group,
            steps=tuple(steps),
            devices=tuple(DeviceRun(d) for d in dict.fromkeys(device_ids)),
            status=JobStatus.RUNNING,
            created_at=now,
            updated_at=now,
            description=description,
            rerun_of=rerun_of,
            batch=batch,
            threshold=threshold,
            scheduled_job=scheduled_job,
        )
        if not job.devices:
            job = replace(job, status=JobStatus.COMPLETED)
        await self._save(job)
        logger.info(
            "job %s made over %d devices (account %s)", job.id, len(job.devices), job.account_id
        )
        if job.status is JobStatus.RUNNING:
            self._start(principal, job.id)
        return job

    async def get(self, principal: Principal, job_id: str) -> Job:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        job = await self._load(principal.account_id, job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found", field="jobId")
        return job

    async def list(self, principal: Principal) -> list[Job]:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        rows = await self.stores.documents.all(principal.account_id, DOCUMENT_KIND)
        return [_from_document(principal.account_id, key, row) for key, row in rows]

    # -- stop, resume, rerun -------------------------------------------------------------

    async def stop(self, principal: Principal, job_id: str) -> Job:
        """Stop a running job (Permission.DEVICES_WRITE): pending devices stay pending."""
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        job = (await self.get(principal, job_id)).stop(self.clock.now())
        await self._save(job)
        return job

    async def resume(self, principal: Principal, job_id: str) -> Job:
        """Continue a stopped job, or one a restart left running, with its pending devices."""
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        job = await self.get(principal, job_id)
        if job.status is JobStatus.STOPPED:
            job = job.resume(self.clock.now())
            await self._save(job)
        elif job.status is not JobStatus.RUNNING:
            raise Conflict(f"job {job_id!r} is {job.status}, not stopped", field="jobId")
        self._start(principal, job.id)
        return job

    async def rerun(self, principal: Principal, job_id: str, rerun_id: str) -> Job:
        """A new job `rerun_id` with the steps of `job_id`, over its failed devices."""
        job = await self.get(principal, job_id)
        if not job.status.is_final:
            raise Conflict(f"job {job_id!r} is {job.status}; rerun it once it ends", field="jobId")
        failed = [r.device_id for r in job.devices if r.status is DeviceRunStatus.FAILED]
        if not failed:
            raise Conflict(f"job {job_id!r} has no failed devices to rerun", field="jobId")
        return await self.create(
            principal,
            rerun_id,
            display_name=job.display_name,
            group=job.group,
            device_ids=failed,
            steps=list(job.steps),
            description=job.description,
            rerun_of=job.id,
            batch=job.batch,
            threshold=job.threshold,
        )

    async def wait_ended(self, account_id: str, job_id: str) -> None:
        """Until this node stops working on the job (ended, or stopped)."""
        event = self._ended.get((account_id, job_id))
        if event is not None:
            await event.wait()

    # -- running -------------------------------------------------------------------------

    def _start(self, principal: Principal, job_id: str) -> None:
        key = (principal.account_id, job_id)
        if key in self._running:
            return
        self._running.add(key)
        self._ended[key] = asyncio.Event()
        self._queue.put_nowait((principal, job_id))

    async def run(self) -> None:
        """The job loop; runs until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                principal, job_id = await self._queue.get()
                tasks.create_task(self._work(principal, job_id), name=f"job[{job_id}]")

    async def _work(self, principal: Principal, job_id: str) -> None:
        key = (principal.account_id, job_id)
        try:
            while True:
                job = await self._load(principal.account_id, job_id)
                if job is None or job.status is not JobStatus.RUNNING:
                    return
                pending = [r for r in job.devices if r.status is DeviceRunStatus.PENDING]
                if not pending:
                    return
                batch = pending[: job.batch_size()]
                outcomes = await self._apply_batch(principal, job, [r.device_id for r in batch])
                latest = await self._load(principal.account_id, job_id)
                if latest is None:
                    return
                await self._save(latest.with_runs(outcomes, self.clock.now()))
        except Exception:
            logger.exception("job %s (account %s) failed to run", job_id, principal.account_id)
        finally:
            self._running.discard(key)
            event = self._ended.pop(key, None)
            if event is not None:
                event.set()

    async def _apply_batch(
        self, principal: Principal, job: Job, device_ids: Sequence[str]
    ) -> tuple[DeviceRun, ...]:
        """The job on a batch of devices, at most MAX_PARALLEL_DEVICES at the same moment."""
        if len(device_ids) == 1:
            return (await self._apply(principal, job, device_ids[0]),)
        limit = asyncio.Semaphore(MAX_PARALLEL_DEVICES)

        async def one(device_id: str) -> DeviceRun:
            async with limit:
                return await self._apply(principal, job, device_id)

        async with asyncio.TaskGroup() as tasks:
            runs = [
                tasks.create_task(one(d), name=f"job[{job.id}].device[{d}]") for d in device_ids
            ]
        return tuple(run.result() for run in runs)

    async def _apply(self, principal: Principal, job: Job, device_id: str) -> DeviceRun:
        """Every step of the job on one device; the first that fails fails the device."""
        try:
            for step in job.steps:
                await self._step(principal, device_id, step)
        except Error as exc:
            return DeviceRun(device_id, DeviceRunStatus.FAILED, exc.message)
        return DeviceRun(device_id, DeviceRunStatus.COMPLETED)

    async def _step(self, principal: Principal, device_id: str, step: JobStep) -> None:
        if step.target is not None:
            device = await self.registry.get_device(principal, device_id)
            if device.template != step.target:
                raise Invalid(
                    f"device {device_id!r} uses template {device.template!r}, not {step.target!r}"
                )
        # A component's property or command: `component*name`, or `component.name` as IoT
        # Central's jobs name it (DTDL names hold no dot, so the two never mean different
        # things); a cloud property's name is taken as it is.
        path = step.path
        if step.kind is not StepKind.CLOUD_PROPERTY and "*" not in path:
            path = path.replace(".", "*", 1)
        if step.kind is StepKind.PROPERTY:
            await self.properties.write(principal, device_id, path, step.value)
        elif step.kind is StepKind.CLOUD_PROPERTY:
            await self.registry.set_cloud_property(principal, device_id, step.path, step.value)
        else:
            command = await self.commands.execute(principal, device_id, path, step.value, None, 0)
            if command.status is not CommandStatus.COMPLETED:
                code = "" if command.response_code is None else f" ({command.response_code})"
                raise Invalid(f"command {step.path} ended {command.status}{code}")

    # -- storage -------------------------------------------------------------------------

    async def _load(self, account_id: str, job_id: str) -> Job | None:
        row = await self.stores.documents.get(account_id, DOCUMENT_KIND, job_id)
        return None if row is None else _from_document(account_id, job_id, row)

    async def _save(self, job: Job) -> None:
        await self.stores.documents.put(
            job.account_id, DOCUMENT_KIND, job.id, _to_document(job), job.updated_at
        )


def _check_step(step: JobStep, field: str) -> None:
    if not isinstance(step.path, str) or not step.path or len(step.path) > 256:
        raise Invalid(f"{field}.path must be a name of 1 to 256 characters", field=f"{field}.path")
    check_storable(step.value, f"{field}.value")


def steps_json(steps: Sequence[JobStep]) -> list[dict[str, Any]]:
    """Steps as stored (a scheduled job keeps them too)."""
    return [
        {"type": s.kind.value, "path": s.path, "value": s.value, "target": s.target} for s in steps
    ]


def steps_from_json(rows: Sequence[dict[str, Any]]) -> tuple[JobStep, ...]:
    return tuple(JobStep(StepKind(s["type"]), s["path"], s["value"], s.get("target")) for s in rows)


def batch_json(batch: Batch | None) -> dict[str, Any] | None:
    return None if batch is None else {"type": batch.kind.value, "value": batch.value}


def batch_from_json(row: dict[str, Any] | None) -> Batch | None:
    return None if row is None else Batch(Portion(row["type"]), row["value"])


def threshold_json(threshold: CancellationThreshold | None) -> dict[str, Any] | None:
    if threshold is None:
        return None
    return {"type": threshold.kind.value, "value": threshold.value, "batch": threshold.per_batch}


def threshold_from_json(row: dict[str, Any] | None) -> CancellationThreshold | None:
    if row is None:
        return None
    return CancellationThreshold(Portion(row["type"]), row["value"], row["batch"])


def check_steps(steps: Sequence[JobStep]) -> None:
    """Raises: Invalid, naming the step."""
    if not steps:
        raise Invalid("a job needs at least one step in data", field="data")
    if len(steps) > MAX_JOB_STEPS:
        raise Invalid(f"a job has at most {MAX_JOB_STEPS} steps", field="data")
    for index, step in enumerate(steps):
        _check_step(step, f"data[{index}]")


def _to_document(job: Job) -> dict[str, Any]:
    return {
        "displayName": job.display_name,
        "description": job.description,
        "group": job.group,
        "steps": [
            {"type": s.kind.value, "path": s.path, "value": s.value, "target": s.target}
            for s in job.steps
        ],
        "devices": [
            {"id": r.device_id, "status": r.status.value, "error": r.error} for r in job.devices
        ],
        "status": job.status.value,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
        "rerunOf": job.rerun_of,
        "scheduledJob": job.scheduled_job,
        "batch": None
        if job.batch is None
        else {"type": job.batch.kind.value, "value": job.batch.value},
        "threshold": None
        if job.threshold is None
        else {
            "type": job.threshold.kind.value,
            "value": job.threshold.value,
            "batch": job.threshold.per_batch,
        },
    }


def _from_document(account_id: str, job_id: str, row: dict[str, Any]) -> Job:
    return Job(
        id=job_id,
        account_id=account_id,
        display_name=row["displayName"],
        group=row["group"],
        steps=tuple(
            JobStep(StepKind(s["type"]), s["path"], s["value"], s.get("target"))
            for s in row["steps"]
        ),
        devices=tuple(
            DeviceRun(d["id"], DeviceRunStatus(d["status"]), d.get("error")) for d in row["devices"]
        ),
        status=JobStatus(row["status"]),
        created_at=row["createdAt"],
        updated_at=row["updatedAt"],
        description=row.get("description"),
        rerun_of=row.get("rerunOf"),
        scheduled_job=row.get("scheduledJob"),
        batch=None
        if row.get("batch") is None
        else Batch(Portion(row["batch"]["type"]), row["batch"]["value"]),
        threshold=None
        if row.get("threshold") is None
        else CancellationThreshold(
            Portion(row["threshold"]["type"]), row["threshold"]["value"], row["threshold"]["batch"]
        ),
    )
