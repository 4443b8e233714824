"""DTDL schemas (domain/dtdl/schemas.py): checking JSON values against their schemas."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.domain.dtdl._models import nested_value
from thinghub.domain.dtdl import (
    ArraySchema,
    EnumSchema,
    MapSchema,
    ObjectSchema,
    Primitive,
    Schema,
    check_value,
)
from thinghub.domain.errors import Invalid

VALID: list[tuple[str, Any]] = [
    ("boolean", True),
    ("boolean", False),
    ("integer", 0),
    ("integer", -(2**31)),
    ("integer", 2**31 - 1),
    ("integer", 3.0),
    ("long", 2**63 - 1),
    ("byte", -128),
    ("short", 32767),
    ("unsignedByte", 255),
    ("unsignedInteger", 2**32 - 1),
    ("unsignedLong", 2**64 - 1),
    ("double", 1.5),
    ("double", 2),
    ("double", -1e300),
    ("float", 3.4e38),
    ("decimal", 0.1),
    ("string", ""),
    ("string", "x"),
    ("date", "2023-10-26"),
    ("dateTime", "2023-10-26T15:05:10Z"),
    ("dateTime", "2023-10-26T15:05:10.1234567+02:00"),
    ("dateTime", "2023-10-26t15:05:10z"),
    ("time", "15:05:10"),
    ("time", "23:59:59.5Z"),
    ("time", "00:00:00+01:00"),
    ("duration", "P1D"),
    ("duration", "PT1H30M"),
    ("duration", "P1Y2M3DT4H5M6.5S"),
    ("duration", "P2W"),
    ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ("bytes", "aGVsbG8="),
    ("point", {"type": "Point", "coordinates": [1, 2]}),
    ("geopoint", {"lat": 47.64263, "lon": -122.13035, "alt": 0}),
    ("geopoint", {"lat": -90, "lon": 180}),
]
INVALID: list[tuple[str, Any]] = [
    ("boolean", 1),
    ("boolean", "true"),
    ("boolean", None),
    ("integer", True),
    ("integer", 1.5),
    ("integer", 2**31),
    ("integer", "1"),
    ("long", 2**63),
    ("byte", 128),
    ("unsignedShort", -1),
    ("unsignedLong", 2**64),
    ("double", "1.5"),
    ("double", True),
    ("double", float("nan")),
    ("double", float("inf")),
    ("float", 3.5e38),
    ("double", None),
    ("string", 5),
    ("string", None),
    ("date", "2023-13-01"),
    ("date", "2023-10-26T00:00:00Z"),
    ("date", "26/10/2023"),
    ("dateTime", "2023-10-26"),
    ("dateTime", "2023-10-26T15:05:10"),
    ("dateTime", "2023-10-26T25:05:10Z"),
    ("dateTime", 1698332710),
    ("time", "24:00:00"),
    ("time", "12:60:00"),
    ("time", "noon"),
    ("duration", "P"),
    ("duration", "PT"),
    ("duration", "1D"),
    ("duration", "P1H"),
    ("uuid", "nope"),
    ("uuid", "0f8fad5bd9cb469fa16570867728950e"),
    ("bytes", "not base64!"),
    ("point", {"type": "LineString", "coordinates": []}),
    ("point", [1, 2]),
    ("geopoint", {"lat": 47.6}),
    ("geopoint", {"lat": 91, "lon": 0}),
    ("geopoint", {"lat": 0, "lon": "1"}),
    ("geopoint", {"lat": 0, "lon": 0, "height": 1}),
    ("geopoint", {"type": "Point", "coordinates": [1, 2]}),
]


@pytest.mark.parametrize(("name", "value"), VALID)
def test_primitives_accept(name: str, value: Any) -> None:
    check_value(Primitive(name), value, "v")


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_primitives_refuse(name: str, value: Any) -> None:
    with pytest.raises(Invalid) as info:
        check_value(Primitive(name), value, "v")
    assert info.value.field == "v"
    assert "v must be" in info.value.message


def test_complex_schemas() -> None:
    schema = ObjectSchema(
        {
            "mode": EnumSchema("integer", (0, 1)),
            "label": EnumSchema("string", ("a", "b")),
            "points": ArraySchema(ObjectSchema({"x": Primitive("double")})),
            "tags": MapSchema(Primitive("string")),
        }
    )
    check_value(schema, {}, "o")
    check_value(
        schema, {"mode": 1, "label": "b", "points": [{"x": 1}, {}], "tags": {"a": "b"}}, "o"
    )
    bad = [
        ({"mode": 2}, "o.mode must be one of 0, 1"),
        ({"mode": True}, "o.mode"),
        ({"mode": "0"}, "o.mode"),
        ({"label": 0}, "o.label"),
        ({"label": "c"}, "o.label"),
        ({"points": [{"x": "1"}]}, "o.points[0].x must be a double"),
        ({"points": {"x": 1}}, "o.points must be an array"),
        ({"points": [{"y": 1}]}, "has no field 'y'"),
        ({"tags": {"a": 1}}, "o.tags.a must be a string"),
        ({"tags": []}, "o.tags must be a map"),
        ({"extra": 1}, "has no field 'extra'"),
        ([], "o must be an object"),
    ]
    for value, needle in bad:
        with pytest.raises(Invalid) as info:
            check_value(schema, value, "o")
        assert needle in info.value.message, (value, info.value.message)


_SCHEMAS: list[Schema] = [
    Primitive(n)
    for n in ("boolean", "integer", "double", "string", "dateTime", "duration", "time", "date")
]
_SCHEMAS += [
    ArraySchema(Primitive("long")),
    MapSchema(EnumSchema("string", ("a",))),
    ObjectSchema({"a": Primitive("float")}),
]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SCHEMAS), _JSON)
def test_checks_only_ever_raise_invalid(schema: Schema, value: Any) -> None:
    with contextlib.suppress(Invalid):
        check_value(schema, value, "v")


def test_a_value_too_deep_to_show_is_still_an_invalid() -> None:
    """Error messages quote the bad value (json.dumps, which recurses): never a RecursionError."""
    with pytest.raises(Invalid) as info:
        check_value(Primitive("double"), nested_value(5000), "x")
    assert info.value.field == "x"
    assert "nested too deep to show" in info.value.message
