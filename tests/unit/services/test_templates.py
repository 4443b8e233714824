"""Device templates: DTDL parsing, schema checks, the service and its telemetry policy."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.services.node import node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.json_depth import JSON_DEPTH_CEILING
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.domain.twin import Twin
from thinghub.ports import Stores
from thinghub.services.events import EventService
from thinghub.services.registry import Registry
from thinghub.services.templates import (
    DOCUMENT_KIND,
    ArraySchema,
    EnumSchema,
    MapSchema,
    ObjectSchema,
    Primitive,
    Schema,
    TemplateService,
    check_value,
    merge_patch,
    parse_template,
)
from thinghub.storage.memory import MemoryDocumentStore, Tables, memory_stores

TID = "dtmi:com:example:thermostat;1"


def thermostat_component() -> dict[str, Any]:
    return {
        "@id": "dtmi:com:example:Thermostat;1",
        "@type": "Interface",
        "contents": [
            {"@type": ["Telemetry", "Temperature"], "name": "temperature", "schema": "double"},
            {
                "@type": "Property",
                "name": "targetTemperature",
                "schema": "double",
                "writable": True,
            },
            {
                "@type": "Command",
                "name": "getMaxMinReport",
                "request": {"name": "since", "schema": "dateTime"},
                "response": {"name": "report", "schema": "string"},
            },
        ],
    }


def template_body() -> dict[str, Any]:
    return {
        "@id": TID,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Thermostat",
        "capabilityModel": {
            "@id": "dtmi:com:example:thermostat:cm;1",
            "@type": "Interface",
            "@context": ["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"],
            "contents": [
                {"@type": "Telemetry", "name": "temperature", "schema": "double"},
                {"@type": "Telemetry", "name": "humidity", "schema": "float"},
                {"@type": "Telemetry", "name": "count", "schema": "integer"},
                {
                    "@type": "Telemetry",
                    "name": "status",
                    "schema": {
                        "@type": "Enum",
                        "valueSchema": "string",
                        "enumValues": [
                            {"name": "ok", "enumValue": "ok"},
                            {"name": "bad", "enumValue": "bad"},
                        ],
                    },
                },
                {
                    "@type": "Telemetry",
                    "name": "location",
                    "schema": {
                        "@type": "Object",
                        "fields": [
                            {"name": "lat", "schema": "double"},
                            {"name": "lon", "schema": "double"},
                        ],
                    },
                },
                {
                    "@type": "Telemetry",
                    "name": "readings",
                    "schema": {"@type": "Array", "elementSchema": "double"},
                },
                {
                    "@type": "Telemetry",
                    "name": "tags",
                    "schema": {
                        "@type": "Map",
                        "mapKey": {"name": "k", "schema": "string"},
                        "mapValue": {"name": "v", "schema": "string"},
                    },
                },
                {"@type": "Telemetry", "name": "point", "schema": "dtmi:com:example:Point;1"},
                {
                    "@type": "Property",
                    "name": "targetTemperature",
                    "schema": "double",
                    "writable": True,
                },
                {"@type": "Property", "name": "firmwareVersion", "schema": "string"},
                {
                    "@type": "Property",
                    "name": "mode",
                    "writable": True,
                    "schema": {
                        "@type": "Enum",
                        "valueSchema": "integer",
                        "enumValues": [
                            {"name": "off", "enumValue": 0},
                            {"name": "heat", "enumValue": 1},
                        ],
                    },
                },
                {
                    "@type": "Command",
                    "name": "reboot",
                    "request": {"name": "rebootInterval", "schema": "integer"},
                },
                {"@type": "Command", "name": "ping"},
                {"@type": "Relationship", "name": "parent"},
                {"@type": "Component", "name": "thermostat1", "schema": thermostat_component()},
            ],
            "schemas": [
                {
                    "@id": "dtmi:com:example:Point;1",
                    "@type": "Object",
                    "fields": [
                        {"name": "x", "schema": "integer"},
                        {"name": "y", "schema": "integer"},
                    ],
                },
            ],
        },
    }


# -- parsing -----------------------------------------------------------------------------------


def test_iot_central_shape_parses() -> None:
    document, model = parse_template(TID, template_body())
    assert document["@id"] == TID
    assert document["@type"] == ["ModelDefinition", "DeviceModel"]
    assert document["displayName"] == "Thermostat"
    assert set(model.telemetry) == {
        "temperature",
        "humidity",
        "count",
        "status",
        "location",
        "readings",
        "tags",
        "point",
    }
    assert model.properties["targetTemperature"].writable
    assert not model.properties["firmwareVersion"].writable
    assert model.commands["reboot"].request is not None
    assert model.commands["ping"].request is None
    assert set(model.components) == {"thermostat1"}
    assert "temperature" in model.components["thermostat1"].telemetry
    assert model.telemetry["point"].schema == ObjectSchema(
        {"x": Primitive("integer"), "y": Primitive("integer")}
    )


def test_bare_interface_is_wrapped() -> None:
    iface = template_body()["capabilityModel"]
    iface["displayName"] = {"en": "Bare thermostat"}
    document, model = parse_template("bare-1", iface)
    assert document["@id"] == "bare-1"
    assert document["@type"] == ["ModelDefinition", "DeviceModel"]
    assert document["displayName"] == "Bare thermostat"
    assert document["capabilityModel"]["contents"] == iface["contents"]
    assert "temperature" in model.telemetry


def test_the_azure_device_information_interface_is_known_by_id() -> None:
    """Published models (the TemperatureController sample) name it without including it."""
    iface = template_body()["capabilityModel"]
    iface["contents"].append(
        {
            "@type": "Component",
            "name": "deviceInformation",
            "schema": "dtmi:azure:DeviceManagement:DeviceInformation;1",
        }
    )
    document, model = parse_template("with-device-info", iface)
    info = model.components["deviceInformation"]
    assert set(info.properties) >= {"manufacturer", "model", "swVersion", "totalMemory"}
    assert not info.properties["manufacturer"].writable
    inlined = document["capabilityModel"]["contents"][-1]["schema"]
    assert inlined["@id"] == "dtmi:azure:DeviceManagement:DeviceInformation;1"
    # Any other interface that is neither included nor known is still refused, by name.
    iface["contents"][-1]["schema"] = "dtmi:com:example:Missing;1"
    with pytest.raises(Invalid, match="Missing;1"):
        parse_template("missing", iface)


def test_array_of_interfaces_inlines_references() -> None:
    root = {
        "@id": "dtmi:com:example:TemperatureController;1",
        "@type": "Interface",
        "@context": "dtmi:dtdl:context;3",
        "displayName": "Temperature Controller",
        "extends": "dtmi:com:example:Base;1",
        "contents": [
            {"@type": "Telemetry", "name": "workingSet", "schema": "double"},
            {
                "@type": "Component",
                "name": "thermostat1",
                "schema": "dtmi:com:example:Thermostat;1",
            },
            {
                "@type": "Component",
                "name": "thermostat2",
                "schema": "dtmi:com:example:Thermostat;1",
            },
        ],
    }
    base = {
        "@id": "dtmi:com:example:Base;1",
        "@type": "Interface",
        "contents": [{"@type": "Command", "name": "reboot"}],
    }
    document, model = parse_template("tc-1", [root, thermostat_component(), base])
    assert set(model.components) == {"thermostat1", "thermostat2"}
    assert "reboot" in model.commands
    assert "workingSet" in model.telemetry
    inlined = document["capabilityModel"]
    assert inlined["contents"][1]["schema"]["@id"] == "dtmi:com:example:Thermostat;1"
    assert inlined["extends"][0]["@id"] == "dtmi:com:example:Base;1"
    # The stored document parses again on its own (it is what GET returns and PUT accepts).
    again, model2 = parse_template("tc-1", document)
    assert again == document
    assert model2 == model


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b.update({"capabilityModel": "nope"}), "must be a DTDL Interface"),
        (lambda b: b.update({"@id": "dtmi:other;1"}), "differs from the template id"),
        (lambda b: b["capabilityModel"].update({"@type": "Telemetry"}), "@type must be Interface"),
        (lambda b: b["capabilityModel"].update({"contents": {}}), "contents must be an array"),
        (lambda b: b["capabilityModel"]["contents"].append(5), "must be an object"),
        (
            lambda b: b["capabilityModel"]["contents"].append({"@type": "Widget", "name": "w"}),
            "@type must be Telemetry",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "temperature", "schema": "double"}
            ),
            "used twice",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "1bad", "schema": "double"}
            ),
            "DTDL name",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "bad_", "schema": "double"}
            ),
            "DTDL name",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append({"@type": "Telemetry", "name": "t2"}),
            "schema is required",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "t2", "schema": "quaternion"}
            ),
            "unknown schema",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "t2", "schema": 7}
            ),
            "schema name or object",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Property", "name": "p2", "schema": "string", "writable": "yes"}
            ),
            "writable must be true or false",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Command", "name": "c2", "request": "x"}
            ),
            "object with name and schema",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Command", "name": "c2", "request": {"name": "r", "schema": "nope"}}
            ),
            "unknown schema",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {
                    "@type": "Telemetry",
                    "name": "e",
                    "schema": {"@type": "Enum", "valueSchema": "double", "enumValues": []},
                }
            ),
            "valueSchema",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {
                    "@type": "Telemetry",
                    "name": "e",
                    "schema": {"@type": "Enum", "valueSchema": "integer", "enumValues": []},
                }
            ),
            "non-empty",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {
                    "@type": "Telemetry",
                    "name": "e",
                    "schema": {
                        "@type": "Enum",
                        "valueSchema": "integer",
                        "enumValues": [{"name": "a", "enumValue": "1"}],
                    },
                }
            ),
            "must be an integer",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "o", "schema": {"@type": "Object"}}
            ),
            "fields must be an array",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {
                    "@type": "Telemetry",
                    "name": "o",
                    "schema": {
                        "@type": "Object",
                        "fields": [
                            {"name": "a", "schema": "string"},
                            {"name": "a", "schema": "string"},
                        ],
                    },
                }
            ),
            "used twice",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "a", "schema": {"@type": "Array"}}
            ),
            "elementSchema is required",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {
                    "@type": "Telemetry",
                    "name": "m",
                    "schema": {
                        "@type": "Map",
                        "mapKey": {"name": "k", "schema": "integer"},
                        "mapValue": {"name": "v", "schema": "string"},
                    },
                }
            ),
            "mapKey",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Telemetry", "name": "m", "schema": {"@type": "Set"}}
            ),
            "must be Enum, Object, Array or Map",
        ),
        (
            lambda b: b["capabilityModel"]["contents"].append(
                {"@type": "Component", "name": "c9", "schema": "dtmi:missing;1"}
            ),
            "not an interface of this template",
        ),
        (
            lambda b: b["capabilityModel"]["contents"][-1]["schema"]["contents"].append(
                {"@type": "Component", "name": "inner", "schema": thermostat_component()}
            ),
            "cannot hold components",
        ),
        (
            lambda b: b["capabilityModel"].update({"extends": "dtmi:missing;1"}),
            "not an interface of this template",
        ),
        (lambda b: b.update({"displayName": ""}), "displayName"),
    ],
)
def test_bad_templates_name_the_problem(mutate: Any, needle: str) -> None:
    body = template_body()
    mutate(body)
    with pytest.raises(Invalid) as info:
        parse_template(TID, body)
    assert needle in info.value.message
    assert info.value.field


@pytest.mark.parametrize("body", [None, 5, "x", [], [5], {}, {"displayName": "x"}])
def test_non_templates_are_invalid(body: Any) -> None:
    with pytest.raises(Invalid):
        parse_template(TID, body)


@pytest.mark.parametrize("template_id", ["", "a b", "x/y", "é", "a" * 257])
def test_bad_template_ids(template_id: str) -> None:
    with pytest.raises(Invalid, match="deviceTemplateId"):
        parse_template(template_id, template_body())


def test_self_referencing_schemas_stop_at_the_depth_limit() -> None:
    body = template_body()
    body["capabilityModel"]["schemas"].append(
        {"@id": "dtmi:loop;1", "@type": "Array", "elementSchema": "dtmi:loop;1"}
    )
    body["capabilityModel"]["contents"].append(
        {"@type": "Telemetry", "name": "loop", "schema": "dtmi:loop;1"}
    )
    with pytest.raises(Invalid, match="nest deeper"):
        parse_template(TID, body)


def test_extends_cycles_stop_at_the_depth_limit() -> None:
    a = {"@id": "dtmi:a;1", "@type": "Interface", "extends": "dtmi:b;1", "contents": []}
    b = {"@id": "dtmi:b;1", "@type": "Interface", "extends": "dtmi:a;1", "contents": []}
    with pytest.raises(Invalid, match="deeper"):
        parse_template("cycle", [a, b])


def test_huge_integers_cannot_be_stored() -> None:
    body = template_body()
    body["description"] = 2**80
    with pytest.raises(Invalid, match="cannot be stored"):
        parse_template(TID, body)


# -- values ------------------------------------------------------------------------------------

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


# -- template lookups ----------------------------------------------------------------------------


def template() -> Any:
    from thinghub.services.templates import DeviceTemplate

    document, model = parse_template(TID, template_body())
    return DeviceTemplate(TID, "Thermostat", document, model)


def test_telemetry_checks() -> None:
    t = template()
    t.check_telemetry({})
    t.check_telemetry(
        {
            "temperature": 21.5,
            "humidity": 40,
            "count": 3,
            "status": "ok",
            "location": {"lat": 1.0, "lon": 2.0},
            "readings": [1, 2.5],
            "tags": {"a": "b"},
            "point": {"x": 1, "y": 2},
        }
    )
    t.check_telemetry({"temperature": 20}, "thermostat1")
    cases = [
        ({"temp": 1}, None, "telemetry 'temp' is not in device template"),
        ({"temperature": "hot"}, None, "temperature must be a double"),
        ({"count": 1.5}, None, "count must be an integer"),
        ({"status": "meh"}, None, "status must be one of"),
        ({"point": {"x": 1.5}}, None, "point.x must be an integer"),
        ({"humidity": 1}, "thermostat1", "component 'thermostat1'"),
        ({"temperature": 1}, "nope", "component 'nope' is not in device template"),
        ([1, 2], None, "telemetry must be a JSON object"),
        ("text", None, "telemetry must be a JSON object"),
    ]
    for body, component, needle in cases:
        with pytest.raises(Invalid) as info:
            t.check_telemetry(body, component)
        assert needle in info.value.message, info.value.message


def test_commands_and_their_requests() -> None:
    t = template()
    component, reboot = t.command("reboot")
    assert component is None
    reboot.check_request(60)
    for bad, needle in [
        (None, "needs its request 'rebootInterval'"),
        ("60", "rebootInterval must be an integer"),
        ({"rebootInterval": 60}, "must be an integer"),
    ]:
        with pytest.raises(Invalid, match=needle):
            reboot.check_request(bad)
    _, ping = t.command("ping")
    ping.check_request(None)
    ping.check_request({})
    with pytest.raises(Invalid, match="takes no request"):
        ping.check_request({"x": 1})
    component, report = t.command("thermostat1*getMaxMinReport")
    assert component == "thermostat1"
    report.check_request("2023-10-26T15:05:10Z")
    with pytest.raises(Invalid, match="since must be a dateTime"):
        report.check_request("yesterday")
    for missing in ("explode", "thermostat1*reboot", "nope*ping", "getMaxMinReport"):
        with pytest.raises(NotFound):
            t.command(missing)


def test_properties_and_writability() -> None:
    t = template()
    _, target = t.property("targetTemperature")
    target.check_value(21.5)
    with pytest.raises(Invalid, match="targetTemperature must be a double"):
        target.check_value("warm")
    _, firmware = t.property("firmwareVersion")
    with pytest.raises(Invalid, match="not writable"):
        firmware.check_value("1.0")
    _, mode = t.property("mode")
    mode.check_value(1)
    with pytest.raises(Invalid, match="one of 0, 1"):
        mode.check_value(3)
    component, inner = t.property("thermostat1*targetTemperature")
    assert component == "thermostat1"
    assert inner.writable
    for missing in ("colour", "thermostat1*mode", "x*mode"):
        with pytest.raises(NotFound):
            t.property(missing)


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "f": [1],
    }
    assert merge_patch({"a": 1}, [1]) == [1]


def nested_value(levels: int) -> Any:
    """{"a": {"a": ... 1}} `levels` deep, built without recursion."""
    node: Any = 1
    for _ in range(levels):
        node = {"a": node}
    return node


def test_merge_patch_is_bounded_in_depth() -> None:
    """It recurses along the patch: bounded, whatever reaches it."""
    assert merge_patch({}, nested_value(JSON_DEPTH_CEILING)) == nested_value(JSON_DEPTH_CEILING)
    with pytest.raises(Invalid) as info:
        merge_patch({}, nested_value(JSON_DEPTH_CEILING + 2))
    assert info.value.field == "body"


def test_a_value_too_deep_to_show_is_still_an_invalid() -> None:
    """Error messages quote the bad value (json.dumps, which recurses): never a RecursionError."""
    with pytest.raises(Invalid) as info:
        check_value(Primitive("double"), nested_value(5000), "x")
    assert info.value.field == "x"
    assert "nested too deep to show" in info.value.message


# -- the service --------------------------------------------------------------------------------


class CountingDocuments(MemoryDocumentStore):
    """The memory documents area, counting reads of one document."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.reads = 0

    async def get(self, account_id: str, kind: str, key: str) -> Any | None:
        self.reads += 1
        return await super().get(account_id, kind, key)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t


