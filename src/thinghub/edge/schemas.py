"""Request bodies of the Edge REST API (pydantic, lax like the seed's curl examples).

The seed's own examples send `"portNumber": "1"` and `"value": "false"` as strings, and curl
`-d` without a Content-Type: numbers and booleans are accepted as JSON values or as strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

__all__ = [
    "AccessibleBody",
    "BatterySaverBody",
    "ConfigureDeleteBody",
    "MessageBody",
    "PortModeBody",
    "PortVoltageBody",
    "SleepBody",
    "TimeBody",
    "ValueBody",
]

#: Bytes of one POST /api/message (and of one WebSocket frame to an instrument).
MAX_MESSAGE_BYTES = 64 * 1024


def _bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _int(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Bool = Annotated[StrictBool, BeforeValidator(_bool)]
PortNumber = Annotated[int, BeforeValidator(_int), Field(ge=1, le=64, strict=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeBody(_Body):
    time: datetime


class ValueBody(_Body):
    value: Bool


class AccessibleBody(ValueBody):
    pass


class BatterySaverBody(_Body):
    value: Bool
    low: Annotated[int, BeforeValidator(_int), Field(ge=0, le=40, strict=True)] | None = None
    high: Annotated[int, BeforeValidator(_int), Field(ge=60, le=100, strict=True)] | None = None


class PortVoltageBody(_Body):
    portNumber: PortNumber
    value: Annotated[int, BeforeValidator(_int), Field(ge=0, le=2, strict=True)]


class SleepBody(_Body):
    duration: Annotated[
        int, BeforeValidator(_int), Field(ge=1, le=7 * 24 * 3600 * 1000, strict=True)
    ]


class PortModeBody(_Body):
    portNumber: PortNumber
    content: Annotated[str, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]


class MessageBody(_Body):
    portNumber: PortNumber
    message: Annotated[str, Field(max_length=MAX_MESSAGE_BYTES)] | None = None
    # The seed's C++ sample sends the text as `content`; accepted as the same thing.
    content: Annotated[str, Field(max_length=MAX_MESSAGE_BYTES)] | None = None


class ConfigureDeleteBody(_Body):
    resources: Annotated[list[str], Field(min_length=1, max_length=32)]
