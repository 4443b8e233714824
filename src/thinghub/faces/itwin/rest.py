"""The iTwin IoT REST API and Sensor Data Service, at /itwin/api (and /api on the face's own
port): seed, "iTwin IoT Platform REST API", "Working with Projects" and "Sensor Data Service".

| route | what |
| --- | --- |
| GET /nodes/all, /devices/all, /sensors/all | a project's entities (`pageSize`, `page` from 0) |
| GET /nodes/{id}, /devices/{id}, /sensors/{id} | one entity (ids start with `/`: `//fn/X/node`) |
| GET, DELETE /projects/{id} | a project; delete an empty one |
| GET /projects/{id}/dataUsage | what a project holds |
| POST /integrations/integrate | a new connection with devices and sensors, or changes |
| POST /integrations/{nodeId} | a connection with its devices and sensors (`//api/X/node`) |
| GET /devices/types, /sensors/types, /metrics/types | templates and the metrics catalog |
| POST /sensors/metrics | each sensor's metrics (`filters=raw`: raw only) |
| POST /data/upload | store observations: 202 `{"status": "ACCEPTED"}` |
| /documents, /profiles | 404: out of scope |

Authentication: `Authorization: ApiKey <API token>` or `Bearer <API token or access token>`.
Errors: `{"errors": [{"message", "path"}]}` (401 with path `Authorization`, 403, 400, 404,
409), and for integrations `{"error": {"code": "InvalidProcessIntegrationRequest", ...}}`.
Bodies are read tolerating the seed's trailing commas (body.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from thinghub.domain import errors
from thinghub.domain.errors import Conflict, Invalid, NotFound, Unauthorized
from thinghub.domain.model import Principal
from thinghub.faces._http import OrjsonResponse, face_app, status_of
from thinghub.faces.face import FaceContext
from thinghub.faces.itwin.backend import (
    READ_DATA,
    READ_PROJECTS,
    WRITE_DATA,
    WRITE_PROJECTS,
    Backend,
    MissingScope,
    require,
)
from thinghub.faces.itwin.body import BodyError, read_json_body
from thinghub.faces.itwin.catalog import (
    device_types_body,
    metrics_by_sensor_body,
    metrics_types_body,
    sensor_types_body,
)
from thinghub.faces.itwin.entities import TimeStyle
from thinghub.faces.itwin.ids import EntityKind
from thinghub.faces.itwin.network import Entity, Facts, ItwinDevice, Node, Sensor
from thinghub.faces.itwin.params import UploadEntry
from thinghub.faces.itwin.schemas import (
    INVALID_NODE_ID,
    MAX_PAGE_SIZE,
    DeviceChange,
    IntegrateRequest,
    IntegrationError,
    SensorChange,
    SensorMetricsRequest,
    UploadRequest,
    check_integration,
    errors_body,
    integration_error_body,
    validation_errors_body,
)
from thinghub.faces.itwin.scope import Scope, scope_of
from thinghub.faces.itwin.writes import DYNAMIC

__all__ = ["ERROR_SCHEMA", "create_app", "render_error"]

OUT_OF_SCOPE: Final = (
    "{} are out of scope for thinghub's iTwin face: it serves connections, devices, sensors, "
    "metrics and observations"
)
NODE_INTEGRATION: Final = "NODE_API_SDE"
SERIAL_HEX_DIGITS: Final = 6  # /api/B6627B/node, .../dynamic/BED858/device (seed)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["message", "path"],
                "properties": {"message": {"type": "string"}, "path": {"type": "string"}},
            },
        }
    },
}


def render_error(error: errors.Error, status: int) -> Response:
    """The seed's error body: `{"errors": [{"message", "path"}]}`. An access token without
    the scope needed is a 401 on `Authorization` (the seed: a 401 "does not have required
    scopes")."""
    if isinstance(error, MissingScope):
        status = 401
        path = "Authorization"
    else:
        path = error.field or ("Authorization" if status == 401 else "request")
    headers = {"WWW-Authenticate": "ApiKey, Bearer"} if status == 401 else None
    return OrjsonResponse(errors_body([(error.message, path)]), status_code=status, headers=headers)


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.itwin
    return backend


async def _caller(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("the Authorization header is missing", field="Authorization")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in ("apikey", "bearer") or not value.strip():
        raise Unauthorized(
            "Authorization must be 'ApiKey <key>' or 'Bearer <token>'", field="Authorization"
        )
    return await _backend(request).authenticate(value.strip())


Caller = Annotated[Principal, Depends(_caller)]
ProjectIds = Annotated[str | None, Query(alias="projectIds", description="the project id")]


def _scope(principal: Principal, project_id: str | None) -> Scope:
    return scope_of(principal, project_id.split(",")[0] if project_id else None)


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The request body as `model`, errors in the seed's shape."""
    try:
        value = read_json_body(await request.body())
    except BodyError as exc:
        status = 413 if exc.is_too_large else 400
        return OrjsonResponse(errors_body([(exc.message, "body")]), status_code=status)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        return OrjsonResponse(validation_errors_body(exc), status_code=400)


def _page(items: Sequence[Any], page: int, page_size: int) -> tuple[list[Any], int]:
    start = page * page_size
    return list(items[start : start + page_size]), len(items)


router = APIRouter()


# -- lists ------------------------------------------------------------------------------------


async def _listed(
    request: Request,
    caller: Principal,
    project_id: str | None,
    kind: EntityKind,
    page: int,
    size: int,
) -> Response:
    require(caller, READ_DATA)
    backend = _backend(request)
    scope = _scope(caller, project_id)
    facts = Facts()
    network = backend.network
    found: Sequence[Entity]
    if kind is EntityKind.NODE:
        found = await network.nodes(scope)
    elif kind is EntityKind.DEVICE:
        found = await network.devices(scope)
    else:
        found = await network.sensors(scope, facts)
    items, total = _page(found, page, size)
    body = await network.render_many(scope, facts, items)
    return OrjsonResponse(body, headers={"X-Total-Count": str(total)})


PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE)]
PageNumber = Annotated[int, Query(alias="page", ge=0, le=1_000_000)]


