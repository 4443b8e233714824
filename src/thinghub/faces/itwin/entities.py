"""Entity wire shapes: nodes, devices and sensors as the iTwin API prints them.

Pure functions from plain input dataclasses (filled by the face's handlers from the core's
devices, connection state and telemetry) to the seed's JSON:

    {"id", "type", "device"? (sensors), "observationType"? (sensors), "props": {...},
     "customProps"? }

Props hold the entity's configuration; the well-known ones are fields of EntityInfo and are
rendered in the seed's forms (below); any other stored prop (MODEL, VERSION, ZERO_DATE,
POWER_MODE, ...) is passed through from `props`, and a well-known field wins over a stored
prop of the same name. A field left None is left out of `props`, as the seed's minimal
create answers show (`{NAME, NODE_ID, ACCESSIBLE}`).

| prop | from | form |
| --- | --- | --- |
| NAME | name | string |
| NODE_ID | node_id | the node's id (a node's own id on nodes) |
| PROJECT_ID | project_id | string (thinghub: the project's name) |
| ACCESSIBLE | is_accessible | bool (thinghub: the MQTT connection is up) |
| LAST_COMM | last_comm | ISO ms Z |
| LAST_OBSERVATION | last_observation | `{sensorId?, timestamp, values?}` (values: array) |
| OBSERVATION_COUNT | observation_count | int |
| CREATION_DATE | creation_date | ISO ms Z; `+00:00` in integration answers (TimeStyle) |
| LOCATION | location | `{type?, coordinates: [lon, lat, elev?]}`, nulls when unknown |
| SERIAL_NO | serial_no | string |
| INTEGRATION_ID | integration_id | string (IMPORT_DEVICE_SDE, GENERIC_SENSOR_SDE, ...) |
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from thinghub.faces.itwin.timestamps import format_time, format_time_offset

__all__ = [
    "THINGHUB_TYPES",
    "DeviceInfo",
    "EntityInfo",
    "LastObservation",
    "Location",
    "NodeInfo",
    "SensorInfo",
    "TimeStyle",
    "device_json",
    "entity_json",
    "integration_json",
    "node_json",
    "sensor_json",
]

# What thinghub's own devices show as `type` and INTEGRATION_ID (the wiring may choose
# others; /devices/types and /sensors/types should list them).
THINGHUB_TYPES: Final[Mapping[str, tuple[str, str]]] = {
    "node": ("DYNAMIC", "THINGHUB_NODE"),
    "device": ("DYNAMIC", "THINGHUB_DEVICE"),
    "sensor": ("DYNAMIC", "THINGHUB_SENSOR"),
}


class TimeStyle(enum.Enum):
    """How CREATION_DATE is printed: `...818Z` (socket, REST lists) or `...553+00:00` (SDE)."""

    Z = "Z"
    OFFSET = "+00:00"


@dataclass(frozen=True, slots=True)
class Location:
    """`{"type": "Point", "coordinates": [lon, lat, elev]}`; `type` None leaves it out (as
    the seed's older examples print `{"coordinates": [...]}`); None coordinates print null."""

    coordinates: tuple[float | None, ...] = (None, None, None)
    type: str | None = "Point"


@dataclass(frozen=True, slots=True)
class LastObservation:
    """LAST_OBSERVATION: devices print `{timestamp}`, sensors `{sensorId, timestamp, values}`
    (values in the sensor's raw metric order)."""

    timestamp: float
    sensor_id: str | None = None
    values: tuple[float | None, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityInfo:
    """What every entity shows; None fields are left out of props."""

    id: str
    type: str
    name: str | None = None
    node_id: str | None = None
    project_id: str | None = None
    is_accessible: bool | None = None
    last_comm: float | None = None
    last_observation: LastObservation | None = None
    observation_count: int | None = None
    creation_date: float | None = None
    location: Location | None = None
    serial_no: str | None = None
    integration_id: str | None = None
    props: Mapping[str, Any] = field(default_factory=dict)
    custom_props: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo(EntityInfo):
    """A node (connection). Set `node_id` to its own id, as getNodes and createNode print."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo(EntityInfo):
    """A device; `node_id` is the node it is attached to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorInfo(EntityInfo):
    """A sensor; `device` is its device's id, shown at the top level beside `id`."""

    device: str
    observation_type: str | None = None


def _time(ts: float, style: TimeStyle) -> str:
    return format_time_offset(ts) if style is TimeStyle.OFFSET else format_time(ts)


def _props(info: EntityInfo, style: TimeStyle) -> dict[str, Any]:
    props = dict(info.props)
    known: list[tuple[str, Any]] = [
        ("NAME", info.name),
        ("NODE_ID", info.node_id),
        ("PROJECT_ID", info.project_id),
        ("ACCESSIBLE", info.is_accessible),
        ("LAST_COMM", None if info.last_comm is None else format_time(info.last_comm)),
        ("LAST_OBSERVATION", _last_observation(info.last_observation)),
        ("OBSERVATION_COUNT", info.observation_count),
        ("CREATION_DATE", None if info.creation_date is None else _time(info.creation_date, style)),
        ("LOCATION", _location(info.location)),
        ("SERIAL_NO", info.serial_no),
        ("INTEGRATION_ID", info.integration_id),
    ]
    for key, value in known:
        if value is not None:
            props[key] = value
    return props


def _last_observation(last: LastObservation | None) -> dict[str, Any] | None:
    if last is None:
        return None
    out: dict[str, Any] = {}
    if last.sensor_id is not None:
        out["sensorId"] = last.sensor_id
    out["timestamp"] = format_time(last.timestamp)
    if last.values is not None:
        out["values"] = list(last.values)
    return out


def _location(location: Location | None) -> dict[str, Any] | None:
    if location is None:
        return None
    out: dict[str, Any] = {} if location.type is None else {"type": location.type}
    out["coordinates"] = list(location.coordinates)
    return out


def _entity(info: EntityInfo, style: TimeStyle, head: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": info.id, "type": info.type, **head}
    out["props"] = _props(info, style)
    if info.custom_props is not None:
        out["customProps"] = dict(info.custom_props)
    return out


def node_json(node: NodeInfo, style: TimeStyle = TimeStyle.Z) -> dict[str, Any]:
    """A node object (getNodes, createNode, subscribeNodes pushes, /nodes/all)."""
    return _entity(node, style, {})


def device_json(device: DeviceInfo, style: TimeStyle = TimeStyle.Z) -> dict[str, Any]:
    """A device object (getDevices, createDevice, ...)."""
    return _entity(device, style, {})


def sensor_json(sensor: SensorInfo, style: TimeStyle = TimeStyle.Z) -> dict[str, Any]:
    """A sensor object: `device` (and `observationType` when set) beside `id`."""
    head: dict[str, Any] = {"device": sensor.device}
    if sensor.observation_type is not None:
        head["observationType"] = sensor.observation_type
    return _entity(sensor, style, head)


def entity_json(info: EntityInfo, style: TimeStyle = TimeStyle.Z) -> dict[str, Any]:
    """Whichever of node_json, device_json or sensor_json fits `info`."""
    if isinstance(info, SensorInfo):
        return sensor_json(info, style)
    return _entity(info, style, {})


def integration_json(
    node: NodeInfo, devices: Iterable[tuple[DeviceInfo, Iterable[SensorInfo]]]
) -> dict[str, Any]:
    """The Sensor Data Service's integration answer (POST /integrations/integrate and
    /integrations/{nodeId}): `{"integration": {"node", "devices": [{"device", "sensors"}]}}`,
    CREATION_DATE with `+00:00` as the seed prints it there."""
    style = TimeStyle.OFFSET
    return {
        "integration": {
            "node": node_json(node, style),
            "devices": [
                {
                    "device": device_json(device, style),
                    "sensors": [sensor_json(s, style) for s in sensors],
                }
                for device, sensors in devices
            ],
        }
    }
