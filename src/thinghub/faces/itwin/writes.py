"""Creating and changing entities through iTwin: create*, update* and integrations.

Entities created here are core devices (network.py): nodes of kind node, devices of kind
device (a real device: /v1 lists it, it can connect over MQTT), sensors of kind sensor under
their device. Their core id is derived from their iTwin id (ids.derived_core_id), and the
iTwin id, type and props are kept in `attributes["itwin"]`.

Decisions where the seed is silent:

- The seed's own samples create a device whose NODE_ID (`/fn/02DDC5/node`) is not the node
  its createNode sample made, and a sensor under a device that no sample creates. So a
  create names its parents, and a parent that does not exist yet is created with it (a node
  or device of type DYNAMIC named after its id), rather than refusing the seed's samples.
- Ids under `/thinghub/` are thinghub's own devices: they are registered on /v1 (and show
  here at once), never created here.
- Props the server computes (ACCESSIBLE, LAST_COMM, ...: network.COMPUTED_PROPS) cannot be
  set; trying is an error naming the prop. update* overwrites the props it names and keeps
  the others. On a thinghub device, NAME renames the device (as /v1 shows it); other props
  are kept beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.metrics import generic_sensor_metrics
from thinghub.domain.model import Device, DeviceKind
from thinghub.faces.itwin.ids import (
    PREFIX,
    EntityKind,
    check_itwin_id,
    derived_core_id,
    kind_of,
)
from thinghub.faces.itwin.network import (
    CREATED,
    FIXED_PROPS,
    SENSOR_PROPS,
    Entity,
    Facts,
    ItwinDevice,
    Network,
    Sensor,
    check_props,
    created_info,
)
from thinghub.faces.itwin.scope import Scope
from thinghub.faces.itwin.sensor_metrics import METRIC_PROPS
from thinghub.services.core import Services

__all__ = ["DYNAMIC", "MAX_NAME_CHARS", "EntityWriter", "parent_ids"]

logger = logging.getLogger(__name__)

DYNAMIC: Final = "DYNAMIC"  # the type of entities made without one (parents, SDE entities)
MAX_NAME_CHARS: Final = 200  # a core device's name


def parent_ids(itwin_id: str) -> tuple[str, str | None]:
    """(node id, device id) an entity id names by its path: `/fn/X/node/a/b/device/c/sensor`
    -> (`/fn/X/node`, `/fn/X/node/a/b/device`); the device is None for nodes and devices."""
    parts = itwin_id.split("/")
    node_end = parts.index("node") if "node" in parts else len(parts) - 1
    node = "/".join(parts[: node_end + 1])
    if parts[-1] != "sensor" or "device" not in parts[:-1]:
        return node, None
    device_end = len(parts) - 2 - parts[:-1][::-1].index("device")
    return node, "/".join(parts[: device_end + 1])


def _check_location(props: Mapping[str, Any], field_name: str) -> None:
    location = props.get("LOCATION")
    if location is None:
        return
    where = f"{field_name}.LOCATION"
    coordinates = location.get("coordinates") if isinstance(location, dict) else None
    if not isinstance(coordinates, list) or len(coordinates) > 3:
        raise Invalid(
            f"{where} must be {{type?, coordinates: [longitude, latitude, elevation?]}}",
            field=where,
        )
    for value in coordinates:
        if value is not None and (value.__class__ is bool or not isinstance(value, int | float)):
            raise Invalid(f"{where}.coordinates must hold numbers or null", field=where)


def _check_generic(props: Mapping[str, Any], field_name: str) -> None:
    if any(key in props for key in METRIC_PROPS):
        try:
            generic_sensor_metrics(props)
        except Invalid as exc:
            raise Invalid(
                f"{field_name}: {exc.message}", field=f"{field_name}.{exc.field}"
            ) from None


def _name(props: Mapping[str, Any], fallback: str) -> str:
    name = props.get("NAME")
    if name is not None and not isinstance(name, str):
        raise Invalid("props.NAME must be a string", field="props.NAME")
    return (name or fallback)[:MAX_NAME_CHARS]


class EntityWriter:
    def __init__(self, services: Services, network: Network) -> None:
        self.services = services
        self.network = network

    # -- create ----------------------------------------------------------------------------

    async def create(
        self,
        scope: Scope,
        kind: EntityKind,
        itwin_id: str,
        type_: str,
        props: Mapping[str, Any],
        *,
        field_name: str,
        observation_type: str | None = None,
        node_id: str | None = None,
        device_id: str | None = None,
        ref_id: str | None = None,
        is_new: bool = True,
    ) -> Entity:
        """Create a node, device or sensor (and the parents it names that do not exist).

        Args:
            node_id: the node a device is attached to (NODE_ID); default: its id's prefix.
            device_id: the device a sensor belongs to; default: its id's prefix.
            ref_id: the Sensor Data Service's refId, kept for later updates.
            is_new: False for a parent made on the way (it may exist: then it is used).

        Raises:
            Invalid: a malformed id, an id under /thinghub/, or props that cannot be set.
            Conflict: the entity exists.
        """
        check_itwin_id(itwin_id, field_name)
        if kind_of(itwin_id, field_name) is not kind:
            raise Invalid(f"{field_name} must be a {kind} id, got {itwin_id!r}", field=field_name)
        if itwin_id.split("/")[1] == PREFIX:
            raise Invalid(
                f"{field_name}: ids under /{PREFIX}/ are thinghub's own devices; register the "
                "device on /v1 and it shows here at once",
                field=field_name,
            )
        check_props(props)
        _check_location(props, "props")
        if kind is EntityKind.SENSOR:
            _check_generic(props, "props")
        facts = Facts()
        existing = await self.network.created_core(scope, itwin_id)
        if existing is not None:
            if not is_new:
                return await self.network.get(scope, itwin_id, kind, field_name, facts)
            raise Conflict(f"{kind} {itwin_id!r} already exists", field=field_name)
        derived_node, derived_device = parent_ids(itwin_id)
        parent: Device | None = None
        node = itwin_id
        info: dict[str, Any] = {"id": itwin_id, "type": type_, "props": dict(props)}
        if kind is EntityKind.DEVICE:
            node = node_id or derived_node
            await self._parent(scope, EntityKind.NODE, node, "props.NODE_ID")
            parent = await self.network.created_core(scope, node)
        elif kind is EntityKind.SENSOR:
            device = device_id or derived_device
            if device is None:
                raise Invalid(
                    f"{field_name} must name its device: {{device id}}/{{name}}/sensor",
                    field=field_name,
                )
            made = await self._parent(scope, EntityKind.DEVICE, device, field_name)
            if not isinstance(made, ItwinDevice):  # pragma: no cover - _parent checks it
                raise NotFound(f"device {device!r} not found", field=field_name)
            node = made.node_id
            parent = made.core
            info["device"] = device
            info["observationType"] = observation_type or type_
        info["node"] = node
        if ref_id is not None:
            info["refId"] = ref_id
        core_kind = {
            EntityKind.NODE: DeviceKind.NODE,
            EntityKind.DEVICE: DeviceKind.DEVICE,
            EntityKind.SENSOR: DeviceKind.SENSOR,
        }[kind]
        core = await self.services.registry.create_device(
            scope.principal,
            name=_name(props, itwin_id),
            device_id=derived_core_id(scope.account_id, itwin_id),
            project=scope.write_project if parent is None else parent.project,
            kind=core_kind,
            attributes={CREATED: info},
            parent_id=None if parent is None else parent.id,
        )
        logger.info(
            "itwin: %s %s created as %s (account %s)", kind, itwin_id, core.id, core.account_id
        )
        return await self.network.get(scope, itwin_id, kind, field_name, facts)

    async def _parent(
        self, scope: Scope, kind: EntityKind, itwin_id: str, field_name: str
    ) -> Entity:
        """A parent named by a create: found, or made (a created one; never a thinghub
        device's node or device, which cannot hold created entities)."""
        check_itwin_id(itwin_id, field_name)
        if kind_of(itwin_id, field_name) is not kind:
            raise Invalid(f"{field_name} must be a {kind} id, got {itwin_id!r}", field=field_name)
        if itwin_id.split("/")[1] == PREFIX:
            raise Invalid(
                f"{field_name}: a thinghub device's {kind} ({itwin_id!r}) holds no entities "
                "created through iTwin; name a node created here",
                field=field_name,
            )
        found = await self.network.find(scope, itwin_id, kind, field_name, Facts())
        if found is not None:
            return found
        return await self.create(
            scope, kind, itwin_id, DYNAMIC, {}, field_name=field_name, is_new=False
        )

    # -- update ----------------------------------------------------------------------------

    async def update(self, scope: Scope, entity: Entity, props: Mapping[str, Any]) -> Entity:
        """Overwrite the props `props` names, keep the others (see the module docstring).

        Raises:
            Invalid: a prop that cannot be set, or generic sensor metrics that do not fit.
        """
        check_props(props)
        _check_location(props, "props")
        core = entity.holder if isinstance(entity, Sensor) else entity.core
        info = created_info(core)
        changes: dict[str, Any] = {}
        if info is not None:
            merged = {**(info.get("props") or {}), **props}
            if isinstance(entity, Sensor):
                _check_generic(merged, "props")
            changes["attributes"] = {**core.attributes, CREATED: {**info, "props": merged}}
            if "NAME" in props:
                changes["name"] = _name(props, core.name)
        elif isinstance(entity, Sensor):
            component = entity.component or "default"
            stored = core.attributes.get(SENSOR_PROPS)
            sensors = dict(stored) if isinstance(stored, dict) else {}
            own = sensors.get(component)
            sensors[component] = {**(own if isinstance(own, dict) else {}), **props}
            changes["attributes"] = {**core.attributes, SENSOR_PROPS: sensors}
        else:
            rest = {k: v for k, v in props.items() if k != "NAME"}
            if "NAME" in props:
                changes["name"] = _name(props, core.name)
            if rest:
                stored = core.attributes.get(FIXED_PROPS)
                merged = {**(stored if isinstance(stored, dict) else {}), **rest}
                changes["attributes"] = {**core.attributes, FIXED_PROPS: merged}
        if changes:
            await self.services.registry.update_device(scope.principal, core, **changes)
        return await self.network.get(scope, entity.id, entity.kind, "id", Facts())

    async def set_ref(self, scope: Scope, entity: Entity, ref_id: str) -> None:
        """Remember a Sensor Data Service refId on a created entity."""
        core = entity.holder if isinstance(entity, Sensor) else entity.core
        info = created_info(core)
        if info is not None and info.get("refId") != ref_id:
            attributes = {**core.attributes, CREATED: {**info, "refId": ref_id}}
            await self.services.registry.update_device(scope.principal, core, attributes=attributes)

    # -- remove ----------------------------------------------------------------------------

    async def remove(self, scope: Scope, entity: Entity) -> None:
        """Delete a created device (with its sensors) or sensor.

        Raises:
            Invalid: the entity is a thinghub device's (delete those on /v1).
        """
        core = entity.holder if isinstance(entity, Sensor) else entity.core
        if created_info(core) is None:
            raise Invalid(
                f"{entity.kind} {entity.id!r} is a thinghub device's; delete the device on /v1",
                field="id",
            )
        await self.services.registry.delete_device(scope.principal, core.id)
