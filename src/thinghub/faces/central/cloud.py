"""Cloud properties of the IoT Central face: properties a device template declares as
`["Cloud", "Property"]`, which the application keeps with the device and never sends to it.

The real API sets them with the same property routes as writable properties
(`PATCH /devices/{id}/properties`, and here `PATCH /devices/{id}/properties/{name}`), so these
routes split a write: cloud properties are kept by the registry (Registry.set_cloud_property,
the store a job's `cloudProperty` step uses; `GET /devices/{id}/properties` shows them), the
rest go to the device's desired twin. The parser reads a cloud property as a read-only property
(its schema is known); which ones are cloud properties is read from the template's document.
"""

from __future__ import annotations

from typing import Any

from thinghub.domain.dtdl import DeviceTemplate, check_value
from thinghub.domain.errors import Invalid

__all__ = ["check_cloud_value", "cloud_names"]

# How deep `extends` may nest before the walk stops (the parser allows 10).
MAX_WALK_DEPTH = 16


def _types(item: dict[str, Any]) -> list[Any]:
    kinds = item.get("@type")
    return kinds if isinstance(kinds, list) else [kinds]


def _walk(node: Any, depth: int = 0) -> set[str]:
    if not isinstance(node, dict) or depth > MAX_WALK_DEPTH:
        return set()
    names: set[str] = set()
    extends = node.get("extends")
    for base in extends if isinstance(extends, list) else [extends]:
        names |= _walk(base, depth + 1)
    contents = node.get("contents")
    for item in contents if isinstance(contents, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            kinds = _types(item)
            if "Cloud" in kinds and "Property" in kinds:
                names.add(item["name"])
    return names


def cloud_names(template: DeviceTemplate | None) -> set[str]:
    """The names of the cloud properties a template declares on its root interface."""
    if template is None:
        return set()
    return _walk(template.document.get("capabilityModel"))


def check_cloud_value(template: DeviceTemplate, name: str, value: Any) -> None:
    """A cloud property's value: not null, and of the schema the template gives it.

    Raises:
        Invalid: naming the property.
    """
    if value is None:
        raise Invalid(f"{name} must not be null", field=name)
    _, definition = template.property(name)
    check_value(definition.schema, value, name)
