"""Wire payloads (faces/ux4iot/payloads.py): the shapes of the clients' types, literally."""

from __future__ import annotations

from datetime import UTC, datetime

from thinghub.faces.ux4iot.grants import WireProtocol
from thinghub.faces.ux4iot.payloads import (
    connection_state_data,
    connection_state_response,
    d2c_data,
    device_twin_data,
    device_twin_response,
    iso_ms,
    last_value_response,
    last_values_response,
    method_response,
    select_telemetry,
    telemetry_data,
    twin_document,
)

TS = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC).timestamp()
ISO = "2024-05-01T12:00:00.123Z"


def test_timestamps_are_javascript_iso_strings() -> None:
    assert iso_ms(TS) == ISO
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"


def test_telemetry_message() -> None:
    # {deviceId, timestamp: ISO string, telemetry: {key: value, ...}}
    assert telemetry_data("dev", TS, {"temp": 21.5, "hum": 40}) == {
        "deviceId": "dev",
        "timestamp": ISO,
        "telemetry": {"temp": 21.5, "hum": 40},
    }


def test_telemetry_keeps_only_the_subscribed_keys() -> None:
    body = {"temp": 21.5, "hum": 40, "secret": "x"}
    assert select_telemetry(body, frozenset({"temp", "hum"})) == {"temp": 21.5, "hum": 40}
    assert select_telemetry(body, None) == body
    assert select_telemetry(body, frozenset({"other"})) is None
    assert select_telemetry({"temp": 0}, frozenset({"temp"})) == {"temp": 0}
    not_objects: list[object] = ["text", 3, [1, 2], None, {}]
    for not_an_object in not_objects:
        assert select_telemetry(not_an_object, None) is None


def test_connection_state_v4_is_a_bare_boolean() -> None:
    # {deviceId, timestamp, connectionState: true/false}
    assert connection_state_data("dev", TS, False, WireProtocol.V4) == {
        "deviceId": "dev",
        "timestamp": ISO,
        "connectionState": False,
    }


def test_connection_state_v2_is_an_object() -> None:
    # v2: connectionState is {connected: bool}; 2.0.2 calls back with .connected
    assert connection_state_data("dev", TS, True, WireProtocol.V2) == {
        "deviceId": "dev",
        "timestamp": ISO,
        "connectionState": {"connected": True},
    }


def test_device_twin_message() -> None:
    # {deviceId, timestamp, deviceTwin: {version, properties: {reported: {...}, desired: {...}}}}
    twin = twin_document(7, {"fw": "1.2"}, {"fan": 3})
    assert twin == {"version": 7, "properties": {"reported": {"fw": "1.2"}, "desired": {"fan": 3}}}
    assert device_twin_data("dev", TS, twin) == {
        "deviceId": "dev",
        "timestamp": ISO,
        "deviceTwin": {
            "version": 7,
            "properties": {"reported": {"fw": "1.2"}, "desired": {"fan": 3}},
        },
    }


def test_d2c_message_is_the_raw_body() -> None:
    # {deviceId, timestamp, message: {...raw body...}}
    assert d2c_data("dev", TS, {"a": [1, 2]}) == {
        "deviceId": "dev",
        "timestamp": ISO,
        "message": {"a": [1, 2]},
    }


def test_last_value_of_one_key() -> None:
    # 200 {deviceId, data: {<key>: value}, timestamp: ISO}
    assert last_value_response("dev", "temp", 21.5, TS) == {
        "deviceId": "dev",
        "data": {"temp": 21.5},
        "timestamp": ISO,
    }


def test_last_values_of_all_keys() -> None:
    # 200 {deviceId, data: {<key>: {value, timestamp}}, timestamp: ''}
    assert last_values_response("dev", {"temp": (21.5, TS), "on": (True, 0.0)}) == {
        "deviceId": "dev",
        "data": {
            "temp": {"value": 21.5, "timestamp": ISO},
            "on": {"value": True, "timestamp": "1970-01-01T00:00:00.000Z"},
        },
        "timestamp": "",
    }


def test_twin_and_connection_state_reads() -> None:
    twin = twin_document(1, {}, {})
    assert device_twin_response("dev", twin, TS) == {
        "deviceId": "dev",
        "data": twin,
        "timestamp": ISO,
    }
    assert connection_state_response("dev", True, TS) == {
        "deviceId": "dev",
        "data": True,
        "timestamp": ISO,
    }


def test_method_answer() -> None:
    assert method_response(201, {"ok": 1}) == {"status": 201, "payload": {"ok": 1}}
