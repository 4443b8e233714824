"""Well-known public DTDL models, by the model id (DTMI) devices announce.

A device that announces a model id (MQTT user name `model-id=`, DPS `modelId`) without a
device template in its account still has a model: when the id is one of the public sample
models below, its capability model is known here, so faces can show its telemetry's units
(the iTwin face converts the sample thermostat's `temperature`, in `degreeCelsius`, to F).
The documents are copied from Azure's public IoT Plug and Play samples
(github.com/Azure/opendigitaltwins-dtdl, samples: Thermostat;1 and TemperatureController;2).

Parsed once, on first use, with the same parser as device templates. (The Device
Information interface the controller names is parser.WELL_KNOWN_INTERFACES'.)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from thinghub.domain.dtdl.model import Interface
from thinghub.domain.dtdl.parser import parse_template

__all__ = ["WELL_KNOWN_MODELS", "well_known_model"]


def _telemetry(name: str, unit: str, display: str) -> dict[str, Any]:
    return {
        "@type": ["Telemetry", "Temperature"],
        "name": name,
        "displayName": display,
        "schema": "double",
        "unit": unit,
    }


_THERMOSTAT: dict[str, Any] = {
    "@context": "dtmi:dtdl:context;2",
    "@id": "dtmi:com:example:Thermostat;1",
    "@type": "Interface",
    "displayName": "Thermostat",
    "description": "Reports current temperature and provides desired temperature control.",
    "contents": [
        {
            **_telemetry("temperature", "degreeCelsius", "Temperature"),
            "description": "Temperature in degrees Celsius.",
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
            "description": "This command returns the max, min and average temperature from the "
            "specified time to the current time.",
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
                        {"name": "maxTemp", "displayName": "Max temperature", "schema": "double"},
                        {"name": "minTemp", "displayName": "Min temperature", "schema": "double"},
                        {
                            "name": "avgTemp",
                            "displayName": "Average Temperature",
                            "schema": "double",
                        },
                        {"name": "startTime", "displayName": "Start Time", "schema": "dateTime"},
                        {"name": "endTime", "displayName": "End Time", "schema": "dateTime"},
                    ],
                },
            },
        },
    ],
}

_TEMPERATURE_CONTROLLER: dict[str, Any] = {
    "@context": "dtmi:dtdl:context;2",
    "@id": "dtmi:com:example:TemperatureController;2",
    "@type": "Interface",
    "displayName": "Temperature Controller",
    "description": "Device with two thermostats and remote reboot.",
    "contents": [
        {
            "@type": ["Telemetry", "DataSize"],
            "name": "workingSet",
            "displayName": "Working Set",
            "description": "Current working set of the device memory in KiB.",
            "schema": "double",
            "unit": "kibibyte",
        },
        {
            "@type": "Property",
            "name": "serialNumber",
            "displayName": "Serial Number",
            "schema": "string",
        },
        {
            "@type": "Command",
            "name": "reboot",
            "displayName": "Reboot",
            "request": {"name": "delay", "displayName": "Delay in seconds", "schema": "integer"},
        },
        {
            "@type": "Component",
            "name": "thermostat1",
            "displayName": "Thermostat One",
            "schema": "dtmi:com:example:Thermostat;1",
        },
        {
            "@type": "Component",
            "name": "thermostat2",
            "displayName": "Thermostat Two",
            "schema": "dtmi:com:example:Thermostat;1",
        },
        {
            "@type": "Component",
            "name": "deviceInformation",
            "displayName": "Device Information",
            "schema": "dtmi:azure:DeviceManagement:DeviceInformation;1",
        },
    ],
}

# The documents as the parser takes them: an Interface, or an array with the root first and
# the interfaces it names after it.
WELL_KNOWN_MODELS: Mapping[str, Any] = MappingProxyType(
    {
        "dtmi:com:example:Thermostat;1": _THERMOSTAT,
        "dtmi:com:example:TemperatureController;2": [_TEMPERATURE_CONTROLLER, _THERMOSTAT],
    }
)


@functools.cache
def well_known_model(model_id: str) -> Interface | None:
    """The parsed capability model of a well-known model id, or None."""
    body = WELL_KNOWN_MODELS.get(model_id)
    if body is None:
        return None
    _, model = parse_template(model_id, body)
    return model
