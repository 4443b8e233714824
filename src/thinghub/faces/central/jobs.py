"""Routes of the IoT Central face for device groups and jobs (the real API's shapes).

A device group is a saved filter (faces/central/groups.py); a job applies one change to every
device of a group, with per-device status (services/jobs.py). The routes translate shapes;
the rules are the services'.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from thinghub.domain.clock import format_ts_short
from thinghub.domain.dtdl import DeviceTemplate
from thinghub.domain.errors import Invalid
from thinghub.domain.jobs import (
    Batch,
    CancellationThreshold,
    DeviceRunStatus,
    Job,
    JobStep,
    Portion,
    StepKind,
)
from thinghub.domain.model import Device, Principal
from thinghub.faces._http import OrjsonResponse, services_of, settings_of
from thinghub.faces.central._wire import (
    caller_dependency,
    device_json,
    device_record,
    page_link,
)
from thinghub.faces.central.groups import group_filter
from thinghub.faces.central.query import MAX_QUERY_CHARS, parse_query
from thinghub.ports import TelemetryQuery
from thinghub.services.core import Services
from thinghub.services.device_groups import DeviceGroup

__all__ = ["router"]


# Routes that honour If-Match answer 412 when it names another state.
IF_MATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: {"description": "If-Match names another state than the current one; nothing changed"}
}


class _Strict(BaseModel):
    # A field this face cannot apply is a 400 naming it.
    model_config = ConfigDict(extra="forbid")


class GroupBody(_Strict):
    displayName: StrictStr | None = None
    filter: StrictStr | None = None
    description: StrictStr | None = None
    id: StrictStr | None = Field(default=None, description="Read-only: the path's id")
    etag: StrictStr | None = Field(default=None, description="As If-Match")


class JobStepBody(_Strict):
    type: StrictStr = Field(json_schema_extra={"enum": [k.value for k in StepKind]})
    path: StrictStr = Field(min_length=1, max_length=256)
    target: StrictStr | None = Field(default=None, description="The device template")
    value: Any = None


PORTION_TYPES: dict[str, Any] = {"enum": [p.value for p in Portion]}


class BatchBody(_Strict):
    type: StrictStr = Field(json_schema_extra=PORTION_TYPES)
    value: StrictInt | StrictFloat = Field(description="Devices, or per cent of them")


class ThresholdBody(_Strict):
    type: StrictStr = Field(json_schema_extra=PORTION_TYPES)
    value: StrictInt | StrictFloat = Field(description="Failures, or per cent of the devices")
    batch: StrictBool = Field(default=False, description="Counted per batch, not per job")


class JobBody(_Strict):
    # The real API requires only `group` and `data`; a job without a name is named by its id.
    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    group: StrictStr = Field(min_length=1, max_length=128)
    data: list[JobStepBody] = Field(min_length=1)
    description: StrictStr | None = Field(default=None, max_length=2000)
    id: StrictStr | None = Field(default=None, description="Read-only: the path's id")
    batch: BatchBody | None = Field(default=None, description="Devices worked on at a time")
    cancellationThreshold: ThresholdBody | None = Field(
        default=None, description="Failures that cancel the job"
    )


def batch_of(body: BatchBody | None) -> Batch | None:
    return None if body is None else Batch.parse(body.type, body.value)


def threshold_of(body: ThresholdBody | None) -> CancellationThreshold | None:
    return None if body is None else CancellationThreshold.parse(body.type, body.value, body.batch)


def steps_of(data: list[JobStepBody]) -> list[JobStep]:
    """The steps of a body's `data`; a bad type is a 400 naming it."""
    steps = []
    for index, step in enumerate(data):
        try:
            kind = StepKind(step.type)
        except ValueError:
            raise Invalid(
                f"data[{index}].type must be one of {', '.join(k.value for k in StepKind)}",
                field=f"data.{index}.type",
            ) from None
        steps.append(JobStep(kind, step.path, step.value, step.target))
    return steps


def steps_out(steps: tuple[JobStep, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": s.kind.value,
            "path": s.path,
            "value": s.value,
            **({"target": s.target} if s.target is not None else {}),
        }
        for s in steps
    ]


def batch_out(batch: Batch | None) -> dict[str, Any]:
    """`batch` of a job's answer ({} when it has none)."""
    if batch is None:
        return {}
    return {"batch": {"type": batch.kind.value, "value": _number(batch.value)}}


