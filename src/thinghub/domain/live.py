"""Live events: what the bus carries between services, faces and nodes, and their subjects.

An event is a frozen dataclass (data, not behaviour: don't subclass these). Each has a `kind`
and a `subject` built from what subscribers filter on:

    {kind}.{account}.{project or "_"}.{device}

so a subscriber limited to one project asks for `telemetry.<account>.<project>.*` and one
limited to a device for `telemetry.<account>.*.<device>`: nobody looks messages up to drop
them. Subjects are dot-separated tokens matched as NATS matches them (`*` one token, `>` the
rest), so every value is escaped into one token by `subject_token`:

- `%` becomes `%25` first, so an escaped token never reads as another value;
- `.` (the separator), `*` and `>` (the wildcards) become `%2E`, `%2A`, `%3E`;
- `/` (a module's key is `device/module`) becomes `%2F`;
- whitespace and control characters, which NATS refuses in a subject, become the `%XX` of
  their UTF-8 bytes (a space `%20`, a tab `%09`, U+00A0 `%C2%A0`);
- an empty value or None becomes `_`, and a value that is exactly `_` becomes `%5F`, so `_`
  always means "none" (a device without a project).

`token_value` undoes it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import unquote

from thinghub.domain.events import Event

__all__ = [
    "NONE_TOKEN",
    "WILDCARD",
    "ConnectionChanged",
    "DeviceChanged",
    "EventRecorded",
    "LiveEvent",
    "TelemetryReceived",
    "TwinChanged",
    "live_pattern",
    "subject_of",
    "subject_token",
    "token_value",
]

NONE_TOKEN = "_"  # no value: a device without a project
SUBJECT_TOKEN_CACHE = 65_536  # escaped values kept (accounts, projects, device ids)
WILDCARD = "*"  # in a pattern: any one token
# What cannot stand in a token as it is: the escape itself, the separator, the wildcards, the
# module separator, whitespace (\s is Unicode-aware on str) and control characters.
_SPECIAL = re.compile(r"[%./*>\s\x00-\x1f\x7f]")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8"))


@functools.lru_cache(maxsize=SUBJECT_TOKEN_CACHE)
def subject_token(value: str | None) -> str:
    """One subject token for a value (see the module docstring for the rules); cached, since
    every event of a device escapes the same few values (ids with dots cost a regex
    replacement each)."""
    if not value:
        return NONE_TOKEN
    if value == NONE_TOKEN:
        return "%5F"
    return _SPECIAL.sub(_percent, value)


def token_value(token: str) -> str | None:
    """The value a token was made from; None for `_`."""
    return None if token == NONE_TOKEN else unquote(token)


def subject_of(kind: str, account_id: str, project: str | None, device_id: str) -> str:
    return ".".join(
        (kind, subject_token(account_id), subject_token(project), subject_token(device_id))
    )


def live_pattern(
    kind: str = WILDCARD,
    account_id: str = WILDCARD,
    project: str | None = WILDCARD,
    device_id: str = WILDCARD,
) -> str:
    """A subscription pattern: WILDCARD (the default) matches any value of that part, None as
    the project matches devices without one, any other value is escaped as in a subject."""

    def part(value: str | None) -> str:
        return WILDCARD if value == WILDCARD else subject_token(value)

    return ".".join((kind, part(account_id), part(project), part(device_id)))


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    """A device-to-cloud message was stored (published once, after its commit)."""

    kind: ClassVar[str] = "telemetry"
    account_id: str
    project: str | None
    device_id: str
    ts: float  # when the hub enqueued it (epoch seconds)
    body: Any  # parsed JSON, else text, else None
    properties: dict[str, str]
    component: str | None
    source: str  # "mqtt", "http", "central", ...
    message_id: str | None

    @property
    def subject(self) -> str:
        return subject_of(self.kind, self.account_id, self.project, self.device_id)


@dataclass(frozen=True, slots=True)
class TwinChanged:
    """A twin section changed: `patch` as applied (null deletes), `version` the section's new
    `$version`."""

    kind: ClassVar[str] = "twin"
    account_id: str
    project: str | None
    device_id: str
    section: Literal["desired", "reported"]
    patch: dict[str, Any]
    version: int

    @property
    def subject(self) -> str:
        return subject_of(self.kind, self.account_id, self.project, self.device_id)


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """A device connected (to some node) or disconnected."""

    kind: ClassVar[str] = "connection"
    account_id: str
    project: str | None
    device_id: str
    connected: bool
    ts: float

    @property
    def subject(self) -> str:
        return subject_of(self.kind, self.account_id, self.project, self.device_id)


@dataclass(frozen=True, slots=True)
class EventRecorded:
    """An event was stored (connection state, twin change, lifecycle, rejected telemetry)."""

    kind: ClassVar[str] = "event"
    account_id: str
    project: str | None
    device_id: str
    event: Event

    @property
    def subject(self) -> str:
        return subject_of(self.kind, self.account_id, self.project, self.device_id)


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """A device's (or module's) record was created, updated or deleted: caches on every node
    drop it."""

    kind: ClassVar[str] = "device"
    account_id: str
    project: str | None
    device_id: str
    operation: Literal["created", "updated", "deleted"]

    @property
    def subject(self) -> str:
        return subject_of(self.kind, self.account_id, self.project, self.device_id)


LiveEvent = TelemetryReceived | TwinChanged | ConnectionChanged | EventRecorded | DeviceChanged
