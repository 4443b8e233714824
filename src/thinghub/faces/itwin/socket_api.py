"""The iTwin socket API: every JSON-RPC method, over the face's backend.

Method by method (Bentley's documentation, "Managing Connections" to "Utilities", as the
real clients use them):

| method | kind | answer |
| --- | --- | --- |
| authenticate {code} | call | `{"nextId": 1}` |
| help, time | call | text; `{"time": ISO}` |
| getNodes/getDevices/getSensors {nodes/devices/sensors?} | call | `[entity, ...]` |
| createNode/createDevice/createSensor | call | the created entity, as the seed prints it |
| updateNode/updateDevice/updateSensor {id, props} | call | the entity |
| subscribeNodes/Devices/Sensors {ids?} | subscription | `{data: entity}` on each change |
| unsubscribe* {id or subscriptionId} | call | `{"unsubscribed": id}` |
| getRawMetrics {sensors or types}, getMetrics {sensors} | call | `{id: [metric, ...]}` |
| getUnits {metrics} | call | `{metric: [unit, ...]}` |
| getData {sensor, metric, unit, params?, startDate?, endDate?, limit?} | stream | chunks |
| getObservations {sensor, metric?} | stream | `{metric, unit, data}` chunks |
| getObservationsSummary {sensor(s), metric?, unit?, startDate?, endDate?} | call | `{id: ...}` |
| subscribeData {sensors, metric, unit, params?} | subscription | `{data: {ISO: v}}` |
| uploadData {data: [{sensorId, timestamp, values}]} | call | `{"successfullyProcessedObs": n}` |
| subscribeAlertTriggers {} | subscription | acknowledged; no pushes (no alert rules here) |

A stream sends `{data: {ISO: value, ...}}` chunks, then `{"requestStatus": "finished"}` on
its own. A subscription first says `{"requestStatus": "acknowledged"}` once it is live, then pushes
with the subscribe request's id, and never says `finished` (Bentley's client would tear it
down). Lists of ids skip ids that name nothing (the seed's samples check what came back);
subscriptions and data requests refuse them (-32004).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from thinghub.domain.deltas import parse_delta_params
from thinghub.domain.errors import Invalid, NotFound, Unauthorized
from thinghub.domain.metrics import Metric, get_metric, units_of
from thinghub.domain.model import Principal
from thinghub.faces.itwin.backend import READ_DATA, WRITE_DATA, Backend, require
from thinghub.faces.itwin.catalog import SENSOR_TYPES, metric_json, unit_json
from thinghub.faces.itwin.connection import Call
from thinghub.faces.itwin.data import one_point
from thinghub.faces.itwin.fanout import Subscriber
from thinghub.faces.itwin.ids import EntityKind
from thinghub.faces.itwin.methods import ACKNOWLEDGED, MethodTable
from thinghub.faces.itwin.network import Entity, Facts, Sensor
from thinghub.faces.itwin.params import (
    CreateDeviceParams,
    CreateNodeParams,
    CreateSensorParams,
    DataParams,
    GetDevicesParams,
    GetMetricsParams,
    GetNodesParams,
    GetRawMetricsParams,
    GetSensorsParams,
    GetUnitsParams,
    NoParams,
    ObservationsParams,
    RpcParams,
    SubscribeDataParams,
    SubscribeDevicesParams,
    SubscribeNodesParams,
    SubscribeSensorsParams,
    SummaryParams,
    UnsubscribeParams,
    UpdateDeviceParams,
    UpdateNodeParams,
    UpdateSensorParams,
    UploadDataParams,
)
from thinghub.faces.itwin.scope import Scope, scope_of
from thinghub.faces.itwin.utility import add_utility_methods

__all__ = ["MAX_REPORTED_REJECTS", "build_table"]

# uploadData names at most this many rejected entries (and counts them all).
MAX_REPORTED_REJECTS: Final = 100

_KIND_PARAM = {EntityKind.NODE: "nodes", EntityKind.DEVICE: "devices", EntityKind.SENSOR: "sensors"}


def _principal(call: Call) -> Principal:
    principal = call.session.principal
    if principal is None:  # pragma: no cover - the table refuses unauthenticated calls
        raise Unauthorized("authenticate first", field="code")
    return principal


def _scope(call: Call, params: RpcParams, scopes: frozenset[str] = READ_DATA) -> Scope:
    principal = _principal(call)
    require(principal, scopes, write=scopes is WRITE_DATA)
    return scope_of(principal, params.project_id)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()  # until the subscription is cancelled


def build_table(backend: Backend) -> MethodTable[Call]:
    """Every method of the socket API, over `backend`."""
    table: MethodTable[Call] = MethodTable()
    network, writer, observations = backend.network, backend.writer, backend.observations

    async def authenticate(call: Call, code: str) -> None:
        try:
            call.session.principal = await backend.authenticate(code)
        except Unauthorized:
            call.session.auth_failures += 1
            raise
        call.session.auth_failures = 0

    add_utility_methods(table, authenticate=authenticate, now=backend.now)

    # -- entities --------------------------------------------------------------------------

    async def listed(
        call: Call, params: RpcParams, kind: EntityKind, ids: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        scope = _scope(call, params)
        facts = Facts()
        found: list[Entity] = []
        if ids is None:
            if kind is EntityKind.NODE:
                found += await network.nodes(scope)
            elif kind is EntityKind.DEVICE:
                found += await network.devices(scope)
            else:
                found += await network.sensors(scope, facts)
        else:
            for i, itwin_id in enumerate(ids):
                entity = await network.find(
                    scope, itwin_id, kind, f"{_KIND_PARAM[kind]}[{i}]", facts
                )
                if entity is not None:
                    found.append(entity)
        return await network.render_many(scope, facts, found)

    @table.call("getNodes", GetNodesParams, summary="Nodes (connections): all, or by id.")
    async def get_nodes(call: Call, params: GetNodesParams) -> list[dict[str, Any]]:
        return await listed(call, params, EntityKind.NODE, params.nodes)

    @table.call("getDevices", GetDevicesParams, summary="Devices: all, or by id.")
    async def get_devices(call: Call, params: GetDevicesParams) -> list[dict[str, Any]]:
        return await listed(call, params, EntityKind.DEVICE, params.devices)

    @table.call("getSensors", GetSensorsParams, summary="Sensors: all, or by id.")
    async def get_sensors(call: Call, params: GetSensorsParams) -> list[dict[str, Any]]:
        return await listed(call, params, EntityKind.SENSOR, params.sensors)

    @table.call("createNode", CreateNodeParams, summary="Create a node (connection).")
    async def create_node(call: Call, params: CreateNodeParams) -> dict[str, Any]:
        scope = _scope(call, params, WRITE_DATA)
        entity = await writer.create(
            scope, EntityKind.NODE, params.node, params.type, params.props, field_name="node"
        )
        return network.minimal(entity)

    @table.call("createDevice", CreateDeviceParams, summary="Create a device under a node.")
    async def create_device(call: Call, params: CreateDeviceParams) -> dict[str, Any]:
        scope = _scope(call, params, WRITE_DATA)
        entity = await writer.create(
            scope,
            EntityKind.DEVICE,
            params.device,
            params.type,
            params.props,
            field_name="device",
            node_id=params.props["NODE_ID"],
        )
        return network.minimal(entity)

    @table.call("createSensor", CreateSensorParams, summary="Create a sensor under a device.")
    async def create_sensor(call: Call, params: CreateSensorParams) -> dict[str, Any]:
        scope = _scope(call, params, WRITE_DATA)
        entity = await writer.create(
            scope,
            EntityKind.SENSOR,
            params.sensor,
            params.type,
            params.props,
            field_name="sensor",
            observation_type=params.observationType,
        )
        return network.minimal(entity)

    async def updated(
        call: Call, params: RpcParams, kind: EntityKind, itwin_id: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        scope = _scope(call, params, WRITE_DATA)
        facts = Facts()
        entity = await network.get(scope, itwin_id, kind, kind.value, facts)
        changed = await writer.update(scope, entity, props)
        return await network.render(scope, Facts(), changed)

    @table.call("updateNode", UpdateNodeParams, summary="Overwrite props of a node.")
    async def update_node(call: Call, params: UpdateNodeParams) -> dict[str, Any]:
        return await updated(call, params, EntityKind.NODE, params.node, params.props)

    @table.call("updateDevice", UpdateDeviceParams, summary="Overwrite props of a device.")
    async def update_device(call: Call, params: UpdateDeviceParams) -> dict[str, Any]:
        return await updated(call, params, EntityKind.DEVICE, params.device, params.props)

    @table.call("updateSensor", UpdateSensorParams, summary="Overwrite props of a sensor.")
    async def update_sensor(call: Call, params: UpdateSensorParams) -> dict[str, Any]:
        return await updated(call, params, EntityKind.SENSOR, params.sensor, params.props)

    async def watched(
        call: Call, params: RpcParams, kind: EntityKind, ids: Sequence[str] | None
    ) -> AsyncIterator[Any]:
        scope = _scope(call, params)
        facts = Facts()
        found: list[Entity] | None = None
        if ids is not None:
            found = [
                await network.get(scope, itwin_id, kind, f"{_KIND_PARAM[kind]}[{i}]", facts)
                for i, itwin_id in enumerate(ids)
            ]
        subscriber = Subscriber(call.request_id, call.session.transport.push)
        async with backend.fanout.entities(scope, kind, found, subscriber):
            yield ACKNOWLEDGED
            await _forever()

    @table.subscription("subscribeNodes", SubscribeNodesParams, summary="Every change of nodes.")
    async def subscribe_nodes(call: Call, params: SubscribeNodesParams) -> AsyncIterator[Any]:
        async for item in watched(call, params, EntityKind.NODE, params.nodes):
            yield item

    @table.subscription(
        "subscribeDevices", SubscribeDevicesParams, summary="Every change of devices."
    )
    async def subscribe_devices(call: Call, params: SubscribeDevicesParams) -> AsyncIterator[Any]:
        async for item in watched(call, params, EntityKind.DEVICE, params.devices):
            yield item

    @table.subscription(
        "subscribeSensors", SubscribeSensorsParams, summary="Every change of sensors."
    )
    async def subscribe_sensors(call: Call, params: SubscribeSensorsParams) -> AsyncIterator[Any]:
        async for item in watched(call, params, EntityKind.SENSOR, params.sensors):
            yield item

    @table.subscription(
        "subscribeAlertTriggers",
        NoParams,
        summary="Alert triggers, pushed (thinghub has no alert rules: none come).",
    )
    async def subscribe_alert_triggers(call: Call, params: NoParams) -> AsyncIterator[Any]:
        # Bentley's client subscribes once per widget and filters the pushes by sensor; with
        # no alert rules here nothing triggers, so the subscription stays quiet until ended.
        _scope(call, params)
        yield ACKNOWLEDGED
        await _forever()

    def unsubscriber(method: str, subscribe: str) -> None:
        @table.call(method, UnsubscribeParams, summary=f"End a {subscribe} subscription.")
        async def unsubscribe(call: Call, params: UnsubscribeParams) -> dict[str, Any]:
            _principal(call)
            if not await call.session.unsubscribe(params.id, frozenset({subscribe})):
                raise NotFound(
                    f"no {subscribe} subscription with id {params.id!r} on this connection",
                    field="id",
                )
            return {"unsubscribed": params.id}

    for kind_name in ("Nodes", "Devices", "Sensors", "Data", "AlertTriggers"):
        unsubscriber(f"unsubscribe{kind_name}", f"subscribe{kind_name}")

    # -- metrics and units -----------------------------------------------------------------

    async def sensors_named(
        scope: Scope, facts: Facts, ids: Sequence[str], *, strict: bool
    ) -> list[Sensor]:
        out = []
        for i, itwin_id in enumerate(ids):
            field_name = f"sensors[{i}]"
            if strict:
                out.append(await network.sensor(scope, itwin_id, field_name, facts))
                continue
            found = await network.find(scope, itwin_id, EntityKind.SENSOR, field_name, facts)
            if isinstance(found, Sensor):
                out.append(found)
        return out

    @table.call(
        "getRawMetrics", GetRawMetricsParams, summary="Raw metrics of sensors or sensor types."
    )
    async def get_raw_metrics(call: Call, params: GetRawMetricsParams) -> dict[str, Any]:
        scope = _scope(call, params)
        facts = Facts()
        out: dict[str, Any] = {}
        for sensor in await sensors_named(scope, facts, params.sensors or [], strict=False):
            raw = list(await observations.raw_metrics(scope, facts, sensor))
            call.session.remember(raw)
            out[sensor.id] = [metric_json(m) for m in raw]
        for i, type_id in enumerate(params.types or []):
            template = SENSOR_TYPES.get(type_id)
            if template is None:
                raise Invalid(
                    f"types[{i}]: unknown sensor type {type_id!r} (known: "
                    f"{', '.join(SENSOR_TYPES)})",
                    field=f"types[{i}]",
                )
            out[type_id] = [metric_json(get_metric(m)) for m in template[1]]
        return out

    @table.call("getMetrics", GetMetricsParams, summary="All metrics (raw and derived) of sensors.")
    async def get_metrics(call: Call, params: GetMetricsParams) -> dict[str, Any]:
        scope = _scope(call, params)
        facts = Facts()
        out: dict[str, Any] = {}
        for sensor in await sensors_named(scope, facts, params.sensors, strict=False):
            metrics = list(await observations.all_metrics(scope, facts, sensor))
            call.session.remember(metrics)
            out[sensor.id] = [metric_json(m) for m in metrics]
        return out

    @table.call("getUnits", GetUnitsParams, summary="The units a metric can be asked in.")
    async def get_units(call: Call, params: GetUnitsParams) -> dict[str, Any]:
        _principal(call)
        out: dict[str, Any] = {}
        for i, metric_id in enumerate(params.metrics):
            metric: Metric | None = call.session.metrics.get(metric_id)
            if metric is None:
                metric = get_metric(metric_id, f"metrics[{i}]")
            out[metric_id] = [unit_json(u) for u in units_of(metric)]
        return out

    # -- observations ----------------------------------------------------------------------

    @table.stream("getData", DataParams, summary="A sensor's data in a metric and unit.")
    async def get_data(call: Call, params: DataParams) -> AsyncIterator[Any]:
        scope = _scope(call, params)
        facts = Facts()
        sensor = await network.sensor(scope, params.sensor, "sensor", facts)
        choice = await observations.choose(scope, facts, sensor, params.metric, params.unit)
        delta = parse_delta_params(params.params)
        async for chunk in observations.series_chunks(
            scope, sensor, choice, delta, params.startDate, params.endDate, params.limit
        ):
            yield {"data": chunk}

    @table.stream(
        "getObservations", ObservationsParams, summary="A sensor's raw observations, per metric."
    )
    async def get_observations(call: Call, params: ObservationsParams) -> AsyncIterator[Any]:
        scope = _scope(call, params)
        facts = Facts()
        sensor = await network.sensor(scope, params.sensor, "sensor", facts)
        raw = await observations.raw_metrics(scope, facts, sensor)
        wanted = [m.id for m in raw] if params.metric is None else [params.metric]
        none = parse_delta_params(None)
        for metric_id in wanted:
            choice = await observations.choose(scope, facts, sensor, metric_id, None, raw_only=True)
            async for chunk in observations.series_chunks(
                scope, sensor, choice, none, params.startDate, params.endDate, params.limit
            ):
                yield {"metric": choice.metric.id, "unit": choice.unit, "data": chunk}

    @table.call(
        "getObservationsSummary",
        SummaryParams,
        summary="The first and last observation of sensors.",
    )
    async def get_summary(call: Call, params: SummaryParams) -> dict[str, Any]:
        scope = _scope(call, params)
        facts = Facts()
        out: dict[str, Any] = {}
        for sensor in await sensors_named(scope, facts, params.sensor_ids, strict=False):
            metric_id = params.metric
            if metric_id is None:
                raw = await observations.raw_metrics(scope, facts, sensor)
                if not raw:
                    out[sensor.id] = {"first": {"observations": {}}, "last": {"observations": {}}}
                    continue
                metric_id = raw[0].id
            choice = await observations.choose(
                scope, facts, sensor, metric_id, params.unit, raw_only=True
            )
            first, last = await observations.first_and_last(
                scope, sensor, choice, params.startDate, params.endDate
            )
            out[sensor.id] = {
                "metric": choice.metric.id,
                "unit": choice.unit,
                "first": {"observations": one_point(first, choice.conversion)},
                "last": {"observations": one_point(last, choice.conversion)},
            }
        return out

    @table.subscription(
        "subscribeData", SubscribeDataParams, summary="New observations of sensors, pushed."
    )
    async def subscribe_data(call: Call, params: SubscribeDataParams) -> AsyncIterator[Any]:
        scope = _scope(call, params)
        facts = Facts()
        delta = parse_delta_params(params.params)
        chosen = []
        for sensor in await sensors_named(scope, facts, params.sensors, strict=True):
            choice = await observations.choose(scope, facts, sensor, params.metric, params.unit)
            chosen.append((sensor, choice))
        subscriber = Subscriber(call.request_id, call.session.transport.push)
        async with backend.fanout.data(scope, chosen, delta, subscriber):
            yield ACKNOWLEDGED
            await _forever()

    @table.call("uploadData", UploadDataParams, summary="Store observations of sensors.")
    async def upload_data(call: Call, params: UploadDataParams) -> dict[str, Any]:
        scope = _scope(call, params, WRITE_DATA)
        stored, rejected = await observations.upload_data(scope, params.data)
        out: dict[str, Any] = {"successfullyProcessedObs": stored}
        if rejected:
            out["rejectedObs"] = len(rejected)
            out["errors"] = [
                {"path": r.path, "message": r.message} for r in rejected[:MAX_REPORTED_REJECTS]
            ]
        return out

    return table
