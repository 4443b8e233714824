"""Live events as bytes: how a LiveEvent crosses from one node to another over the NATS bus.

One JSON object per event, `{"k": kind, ...fields}`, with the fields of the event's dataclass
under their own names; an EventRecorded carries its Event as a nested object. `decode(encode(e))
== e` for every event the services publish (tests/unit/bus/test_live_codec.py). A message that
does not decode (another program on the subjects, a newer node's new kind) raises
`UndecodableEvent`, which the bus logs and drops: the bus is best effort, the store is the
record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from thinghub.domain.events import Event, EventType
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
)

__all__ = ["UndecodableEvent", "decode", "encode"]

KIND_KEY = "k"
_KINDS: dict[str, type[Any]] = {
    cls.kind: cls
    for cls in (TelemetryReceived, TwinChanged, ConnectionChanged, EventRecorded, DeviceChanged)
}


class UndecodableEvent(ValueError):
    """Bytes on a live subject that are not an event this node knows."""


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def encode(event: LiveEvent) -> bytes:
    body = _fields(event)
    if isinstance(event, EventRecorded):
        body["event"] = _fields(event.event)
    body[KIND_KEY] = event.kind
    return orjson.dumps(body)


def decode(data: bytes) -> LiveEvent:
    try:
        body = orjson.loads(data)
        cls = _KINDS[body.pop(KIND_KEY)]
        if cls is EventRecorded:
            inner = body["event"]
            inner["type"] = EventType(inner["type"])
            body["event"] = Event(**inner)
        event: LiveEvent = cls(**body)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UndecodableEvent(f"not a live event: {exc}") from exc
    return event
