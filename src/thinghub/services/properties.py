"""Properties: reading and writing one property of a device, for every face that names one.

A property lives in the device's twin: what the device reported, and, for a writable property,
what an application set in desired. It is named `name` or `component*name` (a component's
property, IoT Plug and Play). With a device template the name must be one of the template's
properties, and a written value must match its schema; without one, any name but a `$` name
(the twin's bookkeeping) is taken.

Reading answers the newer of the reported value and (for a writable property) the desired
one, with the time it last changed. A Plug and Play device acknowledges a writable property by
reporting `{"value", "ac", "av", "ad"?}`: the value is what it holds. Writing patches the
desired twin, which reaches the device now or when it reconnects; a component's patch is
marked `"__t": "c"` as Plug and Play devices expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thinghub.domain.dtdl import DeviceTemplate, PropertyDef
from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import Twin, TwinSection, check_patch_size
from thinghub.services.registry import CLOUD_PROPERTIES, Registry
from thinghub.services.templates import TemplateService
from thinghub.services.twins import TwinService

__all__ = ["PNP_ACK_KEYS", "PropertyService", "PropertyValue"]

# The keys of a Plug and Play device's acknowledgement of a writable property.
PNP_ACK_KEYS = frozenset({"value", "ac", "av", "ad"})
# The marker of a component in a desired patch (IoT Plug and Play conventions).
COMPONENT_MARKER = {"__t": "c"}


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """A property's value and when it last changed (epoch seconds; None if unknown)."""

    value: Any
    last_updated: float | None


@dataclass(frozen=True, slots=True)
class _Named:
    component: str | None
    name: str
    definition: PropertyDef | None  # None: the device has no template


class PropertyService:
    def __init__(self, registry: Registry, twins: TwinService, templates: TemplateService) -> None:
        self.registry = registry
        self.twins = twins
        self.templates = templates

    async def read(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        *,
        field: str = "propertyName",
    ) -> PropertyValue:
        """A property's value (Permission.READ): the newer of what the device reported and
        (for a writable property) what was last set.

        Raises:
            Forbidden, NotFound: see Registry.device_for.
            NotFound: the template lacks the property, or it has no value yet (naming `field`).
            Invalid: a malformed name (naming `field`).
        """
        target = await self.registry.device_for(principal, device, Permission.READ)
        named = await self._resolve(target, name, field)
        twin = await self.twins.get(target)
        found = _pick(twin, named)
        if found is None:
            raise NotFound(
                f"property {name!r} of device {target.id!r} has no value yet", field=field
            )
        return found

    async def read_all(
        self, principal: Principal, device: Device | str, component: str | None = None
    ) -> dict[str, PropertyValue]:
        """Every property of the device that has a value (Permission.READ), by name; a
        component's as `component*name`; the device's cloud properties (Registry.
        set_cloud_property) beside them. With `component`, only that component's, by short
        name. The twin's bookkeeping ($version, $metadata, the `__t` marker) is left out.

        Raises:
            Forbidden, NotFound: see Registry.device_for; NotFound also for a component the
                template lacks.
        """
        target = await self.registry.device_for(principal, device, Permission.READ)
        template = await self.templates.for_device(target)
        if template is not None and component is not None:
            template.interface(component)  # NotFound-ish Invalid for an unknown component
        twin = await self.twins.get(target)
        names: list[str] = []
        for section in (twin.reported.properties, twin.desired.properties):
            for name in _names(section, template, component):
                if name not in names:
                    names.append(name)
        out: dict[str, PropertyValue] = {}
        for name in names:
            try:
                named = await self._resolve(target, name, "propertyName")
            except (NotFound, Invalid):
                continue  # reported by the device, but not a property of its template
            found = _pick(twin, named)
            if found is not None:
                out[name if component is None else named.name] = found
        cloud = target.attributes.get(CLOUD_PROPERTIES)
        if component is None and isinstance(cloud, dict):
            for name, value in cloud.items():
                out.setdefault(name, PropertyValue(value, None))
        return out

    async def write_many(
        self,
        principal: Principal,
        device: Device | str,
        values: Any,
        component: str | None = None,
        *,
        field: str = "body",
    ) -> dict[str, Any]:
        """Set several writable properties in one desired patch (Permission.DEVICES_WRITE):
        `values` maps names (or `component*name`) to values; with `component`, short names
        of that component. Everything is checked before anything is written. Answers the
        patch as written (components marked `"__t": "c"`).

        Raises:
            Forbidden, NotFound: see Registry.device_for; NotFound also for a property the
                template lacks.
            Invalid: not an object, an empty one, a null value, a value the template refuses
                (naming the property).
            TooLarge: the patch is over the twin's cap.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        if not isinstance(values, dict) or not values:
            raise Invalid(
                "the body must be a JSON object of property names and values", field=field
            )
        template = await self.templates.for_device(target)
        named_values: list[tuple[str, str, Any]] = []  # (name as given, full name, value)
        for key, value in values.items():
            if component is not None:
                named_values.append((key, f"{component}*{key}", value))
            elif _is_component(key, value, template):
                if not value or set(value) == {"__t"}:
                    raise Invalid(f"component {key} names no property", field=key)
                named_values += [
                    (f"{key}.{inner}", f"{key}*{inner}", v)
                    for inner, v in value.items()
                    if inner != "__t"
                ]
            else:
                named_values.append((key, key, value))
        patch: dict[str, Any] = {}
        for key, name, value in named_values:
            named = await self._resolve(target, name, "propertyName")
            if value is None:
                raise Invalid(f"{key} must not be null", field=key)
            if named.definition is not None:
                named.definition.check_value(value)
            if named.component is None:
                patch[named.name] = value
            else:
                patch.setdefault(named.component, dict(COMPONENT_MARKER))[named.name] = value
        check_storable(patch, field)
        check_patch_size(patch, field)
        await self.twins.patch_desired(target, patch)
        return patch

    async def write(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        value: Any,
        *,
        field: str = "propertyName",
        value_field: str = "value",
    ) -> PropertyValue:
        """Set a writable property (Permission.DEVICES_WRITE): a desired patch, checked
        against the template when the device has one. Answers the value as `read` will
        show it, with the time it was set.

        Raises:
            Forbidden, NotFound: see Registry.device_for; NotFound also for a property the
                template lacks.
            Invalid: a malformed name, a null value, a value the template refuses or that
                cannot be stored (naming `field` or `value_field`).
            TooLarge: the patch is over the twin's cap.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        named = await self._resolve(target, name, field)
        if value is None:
            raise Invalid(f"{value_field} must not be null", field=value_field)
        if named.definition is not None:
            named.definition.check_value(value)
        patch: dict[str, Any] = (
            {named.name: value}
            if named.component is None
            else {named.component: {**COMPONENT_MARKER, named.name: value}}
        )
        check_storable(patch, value_field)
        check_patch_size(patch, value_field)
        twin = await self.twins.patch_desired(target, patch)
        return PropertyValue(value, _changed_at(twin.desired, named))

    async def _resolve(self, device: Device, name: str, field: str) -> _Named:
        """(component, property name, definition) for `name` or `component*name`."""
        template = await self.templates.for_device(device)
        if template is not None:
            component, definition = template.property(name)
            return _Named(component, definition.name, definition)
        component, star, short = name.partition("*")
        if not star:
            return _check_names(None, name, name, field)
        if not component or not short:
            raise Invalid("a component property is named component*property", field=field)
        return _check_names(component, short, name, field)


