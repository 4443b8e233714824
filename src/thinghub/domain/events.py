"""Events: what happened to a device (connection state, twin changes, lifecycle)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventType", "sequence_number"]


class EventType(StrEnum):
    CONNECTION_STATE = "connection_state_event"
    CHANGE = "change_event"
    LIFECYCLE = "device_lifecycle_event"
    TELEMETRY_REJECTED = "telemetry_rejected_event"


@dataclass(frozen=True, slots=True)
class Event:
    account_id: str
    device_id: str
    type: EventType
    ts: float
    body: dict[str, Any]
    project: str | None = None
    deployment: str | None = None


def sequence_number(ts: float, counter: int) -> str:
    """A 64-hex-digit, ever-increasing sequence number like IoT Hub's connection events."""
    return f"{int(ts * 10_000_000):032X}{counter:032X}"