ADMIN = Principal("acc-1", Role.ADMIN, "admin")
OTHER = Principal("acc-2", Role.ADMIN, "other")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")


def device(template_id: str | None, account: str = "acc-1") -> Device:
    return Device(
        "d1", account, DeviceKind.DEVICE, "d1", "k1", "k2", 0.0, 0.0, template=template_id
    )


def service() -> tuple[TemplateService, Stores, FakeClock]:
    """The service on memory stores whose documents area counts reads."""
    tables, clock = Tables(), FakeClock()
    stores = dataclasses.replace(memory_stores(tables), documents=CountingDocuments(tables))
    n = node(clock)
    events = EventService(stores, n.bus, clock, n.counter)
    registry = Registry(stores, clock, events, n.bus, presence=n.presence, channel=n.links)
    return TemplateService(stores, clock, registry), stores, clock


async def stored_template(stores: Stores) -> Any:
    return await stores.documents.get("acc-1", DOCUMENT_KIND, TID)


async def test_service_crud_is_per_account() -> None:
    templates, stores, clock = service()
    created = await templates.put(ADMIN, TID, template_body())
    assert created.created_at == created.updated_at == clock.t
    assert (await templates.get(ADMIN, TID)).document == created.document
    with pytest.raises(NotFound):
        await templates.get(OTHER, TID)
    assert [t.id for t in await templates.list(ADMIN)] == [TID]
    assert await templates.list(OTHER) == []
    clock.t += 10
    patched = await templates.patch(ADMIN, TID, {"displayName": "Renamed"})
    assert patched.display_name == "Renamed"
    assert patched.created_at == created.created_at
    assert patched.updated_at == clock.t
    assert (await stored_template(stores))["document"]["displayName"] == "Renamed"
    with pytest.raises(Invalid, match="differs from the template id"):
        await templates.patch(ADMIN, TID, {"@id": "dtmi:other;1"})
    with pytest.raises(Invalid, match="merge patch"):
        await templates.patch(ADMIN, TID, [1])
    await templates.delete(ADMIN, TID)
    with pytest.raises(NotFound):
        await templates.get(ADMIN, TID)
    with pytest.raises(NotFound):
        await templates.delete(ADMIN, TID)


