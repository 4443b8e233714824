"""Jobs: one change (set a property, run a command, set a cloud property) applied to every
device of a group, with per-device status.

A job is `running` while devices are `pending`, `stopped` when asked to stop (the pending stay
pending and `resume` picks them up), and ends `completed` when every device completed or
`failed` when one or more failed. A device that failed can be tried again by a rerun: a new
job over the failed devices only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from thinghub.domain.errors import Conflict

__all__ = [
    "DeviceRun",
    "DeviceRunStatus",
    "Job",
    "JobStatus",
    "JobStep",
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

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class DeviceRunStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


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

    def count(self, status: DeviceRunStatus) -> int:
        return sum(1 for run in self.devices if run.status is status)

    def with_run(self, run: DeviceRun, now: float) -> Job:
        """The job with one device's outcome; it ends when no device is pending."""
        devices = tuple(run if r.device_id == run.device_id else r for r in self.devices)
        job = replace(self, devices=devices, updated_at=now)
        if job.count(DeviceRunStatus.PENDING) == 0 and job.status is JobStatus.RUNNING:
            failed = job.count(DeviceRunStatus.FAILED) > 0
            job = replace(job, status=JobStatus.FAILED if failed else JobStatus.COMPLETED)
        return job

    def stop(self, now: float) -> Job:
        if self.status is not JobStatus.RUNNING:
            raise Conflict(f"job {self.id!r} is {self.status}, not running", field="jobId")
        return replace(self, status=JobStatus.STOPPED, updated_at=now)

    def resume(self, now: float) -> Job:
        if self.status is not JobStatus.STOPPED:
            raise Conflict(f"job {self.id!r} is {self.status}, not stopped", field="jobId")
        return replace(self, status=JobStatus.RUNNING, updated_at=now)
