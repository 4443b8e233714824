"""Device templates: DTDL v2/v3 capability models, and checking device data against them.

A template is IoT Central's device template document::

    {"@id", "@type": ["ModelDefinition", "DeviceModel"], "displayName",
     "capabilityModel": {"@id", "@type": "Interface", "contents": [...], "extends"?}}

stored whole as a per-account document (kind DOCUMENT_KIND). A bare DTDL Interface, or a JSON
array of Interfaces whose first element is the root, is accepted too and wrapped into that shape
(components and `extends` that name another interface of the array are inlined, as IoT Central
exports them). Parsing keeps what checking needs: each interface's telemetry, properties (with
the writable flag), commands (request/response payloads) and components, with their schemas.

Checks (all raise Invalid naming the bad field, so every face can answer 400):
- telemetry: a JSON object whose every key is a telemetry of the interface (or of the
  component the message came from) with a value matching its schema;
- command requests and property values against their schemas; properties must be writable.

TemplatePolicy plugs the telemetry check into ingest, so telemetry of a templated device that
does not match is recorded as rejected whichever adapter it came through.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson

from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.json_depth import JSON_DEPTH_CEILING
from thinghub.domain.model import Device, Principal
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import Clock, Stores
from thinghub.services.auth import authorize
from thinghub.services.registry import Registry

__all__ = [
    "DOCUMENT_KIND",
    "ArraySchema",
    "CommandDef",
    "CommandPayload",
    "DeviceTemplate",
    "EnumSchema",
    "Interface",
    "MapSchema",
    "ObjectSchema",
    "Primitive",
    "PropertyDef",
    "Schema",
    "TelemetryDef",
    "TemplatePolicy",
    "TemplateService",
    "check_value",
    "parse_template",
]

logger = logging.getLogger(__name__)

DOCUMENT_KIND = "device_template"
# Parsed templates are cached per process for the telemetry hot path; writes here invalidate
# at once, writes on another node are seen within this many seconds.
TEMPLATE_CACHE_S = 5.0
# DTDL v3 limits: complex schemas nest at most 8 deep, `extends` chains at most 10.
MAX_SCHEMA_DEPTH = 8
MAX_EXTENDS_DEPTH = 10
# A template document as a whole (its schemas, interfaces and annotations) nests at most:
MAX_DOCUMENT_DEPTH = 64
MAX_TEMPLATE_ID_CHARS = 256
TEMPLATE_ID = re.compile(r"[A-Za-z0-9._:;-]{1,256}")
# DTDL names: a letter, then letters, digits and underscores, not ending in an underscore.
DTDL_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9_]{0,510}[A-Za-z0-9])?")
MODEL_TYPES = ["ModelDefinition", "DeviceModel"]

# -- schemas -----------------------------------------------------------------------------------

_INT_RANGES: dict[str, tuple[int, int]] = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsignedByte": (0, 2**8 - 1),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedInteger": (0, 2**32 - 1),
    "unsignedLong": (0, 2**64 - 1),
}
_FLOATS = {"double": math.inf, "float": 3.4028234663852886e38, "decimal": math.inf}
_STRINGS = {"string", "date", "dateTime", "time", "duration", "uuid", "bytes"}
_GEO = {
    "point": "Point",
    "multiPoint": "MultiPoint",
    "lineString": "LineString",
    "multiLineString": "MultiLineString",
    "polygon": "Polygon",
    "multiPolygon": "MultiPolygon",
}
PRIMITIVES = frozenset({"boolean", *_INT_RANGES, *_FLOATS, *_STRINGS, *_GEO})

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?")
_DURATION = re.compile(
    r"P(?!$)(?:\d+(?:\.\d+)?Y)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?W)?(?:\d+(?:\.\d+)?D)?"
    r"(?:T(?=\d)(?:\d+(?:\.\d+)?H)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?S)?)?"
)


@dataclass(frozen=True, slots=True)
class Primitive:
    name: str


@dataclass(frozen=True, slots=True)
class EnumSchema:
    value_schema: str  # integer | string
    values: tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class ObjectSchema:
    fields: dict[str, Schema]


@dataclass(frozen=True, slots=True)
class ArraySchema:
    element: Schema


@dataclass(frozen=True, slots=True)
class MapSchema:
    value: Schema


Schema = Primitive | EnumSchema | ObjectSchema | ArraySchema | MapSchema


def describe(schema: Schema) -> str:
    """A short human name for a schema, for error messages."""
    if isinstance(schema, Primitive):
        return schema.name
    if isinstance(schema, EnumSchema):
        return "one of " + ", ".join(json.dumps(v) for v in schema.values)
    if isinstance(schema, ObjectSchema):
        return "an object with fields " + (", ".join(schema.fields) or "(none)")
    if isinstance(schema, ArraySchema):
        return f"an array of {describe(schema.element)}"
    return f"a map of string to {describe(schema.value)}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    except RecursionError:  # bodies are depth-checked before they get here; be sure anyway
        text = "(a value nested too deep to show)"
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(schema: Schema, value: Any, where: str) -> None:
    """Raise Invalid (field=`where`) unless `value` is a JSON value of `schema`."""
    if isinstance(schema, Primitive):
        if not _primitive_ok(schema.name, value):
            raise Invalid(
                f"{where} must be {_article(schema.name)}, got {_show(value)}", field=where
            )
    elif isinstance(schema, EnumSchema):
        if (
            isinstance(value, bool)
            or value not in schema.values
            or (schema.value_schema == "string") != isinstance(value, str)
        ):
            raise Invalid(f"{where} must be {describe(schema)}, got {_show(value)}", field=where)
    elif isinstance(schema, ObjectSchema):
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be {describe(schema)}, got {_show(value)}", field=where)
        for key, item in value.items():
            inner = schema.fields.get(key)
            if inner is None:
                raise Invalid(
                    f"{where} has no field {key!r} (fields: {', '.join(schema.fields) or 'none'})",
                    field=f"{where}.{key}",
                )
            check_value(inner, item, f"{where}.{key}")
    elif isinstance(schema, ArraySchema):
        if not isinstance(value, list):
            raise Invalid(f"{where} must be {describe(schema)}, got {_show(value)}", field=where)
        for index, item in enumerate(value):
            check_value(schema.element, item, f"{where}[{index}]")
    else:
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be {describe(schema)}, got {_show(value)}", field=where)
        for key, item in value.items():
            check_value(schema.value, item, f"{where}.{key}")


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _primitive_ok(name: str, value: Any) -> bool:
    if name == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if name in _INT_RANGES:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        low, high = _INT_RANGES[name]
        return isinstance(value, int) and low <= value <= high
    if name in _FLOATS:
        return (
            isinstance(value, int | float) and math.isfinite(value) and abs(value) <= _FLOATS[name]
        )
    if name in _GEO:
        return (
            isinstance(value, dict)
            and value.get("type") == _GEO[name]
            and isinstance(value.get("coordinates"), list)
        )
    if not isinstance(value, str):
        return False
    return _string_ok(name, value)


def _string_ok(name: str, value: str) -> bool:
    if name == "string":
        return True
    if name == "date":
        return _DATE.fullmatch(value) is not None and _parses(date.fromisoformat, value)
    if name == "dateTime":
        text = value[:-1] + "+00:00" if value[-1:] in "Zz" else value
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        return _DATETIME.fullmatch(value) is not None and _parses(
            datetime.fromisoformat, text.replace("t", "T")
        )
    if name == "time":
        match = _TIME.fullmatch(value)
        return (
            match is not None and int(match[1]) < 24 and int(match[2]) < 60 and int(match[3]) < 60
        )
    if name == "duration":
        return _DURATION.fullmatch(value) is not None
    if name == "uuid":
        return _parses(uuid.UUID, value) and len(value) == 36
    # bytes: base64
    return _parses(lambda v: base64.b64decode(v, validate=True), value)


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except (ValueError, TypeError, binascii.Error):
        return False
    return True


# -- capability model --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryDef:
    name: str
    schema: Schema


@dataclass(frozen=True, slots=True)
class PropertyDef:
    name: str
    schema: Schema
    writable: bool = False

    def check_value(self, value: Any) -> None:
        """Check a desired value: the property must be writable and the value of its schema."""
        if not self.writable:
            raise Invalid(
                f"property {self.name!r} is not writable (the device reports it)", field=self.name
            )
        check_value(self.schema, value, self.name)


@dataclass(frozen=True, slots=True)
class CommandPayload:
    name: str
    schema: Schema


@dataclass(frozen=True, slots=True)
class CommandDef:
    name: str
    request: CommandPayload | None = None
    response: CommandPayload | None = None

    def check_request(self, payload: Any) -> None:
        if self.request is None:
            if payload not in (None, {}):
                raise Invalid(f"command {self.name!r} takes no request", field="request")
            return
        if payload is None:
            raise Invalid(
                f"command {self.name!r} needs its request {self.request.name!r} "
                f"({describe(self.request.schema)})",
                field=self.request.name,
            )
        check_value(self.request.schema, payload, self.request.name)


@dataclass(frozen=True, slots=True)
class Interface:
    id: str | None
    telemetry: dict[str, TelemetryDef] = field(default_factory=dict)
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    commands: dict[str, CommandDef] = field(default_factory=dict)
    components: dict[str, Interface] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceTemplate:
    id: str
    display_name: str
    document: dict[str, Any]
    model: Interface
    created_at: float = 0.0
    updated_at: float = 0.0

    def interface(self, component: str | None) -> Interface:
        if component is None:
            return self.model
        iface = self.model.components.get(component)
        if iface is None:
            raise Invalid(
                f"component {component!r} is not in device template {self.id!r}", field="component"
            )
        return iface

    def check_telemetry(self, body: Any, component: str | None = None) -> None:
        """Raise Invalid unless every field of `body` is a telemetry of the template."""
        iface = self.interface(component)
        if not isinstance(body, dict):
            raise Invalid("telemetry must be a JSON object", field="body")
        for name, value in body.items():
            telemetry = iface.telemetry.get(name)
            if telemetry is None:
                known = ", ".join(iface.telemetry) or "none"
                where = f"component {component!r} of " if component else ""
                raise Invalid(
                    f"telemetry {name!r} is not in {where}device template "
                    f"{self.id!r} (telemetry: {known})",
                    field=name,
                )
            check_value(telemetry.schema, value, name)

    def command(self, name: str) -> tuple[str | None, CommandDef]:
        """A command by `name` or `component*name`; NotFound when the template lacks it."""
        component, iface, short = self._resolve(name, "command")
        command = iface.commands.get(short)
        if command is None:
            raise NotFound(
                f"command {name!r} is not in device template {self.id!r}", field="commandName"
            )
        return component, command

    def property(self, name: str) -> tuple[str | None, PropertyDef]:
        """A property by `name` or `component*name`; NotFound when the template lacks it."""
        component, iface, short = self._resolve(name, "property")
        prop = iface.properties.get(short)
        if prop is None:
            raise NotFound(
                f"property {name!r} is not in device template {self.id!r}", field="propertyName"
            )
        return component, prop

    def _resolve(self, name: str, what: str) -> tuple[str | None, Interface, str]:
        component, star, short = name.partition("*")
        if not star:
            return None, self.model, name
        iface = self.model.components.get(component)
        if iface is None:
            raise NotFound(
                f"{what} {name!r}: component {component!r} is not in device template {self.id!r}",
                field=f"{what}Name",
            )
        return component, iface, short


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
        raise Invalid(f"{where}: {_show(ref)} is not an interface of this template", field=where)

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
                f"{where}: @type must be Interface, got {_show(node['@type'])}",
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
                f"Relationship, got {_show(node.get('@type'))}",
                field=f"{where}.@type",
            )
        name = _name(node.get("name"), f"{where}.name")
        self._claim(names, name, where)
        if kind == "Telemetry":
            iface.telemetry[name] = TelemetryDef(name, self._schema_of(node, where))
        elif kind == "Property":
            writable = node.get("writable", False)
            if not isinstance(writable, bool):
                raise Invalid(f"{where}.writable must be true or false", field=f"{where}.writable")
            iface.properties[name] = PropertyDef(name, self._schema_of(node, where), writable)
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
            f"{where}: @type must be Enum, Object, Array or Map, got {_show(node.get('@type'))}",
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
                    f"{at}.enumValue must be {_article(value_schema)}", field=f"{at}.enumValue"
                )
        return EnumSchema(value_schema, tuple(values))


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DTDL_NAME.fullmatch(value):
        raise Invalid(
            f"{where} must be a DTDL name (a letter, then letters, digits or _), "
            f"got {_show(value)}",
            field=where,
        )
    return value


def parse_template_id(value: Any, field_name: str = "deviceTemplateId") -> str:
    if not isinstance(value, str) or not TEMPLATE_ID.fullmatch(value):
        raise Invalid(
            f"{field_name} must be 1 to {MAX_TEMPLATE_ID_CHARS} characters from "
            f"A-Z a-z 0-9 . _ : ; -, got {_show(value)}",
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
            f"@id {_show(ident)} differs from the template id {template_id!r}", field="@id"
        )
    model = parser.interface(root, "capabilityModel")
    inlined = parser.inline(copy.deepcopy(root), "capabilityModel")
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise Invalid(f"the template cannot be stored: {exc}", field="body") from None
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


def merge_patch(target: Any, patch: Any, depth: int = 0) -> Any:
    """RFC 7386 JSON merge patch. It recurses along the patch, which came in as a request
    body (at most max_json_depth deep); past JSON_DEPTH_CEILING it is refused all the same.

    Raises:
        Invalid: the patch nests deeper than JSON_DEPTH_CEILING.
    """
    if depth > JSON_DEPTH_CEILING:
        raise Invalid(f"the patch nests deeper than {JSON_DEPTH_CEILING} levels", field="body")
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value, depth + 1)
    return out


# -- service -----------------------------------------------------------------------------------


class TemplatePolicy:
    """The ingest TelemetryPolicy: telemetry of a templated device must match the template."""

    def __init__(self, templates: TemplateService) -> None:
        self.templates = templates

    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        template = await self.templates.for_device(device)
        if template is None:
            return None
        if message.depth_limit is not None:  # kept as text, unparsed: it cannot match
            return (
                f"telemetry nests deeper than {message.depth_limit} levels of arrays and "
                "objects (max_json_depth)"
            )
        try:
            template.check_telemetry(message.body, message.component)
        except Invalid as exc:
            return exc.message
        return None


class TemplateService:
    def __init__(self, stores: Stores, clock: Clock, registry: Registry) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.policy = TemplatePolicy(self)
        self._cache: dict[tuple[str, str], tuple[DeviceTemplate | None, float]] = {}

    async def put(self, principal: Principal, template_id: str, body: Any) -> DeviceTemplate:
        """Create the template, or replace it (devices that use it keep using it)."""
        authorize(principal, "write")
        document, model = parse_template(template_id, body)
        now = self.clock.now()
        prior = await self.stores.documents.get(principal.account_id, DOCUMENT_KIND, template_id)
        created = prior["createdAt"] if isinstance(prior, dict) else now
        await self.stores.documents.put(
            principal.account_id,
            DOCUMENT_KIND,
            template_id,
            {"document": document, "createdAt": created, "updatedAt": now},
            now,
        )
        self._cache.pop((principal.account_id, template_id), None)
        logger.info("device template %s saved (account %s)", template_id, principal.account_id)
        return DeviceTemplate(template_id, document["displayName"], document, model, created, now)

    async def patch(self, principal: Principal, template_id: str, patch: Any) -> DeviceTemplate:
        """Apply a JSON merge patch (RFC 7386) to the stored document, then re-check it."""
        authorize(principal, "write")
        if not isinstance(patch, dict):
            raise Invalid("the body must be a JSON object (a merge patch)", field="body")
        current = await self.get(principal, template_id)
        return await self.put(principal, template_id, merge_patch(current.document, patch))

    async def get(self, principal: Principal, template_id: str) -> DeviceTemplate:
        template = await self.find(principal.account_id, template_id)
        if template is None:
            raise NotFound(f"device template {template_id!r} not found", field="deviceTemplateId")
        return template

    async def list(self, principal: Principal) -> list[DeviceTemplate]:
        rows = await self.stores.documents.all(principal.account_id, DOCUMENT_KIND)
        return [self._load(key, row) for key, row in rows]

    async def delete(self, principal: Principal, template_id: str) -> None:
        """Delete a template no device uses (409 Conflict while one does)."""
        authorize(principal, "write")
        await self.get(principal, template_id)
        users = [
            d.id for d in await self.registry.list_devices(principal) if d.template == template_id
        ]
        if users:
            raise Conflict(
                f"device template {template_id!r} is used by {len(users)} "
                f"device(s), e.g. {users[0]!r}",
                field="deviceTemplateId",
            )
        await self.stores.documents.delete(principal.account_id, DOCUMENT_KIND, template_id)
        self._cache.pop((principal.account_id, template_id), None)

    async def find(self, account_id: str, template_id: str) -> DeviceTemplate | None:
        """A template of an account, or None (cached for TEMPLATE_CACHE_S)."""
        key = (account_id, template_id)
        now = self.clock.now()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < TEMPLATE_CACHE_S:
            return cached[0]
        row = await self.stores.documents.get(account_id, DOCUMENT_KIND, template_id)
        template = None if row is None else self._load(template_id, row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (template, now)
        return template

    async def for_device(self, device: Device) -> DeviceTemplate | None:
        if device.template is None:
            return None
        return await self.find(device.account_id, device.template)

    async def model_for(self, device: Device) -> Interface | None:
        """The capability model a device's data follows: its device template's; else that of
        a template of its account named by the model id it announced; else the well-known
        public model of that id (services/models.py); else None."""
        template = await self.for_device(device)
        if template is not None:
            return template.model
        if not device.model_id:
            return None
        if TEMPLATE_ID.fullmatch(device.model_id):
            named = await self.find(device.account_id, device.model_id)
            if named is not None:
                return named.model
        from thinghub.services.models import well_known_model  # models parses with this module

        return well_known_model(device.model_id)

    @staticmethod
    def _load(template_id: str, row: Any) -> DeviceTemplate:
        document = row["document"]
        _, model = parse_template(template_id, document)
        return DeviceTemplate(
            template_id,
            document["displayName"],
            document,
            model,
            row.get("createdAt", 0.0),
            row.get("updatedAt", 0.0),
        )
