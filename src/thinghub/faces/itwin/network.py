"""The iTwin network over the core: nodes, devices and sensors, found by id, listed, rendered.

Two kinds of entity live here (docs/faces/itwin.md, "Ids"):

- every thinghub device, under fixed ids (ids.py): its connection is a node, the device (and
  each module of a gateway) an iTwin device, each telemetry component of it a sensor
  (`default` for telemetry without one, always there). Nothing is stored for them: they are
  read from the registry and the latest observations. Props set with update* are kept in the
  core device's attributes (`itwinProps`, and per component `itwinSensors`).
- entities created through iTwin (createNode/createDevice/createSensor and the Sensor Data
  Service's integrations): core devices of kind node, device and sensor whose id is derived
  from their iTwin id (ids.derived_core_id, so a look-up by iTwin id is one read by key),
  with the iTwin id, type and props in `attributes["itwin"]`. A created device is a real
  device: /v1 lists it and it connects over MQTT with the keys /v1 shows.

Rendering goes through entities.py; what a render needs beyond the core record (the latest
observations of an entity, a template's units) is read once per request through a `Facts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.metrics import Metric
from thinghub.domain.model import Device, DeviceKind
from thinghub.domain.telemetry import Observation
from thinghub.faces.itwin.entities import (
    THINGHUB_TYPES,
    DeviceInfo,
    EntityInfo,
    LastObservation,
    NodeInfo,
    SensorInfo,
    TimeStyle,
    entity_json,
)
from thinghub.faces.itwin.ids import (
    DEFAULT_COMPONENT,
    MAX_COMPONENT_CHARS,
    DeviceRef,
    EntityKind,
    NodeRef,
    SensorRef,
    derived_core_id,
    format_ref,
    parse_ref,
)
from thinghub.faces.itwin.scope import Scope
from thinghub.faces.itwin.sensor_metrics import SensorMetrics
from thinghub.services.core import Services

__all__ = [
    "CREATED",
    "FIXED_PROPS",
    "SENSOR_PROPS",
    "Entity",
    "Facts",
    "ItwinDevice",
    "Network",
    "Node",
    "Sensor",
    "component_of",
    "created_info",
]

# Device.attributes keys: an entity created through iTwin; props set on a thinghub device;
# props set on the sensors (components) of a thinghub device.
CREATED: Final = "itwin"
FIXED_PROPS: Final = "itwinProps"
SENSOR_PROPS: Final = "itwinSensors"

_ALL_KINDS = (
    DeviceKind.DEVICE,
    DeviceKind.GATEWAY,
    DeviceKind.MODULE,
    DeviceKind.NODE,
    DeviceKind.SENSOR,
)
_FIXED_KINDS = frozenset({DeviceKind.DEVICE, DeviceKind.GATEWAY})


def created_info(device: Device) -> Mapping[str, Any] | None:
    """What iTwin knows of a core device it created (`attributes["itwin"]`), or None."""
    info = device.attributes.get(CREATED)
    return info if isinstance(info, dict) and isinstance(info.get("id"), str) else None


def component_of(metric_key: str) -> tuple[str | None, str]:
    """(component, field) of an observation's metric key: the core names a component's fields
    `component.field` (domain/telemetry.observations_of)."""
    component, dot, name = metric_key.partition(".")
    return (component, name) if dot else (None, metric_key)


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    core: Device  # the thinghub device (or gateway) whose connection it is, or the created node

    @property
    def kind(self) -> EntityKind:
        return EntityKind.NODE


@dataclass(frozen=True, slots=True)
class ItwinDevice:
    id: str
    core: Device  # a device, a gateway, a module of a gateway, or a created device
    node_id: str

    @property
    def kind(self) -> EntityKind:
        return EntityKind.DEVICE


@dataclass(frozen=True, slots=True)
class Sensor:
    """A sensor: a component of a thinghub device or module, or a created sensor.

    `holder` is the core entity its observations are stored under (the device or module; the
    created sensor itself), `component` the component its fields belong to (None: `default`).
    """

    id: str
    holder: Device
    component: str | None
    device_id: str
    node_id: str

    @property
    def kind(self) -> EntityKind:
        return EntityKind.SENSOR

    @property
    def is_created(self) -> bool:
        return created_info(self.holder) is not None

    def metric_key(self, field_name: str) -> str:
        """The observation metric a field of this sensor is stored under."""
        return f"{self.component}.{field_name}" if self.component else field_name


Entity = Node | ItwinDevice | Sensor


@dataclass(slots=True)
class Facts:
    """What renders read besides the core record, read once per request: each entity's
    latest observations."""

    latest: dict[str, dict[str, Observation]] = field(default_factory=dict)


class Network:
    """Nodes, devices and sensors of one account, as the iTwin face shows them."""

    def __init__(self, services: Services, metrics: SensorMetrics) -> None:
        self.services = services
        self.metrics = metrics

    # -- reading the core ------------------------------------------------------------------

    async def latest(self, scope: Scope, facts: Facts, entity_id: str) -> dict[str, Observation]:
        found = facts.latest.get(entity_id)
        if found is None:
            found = await self.services.queries.latest_observations(scope.principal, entity_id)
            facts.latest[entity_id] = found
        return found

    async def _in_project(self, scope: Scope) -> list[Device]:
        devices = await self.services.registry.list_devices(
            scope.principal, project=None if scope.is_all else scope.project, kinds=_ALL_KINDS
        )
        return [d for d in devices if scope.holds(d)]

    async def _core(self, scope: Scope, core_id: str) -> Device | None:
        """A device, gateway, node, sensor or created device by core id, if `scope` finds it
        (modules: see _module)."""
        try:
            device = await self.services.registry.get_device(scope.principal, core_id)
        except NotFound:
            return None
        return device if scope.holds(device) else None

    async def _module(self, scope: Scope, gateway_id: str, module_id: str) -> Device | None:
        gateway = await self._core(scope, gateway_id)
        if gateway is None or created_info(gateway) is not None:
            return None
        try:
            return await self.services.registry.get_module(scope.principal, gateway_id, module_id)
        except NotFound:
            return None

    # -- listing -------------------------------------------------------------------------

    async def nodes(self, scope: Scope) -> list[Node]:
        out = []
        for device in await self._in_project(scope):
            node = self._node_of(device)
            if node is not None:
                out.append(node)
        return out

    async def devices(self, scope: Scope) -> list[ItwinDevice]:
        out = []
        for device in await self._in_project(scope):
            found = self._device_of(device)
            if found is not None:
                out.append(found)
        return out

    async def sensors(self, scope: Scope, facts: Facts) -> list[Sensor]:
        out: list[Sensor] = []
        for device in await self._in_project(scope):
            info = created_info(device)
            if info is not None:
                if device.kind is DeviceKind.SENSOR:
                    out.append(self._created_sensor(device, info))
                continue
            holder = self._device_of(device)
            if holder is not None:
                out += await self.sensors_of(scope, facts, holder)
        return out

    async def sensors_of(self, scope: Scope, facts: Facts, device: ItwinDevice) -> list[Sensor]:
        """The sensors of an iTwin device: its created sensors, or one per component."""
        info = created_info(device.core)
        if info is not None:
            children = await self.services.registry.list_devices(
                scope.principal, project=device.core.project, kinds=(DeviceKind.SENSOR,)
            )
            return [
                self._created_sensor(child, child_info)
                for child in children
                if child.parent_id == device.core.id
                and (child_info := created_info(child)) is not None
            ]
        components = await self.components(scope, facts, device.core)
        return [self._fixed_sensor(device, component) for component in components]

    async def components(self, scope: Scope, facts: Facts, holder: Device) -> list[str | None]:
        """The components of a thinghub device or module with a sensor: `default` (None),
        those its telemetry used, those its template declares and those given props."""
        found: set[str] = set()
        for key in await self.latest(scope, facts, holder.id):
            component, _ = component_of(key)
            if component is not None and 0 < len(component) <= MAX_COMPONENT_CHARS:
                found.add(component)
        found.update(await self.metrics.template_components(holder))
        sensor_props = holder.attributes.get(SENSOR_PROPS)
        if isinstance(sensor_props, dict):
            found.update(k for k in sensor_props if k != DEFAULT_COMPONENT)
        found.discard(DEFAULT_COMPONENT)
        return [None, *sorted(found)]

    async def affected(
        self,
        scope: Scope,
        facts: Facts,
        core_id: str,
        component: str | None,
        *,
        every_sensor: bool,
    ) -> list[Entity]:
        """The entities a live event of core entity `core_id` changes: a thinghub device's
        node, device and sensors (a module's device and sensors); only the sensor of
        `component` unless `every_sensor` (a connection or record change); a created
        entity itself."""
        device_id, _, module_id = core_id.partition("/")
        if module_id:
            core = await self._module(scope, device_id, module_id)
        else:
            core = await self._core(scope, core_id)
        if core is None:
            return []
        info = created_info(core)
        if info is not None:
            if core.kind is DeviceKind.SENSOR:
                return [self._created_sensor(core, info)]
            created = self._node_of(core) or self._device_of(core)
            return [] if created is None else [created]
        device = self._device_of(core)
        if device is None:
            return []
        node = None if module_id else self._node_of(core)
        out: list[Entity] = [] if node is None else [node]
        out.append(device)
        if every_sensor:
            out += await self.sensors_of(scope, facts, device)
        else:
            out.append(self._fixed_sensor(device, component))
        return out

    # -- the entity of a core device ---------------------------------------------------------

    @staticmethod
    def _node_of(device: Device) -> Node | None:
        info = created_info(device)
        if info is not None:
            return Node(info["id"], device) if device.kind is DeviceKind.NODE else None
        if device.kind in _FIXED_KINDS:
            return Node(format_ref(NodeRef(device.id)), device)
        return None

    @staticmethod
    def _device_of(device: Device) -> ItwinDevice | None:
        info = created_info(device)
        if info is not None:
            if device.kind is not DeviceKind.DEVICE:
                return None
            return ItwinDevice(info["id"], device, str(info.get("node", "")))
        if device.kind in _FIXED_KINDS:
            ref = DeviceRef(device.id)
        elif device.kind is DeviceKind.MODULE and device.parent_id and device.module_id:
            ref = DeviceRef(device.parent_id, device.module_id)
        else:
            return None
        return ItwinDevice(format_ref(ref), device, format_ref(ref.node))

    @staticmethod
    def _fixed_sensor(device: ItwinDevice, component: str | None) -> Sensor:
        core = device.core
        if core.kind is DeviceKind.MODULE:
            ref = SensorRef(core.parent_id or "", component, core.module_id)
        else:
            ref = SensorRef(core.id, component)
        return Sensor(format_ref(ref), core, component, device.id, device.node_id)

    @staticmethod
    def _created_sensor(device: Device, info: Mapping[str, Any]) -> Sensor:
        return Sensor(
            info["id"], device, None, str(info.get("device", "")), str(info.get("node", ""))
        )

    # -- finding by id ---------------------------------------------------------------------

    async def find(
        self, scope: Scope, itwin_id: object, kind: EntityKind, field_name: str, facts: Facts
    ) -> Entity | None:
        """The entity an id names, or None when there is none the scope may find.

        Raises:
            Invalid: naming `field_name`, when the id is malformed or of another kind.
        """
        ref = parse_ref(itwin_id, field_name, kind)
        if ref is None:
            return await self._find_created(scope, str(itwin_id), kind)
        if isinstance(ref, NodeRef):
            device = await self._core(scope, ref.device_id)
            return None if device is None else self._only_fixed(self._node_of(device))
        if isinstance(ref, DeviceRef):
            return await self._find_fixed_device(scope, ref)
        holder = await self._find_fixed_device(scope, ref.device)
        if holder is None:
            return None
        components = await self.components(scope, facts, holder.core)
        if ref.component not in components:
            return None
        return self._fixed_sensor(holder, ref.component)

    async def get(
        self, scope: Scope, itwin_id: object, kind: EntityKind, field_name: str, facts: Facts
    ) -> Entity:
        """As find, but NotFound (naming `field_name`) when there is none."""
        found = await self.find(scope, itwin_id, kind, field_name, facts)
        if found is None:
            raise NotFound(f"{kind} {itwin_id!r} not found", field=field_name)
        return found

    async def node(self, scope: Scope, node_id: object, field_name: str, facts: Facts) -> Node:
        found = await self.get(scope, node_id, EntityKind.NODE, field_name, facts)
        if not isinstance(found, Node):  # pragma: no cover - get() checks the kind
            raise NotFound(f"node {node_id!r} not found", field=field_name)
        return found

    async def device(
        self, scope: Scope, device_id: object, field_name: str, facts: Facts
    ) -> ItwinDevice:
        found = await self.get(scope, device_id, EntityKind.DEVICE, field_name, facts)
        if not isinstance(found, ItwinDevice):  # pragma: no cover - get() checks the kind
            raise NotFound(f"device {device_id!r} not found", field=field_name)
        return found

    async def sensor(
        self, scope: Scope, sensor_id: object, field_name: str, facts: Facts
    ) -> Sensor:
        found = await self.get(scope, sensor_id, EntityKind.SENSOR, field_name, facts)
        if not isinstance(found, Sensor):  # pragma: no cover - get() checks the kind
            raise NotFound(f"sensor {sensor_id!r} not found", field=field_name)
        return found

    @staticmethod
    def _only_fixed(node: Node | None) -> Node | None:
        return node if node is not None and created_info(node.core) is None else None

    async def _find_fixed_device(self, scope: Scope, ref: DeviceRef) -> ItwinDevice | None:
        if ref.module_id is None:
            device = await self._core(scope, ref.device_id)
        else:
            device = await self._module(scope, ref.device_id, ref.module_id)
        if device is None or created_info(device) is not None:
            return None
        return self._device_of(device)

    async def _find_created(self, scope: Scope, itwin_id: str, kind: EntityKind) -> Entity | None:
        device = await self.created_core(scope, itwin_id)
        if device is None:
            return None
        info = created_info(device)
        if info is None:  # pragma: no cover - created_core checks it
            return None
        if kind is EntityKind.NODE and device.kind is DeviceKind.NODE:
            return Node(itwin_id, device)
        if kind is EntityKind.DEVICE and device.kind is DeviceKind.DEVICE:
            return ItwinDevice(itwin_id, device, str(info.get("node", "")))
        if kind is EntityKind.SENSOR and device.kind is DeviceKind.SENSOR:
            return self._created_sensor(device, info)
        return None

    async def created_core(self, scope: Scope, itwin_id: str) -> Device | None:
        """The core device of an entity created through iTwin under `itwin_id`, if any."""
        device = await self._core(scope, derived_core_id(scope.account_id, itwin_id))
        if device is None:
            return None
        info = created_info(device)
        return device if info is not None and info["id"] == itwin_id else None

    # -- rendering -------------------------------------------------------------------------

    async def render(
        self,
        scope: Scope,
        facts: Facts,
        entity: Entity,
        *,
        style: TimeStyle = TimeStyle.Z,
        with_custom: bool = True,
        sizes: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """The entity's JSON object (getNodes, /sensors/all, subscribe* pushes, ...).

        `sizes`: sensors per created device, when the caller counted them already.
        """
        info = await self._info(scope, facts, entity, with_custom, sizes)
        return entity_json(info, style)

    async def render_many(
        self, scope: Scope, facts: Facts, entities: Iterable[Entity], style: TimeStyle = TimeStyle.Z
    ) -> list[dict[str, Any]]:
        listed = list(entities)
        sizes: dict[str, int] = {}
        for entity in listed:
            if isinstance(entity, Sensor) and entity.is_created:
                sizes[entity.device_id] = sizes.get(entity.device_id, 0) + 1
        have_sensors = any(isinstance(e, Sensor) for e in listed)
        return [
            await self.render(scope, facts, e, style=style, sizes=sizes if have_sensors else None)
            for e in listed
        ]

    @staticmethod
    def minimal(entity: Entity) -> dict[str, Any]:
        """A created entity as the seed prints create* answers: NAME, NODE_ID, ACCESSIBLE
        (and a sensor's SERIAL_NO, its device's serial)."""
        info = created_info(entity.core if not isinstance(entity, Sensor) else entity.holder)
        props: Mapping[str, Any] = (info or {}).get("props") or {}
        name = props.get("NAME")
        if isinstance(entity, Sensor):
            segments = entity.device_id.rstrip("/").split("/")
            serial = segments[-2] if len(segments) >= 2 else None
            return entity_json(
                SensorInfo(
                    id=entity.id,
                    type=str((info or {}).get("type", "DYNAMIC")),
                    device=entity.device_id,
                    name=name if isinstance(name, str) else None,
                    node_id=entity.node_id,
                    is_accessible=True,
                    serial_no=serial,
                )
            )
        node_id = entity.id if isinstance(entity, Node) else entity.node_id
        cls = NodeInfo if isinstance(entity, Node) else DeviceInfo
        return entity_json(
            cls(
                id=entity.id,
                type=str((info or {}).get("type", "DYNAMIC")),
                name=name if isinstance(name, str) else None,
                node_id=node_id,
                is_accessible=True,
            )
        )

    async def _info(
        self,
        scope: Scope,
        facts: Facts,
        entity: Entity,
        with_custom: bool,
        sizes: Mapping[str, int] | None,
    ) -> EntityInfo:
        core = entity.holder if isinstance(entity, Sensor) else entity.core
        info = created_info(core)
        project_id = core.project if core.project is not None else core.account_id
        custom = None
        if with_custom:
            stored_custom = (info or {}).get("customProps")
            custom = dict(stored_custom) if isinstance(stored_custom, dict) else {}
        if info is not None:
            return await self._created_info(
                scope, facts, entity, core, info, project_id, custom, sizes
            )
        return await self._fixed_info(scope, facts, entity, core, project_id, custom)

    async def _created_info(
        self,
        scope: Scope,
        facts: Facts,
        entity: Entity,
        core: Device,
        info: Mapping[str, Any],
        project_id: str,
        custom: dict[str, Any] | None,
        sizes: Mapping[str, int] | None,
    ) -> EntityInfo:
        props = dict(info.get("props") or {})
        props["THINGHUB_ID"] = core.id  # its id on /v1 (a created device connects with it)
        common: dict[str, Any] = dict(
            id=entity.id,
            type=str(info.get("type", "DYNAMIC")),
            project_id=project_id,
            last_comm=core.last_activity_at,
            creation_date=core.created_at,
            props=props,
            custom_props=custom,
        )
        if isinstance(entity, Node):
            return NodeInfo(node_id=entity.id, is_accessible=True, **common)
        if isinstance(entity, ItwinDevice):
            # API-fed until it talks over MQTT itself; from then on it follows its connection.
            accessible = core.is_connected or core.last_activity_at is None
            if sizes is not None:
                props["SIZE"] = sizes.get(entity.id, 0)
            elif "SIZE" not in props:
                props["SIZE"] = len(await self.sensors_of(scope, facts, entity))
            return DeviceInfo(node_id=entity.node_id, is_accessible=accessible, **common)
        observation_type = info.get("observationType")
        latest = await self.latest(scope, facts, core.id)
        raw = await self.metrics.raw_metrics(entity, latest)
        return SensorInfo(
            device=entity.device_id,
            observation_type=observation_type if isinstance(observation_type, str) else None,
            node_id=entity.node_id,
            is_accessible=True,
            last_observation=_last_observation(entity, raw, latest),
            **common,
        )

    async def _fixed_info(
        self,
        scope: Scope,
        facts: Facts,
        entity: Entity,
        core: Device,
        project_id: str,
        custom: dict[str, Any] | None,
    ) -> EntityInfo:
        stored = core.attributes.get(FIXED_PROPS)
        props: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
        if isinstance(entity, Node):
            kind_type, integration = THINGHUB_TYPES["node"]
            props["THINGHUB_ID"] = core.id
            return NodeInfo(
                id=entity.id,
                type=kind_type,
                name=str(props.pop("NAME", core.name)),
                node_id=entity.id,
                project_id=project_id,
                is_accessible=core.is_connected,
                last_comm=core.last_activity_at,
                creation_date=core.created_at,
                serial_no=core.id,
                integration_id=integration,
                props=props,
                custom_props=custom,
            )
        latest = await self.latest(scope, facts, core.id)
        if isinstance(entity, ItwinDevice):
            kind_type, integration = THINGHUB_TYPES["device"]
            props["THINGHUB_ID"] = core.id
            if core.model_id:
                props["MODEL_ID"] = core.model_id
            props["SIZE"] = len(await self.components(scope, facts, core))
            newest = max((o.ts for o in latest.values()), default=None)
            return DeviceInfo(
                id=entity.id,
                type=kind_type,
                name=str(props.pop("NAME", core.module_id or core.name)),
                node_id=entity.node_id,
                project_id=project_id,
                is_accessible=core.is_connected,
                last_comm=core.last_activity_at,
                last_observation=None if newest is None else LastObservation(newest),
                creation_date=core.created_at,
                serial_no=core.id,
                integration_id=integration,
                props=props,
                custom_props=custom,
            )
        kind_type, integration = THINGHUB_TYPES["sensor"]
        component = entity.component or DEFAULT_COMPONENT
        sensor_props = core.attributes.get(SENSOR_PROPS)
        own = sensor_props.get(component) if isinstance(sensor_props, dict) else None
        props = dict(own) if isinstance(own, dict) else {}
        props["THINGHUB_ID"] = core.id
        props["COMPONENT"] = component
        raw = await self.metrics.raw_metrics(entity, latest)
        return SensorInfo(
            id=entity.id,
            type=kind_type,
            device=entity.device_id,
            observation_type=kind_type,
            name=str(props.pop("NAME", component)),
            node_id=entity.node_id,
            project_id=project_id,
            is_accessible=core.is_connected,
            last_comm=core.last_activity_at,
            last_observation=_last_observation(entity, raw, latest),
            creation_date=core.created_at,
            integration_id=integration,
            props=props,
            custom_props=custom,
        )


def _last_observation(
    sensor: Sensor, raw: Iterable[Metric], latest: Mapping[str, Observation]
) -> LastObservation | None:
    """LAST_OBSERVATION of a sensor: the newest time among its metrics, and each raw metric's
    latest value in the sensor's metric order (null where a metric has none)."""
    values: list[float | None] = []
    newest: float | None = None
    for metric in raw:
        found = latest.get(sensor.metric_key(metric.id))
        values.append(None if found is None else found.value)
        if found is not None and (newest is None or found.ts > newest):
            newest = found.ts
    if newest is None:
        return None
    return LastObservation(newest, sensor.id, tuple(values))


def check_props(props: Mapping[str, Any], field_name: str = "props") -> None:
    """Props a client may not set: what the core computes.

    Raises:
        Invalid: naming `props.<NAME>`.
    """
    for key in props:
        if key in COMPUTED_PROPS:
            raise Invalid(
                f"{field_name}.{key} is computed by the server and cannot be set",
                field=f"{field_name}.{key}",
            )


# Props the server computes; update* and create* may not set them.
COMPUTED_PROPS: Final = frozenset(
    {
        "ACCESSIBLE",
        "LAST_COMM",
        "LAST_OBSERVATION",
        "OBSERVATION_COUNT",
        "CREATION_DATE",
        "PROJECT_ID",
        "THINGHUB_ID",
        "COMPONENT",
        "SIZE",
    }
)
