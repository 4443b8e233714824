"""The IoT Hub MQTT dialect's names: usernames, topics and property bags (no I/O).

Shapes are those the Azure IoT device SDK puts on the wire (docs/faces/device-mqtt.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

__all__ = [
    "DpsIdentity",
    "HubIdentity",
    "Telemetry",
    "encode_bag",
    "parse_bag",
    "parse_dps_username",
    "parse_hub_username",
    "parse_query",
    "parse_telemetry_topic",
    "request_id",
]

# System properties of the telemetry property bag and the message fields they set.
SYSTEM_KEYS = {
    "$.mid": "message_id",
    "$.cid": "correlation_id",
    "$.uid": "user_id",
    "$.ct": "content_type",
    "$.ce": "content_encoding",
    "$.on": "output_name",
    "$.ifid": "interface_id",
    "$.exp": "expiry",
    "$.sub": "component",
}


@dataclass(frozen=True, slots=True)
class HubIdentity:
    host: str
    device_id: str
    module_id: str | None
    model_id: str | None
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class DpsIdentity:
    id_scope: str
    registration_id: str
    params: dict[str, str]


def parse_hub_username(username: str) -> HubIdentity | None:
    """`{host}/{device}[/{module}]/?{query}`; None when it is not that shape.

    The query (api-version, DeviceClientType, model-id) is informational, so it may be left
    out: IoT Hub's first MQTT clients sent `{host}/{device}` and the hub still accepts that.
    """
    left, sep, query = username.partition("/?")
    if not sep:
        left, query = username.removesuffix("/"), ""
    parts = left.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return None
    params = dict(parse_qsl(query, keep_blank_values=True))
    module = parts[2] if len(parts) == 3 else None
    return HubIdentity(parts[0], parts[1], module, params.get("model-id") or None, params)


def parse_dps_username(username: str) -> DpsIdentity | None:
    """`{idScope}/registrations/{registrationId}/api-version=...`; None otherwise."""
    parts = username.split("/", 3)
    if (
        len(parts) < 3
        or parts[1] != "registrations"
        or not parts[0]
        or not parts[2]
        or parts[2].startswith("?")
    ):
        return None
    query = parts[3] if len(parts) == 4 else ""
    if query and not query.startswith("api-version="):
        return None
    return DpsIdentity(parts[0], parts[2], dict(parse_qsl(query, keep_blank_values=True)))


def parse_bag(bag: str) -> dict[str, str]:
    """A percent-encoded `k=v&k2=v2` property bag; keys are decoded (`%24.ct` is `$.ct`)."""
    out: dict[str, str] = {}
    for pair in bag.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        out[unquote(key)] = unquote(value)
    return out


def encode_bag(properties: dict[str, str]) -> str:
    """Encode a bag so that `/`, `&` and `=` inside keys and values survive
    (docs/faces/device-mqtt.md, "Wire details").

    `$` is sent as `%24`, as IoT Hub does (`%24.mid=...`): the Python SDK unquotes either
    form, but azure-sdk-for-c looks its system properties up by the encoded name.
    """
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in properties.items())


def parse_query(topic: str) -> dict[str, str]:
    """The `?$rid=...&...` part of a twin/method/DPS topic; `$` kept on keys."""
    _, _, query = topic.partition("?")
    return parse_bag(query)


def request_id(topic: str) -> str:
    """The `$rid` of a request topic exactly as sent, to echo it unchanged.

    Not percent-decoded: a decoded `%26` or `%3D` would break the response topic's query.
    """
    _, _, query = topic.partition("?")
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and unquote(key) == "$rid":
            return value
    return ""


@dataclass(frozen=True, slots=True)
class Telemetry:
    device_id: str
    module_id: str | None
    properties: dict[str, str]  # custom properties
    system: dict[str, str]  # message_id, content_type, ... by field name


def parse_telemetry_topic(topic: str) -> Telemetry | None:
    """`devices/{d}/messages/events/{bag}` or `devices/{d}/modules/{m}/messages/events/{bag}`."""
    parts = topic.split("/", 6)
    if len(parts) >= 4 and parts[0] == "devices" and parts[2:4] == ["messages", "events"]:
        device, module, bag = parts[1], None, "/".join(parts[4:])
    elif (
        len(parts) >= 6
        and parts[0] == "devices"
        and parts[2] == "modules"
        and parts[4:6] == ["messages", "events"]
    ):
        device, module, bag = parts[1], parts[3], "/".join(parts[6:])
    else:
        return None
    custom: dict[str, str] = {}
    system: dict[str, str] = {}
    for key, value in parse_bag(bag).items():
        name = SYSTEM_KEYS.get(key)
        if name is not None:
            system[name] = value
        else:
            custom[key] = value
    return Telemetry(device, module, custom, system)