async def test_viewers_cannot_write() -> None:
    from thinghub.domain.errors import Forbidden

    templates, _, _ = service()
    with pytest.raises(Forbidden):
        await templates.put(VIEWER, TID, template_body())


async def test_templates_in_use_cannot_be_deleted() -> None:
    templates, stores, _ = service()
    await templates.put(ADMIN, TID, template_body())
    await stores.devices.insert(device(TID), Twin("d1"))
    with pytest.raises(Conflict, match="used by 1 device"):
        await templates.delete(ADMIN, TID)


async def test_policy_checks_templated_devices_only() -> None:
    templates, _, clock = service()
    await templates.put(ADMIN, TID, template_body())

    def message(body: Any, component: str | None = None) -> TelemetryMessage:
        return TelemetryMessage("acc-1", "d1", clock.t, body, b"", component=component)

    policy = templates.policy
    assert await policy.check(device(None), message({"anything": "goes"})) is None
    assert await policy.check(device("dtmi:gone;1"), message({"anything": "goes"})) is None
    assert await policy.check(device(TID), message({"temperature": 1.5})) is None
    assert await policy.check(device(TID), message({"temperature": 3}, "thermostat1")) is None
    reason = await policy.check(device(TID), message({"temperature": "hot"}))
    assert reason is not None
    assert "temperature must be a double" in reason
    reason = await policy.check(device(TID), message({"pressure": 1}))
    assert reason is not None
    assert "'pressure' is not in device template" in reason
    reason = await policy.check(device(TID), message(None))
    assert reason == "telemetry must be a JSON object"


async def test_lookups_are_cached_and_writes_invalidate() -> None:
    templates, stores, clock = service()
    documents = cast(CountingDocuments, stores.documents)
    await templates.put(ADMIN, TID, template_body())
    await templates.find("acc-1", TID)
    reads = documents.reads
    for _ in range(5):
        assert await templates.find("acc-1", TID) is not None
    assert documents.reads == reads
    body = template_body()
    body["displayName"] = "v2"
    await templates.put(ADMIN, TID, body)
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    # A write elsewhere (another node) is seen once the cache entry ages out.
    changed = await stored_template(stores)
    changed["document"]["displayName"] = "v3"
    await stores.documents.put("acc-1", DOCUMENT_KIND, TID, changed, clock.t)
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    clock.t += 60
    assert (await templates.find("acc-1", TID)).display_name == "v3"  # type: ignore[union-attr]


def test_the_composition_root_wires_the_policy_into_ingest() -> None:
    clock = FakeClock()
    n = node(clock)
    services = build_services(
        Settings.defaults(),
        memory_stores(),
        bus=n.bus,
        clock=clock,
        presence=n.presence,
        channel=n.links,
        locks=n.locks,
        counter=n.counter,
        issuer=None,
    )
    assert services.templates.policy in services.ingest.policies