def threshold_out(threshold: CancellationThreshold | None) -> dict[str, Any]:
    if threshold is None:
        return {}
    return {
        "cancellationThreshold": {
            "type": threshold.kind.value,
            "value": _number(threshold.value),
            "batch": threshold.per_batch,
        }
    }


def _group_json(group: DeviceGroup) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": group.id,
        "displayName": group.display_name,
        "filter": group.filter,
        "etag": group.etag,
    }
    if group.description is not None:
        out["description"] = group.description
    return out


def job_json(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "displayName": job.display_name,
        "group": job.group,
        "data": steps_out(job.steps),
        "status": job.status.value,
        # The real Job's read-only start and end times (end once it has ended).
        "start": format_ts_short(job.created_at),
        **({"end": format_ts_short(job.updated_at)} if job.status.is_final else {}),
        "progress": {
            "total": len(job.devices),
            **{status.value: job.count(status) for status in DeviceRunStatus},
        },
        **batch_out(job.batch),
        **threshold_out(job.threshold),
    }
    if job.description is not None:
        out["description"] = job.description
    if job.rerun_of is not None:
        out["rerunOf"] = job.rerun_of
    if job.scheduled_job is not None:
        out["scheduledJobId"] = job.scheduled_job
    return out


def _number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _same_id(given: str | None, path_id: str) -> None:
    if given is not None and given != path_id:
        raise Invalid(f"id is read-only (it is {path_id!r})", field="id")


async def group_members(services: Services, caller: Principal, group: DeviceGroup) -> list[Device]:
    """The devices of a group the caller may see, by id."""
    matcher = group_filter(group.filter)
    devices = sorted(await services.registry.list_devices(caller), key=lambda d: d.id)
    return [d for d in devices if matcher is None or matcher.matches(device_record(d))]


Caller = Annotated[Principal, Depends(caller_dependency)]
# Included by app.py behind the face's dependencies (credentials first, then api-version).
router = APIRouter()


# -- device groups -------------------------------------------------------------------


@router.get("/deviceGroups", tags=["deviceGroups"], summary="List device groups")
async def list_groups(request: Request, caller: Caller) -> Response:
    groups = await services_of(request).device_groups.list(caller)
    return OrjsonResponse({"value": [_group_json(g) for g in groups]})


@router.get("/deviceGroups/{group_id}", tags=["deviceGroups"], summary="Get a device group")
async def get_group(group_id: str, request: Request, caller: Caller) -> Response:
    group = await services_of(request).device_groups.get(caller, group_id)
    return OrjsonResponse(_group_json(group))


@router.put(
    "/deviceGroups/{group_id}",
    responses=IF_MATCH_RESPONSES,
    tags=["deviceGroups"],
    summary="Create or replace a device group",
)
async def put_group(group_id: str, body: GroupBody, request: Request, caller: Caller) -> Response:
    """`{displayName, filter, description?}`: `filter` is `SELECT * FROM devices [WHERE
    …]` or an OData `$filter`; checked here (400 naming `filter`)."""
    _same_id(body.id, group_id)
    if body.filter is not None:
        group_filter(body.filter)
    group = await services_of(request).device_groups.put(
        caller,
        group_id,
        display_name=body.displayName,
        filter_text=body.filter,
        description=body.description,
        if_match=request.headers.get("if-match", body.etag),
    )
    return OrjsonResponse(_group_json(group))


@router.patch(
    "/deviceGroups/{group_id}",
    tags=["deviceGroups"],
    summary="Update a device group",
    responses=IF_MATCH_RESPONSES,
)
async def patch_group(group_id: str, body: GroupBody, request: Request, caller: Caller) -> Response:
    _same_id(body.id, group_id)
    services = services_of(request)
    current = await services.device_groups.get(caller, group_id)
    if body.filter is not None:
        group_filter(body.filter)
    fields = body.model_fields_set
    group = await services.device_groups.put(
        caller,
        group_id,
        display_name=body.displayName if "displayName" in fields else current.display_name,
        filter_text=body.filter if "filter" in fields else current.filter,
        description=body.description if "description" in fields else current.description,
        if_match=request.headers.get("if-match", body.etag),
    )
    return OrjsonResponse(_group_json(group))


@router.delete(
    "/deviceGroups/{group_id}",
    responses=IF_MATCH_RESPONSES,
    status_code=204,
    tags=["deviceGroups"],
    summary="Delete a device group",
)
async def delete_group(group_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).device_groups.delete(
        caller, group_id, if_match=request.headers.get("if-match")
    )
    return Response(status_code=204)