@router.get("/nodes/all", summary="Every node (connection) of a project")
async def nodes_all(
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
    page_size: PageSize = MAX_PAGE_SIZE,
    page: PageNumber = 0,
) -> Response:
    return await _listed(request, caller, project_ids, EntityKind.NODE, page, page_size)


@router.get("/devices/all", summary="Every device of a project")
async def devices_all(
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
    page_size: PageSize = MAX_PAGE_SIZE,
    page: PageNumber = 0,
) -> Response:
    return await _listed(request, caller, project_ids, EntityKind.DEVICE, page, page_size)


@router.get("/sensors/all", summary="Every sensor of a project")
async def sensors_all(
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
    page_size: PageSize = MAX_PAGE_SIZE,
    page: PageNumber = 0,
) -> Response:
    return await _listed(request, caller, project_ids, EntityKind.SENSOR, page, page_size)


# -- projects ---------------------------------------------------------------------------------


async def _project(
    backend: Backend, caller: Principal, project_id: str
) -> tuple[Scope, dict[str, Any]]:
    scope = scope_of(caller, project_id, "projectId")
    if scope.project is None:
        return scope, {"id": scope.account_id, "name": "Default Project", "isDefault": True}
    for project in await backend.services.registry.list_projects(caller):
        if project.name == scope.project:
            return scope, {"id": project.name, "name": project.name, "isDefault": False}
    raise NotFound(f"project {project_id!r} not found", field="projectId")


@router.get("/projects/{project_id}", summary="A project")
async def get_project(project_id: str, request: Request, caller: Caller) -> Response:
    require(caller, READ_PROJECTS)
    _, body = await _project(_backend(request), caller, project_id)
    return OrjsonResponse(body)


@router.delete("/projects/{project_id}", summary="Delete a project that holds nothing")
async def delete_project(project_id: str, request: Request, caller: Caller) -> Response:
    require(caller, WRITE_PROJECTS, write=True)
    backend = _backend(request)
    scope, _ = await _project(backend, caller, project_id)
    if scope.project is None:
        raise Conflict("the default project cannot be deleted", field="projectId")
    await backend.services.registry.delete_project(caller, scope.project)
    return Response(status_code=204)


