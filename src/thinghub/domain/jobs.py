"""Jobs: one change (set a property, run a command, set a cloud property) applied to every
device of a group, with per-device status.

A job is `running` while devices are `pending`, `stopped` when asked to stop (the pending stay
pending and `resume` picks them up), and ends `completed` when every device completed or
`failed` when one or more failed. A device that failed can be tried again by a rerun: a new
job over the failed devices only.

Devices are worked through in batches (`batch`: so many devices, or a percentage of them, at
a time; one at a time without). A cancellation threshold (so many failures, or a percentage
of the job's devices, or of each batch's) ends the job `cancelled` when reached while devices
are still pending; those stay pending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from thinghub.domain.errors import Conflict, Invalid

__all__ = [
    "Batch",
    "CancellationThreshold",
    "DeviceRun",
    "DeviceRunStatus",
    "Job",
    "JobStatus",
    "JobStep",
    "Portion",
    "StepKind",
]


class StepKind(StrEnum):
    PROPERTY = "property"  # a writable property, as the device sees it (desired)
    COMMAND = "command"  # a command, sent and waited for
    CLOUD_PROPERTY = "cloudProperty"  # a value kept in the cloud with the device


class JobStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # its cancellation threshold was reached

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class DeviceRunStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class Portion(StrEnum):
    NUMBER = "number"  # so many devices
    PERCENTAGE = "percentage"  # so many per cent of the devices


def _portion(kind: Any, value: Any, field: str) -> tuple[Portion, float]:
    try:
        portion = Portion(kind)
    except ValueError:
        raise Invalid(f"{field}.type must be number or percentage", field=f"{field}.type") from None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise Invalid(f"{field}.value must be a number", field=f"{field}.value")
    if portion is Portion.NUMBER and (value != int(value) or value < 1):
        raise Invalid(f"{field}.value must be a whole number of at least 1", field=f"{field}.value")
    if portion is Portion.PERCENTAGE and not 0 < value <= 100:
        raise Invalid(f"{field}.value must be more than 0 and at most 100", field=f"{field}.value")
    return portion, float(value)


@dataclass(frozen=True, slots=True)
class Batch:
    """How many devices a job works on at a time."""

    kind: Portion
    value: float

    @classmethod
    def parse(cls, kind: Any, value: Any) -> Batch:
        """Raises: Invalid naming `batch.type` or `batch.value`."""
        return cls(*_portion(kind, value, "batch"))

    def size(self, total: int) -> int:
        """Devices per batch, of `total` devices: at least 1."""
        if self.kind is Portion.NUMBER:
            return int(self.value)
        return max(1, math.ceil(total * self.value / 100))


@dataclass(frozen=True, slots=True)
class CancellationThreshold:
    """When failures end a job: so many, or a percentage, of the job's devices, or (with
    `per_batch`) of one batch's."""

    kind: Portion
    value: float
    per_batch: bool = False

    @classmethod
    def parse(cls, kind: Any, value: Any, per_batch: bool) -> CancellationThreshold:
        """Raises: Invalid naming `cancellationThreshold.type` or `.value`."""
        return cls(*_portion(kind, value, "cancellationThreshold"), per_batch)

    def is_reached(self, failed: int, of: int) -> bool:
        """Whether `failed` failures among `of` devices reach the threshold."""
        if self.kind is Portion.NUMBER:
            return failed >= self.value
        return of > 0 and failed * 100 >= self.value * of


@dataclass(frozen=True, slots=True)
class JobStep:
    kind: StepKind
    path: str  # the property or command name (`component*name` for a component's)
    value: Any
    target: str | None = None  # the device template it is of: other devices fail the step


@dataclass(frozen=True, slots=True)
class DeviceRun:
    """How the job went on one device."""

    device_id: str
    status: DeviceRunStatus = DeviceRunStatus.PENDING
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    account_id: str
    display_name: str
    group: str
    steps: tuple[JobStep, ...]
    devices: tuple[DeviceRun, ...]
    status: JobStatus
    created_at: float
    updated_at: float
    description: str | None = None
    rerun_of: str | None = None
    batch: Batch | None = None
    threshold: CancellationThreshold | None = None
    scheduled_job: str | None = None  # the scheduled job whose run it is

    def batch_size(self) -> int:
        return 1 if self.batch is None else self.batch.size(len(self.devices))

    def count(self, status: DeviceRunStatus) -> int:
        return sum(1 for run in self.devices if run.status is status)

    def with_run(self, run: DeviceRun, now: float) -> Job:
        """The job with one device's outcome; it ends when no device is pending."""
        return self.with_runs((run,), now)

    def with_runs(self, runs: tuple[DeviceRun, ...], now: float) -> Job:
        """The job with the outcomes of a batch: it ends when no device is pending, or is
        cancelled when the failures reach its threshold while devices are pending."""
        by_id = {run.device_id: run for run in runs}
        devices = tuple(by_id.get(r.device_id, r) for r in self.devices)
        job = replace(self, devices=devices, updated_at=now)
        if job.status is not JobStatus.RUNNING:
            return job
        if job.count(DeviceRunStatus.PENDING) == 0:
            any_failed = job.count(DeviceRunStatus.FAILED) > 0
            return replace(job, status=JobStatus.FAILED if any_failed else JobStatus.COMPLETED)
        threshold = job.threshold
        if threshold is not None:
            if threshold.per_batch:
                failed = sum(1 for r in runs if r.status is DeviceRunStatus.FAILED)
                of = len(runs)
            else:
                failed, of = job.count(DeviceRunStatus.FAILED), len(job.devices)
            if threshold.is_reached(failed, of):
                return replace(job, status=JobStatus.CANCELLED)
        return job

    def stop(self, now: float) -> Job:
        if self.status is not JobStatus.RUNNING:
            raise Conflict(f"job {self.id!r} is {self.status}, not running", field="jobId")
        return replace(self, status=JobStatus.STOPPED, updated_at=now)

    def resume(self, now: float) -> Job:
        if self.status is not JobStatus.STOPPED:
            raise Conflict(f"job {self.id!r} is {self.status}, not stopped", field="jobId")
        return replace(self, status=JobStatus.RUNNING, updated_at=now)
