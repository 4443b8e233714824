"""Jobs (domain/jobs.py): batch sizes, cancellation thresholds, and how a batch's outcomes
end or cancel a job."""

from __future__ import annotations

import pytest

from thinghub.domain.errors import Invalid
from thinghub.domain.jobs import (
    Batch,
    CancellationThreshold,
    DeviceRun,
    DeviceRunStatus,
    Job,
    JobStatus,
    JobStep,
    StepKind,
)

OK, FAIL = DeviceRunStatus.COMPLETED, DeviceRunStatus.FAILED


def job(devices: int, **extra: object) -> Job:
    return Job(
        "j", "acc", "Job", "g", (JobStep(StepKind.PROPERTY, "p", 1),),
        tuple(DeviceRun(f"d{i}") for i in range(devices)), JobStatus.RUNNING, 0.0, 0.0,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_batch_sizes() -> None:
    assert Batch.parse("number", 3).size(10) == 3
    assert Batch.parse("percentage", 25).size(10) == 3  # rounded up
    assert Batch.parse("percentage", 1).size(10) == 1  # at least one
    assert Batch.parse("percentage", 100).size(7) == 7
    assert job(5).batch_size() == 1
    assert job(10, batch=Batch.parse("percentage", 50)).batch_size() == 5


@pytest.mark.parametrize(
    ("kind", "value", "field"),
    [
        ("lots", 1, "batch.type"),
        ("number", 0, "batch.value"),
        ("number", 2.5, "batch.value"),
        ("number", True, "batch.value"),
        ("number", float("nan"), "batch.value"),
        ("percentage", 0, "batch.value"),
        ("percentage", 100.5, "batch.value"),
        ("percentage", "5", "batch.value"),
    ],
)
def test_bad_batches(kind: object, value: object, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        Batch.parse(kind, value)
    assert caught.value.field == field


def test_thresholds() -> None:
    by_number = CancellationThreshold.parse("number", 2, False)
    assert not by_number.is_reached(1, 10)
    assert by_number.is_reached(2, 10)
    by_share = CancellationThreshold.parse("percentage", 30, True)
    assert not by_share.is_reached(2, 10)
    assert by_share.is_reached(3, 10)
    assert not by_share.is_reached(0, 0)
    with pytest.raises(Invalid) as caught:
        CancellationThreshold.parse("number", -1, False)
    assert caught.value.field == "cancellationThreshold.value"


def test_a_threshold_over_the_job_cancels_it_while_devices_are_pending() -> None:
    j = job(4, threshold=CancellationThreshold.parse("number", 2, False))
    j = j.with_runs((DeviceRun("d0", FAIL),), 1.0)
    assert j.status is JobStatus.RUNNING
    j = j.with_runs((DeviceRun("d1", OK),), 2.0)
    assert j.status is JobStatus.RUNNING
    j = j.with_runs((DeviceRun("d2", FAIL),), 3.0)
    assert j.status is JobStatus.CANCELLED
    assert j.status.is_final
    assert j.count(DeviceRunStatus.PENDING) == 1
    # Reached with nothing pending: the job simply ends, failed.
    last = job(2, threshold=CancellationThreshold.parse("number", 1, False))
    last = last.with_runs((DeviceRun("d0", OK), DeviceRun("d1", FAIL)), 1.0)
    assert last.status is JobStatus.FAILED


def test_a_threshold_per_batch_counts_that_batch_only() -> None:
    j = job(6, threshold=CancellationThreshold.parse("percentage", 100, True))
    j = j.with_runs((DeviceRun("d0", FAIL), DeviceRun("d1", OK)), 1.0)
    j = j.with_runs((DeviceRun("d2", FAIL), DeviceRun("d3", OK)), 2.0)
    assert j.status is JobStatus.RUNNING  # two failures in all, but never a whole batch
    j = j.with_runs((DeviceRun("d4", FAIL),), 3.0)
    assert j.status is JobStatus.CANCELLED


def test_a_stopped_job_keeps_its_status() -> None:
    j = job(3, threshold=CancellationThreshold.parse("number", 1, False)).stop(1.0)
    j = j.with_runs((DeviceRun("d0", FAIL),), 2.0)
    assert j.status is JobStatus.STOPPED