@router.get(
    "/deviceGroups/{group_id}/devices",
    tags=["deviceGroups"],
    summary="List the devices of a device group",
)
async def group_devices(
    group_id: str,
    request: Request,
    caller: Caller,
    maxpagesize: Annotated[
        int | None, Query(alias="$maxpagesize", description="Page size (default page_max)")
    ] = None,
    skiptoken: Annotated[
        str | None, Query(alias="$skiptoken", description="From a nextLink")
    ] = None,
) -> Response:
    """The group's devices the caller may see, by id, a page at a time (`nextLink`)."""
    services = services_of(request)
    page_max = settings_of(request).page_max
    if maxpagesize is not None and not 1 <= maxpagesize <= page_max:
        raise Invalid(f"$maxpagesize must be 1 to {page_max}", field="$maxpagesize")
    size = page_max if maxpagesize is None else maxpagesize
    group = await services.device_groups.get(caller, group_id)
    members = await group_members(services, caller, group)
    # The token is the last id shown: stable while devices come and go.
    rest = members if skiptoken is None else [d for d in members if d.id > skiptoken]
    page = rest[:size]
    out: dict[str, Any] = {"value": [await device_json(services, d) for d in page]}
    if len(rest) > size:
        out["nextLink"] = page_link(settings_of(request), request, **{"$skiptoken": page[-1].id})
    return OrjsonResponse(out)


# -- jobs ----------------------------------------------------------------------------


@router.get("/jobs", tags=["jobs"], summary="List jobs")
async def list_jobs(request: Request, caller: Caller) -> Response:
    jobs = await services_of(request).jobs.list(caller)
    return OrjsonResponse({"value": [job_json(j) for j in jobs]})


@router.get("/jobs/{job_id}", tags=["jobs"], summary="Get a job")
async def get_job(job_id: str, request: Request, caller: Caller) -> Response:
    return OrjsonResponse(job_json(await services_of(request).jobs.get(caller, job_id)))


@router.put("/jobs/{job_id}", tags=["jobs"], summary="Run a job on a device group")
async def create_job(job_id: str, body: JobBody, request: Request, caller: Caller) -> Response:
    """`{displayName?, group, data: [{type: property|command|cloudProperty, path, value,
    target?}]}` (`displayName` defaults to the id): applied to every device of the group the
    caller may see, one by one; `GET /jobs/{id}` and `/jobs/{id}/devices` show the progress.
    409 for a used id."""
    _same_id(body.id, job_id)
    services = services_of(request)
    group = await services.device_groups.get(caller, body.group)
    members = await group_members(services, caller, group)
    steps = steps_of(body.data)
    job = await services.jobs.create(
        caller,
        job_id,
        display_name=job_id if body.displayName is None else body.displayName,
        group=group.id,
        device_ids=[d.id for d in members],
        steps=steps,
        description=body.description,
        batch=batch_of(body.batch),
        threshold=threshold_of(body.cancellationThreshold),
    )
    return OrjsonResponse(job_json(job))


@router.get("/jobs/{job_id}/devices", tags=["jobs"], summary="A job's per-device status")
async def job_devices(job_id: str, request: Request, caller: Caller) -> Response:
    job = await services_of(request).jobs.get(caller, job_id)
    return OrjsonResponse(
        {
            "value": [
                {
                    "id": r.device_id,
                    "status": r.status.value,
                    **({"error": r.error} if r.error is not None else {}),
                }
                for r in job.devices
            ]
        }
    )


@router.post("/jobs/{job_id}/stop", status_code=204, tags=["jobs"], summary="Stop a job")
async def stop_job(job_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).jobs.stop(caller, job_id)
    return Response(status_code=204)


@router.post(
    "/jobs/{job_id}/resume", status_code=204, tags=["jobs"], summary="Resume a stopped job"
)
async def resume_job(job_id: str, request: Request, caller: Caller) -> Response:
    await services_of(request).jobs.resume(caller, job_id)
    return Response(status_code=204)


@router.put(
    "/jobs/{job_id}/rerun/{rerun_id}",
    tags=["jobs"],
    summary="Rerun a job on its failed devices",
)
async def rerun_job(
    job_id: str, rerun_id: str, request: Request, caller: Caller, body: Any = Body(None)
) -> Response:
    """A new job `rerun_id` with the same data over the devices that failed."""
    if body not in (None, {}):
        raise Invalid("a rerun takes no body", field="body")
    job = await services_of(request).jobs.rerun(caller, job_id, rerun_id)
    return OrjsonResponse(job_json(job))


