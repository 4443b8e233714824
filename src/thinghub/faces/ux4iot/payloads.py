"""ux4iot wire payloads: the Socket.IO `data` messages and the REST last-value bodies.

Shapes as the real clients read them (ux4iot-react 4.1.8 src/library/base/ux4iot-shared.ts,
2.0.2 lib/types.js). The client tells the kind of a `data` message by which property is
present, so each message carries exactly one of telemetry / connectionState / deviceTwin /
message. Timestamps are JavaScript `Date.toISOString()` strings (millisecond precision, Z).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from thinghub.faces.ux4iot.grants import WireProtocol

__all__ = [
    "connection_state_data",
    "connection_state_response",
    "d2c_data",
    "device_twin_data",
    "device_twin_response",
    "iso_ms",
    "last_value_response",
    "last_values_response",
    "method_response",
    "select_telemetry",
    "telemetry_data",
    "twin_document",
]


def iso_ms(ts: float) -> str:
    """Epoch seconds as JavaScript's toISOString(): 2024-05-01T12:00:00.123Z."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def select_telemetry(body: Any, keys: frozenset[str] | None) -> dict[str, Any] | None:
    """The values of `keys` (None: all keys) in a telemetry body; None when nothing is left.

    Only JSON-object bodies carry telemetry keys. A session never gets a key it did not
    subscribe to, in either protocol: a grant for one key must not leak the others.
    """
    if not isinstance(body, dict) or not body:
        return None
    if keys is None:
        return body
    picked = {key: body[key] for key in keys if key in body}
    return picked or None


def telemetry_data(device_id: str, ts: float, telemetry: Mapping[str, Any]) -> dict[str, Any]:
    """`{deviceId, timestamp, telemetry: {key: value, ...}}`: one message per device event.

    The same shape serves v2 and v4. 4.x keeps the keys each subscriber asked for; 2.0.2 calls
    every subscriber whose key is present with the whole `telemetry` object.
    """
    return {"deviceId": device_id, "timestamp": iso_ms(ts), "telemetry": dict(telemetry)}


def connection_state_data(
    device_id: str, ts: float, connected: bool, protocol: WireProtocol
) -> dict[str, Any]:
    """v4: `connectionState: true|false`; v2: `connectionState: {connected: bool}` (2.0.2
    calls back with `data.connectionState.connected`)."""
    state: bool | dict[str, bool] = (
        {"connected": connected} if protocol is WireProtocol.V2 else connected
    )
    return {"deviceId": device_id, "timestamp": iso_ms(ts), "connectionState": state}


def twin_document(
    version: int, reported: Mapping[str, Any], desired: Mapping[str, Any]
) -> dict[str, Any]:
    """ux4iot's TwinUpdate: `{version, properties: {reported, desired}}`."""
    return {
        "version": version,
        "properties": {"reported": dict(reported), "desired": dict(desired)},
    }


def device_twin_data(device_id: str, ts: float, twin: Mapping[str, Any]) -> dict[str, Any]:
    """`{deviceId, timestamp, deviceTwin: {version, properties: {reported, desired}}}`."""
    return {"deviceId": device_id, "timestamp": iso_ms(ts), "deviceTwin": dict(twin)}


def d2c_data(device_id: str, ts: float, message: Any) -> dict[str, Any]:
    """`{deviceId, timestamp, message: <the raw body>}` (the decoded JSON, or the text)."""
    return {"deviceId": device_id, "timestamp": iso_ms(ts), "message": message}


def last_value_response(device_id: str, key: str, value: Any, ts: float) -> dict[str, Any]:
    """`GET /lastValue/:deviceId/:telemetryKey`: `{deviceId, data: {key: value}, timestamp}`."""
    return {"deviceId": device_id, "data": {key: value}, "timestamp": iso_ms(ts)}


def last_values_response(device_id: str, values: Mapping[str, tuple[Any, float]]) -> dict[str, Any]:
    """`GET /lastValue/:deviceId`: `{deviceId, data: {key: {value, timestamp}}, timestamp: ''}`.

    `values` maps each key to (value, epoch seconds of that value).
    """
    data = {key: {"value": value, "timestamp": iso_ms(ts)} for key, (value, ts) in values.items()}
    return {"deviceId": device_id, "data": data, "timestamp": ""}


def device_twin_response(device_id: str, twin: Mapping[str, Any], ts: float) -> dict[str, Any]:
    """`GET /deviceTwin/:deviceId`: `{deviceId, data: <twin document>, timestamp}`."""
    return {"deviceId": device_id, "data": dict(twin), "timestamp": iso_ms(ts)}


def connection_state_response(device_id: str, connected: bool, ts: float) -> dict[str, Any]:
    """`GET /connectionState/:deviceId`: `{deviceId, data: true|false, timestamp}`."""
    return {"deviceId": device_id, "data": connected, "timestamp": iso_ms(ts)}


def method_response(status: int, payload: Any) -> dict[str, Any]:
    """`POST /directMethod` and `PATCH /deviceTwinDesiredProperties`: `{status, payload}`."""
    return {"status": status, "payload": payload}