@router.get("/projects/{project_id}/dataUsage", summary="What a project holds")
async def data_usage(project_id: str, request: Request, caller: Caller) -> Response:
    require(caller, READ_PROJECTS)
    backend = _backend(request)
    scope, project = await _project(backend, caller, project_id)
    facts = Facts()
    network = backend.network
    sensors = await network.sensors(scope, facts)
    series = 0
    for sensor in sensors:
        latest = await network.latest(scope, facts, sensor.holder.id)
        series += len(await backend.metrics.raw_metrics(sensor, latest))
    return OrjsonResponse(
        {
            "projectId": project["id"],
            "nodes": len(await network.nodes(scope)),
            "devices": len(await network.devices(scope)),
            "sensors": len(sensors),
            "metricSeries": series,
        }
    )


# -- templates and metrics --------------------------------------------------------------------


ExcludeLegacy = Annotated[bool, Query(alias="excludeLegacy")]


@router.get("/devices/types", summary="Device templates")
async def device_types(caller: Caller, exclude_legacy: ExcludeLegacy = False) -> Response:
    return OrjsonResponse(device_types_body())


@router.get("/sensors/types", summary="Sensor templates")
async def sensor_types(caller: Caller, exclude_legacy: ExcludeLegacy = False) -> Response:
    return OrjsonResponse(sensor_types_body())


@router.get("/metrics/types", summary="The catalog of metrics and units")
async def metric_types(caller: Caller, exclude_legacy: ExcludeLegacy = False) -> Response:
    return OrjsonResponse(metrics_types_body())


@router.post("/sensors/metrics", summary="The metrics of sensors")
async def sensors_metrics(
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
    filters: Annotated[str | None, Query(description="raw: raw metrics only")] = None,
    categorized: Annotated[
        bool, Query(description="true: each sensor's metrics in categories (raw, deltas)")
    ] = False,
) -> Response:
    require(caller, READ_DATA)
    body = await _body(request, SensorMetricsRequest)
    if isinstance(body, Response):
        return body
    backend = _backend(request)
    scope = _scope(caller, project_ids)
    facts = Facts()
    raw_only = (filters or "").lower() == "raw"
    by_sensor: dict[str, Any] = {}
    for i, sensor_id in enumerate(body.ids):
        sensor = await backend.network.sensor(scope, sensor_id, f"ids[{i}]", facts)
        observations = backend.observations
        by_sensor[sensor.id] = (
            await observations.raw_metrics(scope, facts, sensor)
            if raw_only
            else await observations.all_metrics(scope, facts, sensor)
        )
    return OrjsonResponse(metrics_by_sensor_body(by_sensor, categorized=categorized))


# -- uploads ----------------------------------------------------------------------------------


@router.post("/data/upload", summary="Store observations", status_code=202)
async def upload(request: Request, caller: Caller, project_ids: ProjectIds = None) -> Response:
    require(caller, WRITE_DATA, write=True)
    body = await _body(request, UploadRequest)
    if isinstance(body, Response):
        return body
    backend = _backend(request)
    scope = _scope(caller, project_ids)
    facts = Facts()
    entries = []
    for i, observation in enumerate(body.observations):
        sensor = await backend.network.find(
            scope, observation.sensorId, EntityKind.SENSOR, f"observations[{i}].sensorId", facts
        )
        if sensor is None:
            raise NotFound(
                f"sensor {observation.sensorId!r} not found", field=f"observations[{i}].sensorId"
            )
        entries.append(
            UploadEntry(i, observation.sensorId, observation.timestamp, observation.values)
        )
    _, rejected = await backend.observations.upload(scope, entries, source="itwin-sde")
    if rejected:
        return OrjsonResponse(
            errors_body((r.message, r.path.replace("data[", "observations[", 1)) for r in rejected),
            status_code=400,
        )
    return OrjsonResponse({"status": "ACCEPTED"}, status_code=202)


# -- integrations (Sensor Data Service) -------------------------------------------------------


