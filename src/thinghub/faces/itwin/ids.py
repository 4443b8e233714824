"""iTwin entity ids: the fixed mapping of thinghub devices to nodes, devices and sensors.

iTwin ids are paths that end in the entity kind (`/fn/6C4F6D/node`,
`/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor`). Every thinghub device is visible
under fixed ids (issue 9), with the reserved first segment `thinghub`:

| entity | id |
| --- | --- |
| node (the device's connection) | `/thinghub/{deviceId}/node` |
| device | `/thinghub/{deviceId}/node/device/{deviceId}/device` |
| a gateway's module | `/thinghub/{gatewayId}/node/module/{moduleId}/device` |
| sensor (one per telemetry component) | `{device id}/{component}/sensor` |

Telemetry without a component is the sensor `default`. Device and module ids use only
`A-Z a-z 0-9 . _ : -` (domain/ids.py), so they appear as they are. A component may hold
any character: every byte of its UTF-8 outside that set is written `%XX` (upper-case hex),
so `/`, `%` and spaces cannot break the path. Only that canonical form parses: parse then
format gives back the same string, so one entity has exactly one id.

Ids are untrusted input: parse_ref checks length, characters and shape before anything
else, refuses malformed `/thinghub/...` ids with Invalid naming the field, and returns None
for a well-formed id outside the scheme (an entity created through iTwin with an id of its
own, looked up by its derived core id: docs/faces/itwin.md, "Ids").
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Final

from thinghub.domain.errors import Invalid
from thinghub.domain.ids import MAX_ID_CHARS, parse_id

__all__ = [
    "DEFAULT_COMPONENT",
    "MAX_COMPONENT_CHARS",
    "MAX_ITWIN_ID_CHARS",
    "PREFIX",
    "DeviceRef",
    "EntityKind",
    "EntityRef",
    "NodeRef",
    "SensorRef",
    "check_itwin_id",
    "derived_core_id",
    "format_ref",
    "kind_of",
    "parse_ref",
]

PREFIX: Final = "thinghub"
DEFAULT_COMPONENT: Final = "default"
# The longest id accepted anywhere: a module sensor with a long component fits easily.
MAX_ITWIN_ID_CHARS: Final = 512
# A component name, decoded; escaped it may take three characters a byte.
MAX_COMPONENT_CHARS: Final = 64

# Any iTwin entity id: `/` then non-empty segments of printable, non-space characters,
# ending in the kind.
_ITWIN_ID = re.compile(r"(?:/[^\x00-\x20\x7f/]+)*/(node|device|sensor)")
_SAFE = re.compile(r"[A-Za-z0-9._:-]")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


class EntityKind(enum.StrEnum):
    NODE = "node"
    DEVICE = "device"
    SENSOR = "sensor"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """The node of a thinghub device (or gateway): its connection."""

    device_id: str

    @property
    def kind(self) -> EntityKind:
        return EntityKind.NODE


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A thinghub device, or a gateway's module (`module_id` set, `device_id` the gateway)."""

    device_id: str
    module_id: str | None = None

    @property
    def kind(self) -> EntityKind:
        return EntityKind.DEVICE

    @property
    def node(self) -> NodeRef:
        return NodeRef(self.device_id)


@dataclass(frozen=True, slots=True)
class SensorRef:
    """One telemetry component of a device or module; `component` None is `default`."""

    device_id: str
    component: str | None = None
    module_id: str | None = None

    @property
    def kind(self) -> EntityKind:
        return EntityKind.SENSOR

    @property
    def device(self) -> DeviceRef:
        return DeviceRef(self.device_id, self.module_id)


EntityRef = NodeRef | DeviceRef | SensorRef


# -- formatting -------------------------------------------------------------------------------


def _escape(component: str) -> str:
    return "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in component
    )


def format_ref(ref: EntityRef) -> str:
    """The iTwin id of a node, device or sensor.

    Raises:
        ValueError: a ref holding ids thinghub would not have accepted (programmer error).
    """
    for value in (ref.device_id, getattr(ref, "module_id", None)):
        if value is not None and not _is_core_id(value):
            raise ValueError(f"not a thinghub device or module id: {value!r}")
    node = f"/{PREFIX}/{ref.device_id}/node"
    if isinstance(ref, NodeRef):
        return node
    if ref.module_id is None:
        device = f"{node}/device/{ref.device_id}/device"
    else:
        device = f"{node}/module/{ref.module_id}/device"
    if isinstance(ref, DeviceRef):
        return device
    component = DEFAULT_COMPONENT if ref.component is None else ref.component
    if not 0 < len(component) <= MAX_COMPONENT_CHARS:
        raise ValueError(f"component must be 1 to {MAX_COMPONENT_CHARS} characters")
    return f"{device}/{_escape(component)}/sensor"


