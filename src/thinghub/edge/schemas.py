"""Request bodies of the Edge REST API (pydantic, lax like the seed's curl examples).

The seed's own examples send `"portNumber": "1"` and `"value": "false"` as strings, and curl
`-d` without a Content-Type: numbers and booleans are accepted as JSON values or as strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
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


#: The times POST /api/time may set: from the epoch (Linux refuses earlier) to 2200 (the
#: kernel refuses settimeofday past about 2232; a clock there could no longer be read back).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def _iso_time(value: Any) -> datetime:
    """An ISO 8601 date-time string (no Unix numbers), UTC when it names no offset."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date time string like 2019-11-19T15:41:30.000Z")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value[:64]!r} is not an ISO 8601 date time like 2019-11-19T15:41:30.000Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError("expected a time from 1970-01-01T00:00:00Z to before 2200-01-01T00:00:00Z")
    return moment


Bool = Annotated[StrictBool, BeforeValidator(_bool)]
PortNumber = Annotated[int, BeforeValidator(_int), Field(ge=1, le=64, strict=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeBody(_Body):
    time: Annotated[datetime, BeforeValidator(_iso_time)]


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
