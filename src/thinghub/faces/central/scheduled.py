"""Routes of the IoT Central face for scheduled jobs (the real API's 2022-10-31-preview
shapes): a job's definition with a `schedule`, kept and run at its time by the face's
scheduler (faces/central/scheduler.py); the jobs it ran are listed under it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from thinghub.domain.clock import format_ts_short
from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.model import Principal
from thinghub.domain.scheduled_jobs import Recurrence, Schedule, ScheduledJob
from thinghub.faces._http import OrjsonResponse, services_of
from thinghub.faces.central._wire import caller_dependency, parse_time
from thinghub.faces.central.jobs import (
    BatchBody,
    JobStepBody,
    ThresholdBody,
    batch_of,
    batch_out,
    job_json,
    steps_of,
    steps_out,
    threshold_of,
    threshold_out,
)
from thinghub.services.scheduled_jobs import etag_of

__all__ = ["router"]

Caller = Annotated[Principal, Depends(caller_dependency)]
router = APIRouter()
IF_MATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: {"description": "If-Match names another state than the current one; nothing changed"}
}
END_TYPES = ("date", "occurrences")


class _Strict(BaseModel):
    # A field this face cannot apply is a 400 naming it.
    model_config = ConfigDict(extra="forbid")


class EndBody(_Strict):
    type: StrictStr = Field(json_schema_extra={"enum": list(END_TYPES)})
    date: StrictStr | None = Field(default=None, description="With type date: the last day")
    occurrences: StrictInt | None = Field(default=None, ge=1, description="With occurrences")


class ScheduleBody(_Strict):
    start: StrictStr = Field(json_schema_extra={"format": "date-time"})
    recurrence: StrictStr | None = Field(
        default=None, json_schema_extra={"enum": [r.value for r in Recurrence]}
    )
    end: EndBody | None = None


class ScheduledJobBody(_Strict):
    """A scheduled job as PUT takes it, and as GET shows it (`id`, `etag` and `completed`
    may come back)."""

    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    group: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    data: list[JobStepBody] | None = Field(default=None, min_length=1)
    schedule: ScheduleBody | None = None
    description: StrictStr | None = Field(default=None, max_length=2000)
    batch: BatchBody | None = None
    cancellationThreshold: ThresholdBody | None = None
    enabled: StrictBool | None = None
    id: StrictStr | None = Field(default=None, description="Read-only: the path's id")
    etag: StrictStr | None = Field(default=None, description="As If-Match")
    completed: StrictBool | None = Field(default=None, description="Read-only")


def _schedule(body: ScheduleBody) -> Schedule:
    start = parse_time(body.start, "schedule.start")
    recurrence = None
    if body.recurrence is not None:
        try:
            recurrence = Recurrence(body.recurrence)
        except ValueError:
            raise Invalid(
                "schedule.recurrence must be daily, weekly or monthly",
                field="schedule.recurrence",
            ) from None
    end_date = end_occurrences = None
    end = body.end
    if end is not None:
        if recurrence is None:
            raise Invalid("schedule.end needs a schedule.recurrence", field="schedule.end")
        if end.type == "date":
            if end.date is None or end.occurrences is not None:
                raise Invalid(
                    "schedule.end.date is required with type date (and occurrences is not)",
                    field="schedule.end.date",
                )
            end_date = parse_time(end.date, "schedule.end.date")
            if end_date < start:
                raise Invalid("schedule.end.date is before the start", field="schedule.end.date")
        elif end.type == "occurrences":
            if end.occurrences is None or end.date is not None:
                raise Invalid(
                    "schedule.end.occurrences is required with type occurrences (and date is not)",
                    field="schedule.end.occurrences",
                )
            end_occurrences = end.occurrences
        else:
            raise Invalid(
                "schedule.end.type must be date or occurrences", field="schedule.end.type"
            )
    return Schedule(start, recurrence, end_date, end_occurrences)


def _schedule_json(schedule: Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {"start": format_ts_short(schedule.start)}
    if schedule.recurrence is not None:
        out["recurrence"] = schedule.recurrence.value
    if schedule.end_date is not None:
        out["end"] = {"type": "date", "date": format_ts_short(schedule.end_date)}
    elif schedule.end_occurrences is not None:
        out["end"] = {"type": "occurrences", "occurrences": schedule.end_occurrences}
    return out


def _json(job: ScheduledJob) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "displayName": job.display_name,
        "group": job.group,
        "data": steps_out(job.steps),
        **batch_out(job.batch),
        **threshold_out(job.threshold),
        "schedule": _schedule_json(job.schedule),
        "enabled": job.enabled,
        "completed": job.completed,
        "etag": etag_of(job),
    }
    if job.description is not None:
        out["description"] = job.description
    return out


def _response(job: ScheduledJob) -> Response:
    return OrjsonResponse(_json(job), headers={"ETag": f'"{etag_of(job)}"'})


def _read_only(body: ScheduledJobBody, job_id: str, current: ScheduledJob | None) -> None:
    if body.id is not None and body.id != job_id:
        raise Invalid(f"id is read-only (it is {job_id!r})", field="id")
    completed = False if current is None else current.completed
    if body.completed is not None and body.completed != completed:
        raise Invalid(f"completed is read-only (it is {completed})", field="completed")


def _required(
    body: ScheduledJobBody, job_id: str
) -> tuple[str, str, list[JobStepBody], ScheduleBody]:
    """displayName (the id when not given, as the real API requires only the others),
    group, data and schedule, which PUT needs."""
    name = job_id if body.displayName is None else body.displayName
    group, data, schedule = body.group, body.data, body.schedule
    if group is None:
        raise Invalid("group is required", field="group")
    if data is None:
        raise Invalid("data is required", field="data")
    if schedule is None:
        raise Invalid("schedule is required", field="schedule")
    return name, group, data, schedule


@router.get("/scheduledJobs", tags=["scheduledJobs"], summary="List scheduled jobs")
async def list_scheduled(request: Request, caller: Caller) -> Response:
    jobs = await services_of(request).scheduled_jobs.list(caller)
    return OrjsonResponse({"value": [_json(j) for j in jobs]})


@router.get("/scheduledJobs/{job_id}", tags=["scheduledJobs"], summary="Get a scheduled job")
async def get_scheduled(job_id: str, request: Request, caller: Caller) -> Response:
    return _response(await services_of(request).scheduled_jobs.get(caller, job_id))


@router.put(
    "/scheduledJobs/{job_id}",
    responses=IF_MATCH_RESPONSES,
    tags=["scheduledJobs"],
    summary="Create or replace a scheduled job",
)
async def put_scheduled(
    job_id: str, body: ScheduledJobBody, request: Request, caller: Caller
) -> Response:
    """`{displayName?, group, data, schedule: {start, recurrence?, end?}, description?,
    batch?, cancellationThreshold?, enabled?}` (`displayName` defaults to the id); runs from
    its first occurrence not yet past (400 when none is left), as the caller."""
    services = services_of(request)
    name, group_id, data, schedule = _required(body, job_id)
    try:
        current: ScheduledJob | None = await services.scheduled_jobs.get(caller, job_id)
    except NotFound:
        current = None
    _read_only(body, job_id, current)
    group = await services.device_groups.get(caller, group_id)
    job = await services.scheduled_jobs.put(
        caller,
        job_id,
        display_name=name,
        group=group.id,
        steps=steps_of(data),
        schedule=_schedule(schedule),
        description=body.description,
        batch=batch_of(body.batch),
        threshold=threshold_of(body.cancellationThreshold),
        enabled=True if body.enabled is None else body.enabled,
        if_match=request.headers.get("if-match", body.etag),
    )
    return _response(job)


@router.patch(
    "/scheduledJobs/{job_id}",
    responses=IF_MATCH_RESPONSES,
    tags=["scheduledJobs"],
    summary="Update a scheduled job",
)
async def patch_scheduled(
    job_id: str, body: ScheduledJobBody, request: Request, caller: Caller
) -> Response:
    """The fields the body names, the others kept; a new `schedule` starts over from its
    first occurrence not yet past."""
    services = services_of(request)
    current = await services.scheduled_jobs.get(caller, job_id)
    _read_only(body, job_id, current)
    fields = body.model_fields_set
    group = current.group
    if body.group is not None:
        group = (await services.device_groups.get(caller, body.group)).id
    for name in ("displayName", "group", "data", "schedule", "enabled"):
        if name in fields and getattr(body, name) is None:
            raise Invalid(f"{name} cannot be null", field=name)
    job = await services.scheduled_jobs.put(
        caller,
        job_id,
        display_name=body.displayName or current.display_name,
        group=group,
        steps=steps_of(body.data) if body.data is not None else list(current.steps),
        schedule=current.schedule if body.schedule is None else _schedule(body.schedule),
        description=body.description if "description" in fields else current.description,
        batch=batch_of(body.batch) if "batch" in fields else current.batch,
        threshold=(
            threshold_of(body.cancellationThreshold)
            if "cancellationThreshold" in fields
            else current.threshold
        ),
        enabled=current.enabled if body.enabled is None else body.enabled,
        if_match=request.headers.get("if-match", body.etag),
    )
    return _response(job)


@router.delete(
    "/scheduledJobs/{job_id}",
    status_code=204,
    responses=IF_MATCH_RESPONSES,
    tags=["scheduledJobs"],
    summary="Delete a scheduled job",
)
async def delete_scheduled(job_id: str, request: Request, caller: Caller) -> Response:
    """The jobs it ran stay."""
    await services_of(request).scheduled_jobs.delete(
        caller, job_id, if_match=request.headers.get("if-match")
    )
    return Response(status_code=204)


@router.get(
    "/scheduledJobs/{job_id}/jobs",
    tags=["scheduledJobs"],
    summary="The jobs a scheduled job ran",
)
async def scheduled_runs(job_id: str, request: Request, caller: Caller) -> Response:
    services = services_of(request)
    await services.scheduled_jobs.get(caller, job_id)  # 404 when unknown
    jobs = [j for j in await services.jobs.list(caller) if j.scheduled_job == job_id]
    jobs.sort(key=lambda j: j.created_at, reverse=True)
    return OrjsonResponse({"value": [job_json(j) for j in jobs]})
