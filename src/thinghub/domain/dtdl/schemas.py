"""DTDL schemas and the check of a JSON value against one (DTDL v2/v3 "Schemas").

A parsed schema is one of five frozen values: a Primitive (boolean, the integer and float
kinds, the string kinds such as dateTime or duration, and the GeoJSON kinds), an EnumSchema,
an ObjectSchema, an ArraySchema or a MapSchema. check_value walks a value along its schema and
raises Invalid naming the first bad field (`o.points[0].x must be a double, got "1"`), so
every face can answer 400 with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from thinghub.domain.dtdl._show import show
from thinghub.domain.errors import Invalid

__all__ = [
    "PRIMITIVES",
    "ArraySchema",
    "EnumSchema",
    "MapSchema",
    "ObjectSchema",
    "Primitive",
    "Schema",
    "article",
    "check_value",
    "describe",
]

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
# IoT Central's own location schema (its DTDL extension, dtmi:iotcentral:schema:geopoint;1),
# which its device templates and the REST API's published examples use: {"lat", "lon", "alt"?}
# in degrees (and metres), not GeoJSON.
GEOPOINT = "geopoint"
_GEOPOINT_FIELDS = {"lat": 90.0, "lon": 180.0, "alt": math.inf}
PRIMITIVES = frozenset({"boolean", *_INT_RANGES, *_FLOATS, *_STRINGS, *_GEO, GEOPOINT})

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


def check_value(schema: Schema, value: Any, where: str) -> None:
    """Raise Invalid (field=`where`) unless `value` is a JSON value of `schema`."""
    if isinstance(schema, Primitive):
        if not _primitive_ok(schema.name, value):
            raise Invalid(f"{where} must be {article(schema.name)}, got {show(value)}", field=where)
    elif isinstance(schema, EnumSchema):
        if (
            isinstance(value, bool)
            or value not in schema.values
            or (schema.value_schema == "string") != isinstance(value, str)
        ):
            raise Invalid(f"{where} must be {describe(schema)}, got {show(value)}", field=where)
    elif isinstance(schema, ObjectSchema):
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be {describe(schema)}, got {show(value)}", field=where)
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
            raise Invalid(f"{where} must be {describe(schema)}, got {show(value)}", field=where)
        for index, item in enumerate(value):
            check_value(schema.element, item, f"{where}[{index}]")
    else:
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be {describe(schema)}, got {show(value)}", field=where)
        for key, item in value.items():
            check_value(schema.value, item, f"{where}.{key}")


def article(name: str) -> str:
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
    if name == GEOPOINT:
        return _geopoint_ok(value)
    if name in _GEO:
        return (
            isinstance(value, dict)
            and value.get("type") == _GEO[name]
            and isinstance(value.get("coordinates"), list)
        )
    if not isinstance(value, str):
        return False
    return _string_ok(name, value)


def _geopoint_ok(value: Any) -> bool:
    """lat and lon (required) and alt: finite numbers, lat and lon within their ranges."""
    if not isinstance(value, dict) or not {"lat", "lon"} <= set(value) <= set(_GEOPOINT_FIELDS):
        return False
    return all(
        isinstance(item, int | float)
        and not isinstance(item, bool)
        and math.isfinite(item)
        and abs(item) <= _GEOPOINT_FIELDS[key]
        for key, item in value.items()
    )


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