def _hex_id(*parts: str) -> str:
    """A 6-digit upper-case hex segment: derived from a refId (the last part), so the same
    refId names the same entity again; random without one."""
    if parts[-1]:
        digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
        return digest[:SERIAL_HEX_DIGITS].upper()
    return secrets.token_hex(SERIAL_HEX_DIGITS // 2).upper()


async def _integrate(backend: Backend, scope: Scope, request: IntegrateRequest) -> dict[str, Any]:
    integration = request.integration
    network, writer = backend.network, backend.writer
    facts = Facts()
    if integration.nodeId is not None:
        found = await network.find(scope, integration.nodeId, EntityKind.NODE, "nodeId", facts)
        if not isinstance(found, Node):
            raise IntegrationError(422, INVALID_NODE_ID, "integration.nodeId")
        node = found
    else:
        serial = secrets.token_hex(SERIAL_HEX_DIGITS // 2).upper()
        props = {
            "SERIAL_NO": serial,
            "INTEGRATION_ID": NODE_INTEGRATION,
            "NAME": f"Data Source API Import {serial}",
            **integration.props,
        }
        made = await writer.create(
            scope, EntityKind.NODE, f"/api/{serial}/node", DYNAMIC, props, field_name="integration"
        )
        assert isinstance(made, Node)
        node = made
    touched: list[tuple[ItwinDevice, list[Sensor]]] = []
    for d, change in enumerate(integration.devices):
        device = await _device_change(backend, scope, node, change, f"integration.devices[{d}]")
        if device is None:
            continue
        sensors = []
        for s, sensor_change in enumerate(change.sensors):
            sensor = await _sensor_change(
                backend, scope, device, sensor_change, f"integration.devices[{d}].sensors[{s}]"
            )
            if sensor is not None:
                sensors.append(sensor)
        touched.append((device, sensors))
    return await _integration_body(backend, scope, node, touched)


async def _find_change(
    backend: Backend, scope: Scope, change: SensorChange, kind: EntityKind, candidate: str
) -> Entity | None:
    itwin_id = change.id or candidate
    return await backend.network.find(scope, itwin_id, kind, "id", Facts())


async def _device_change(
    backend: Backend, scope: Scope, node: Node, change: DeviceChange, path: str
) -> ItwinDevice | None:
    writer = backend.writer
    ref = change.refId or ""
    candidate = f"{node.id}/dynamic/{_hex_id(scope.account_id, node.id, 'device', ref)}/device"
    if change.state == "new":
        props = change.props.all_props()
        if change.refId is not None:
            props["SERIAL_NO"] = change.refId
        made = await writer.create(
            scope,
            EntityKind.DEVICE,
            change.id or candidate,
            DYNAMIC,
            props,
            field_name=f"{path}.refId" if change.refId else path,
            node_id=node.id,
            ref_id=change.refId,
        )
        assert isinstance(made, ItwinDevice)
        return made
    found = await _find_change(backend, scope, change, EntityKind.DEVICE, candidate)
    if not isinstance(found, ItwinDevice):
        raise IntegrationError(
            404, f"{path}: no device with refId {change.refId or change.id!r}", f"{path}.refId"
        )
    if change.state == "remove":
        await writer.remove(scope, found)
        return None
    updated = await writer.update(scope, found, change.props.all_props())
    assert isinstance(updated, ItwinDevice)
    return updated


async def _sensor_change(
    backend: Backend, scope: Scope, device: ItwinDevice, change: SensorChange, path: str
) -> Sensor | None:
    writer = backend.writer
    ref = change.refId or ""
    candidate = f"{device.id}/{_hex_id(scope.account_id, device.id, 'sensor', ref)}/sensor"
    if change.state == "new":
        props = change.props.all_props()
        if change.refId is not None:
            props["SERIAL_NO"] = change.refId
        made = await writer.create(
            scope,
            EntityKind.SENSOR,
            change.id or candidate,
            DYNAMIC,
            props,
            field_name=f"{path}.refId" if change.refId else path,
            observation_type=DYNAMIC,
            device_id=device.id,
            ref_id=change.refId,
        )
        assert isinstance(made, Sensor)
        return made
    found = await _find_change(backend, scope, change, EntityKind.SENSOR, candidate)
    if not isinstance(found, Sensor):
        raise IntegrationError(
            404, f"{path}: no sensor with refId {change.refId or change.id!r}", f"{path}.refId"
        )
    if change.state == "remove":
        await writer.remove(scope, found)
        return None
    updated = await writer.update(scope, found, change.props.all_props())
    assert isinstance(updated, Sensor)
    return updated


async def _integration_body(
    backend: Backend,
    scope: Scope,
    node: Node,
    devices: Sequence[tuple[ItwinDevice, Sequence[Sensor]]],
) -> dict[str, Any]:
    network = backend.network
    facts = Facts()
    style = TimeStyle.OFFSET
    node_json = await network.render(scope, facts, node, style=style, with_custom=False)
    out = []
    for device, sensors in devices:
        device_json = await network.render(scope, facts, device, style=style, with_custom=False)
        out.append(
            {
                "device": device_json,
                "sensors": [
                    await network.render(scope, facts, s, style=style, with_custom=False)
                    for s in sensors
                ],
            }
        )
    return {"integration": {"node": node_json, "devices": out}}


def _integration_error(exc: errors.Error | IntegrationError) -> Response:
    if isinstance(exc, IntegrationError):
        return OrjsonResponse(integration_error_body(exc.message), status_code=exc.status)
    return OrjsonResponse(integration_error_body(exc.message), status_code=status_of(exc))


@router.post("/integrations/integrate", summary="Create or change a connection's entities")
async def integrate(
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
) -> Response:
    require(caller, WRITE_DATA, write=True)
    body = await _body(request, IntegrateRequest)
    if isinstance(body, Response):
        return body
    scope = _scope(caller, project_ids)
    try:
        check_integration(body)
        answer = await _integrate(_backend(request), scope, body)
    except IntegrationError as exc:
        return _integration_error(exc)
    except (Invalid, Conflict) as exc:
        return _integration_error(exc)
    return OrjsonResponse(answer)


@router.post("/integrations/{node_id:path}", summary="A connection with its devices and sensors")
async def integration_of(
    node_id: str,
    request: Request,
    caller: Caller,
    project_ids: ProjectIds = None,
) -> Response:
    require(caller, READ_DATA)
    backend = _backend(request)
    scope = _scope(caller, project_ids)
    facts = Facts()
    try:
        node = await backend.network.find(scope, node_id, EntityKind.NODE, "nodeId", facts)
    except Invalid:
        node = None
    if not isinstance(node, Node):
        return _integration_error(IntegrationError(404, INVALID_NODE_ID, "nodeId"))
    # The node's project (a look-up without projectIds may find it in any project it sees).
    home = Scope(scope.principal, node.core.project)
    devices = [d for d in await backend.network.devices(home) if d.node_id == node.id]
    touched = [(d, await backend.network.sensors_of(scope, facts, d)) for d in devices]
    return OrjsonResponse(await _integration_body(backend, scope, node, touched))


# -- one entity -------------------------------------------------------------------------------


async def _one(
    request: Request, caller: Principal, project_id: str | None, kind: EntityKind, rest: str
) -> Response:
    require(caller, READ_DATA)
    network = _backend(request).network
    scope = _scope(caller, project_id)
    facts = Facts()
    # iTwin ids start with "/", so the URL has two slashes: /sensors//fn/6C4F6D/node/.../sensor
    entity = await network.get(scope, "/" + rest, kind, "id", facts)
    [body] = await network.render_many(scope, facts, [entity])
    return OrjsonResponse(body)


# Registered after /nodes/all, /devices/types, /sensors/types..., which they would shadow.
@router.get("/nodes//{rest:path}", summary="A node (connection), by its id")
async def node_by_id(
    rest: str, request: Request, caller: Caller, project_ids: ProjectIds = None
) -> Response:
    return await _one(request, caller, project_ids, EntityKind.NODE, rest)


@router.get("/devices//{rest:path}", summary="A device, by its id")
async def device_by_id(
    rest: str, request: Request, caller: Caller, project_ids: ProjectIds = None
) -> Response:
    return await _one(request, caller, project_ids, EntityKind.DEVICE, rest)


@router.get("/sensors//{rest:path}", summary="A sensor, by its id")
async def sensor_by_id(
    rest: str, request: Request, caller: Caller, project_ids: ProjectIds = None
) -> Response:
    return await _one(request, caller, project_ids, EntityKind.SENSOR, rest)


# -- out of scope -----------------------------------------------------------------------------


@router.api_route(
    "/documents{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def documents(rest: str) -> Response:
    return OrjsonResponse(
        errors_body([(OUT_OF_SCOPE.format("documents"), "/documents")]), status_code=404
    )


@router.api_route(
    "/profiles{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def profiles(rest: str) -> Response:
    return OrjsonResponse(
        errors_body([(OUT_OF_SCOPE.format("profiles"), "/profiles")]), status_code=404
    )


def create_app(context: FaceContext, backend: Backend) -> FastAPI:
    app = face_app(
        context,
        title="thinghub iTwin IoT API",
        version="1",
        render=render_error,
        error_schema=ERROR_SCHEMA,
    )
    app.state.itwin = backend
    app.include_router(router)
    return app
