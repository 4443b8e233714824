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

from thinghub.domain.dtdl import PropertyDef
from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import TwinSection, check_patch_size
from thinghub.services.registry import Registry
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
        raise NotFound(f"property {name!r} of device {target.id!r} has no value yet", field=field)

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
