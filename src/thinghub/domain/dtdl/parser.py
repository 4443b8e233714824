"""The DTDL v2/v3 parser: a device template body to its document and capability model.

A template is IoT Central's device template document::

    {"@id", "@type": ["ModelDefinition", "DeviceModel"], "displayName",
     "capabilityModel": {"@id", "@type": "Interface", "contents": [...], "extends"?}}

A bare DTDL Interface, or a JSON array of Interfaces whose first element is the root, is
accepted too and wrapped into that shape (components and `extends` that name another interface
of the array are inlined, as IoT Central exports them). Parsing keeps what checking needs: each
interface's telemetry (with its unit), properties (with the writable flag and unit), commands
(request/response payloads) and components, with their schemas. Every problem raises Invalid
naming the bad field; recursion is bounded (MAX_DOCUMENT_DEPTH, MAX_SCHEMA_DEPTH,
MAX_EXTENDS_DEPTH), so a self-referencing model is refused, not followed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from thinghub.domain.dtdl._show import show
from thinghub.domain.dtdl.model import (
    CommandDef,
    CommandPayload,
    Interface,
    PropertyDef,
    TelemetryDef,
)
from thinghub.domain.dtdl.schemas import (
    PRIMITIVES,
    ArraySchema,
    EnumSchema,
    MapSchema,
    ObjectSchema,
    Primitive,
    Schema,
    article,
)
from thinghub.domain.errors import Invalid
from thinghub.domain.storable import check_storable

__all__ = [
    "DTDL_NAME",
    "MAX_DOCUMENT_DEPTH",
    "MAX_EXTENDS_DEPTH",
    "MAX_SCHEMA_DEPTH",
    "MAX_TEMPLATE_ID_CHARS",
    "MODEL_TYPES",
    "TEMPLATE_ID",
    "WELL_KNOWN_INTERFACES",
    "parse_template",
    "parse_template_id",
]

#: DTDL v3 limits: complex schemas nest at most 8 deep, `extends` chains at most 10.
MAX_SCHEMA_DEPTH = 8
MAX_EXTENDS_DEPTH = 10
#: A template document as a whole (its schemas, interfaces and annotations) nests at most:
MAX_DOCUMENT_DEPTH = 64
MAX_TEMPLATE_ID_CHARS = 256
TEMPLATE_ID = re.compile(r"[A-Za-z0-9._:;-]{1,256}")
#: DTDL names: a letter, then letters, digits and underscores, not ending in an underscore.
DTDL_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9_]{0,510}[A-Za-z0-9])?")
MODEL_TYPES = ["ModelDefinition", "DeviceModel"]


def _types(node: Mapping[str, Any]) -> list[str]:
    value = node.get("@type")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _walk_ids(node: Any, index: dict[str, dict[str, Any]], depth: int = 0) -> None:
    """Index every object with an `@id` (interfaces and reusable schemas) for references."""
    if depth > MAX_DOCUMENT_DEPTH:
        raise Invalid(
            f"the template nests deeper than {MAX_DOCUMENT_DEPTH} levels", field="capabilityModel"
        )
    if isinstance(node, dict):
        ident = node.get("@id")
        if isinstance(ident, str) and ident not in index:
            index[ident] = node
        for value in node.values():
            _walk_ids(value, index, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _walk_ids(value, index, depth + 1)


def _read_only(name: str, schema: str) -> dict[str, Any]:
    return {"@type": "Property", "name": name, "schema": schema}


# Interfaces that published models name by id without including them (IoT Central resolves
# them from its model repository, which is not reachable here). The Azure PnP "Device
# Information" interface is the component of most sample and certified models.
WELL_KNOWN_INTERFACES: dict[str, dict[str, Any]] = {
    "dtmi:azure:DeviceManagement:DeviceInformation;1": {
        "@id": "dtmi:azure:DeviceManagement:DeviceInformation;1",
        "@type": "Interface",
        "displayName": "Device Information",
        "@context": "dtmi:dtdl:context;2",
        "contents": [
            *(
                _read_only(name, "string")
                for name in (
                    "manufacturer",
                    "model",
                    "swVersion",
                    "osName",
                    "processorArchitecture",
                    "processorManufacturer",
                )
            ),
            _read_only("totalStorage", "double"),
            _read_only("totalMemory", "double"),
        ],
    },
}


class _ModelParser:
    def __init__(self, index: dict[str, dict[str, Any]]) -> None:
        self.index = index

    def _resolve(self, ref: Any, where: str) -> dict[str, Any]:
        if isinstance(ref, dict):
            return ref
        if isinstance(ref, str) and isinstance(self.index.get(ref), dict):
            return self.index[ref]
        if isinstance(ref, str) and ref in WELL_KNOWN_INTERFACES:
            return copy.deepcopy(WELL_KNOWN_INTERFACES[ref])
        raise Invalid(f"{where}: {show(ref)} is not an interface of this template", field=where)

    def inline(self, node: dict[str, Any], where: str, depth: int = 0) -> dict[str, Any]:
        """A copy of an interface with referenced components and `extends` inlined."""
        if depth > MAX_EXTENDS_DEPTH:
            raise Invalid(f"{where}: interfaces nest deeper than {MAX_EXTENDS_DEPTH}", field=where)
        out = dict(node)
        extends = node.get("extends")
        if extends is not None:
            items = extends if isinstance(extends, list) else [extends]
            out["extends"] = [
                self.inline(self._resolve(item, f"{where}.extends"), f"{where}.extends", depth + 1)
                for item in items
            ]
        contents = node.get("contents")
        if isinstance(contents, list):
            out["contents"] = []
            for i, item in enumerate(contents):
                if isinstance(item, dict) and "Component" in _types(item):
                    at = f"{where}.contents[{i}].schema"
                    item = {
                        **item,
                        "schema": self.inline(self._resolve(item.get("schema"), at), at, depth + 1),
                    }
                out["contents"].append(item)
        return out

    def interface(
        self, node: Any, where: str, *, is_component: bool = False, depth: int = 0
    ) -> Interface:
        if not isinstance(node, dict):
            raise Invalid(f"{where} must be a DTDL Interface object", field=where)
        if depth > MAX_EXTENDS_DEPTH:
            raise Invalid(f"{where}: extends nests deeper than {MAX_EXTENDS_DEPTH}", field=where)
        types = _types(node)
        if "@type" in node and "Interface" not in types:
            raise Invalid(
                f"{where}: @type must be Interface, got {show(node['@type'])}",
                field=f"{where}.@type",
            )
        ident = node.get("@id")
        iface = Interface(ident if isinstance(ident, str) else None)
        names: set[str] = set()
        extends = node.get("extends")
        for base_node in (
            extends if isinstance(extends, list) else [] if extends is None else [extends]
        ):
            base = self.interface(
                self._resolve(base_node, f"{where}.extends"),
                f"{where}.extends",
                is_component=is_component,
                depth=depth + 1,
            )
            for kind in ("telemetry", "properties", "commands", "components"):
                for name, item in getattr(base, kind).items():
                    self._claim(names, name, f"{where}.extends")
                    getattr(iface, kind)[name] = item
        contents = node.get("contents", [])
        if not isinstance(contents, list):
            raise Invalid(f"{where}.contents must be an array", field=f"{where}.contents")
        for i, content in enumerate(contents):
            self._content(iface, names, content, f"{where}.contents[{i}]", is_component, depth)
        return iface

    @staticmethod
    def _claim(names: set[str], name: str, where: str) -> None:
        if name in names:
            raise Invalid(f"{where}: name {name!r} is used twice", field=where)
        names.add(name)

    def _content(
        self,
        iface: Interface,
        names: set[str],
        node: Any,
        where: str,
        is_component: bool,
        depth: int,
    ) -> None:
        if not isinstance(node, dict):
            raise Invalid(f"{where} must be an object", field=where)
        types = _types(node)
        kind = next(
            (
                t
                for t in ("Telemetry", "Property", "Command", "Component", "Relationship")
                if t in types
            ),
            None,
        )
        if kind is None:
            raise Invalid(
                f"{where}: @type must be Telemetry, Property, Command, Component or "
                f"Relationship, got {show(node.get('@type'))}",
                field=f"{where}.@type",
            )
        name = _name(node.get("name"), f"{where}.name")
        self._claim(names, name, where)
        if kind == "Telemetry":
            iface.telemetry[name] = TelemetryDef(
                name, self._schema_of(node, where), _unit(node, where)
            )
        elif kind == "Property":
            writable = node.get("writable", False)
            if not isinstance(writable, bool):
                raise Invalid(f"{where}.writable must be true or false", field=f"{where}.writable")
            iface.properties[name] = PropertyDef(
                name, self._schema_of(node, where), writable, _unit(node, where)
            )
        elif kind == "Command":
            iface.commands[name] = CommandDef(
                name,
                self._payload(node.get("request"), f"{where}.request"),
                self._payload(node.get("response"), f"{where}.response"),
            )
        elif kind == "Component":
            if is_component:
                raise Invalid(
                    f"{where}: a component's interface cannot hold components", field=where
                )
            target = self._resolve(node.get("schema"), f"{where}.schema")
            iface.components[name] = self.interface(
                target, f"{where}.schema", is_component=True, depth=depth + 1
            )

    def _payload(self, node: Any, where: str) -> CommandPayload | None:
        if node is None:
            return None
        if not isinstance(node, dict):
            raise Invalid(f"{where} must be an object with name and schema", field=where)
        return CommandPayload(
            _name(node.get("name"), f"{where}.name"), self._schema_of(node, where)
        )

    def _schema_of(self, node: dict[str, Any], where: str) -> Schema:
        if "schema" not in node:
            raise Invalid(f"{where}.schema is required", field=f"{where}.schema")
        return self.schema(node["schema"], f"{where}.schema", 0)

    def schema(self, node: Any, where: str, depth: int) -> Schema:
        if depth > MAX_SCHEMA_DEPTH:
            raise Invalid(f"{where}: schemas nest deeper than {MAX_SCHEMA_DEPTH}", field=where)
        if isinstance(node, str):
            if node in PRIMITIVES:
                return Primitive(node)
            target = self.index.get(node)
            if isinstance(target, dict) and "Interface" not in _types(target):
                return self.schema(target, where, depth + 1)
            raise Invalid(f"{where}: unknown schema {node!r}", field=where)
        if not isinstance(node, dict):
            raise Invalid(f"{where} must be a schema name or object", field=where)
        types = _types(node)
        if "Enum" in types:
            return self._enum(node, where)
        if "Object" in types:
            fields = node.get("fields")
            if not isinstance(fields, list):
                raise Invalid(f"{where}.fields must be an array", field=f"{where}.fields")
            out: dict[str, Schema] = {}
            for i, item in enumerate(fields):
                at = f"{where}.fields[{i}]"
                if not isinstance(item, dict):
                    raise Invalid(f"{at} must be an object", field=at)
                name = _name(item.get("name"), f"{at}.name")
                if name in out:
                    raise Invalid(f"{at}: field {name!r} is used twice", field=at)
                if "schema" not in item:
                    raise Invalid(f"{at}.schema is required", field=f"{at}.schema")
                out[name] = self.schema(item["schema"], f"{at}.schema", depth + 1)
            return ObjectSchema(out)
        if "Array" in types:
            if "elementSchema" not in node:
                raise Invalid(f"{where}.elementSchema is required", field=f"{where}.elementSchema")
            return ArraySchema(
                self.schema(node["elementSchema"], f"{where}.elementSchema", depth + 1)
            )
        if "Map" in types:
            key, value = node.get("mapKey"), node.get("mapValue")
            if not isinstance(key, dict) or key.get("schema") != "string":
                raise Invalid(
                    f'{where}.mapKey must be {{name, schema: "string"}}', field=f"{where}.mapKey"
                )
            _name(key.get("name"), f"{where}.mapKey.name")
            if not isinstance(value, dict) or "schema" not in value:
                raise Invalid(
                    f"{where}.mapValue must be {{name, schema}}", field=f"{where}.mapValue"
                )
            _name(value.get("name"), f"{where}.mapValue.name")
            return MapSchema(self.schema(value["schema"], f"{where}.mapValue.schema", depth + 1))
        raise Invalid(
            f"{where}: @type must be Enum, Object, Array or Map, got {show(node.get('@type'))}",
            field=f"{where}.@type",
        )

    @staticmethod
    def _enum(node: dict[str, Any], where: str) -> EnumSchema:
        value_schema = node.get("valueSchema")
        if value_schema not in ("integer", "string"):
            raise Invalid(
                f"{where}.valueSchema must be integer or string", field=f"{where}.valueSchema"
            )
        items = node.get("enumValues")
        if not isinstance(items, list) or not items:
            raise Invalid(
                f"{where}.enumValues must be a non-empty array", field=f"{where}.enumValues"
            )
        values: list[int | str] = []
        for i, item in enumerate(items):
            at = f"{where}.enumValues[{i}]"
            if not isinstance(item, dict):
                raise Invalid(f"{at} must be an object", field=at)
            _name(item.get("name"), f"{at}.name")
            value = item.get("enumValue")
            if (value_schema == "string" and isinstance(value, str)) or (
                value_schema == "integer" and isinstance(value, int) and not isinstance(value, bool)
            ):
                values.append(value)
            else:
                raise Invalid(
                    f"{at}.enumValue must be {article(value_schema)}", field=f"{at}.enumValue"
                )
        return EnumSchema(value_schema, tuple(values))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DTDL_NAME.fullmatch(value):
        raise Invalid(
            f"{where} must be a DTDL name (a letter, then letters, digits or _), got {show(value)}",
            field=where,
        )
    return value


def _unit(node: dict[str, Any], where: str) -> str | None:
    """A telemetry's or property's `unit` (DTDL semantic types), kept as given."""
    unit = node.get("unit")
    if unit is None or (isinstance(unit, str) and unit):
        return unit
    raise Invalid(
        f'{where}.unit must be a DTDL unit name such as "degreeCelsius", got {show(unit)}',
        field=f"{where}.unit",
    )


def parse_template_id(value: Any, field_name: str = "deviceTemplateId") -> str:
    if not isinstance(value, str) or not TEMPLATE_ID.fullmatch(value):
        raise Invalid(
            f"{field_name} must be 1 to {MAX_TEMPLATE_ID_CHARS} characters from "
            f"A-Z a-z 0-9 . _ : ; -, got {show(value)}",
            field=field_name,
        )
    return value


def parse_template(template_id: str, body: Any) -> tuple[dict[str, Any], Interface]:
    """Normalize a template body to IoT Central's shape and parse its capability model.

    Returns:
        The document to store and the parsed root interface.

    Raises:
        Invalid: naming the first bad field.
    """
    parse_template_id(template_id)
    index: dict[str, dict[str, Any]] = {}
    _walk_ids(body, index)
    parser = _ModelParser(index)
    if isinstance(body, list):
        if not body or not isinstance(body[0], dict):
            raise Invalid("an array body must hold DTDL Interfaces, the root first", field="body")
        root, wrapper = body[0], {}
    elif isinstance(body, dict) and "capabilityModel" in body:
        root, wrapper = body["capabilityModel"], dict(body)
    elif isinstance(body, dict) and ("contents" in body or "Interface" in _types(body)):
        root, wrapper = body, {}
    else:
        raise Invalid(
            "the body must be a device template with a capabilityModel, or a DTDL Interface",
            field="capabilityModel",
        )
    if not isinstance(root, dict):
        raise Invalid("capabilityModel must be a DTDL Interface object", field="capabilityModel")
    ident = wrapper.get("@id")
    if ident is not None and ident != template_id:
        raise Invalid(
            f"@id {show(ident)} differs from the template id {template_id!r}", field="@id"
        )
    model = parser.interface(root, "capabilityModel")
    inlined = parser.inline(copy.deepcopy(root), "capabilityModel")
    check_storable(body, "body")
    display = wrapper.get("displayName", root.get("displayName", template_id))
    if isinstance(display, dict):  # DTDL allows a language map: {"en": "..."}
        display = next((v for v in display.values() if isinstance(v, str)), template_id)
    if not isinstance(display, str) or not display or len(display) > 200:
        raise Invalid("displayName must be a string of 1 to 200 characters", field="displayName")
    document = {
        "@id": template_id,
        "@type": wrapper.get("@type", MODEL_TYPES),
        "displayName": display,
        **wrapper,
    }
    document.update({"@id": template_id, "displayName": display, "capabilityModel": inlined})
    return document, model
