"""Device template bodies shared by the DTDL and template service tests."""

from __future__ import annotations

from typing import Any

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


def nested_value(levels: int) -> Any:
    """{"a": {"a": ... 1}} `levels` deep, built without recursion."""
    node: Any = 1
    for _ in range(levels):
        node = {"a": node}
    return node
