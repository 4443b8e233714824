"""DTDL parsing (domain/dtdl/parser.py): template shapes, references, limits, bad models."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.domain.dtdl._models import TID, template_body, thermostat_component
from thinghub.domain.dtdl import (
    ObjectSchema,
    Primitive,
    parse_template,
)
from thinghub.domain.errors import Invalid


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


def thermostat_model() -> dict[str, Any]:
    """The Azure IoT Plug and Play sample model dtmi:com:example:Thermostat;1, as published
    (what the SDK's simple_thermostat.py sample announces with its model id)."""
    return {
        "@context": "dtmi:dtdl:context;2",
        "@id": "dtmi:com:example:Thermostat;1",
        "@type": "Interface",
        "displayName": "Thermostat",
        "description": "Reports current temperature and provides desired temperature control.",
        "contents": [
            {
                "@type": ["Telemetry", "Temperature"],
                "name": "temperature",
                "displayName": "Temperature",
                "description": "Temperature in degrees Celsius.",
                "schema": "double",
                "unit": "degreeCelsius",
            },
            {
                "@type": ["Property", "Temperature"],
                "name": "targetTemperature",
                "schema": "double",
                "displayName": "Target Temperature",
                "description": "Allows to remotely specify the desired target temperature.",
                "unit": "degreeCelsius",
                "writable": True,
            },
            {
                "@type": ["Property", "Temperature"],
                "name": "maxTempSinceLastReboot",
                "schema": "double",
                "unit": "degreeCelsius",
                "displayName": "Max temperature since last reboot.",
                "description": "Returns the max temperature since last device reboot.",
            },
            {
                "@type": "Command",
                "name": "getMaxMinReport",
                "displayName": "Get Max-Min report.",
                "description": "This command returns the max, min and average temperature from "
                "the specified time to the current time.",
                "request": {
                    "name": "since",
                    "displayName": "Since",
                    "description": "Period to return the max-min report.",
                    "schema": "dateTime",
                },
                "response": {
                    "name": "tempReport",
                    "displayName": "Temperature Report",
                    "schema": {
                        "@type": "Object",
                        "fields": [
                            {
                                "name": "maxTemp",
                                "displayName": "Max temperature",
                                "schema": "double",
                            },
                            {
                                "name": "minTemp",
                                "displayName": "Min temperature",
                                "schema": "double",
                            },
                            {
                                "name": "avgTemp",
                                "displayName": "Average Temperature",
                                "schema": "double",
                            },
                            {
                                "name": "startTime",
                                "displayName": "Start Time",
                                "schema": "dateTime",
                            },
                            {"name": "endTime", "displayName": "End Time", "schema": "dateTime"},
                        ],
                    },
                },
            },
        ],
    }


def test_the_thermostat_models_units_are_kept() -> None:
    """Each telemetry keeps its DTDL unit (a face showing telemetry needs it per key)."""
    document, model = parse_template("dtmi:com:example:Thermostat;1", thermostat_model())
    temperature = model.telemetry["temperature"]
    assert (temperature.schema, temperature.unit) == (Primitive("double"), "degreeCelsius")
    assert model.properties["targetTemperature"].unit == "degreeCelsius"
    assert model.properties["targetTemperature"].writable
    assert model.properties["maxTempSinceLastReboot"].unit == "degreeCelsius"
    assert not model.properties["maxTempSinceLastReboot"].writable
    report = model.commands["getMaxMinReport"]
    assert report.request is not None and report.request.schema == Primitive("dateTime")
    assert report.response is not None and isinstance(report.response.schema, ObjectSchema)
    # The stored document keeps the units too, and parses to the same model again.
    assert document["capabilityModel"]["contents"][0]["unit"] == "degreeCelsius"
    assert parse_template("dtmi:com:example:Thermostat;1", document)[1] == model
    # A telemetry without a unit has none; a unit that is not a name is refused, by field.
    _, plain = parse_template(TID, template_body())
    assert plain.telemetry["humidity"].unit is None
    bad = thermostat_model()
    bad["contents"][0]["unit"] = {"name": "degreeCelsius"}
    with pytest.raises(Invalid, match="unit must be a DTDL unit name") as info:
        parse_template("dtmi:com:example:Thermostat;1", bad)
    assert info.value.field == "capabilityModel.contents[0].unit"