def _is_core_id(value: str) -> bool:
    try:
        parse_id(value)
    except Invalid:
        return False
    return True


# -- parsing ----------------------------------------------------------------------------------


def check_itwin_id(value: object, field: str = "id") -> str:
    """Check that `value` is shaped like any iTwin entity id (ours or not).

    Raises:
        Invalid: naming `field`, when it is not a string of at most MAX_ITWIN_ID_CHARS that is
            `/`-separated non-empty printable segments ending in node, device or sensor.
    """
    if not isinstance(value, str) or len(value) > MAX_ITWIN_ID_CHARS:
        raise Invalid(
            f"{field} must be an entity id of at most {MAX_ITWIN_ID_CHARS} characters",
            field=field,
        )
    if not _ITWIN_ID.fullmatch(value):
        raise Invalid(
            f"{field} must be an entity id like /fn/6C4F6D/node, got {value!r}", field=field
        )
    return value


def kind_of(value: object, field: str = "id") -> EntityKind:
    """Whether an id names a node, a device or a sensor (by its last segment).

    Raises:
        Invalid: when it is not an iTwin entity id (check_itwin_id).
    """
    return EntityKind(check_itwin_id(value, field).rsplit("/", 1)[1])


def parse_ref(value: object, field: str = "id", kind: EntityKind | None = None) -> EntityRef | None:
    """Read an id of the fixed mapping.

    Args:
        value: the id as received.
        field: the param errors name (`sensor`, `nodes[2]`, ...).
        kind: the kind the id must name, if the caller expects one.

    Returns:
        The node, device or sensor it names, or None for a well-formed id outside the
        `/thinghub/` scheme (an entity created through iTwin under an id of its own).

    Raises:
        Invalid: naming `field`, for anything that is not an iTwin id, an id of another kind
            than `kind`, or a `/thinghub/` id not in canonical form.
    """
    text = check_itwin_id(value, field)
    found = EntityKind(text.rsplit("/", 1)[1])
    if kind is not None and found is not kind:
        raise Invalid(f"{field} must be a {kind} id, got a {found} id: {text!r}", field=field)
    parts = text.split("/")  # ["", "thinghub", device, "node", ...]
    if parts[1] != PREFIX:
        return None
    ref = _ref_of(parts[2:])
    if ref is None or format_ref(ref) != text:
        raise Invalid(
            f"{field} is not a thinghub entity id (/{PREFIX}/{{deviceId}}/node/device/"
            f"{{deviceId}}/device[/{{component}}/sensor]): {text!r}",
            field=field,
        )
    return ref


def _ref_of(parts: list[str]) -> EntityRef | None:
    # parts after "/thinghub": device, "node"[, "device"|"module", id, "device"[, c, "sensor"]]
    if len(parts) < 2 or parts[1] != "node" or not _is_core_id(parts[0]):
        return None
    device = parts[0]
    if len(parts) == 2:
        return NodeRef(device)
    if len(parts) not in (5, 7) or parts[4] != "device" or not _is_core_id(parts[3]):
        return None
    if parts[2] == "device":
        if parts[3] != device:
            return None
        module = None
    elif parts[2] == "module":
        module = parts[3]
    else:
        return None
    if len(parts) == 5:
        return DeviceRef(device, module)
    if parts[6] != "sensor":
        return None
    component = _unescape(parts[5])
    if component is None or not 0 < len(component) <= MAX_COMPONENT_CHARS:
        return None
    return SensorRef(device, None if component == DEFAULT_COMPONENT else component, module)


def _unescape(segment: str) -> str | None:
    if "%" not in segment:
        return segment
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(segment):
        raw += segment[pos : match.start()].encode("ascii", "replace")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += segment[pos:].encode("ascii", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- entities created through iTwin -----------------------------------------------------------


def derived_core_id(account_id: str, itwin_id: str) -> str:
    """A thinghub device id for an entity created through iTwin under an id of its own.

    Readable and deterministic: the id's segments joined with `.`, characters outside the
    core id set as `_`, then `.` and 12 hex digits of a SHA-256 of the account and the id,
    so two accounts creating `/fn/02DDXX/node` get different core ids (core ids are global)
    and unsafe characters cannot make two ids collide. E.g. `/fn/02DDXX/node` ->
    `fn.02DDXX.node.3f9a0c1d2e4b`. The iTwin id itself is kept as the entity's attribute.

    Raises:
        Invalid: when `itwin_id` is not an iTwin entity id.
    """
    check_itwin_id(itwin_id)
    digest = hashlib.sha256(f"{account_id}\x00{itwin_id}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._:-]", "_", itwin_id.strip("/").replace("/", "."))
    return f"{slug[: MAX_ID_CHARS - len(digest) - 1]}.{digest}"
