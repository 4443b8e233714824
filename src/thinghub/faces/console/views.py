"""What the console's pages show, computed from domain values: times, a device's numeric
series, its iTwin ids and ux4iot endpoint, the connection details of a new device, events in
one line each.

Numbers come out of telemetry exactly as the store derives its observations
(`domain.telemetry.observations_of`), so a plot shows what the metric queries of every face
see.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Device
from thinghub.domain.telemetry import TelemetryMessage, observations_of

__all__ = [
    "ITWIN_PREFIX",
    "MAX_SERIES_METRICS",
    "ConnectionDetails",
    "Series",
    "connection_details",
    "event_summary",
    "itwin_ids",
    "numeric_values",
    "pretty_json",
    "series_of",
    "show_time",
    "ux4iot_endpoint",
]

ITWIN_PREFIX = "thinghub"  # the reserved first segment of iTwin ids of thinghub devices
ITWIN_DEFAULT_SENSOR = "default"  # telemetry without a component
# A plot draws at most this many metrics (the first seen); more would be unreadable.
MAX_SERIES_METRICS = 20
_ITWIN_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def show_time(ts: float | None) -> str:
    """`2025-01-31 12:00:03 UTC`, or an em dash for none."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def numeric_values(
    account_id: str, device_id: str, ts: float, body: Any, component: str | None
) -> dict[str, float]:
    """The metrics of one message body, named as the store names its observations."""
    message = TelemetryMessage(account_id, device_id, ts, body, b"", component=component)
    return {o.metric: o.value for o in observations_of(message)}


@dataclass(frozen=True, slots=True)
class Series:
    """Aligned columns for a plot: `times` (epoch seconds, ascending) and one column per
    metric, None where a message lacked it."""

    times: list[float]
    columns: dict[str, list[float | None]]

    def as_json(self) -> dict[str, Any]:
        return {"metrics": list(self.columns), "data": [self.times, *self.columns.values()]}


def series_of(messages: Iterable[TelemetryMessage]) -> Series:
    """The numeric series of messages given in any order (sorted by time here)."""
    rows = sorted(
        ((m.enqueued_at, {o.metric: o.value for o in observations_of(m)}) for m in messages),
        key=lambda row: row[0],
    )
    columns: dict[str, list[float | None]] = {}
    times: list[float] = []
    for ts, values in rows:
        if not values:
            continue
        for metric in values:
            if metric not in columns and len(columns) < MAX_SERIES_METRICS:
                columns[metric] = [None] * len(times)
        times.append(ts)
        for metric, column in columns.items():
            column.append(values.get(metric))
    return Series(times, columns)


def _itwin_segment(value: str) -> str:
    """A component in an iTwin id: bytes outside A-Z a-z 0-9 . _ : - as %XX."""
    return "".join(
        ch if ch in _ITWIN_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in value
    )


def itwin_ids(device: Device, components: Sequence[str | None]) -> dict[str, Any]:
    """The fixed iTwin ids of a device: its node, its device, a sensor per component (None:
    the `default` sensor), as the iTwin face names them."""
    node = f"/{ITWIN_PREFIX}/{device.id}/node"
    entity = f"{node}/device/{device.id}/device"
    sensors = []
    seen: set[str] = set()
    for component in components:
        name = component or ITWIN_DEFAULT_SENSOR
        if name in seen:
            continue
        seen.add(name)
        sensors.append((name, f"{entity}/{_itwin_segment(name)}/sensor"))
    return {"node": node, "device": entity, "sensors": sensors}


def ux4iot_endpoint(base_url: str) -> str:
    """The ux4iot connection string's Endpoint: the HTTP base URL plus `/ux4iot`, no
    trailing slash (socket.io-client would take `/ux4iot/` as another namespace)."""
    return base_url.rstrip("/") + "/ux4iot"


@dataclass(frozen=True, slots=True)
class ConnectionDetails:
    """What a new device is given once: its keys, a connection string and DPS settings."""

    device_id: str
    primary_key: str
    secondary_key: str
    connection_string: str
    hub_hostname: str
    mqtt_host: str
    mqtt_port: int
    id_scope: str
    ca_file: str | None
    simulate_command: str


def connection_details(
    device: Device,
    *,
    hub_hostname: str,
    mqtt_host: str,
    mqtt_port: int,
    id_scope: str,
    ca_file: str | None,
) -> ConnectionDetails:
    connection_string = (
        f"HostName={hub_hostname};DeviceId={device.id};SharedAccessKey={device.primary_key}"
    )
    simulate = f"thinghub simulate --connection-string '{connection_string}'"
    simulate += f" --mqtt {mqtt_host}:{mqtt_port}"
    if ca_file:
        simulate += f" --ca {ca_file}"
    return ConnectionDetails(
        device_id=device.id,
        primary_key=device.primary_key,
        secondary_key=device.secondary_key,
        connection_string=connection_string,
        hub_hostname=hub_hostname,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        id_scope=id_scope,
        ca_file=ca_file,
        simulate_command=simulate + " --devices 1 --rate 1 --duration 3600",
    )


def event_summary(event: Event) -> str:
    """One line about an event, for the events log."""
    body = event.body
    if event.type is EventType.CONNECTION_STATE:
        state = body.get("state")
        shown = {"deviceConnected": "Connected", "deviceDisconnected": "Disconnected"}
        return f"connection: {shown.get(state, state) if isinstance(state, str) else body}"
    if event.type is EventType.CHANGE:
        properties = body.get("properties", {})
        parts = []
        for section in ("desired", "reported"):
            patch = properties.get(section) if isinstance(properties, dict) else None
            if isinstance(patch, dict):
                shown = {k: v for k, v in patch.items() if not k.startswith("$")}
                parts.append(f"{section} {json.dumps(shown, ensure_ascii=False)}")
        return "twin: " + ("; ".join(parts) or json.dumps(body, ensure_ascii=False))
    if event.type is EventType.LIFECYCLE:
        return f"lifecycle: {body.get('operation', json.dumps(body, ensure_ascii=False))}"
    if event.type is EventType.TELEMETRY_REJECTED:
        return f"telemetry rejected: {body.get('reason', json.dumps(body, ensure_ascii=False))}"
    return json.dumps(body, ensure_ascii=False)