def _check_names(component: str | None, name: str, given: str, field: str) -> _Named:
    if name.startswith("$") or (component or "").startswith("$"):
        # $version and $metadata are the twin's bookkeeping, not properties.
        raise Invalid(f"{field} must not start with $, got {given!r}", field=field)
    return _Named(component, name, None)


def _pick(twin: Twin, named: _Named) -> PropertyValue | None:
    """The newer of the reported value and (for a writable property) the desired one."""
    has_reported, reported = _lookup(twin.reported, named)
    has_desired, desired = _lookup(twin.desired, named)
    if named.definition is not None and not named.definition.writable:
        has_desired = False
    reported_at = _changed_at(twin.reported, named) if has_reported else None
    desired_at = _changed_at(twin.desired, named) if has_desired else None
    if has_desired and (not has_reported or (desired_at or 0.0) > (reported_at or 0.0)):
        return PropertyValue(desired, desired_at)
    if has_reported:
        return PropertyValue(_acknowledged(reported), reported_at)
    return None


def _names(
    section: dict[str, Any], template: DeviceTemplate | None, component: str | None
) -> list[str]:
    """Property names in a twin section: `name`, or `component*name` inside a component (an
    object the template names a component, or marked `"__t": "c"`)."""
    out: list[str] = []
    for key, value in section.items():
        if key.startswith("$"):
            continue
        is_component = _is_component(key, value, template)
        if is_component and (component is None or key == component):
            out += [f"{key}*{inner}" for inner in value if not inner.startswith(("$", "__t"))]
        elif not is_component and component is None:
            out.append(key)
    return out


def _is_component(key: str, value: Any, template: DeviceTemplate | None) -> bool:
    """Whether `key: value` of a properties object is a component's properties: the template
    names it a component, or (without one) it is marked `"__t": "c"`."""
    if not isinstance(value, dict):
        return False
    if template is not None:
        return key in template.model.components
    return value.get("__t") == "c"


def _lookup(section: TwinSection, named: _Named) -> tuple[bool, Any]:
    node: Any = section.properties
    if named.component is not None:
        node = node.get(named.component)
    if not isinstance(node, dict) or named.name not in node:
        return False, None
    return True, node[named.name]


def _changed_at(section: TwinSection, named: _Named) -> float | None:
    if named.component is None:
        return section.changed_at(named.name)
    return section.changed_at(named.component, named.name)


def _acknowledged(value: Any) -> Any:
    """A Plug and Play device acknowledges a writable property as {"value", "ac", "av", "ad"?}."""
    if isinstance(value, dict) and {"value", "ac"} <= set(value) <= PNP_ACK_KEYS:
        return value["value"]
    return value