# -- query ---------------------------------------------------------------------------------------


def _telemetry_names(template: DeviceTemplate) -> frozenset[str]:
    """The template's telemetry as a query names it (a component's as `component.name`)."""
    names = set(template.model.telemetry)
    for component, iface in template.model.components.items():
        names.update(f"{component}.{name}" for name in iface.telemetry)
    return frozenset(names)


async def _properties(
    services: Services, caller: Principal, device: Device, fields: frozenset[str]
) -> tuple[dict[str, Any], float | None]:
    """The device's properties the query names (reported or set, and cloud properties), a
    component's as `component.name`, and when the newest of them last changed."""
    values: dict[str, Any] = {}
    changed: float | None = None
    for name, found in (await services.properties.read_all(caller, device)).items():
        dotted = name.replace("*", ".", 1)
        if dotted not in fields:
            continue
        values[dotted] = found.value
        if found.last_updated is not None:
            changed = max(changed or found.last_updated, found.last_updated)
    return values, changed


async def _telemetry_rows(
    services: Services,
    caller: Principal,
    device: Device,
    since: float | None,
    properties: dict[str, Any],
    budget: int,
) -> list[dict[str, Any]]:
    """The device's telemetry messages as rows, at most about `budget` of them."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(rows) < budget:
        page = await services.queries.telemetry(
            caller,
            TelemetryQuery(
                caller.account_id, device_id=device.id, since=since, limit=_QUERY_PAGE,
                cursor=cursor,
            ),
        )  # fmt: skip
        for message in page.items:
            if message.device_id != device.id or not isinstance(message.body, dict):
                continue
            prefix = f"{message.component}." if message.component else ""
            row = {**properties, **{prefix + k: v for k, v in message.body.items()}}
            row.update({"$id": device.id, "$ts": message.enqueued_at})
            rows.append(row)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return rows


# The most telemetry messages one query reads (over every device of its template).
MAX_QUERY_ROWS = 100_000
_QUERY_PAGE = 1000


QUERY_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["query"],
                    "additionalProperties": False,
                    "properties": {"query": {"type": "string", "maxLength": MAX_QUERY_CHARS}},
                }
            }
        },
    }
}


@router.post(
    "/query", tags=["query"], summary="Run a query over telemetry", openapi_extra=QUERY_BODY_DOC
)
async def run_query(request: Request, caller: Caller, body: Any = Body(None)) -> Response:
    """IoT Central's query language, the documented subset (faces/central/query.py):
    `{"query": "SELECT $id, $ts, temperature FROM <template> WHERE WITHIN_WINDOW(P1D)"}` →
    `{"results": [...]}`, over the devices of the template the caller may see."""
    if not isinstance(body, dict):
        raise Invalid('the body must be {"query": "SELECT ..."}', field="body")
    for key in body:
        if key != "query":
            raise Invalid(f"{key} is not a field this route applies", field=key)
    query = parse_query(body.get("query"))
    services = services_of(request)
    template = await services.templates.get(caller, query.template)  # 404 when unknown
    telemetry = _telemetry_names(template)
    fields = query.fields()
    # Without a telemetry field (and with a field), a row is a device and its properties;
    # otherwise a row is a telemetry message, the device's properties beside its fields.
    by_device = bool(fields) and not fields & telemetry
    with_properties = bool(fields - telemetry)
    now = services.queries.now()
    since = query.since(now)
    rows: list[dict[str, Any]] = []
    for device in await services.registry.list_devices(caller):
        if device.template != query.template:
            continue
        properties: dict[str, Any] = {}
        changed: float | None = None
        if with_properties:
            properties, changed = await _properties(services, caller, device, fields)
        if by_device:
            rows.append({**properties, "$id": device.id, "$ts": changed})
            continue
        if len(rows) < MAX_QUERY_ROWS:
            budget = MAX_QUERY_ROWS - len(rows)
            rows += await _telemetry_rows(services, caller, device, since, properties, budget)
    results = query.run(rows, now)
    for result in results:
        if isinstance(result.get("$ts"), int | float):
            result["$ts"] = format_ts_short(result["$ts"])
    return OrjsonResponse({"results": results})
