"""The parsed model (domain/dtdl/model.py): telemetry checks, commands, properties."""

from __future__ import annotations

import pytest

from tests.unit.domain.dtdl._models import TID, template_body
from thinghub.domain.dtdl import (
    DeviceTemplate,
    parse_template,
)
from thinghub.domain.errors import Invalid, NotFound


def template() -> DeviceTemplate:
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


def test_a_desired_patch_is_checked_against_the_template() -> None:
    t = template()
    t.check_desired({})
    t.check_desired({"targetTemperature": 21.5, "mode": 1})
    t.check_desired({"targetTemperature": None, "firmwareVersion": None})  # null deletes
    t.check_desired({"thermostat1": {"__t": "c", "targetTemperature": 19}})
    t.check_desired({"thermostat1": None})
    cases = [
        ({"firmwareVersion": "2.0"}, "not writable", "firmwareVersion"),
        ({"targetTemperature": "warm"}, "targetTemperature must be a double", None),
        ({"mode": 3}, "one of 0, 1", None),
        ({"colour": "red"}, "'colour' is not a property of device template", "colour"),
        ({"colour": "red"}, "writable: targetTemperature, mode", "colour"),
        ({"thermostat1": 5}, "component 'thermostat1' takes an object", "thermostat1"),
        ({"thermostat1": {"mode": 1}}, "'thermostat1.mode' is not a property", "thermostat1.mode"),
        ({"thermostat1": {"targetTemperature": "x"}}, "must be a double", None),
    ]
    for patch, needle, field in cases:
        with pytest.raises(Invalid) as info:
            t.check_desired(patch)
        assert needle in info.value.message, (patch, info.value.message)
        if field is not None:
            assert info.value.field == field
