"""Commands: one model, two modes. Awaited = direct method; queued = status lifecycle.

Queued status moves Pending -> Completed | Failed | TimedOut | Expired, never back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from thinghub.domain.errors import Conflict, Invalid

__all__ = [
    "MAX_METHOD_NAME_CHARS",
    "METHOD_NAME_PATTERN",
    "Command",
    "CommandMode",
    "CommandStatus",
    "parse_method_name",
]

# A method (command) name becomes one MQTT topic level, $iothub/methods/POST/{name}/?$rid={id}.
# IoT Hub allows US-ASCII printable characters except the separators of its property rules
# ($ ( ) < > @ , ; : \ " / [ ] ? = { } SP HT; developer guide, "Understand and invoke direct
# methods"); MQTT also forbids the wildcards + and # in a topic name (MQTT 3.1.1 §4.7.1).
MAX_METHOD_NAME_CHARS = 128
METHOD_NAME_FORBIDDEN = frozenset('$()<>@,;:\\"/[]?={}+#')
# The same rule as a JSON Schema pattern, for the API documents.
METHOD_NAME_PATTERN = r"^[!%&'*\-.0-9A-Z^_`a-z|~]{1,128}$"


def parse_method_name(name: object, field: str = "name") -> str:
    """A direct method or command name, checked once for every face: 1 to 128 printable
    US-ASCII characters, none of METHOD_NAME_FORBIDDEN (so `component*command` is fine).

    Raises:
        Invalid: naming `field` and the bad value.
    """
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_METHOD_NAME_CHARS
        or any(not "!" <= ch <= "~" or ch in METHOD_NAME_FORBIDDEN for ch in name)
    ):
        raise Invalid(
            f"{field} must be 1 to {MAX_METHOD_NAME_CHARS} printable US-ASCII characters "
            f'without spaces or any of $ ( ) < > @ , ; : \\ " / [ ] ? = {{ }} + #, got {name!r}',
            field=field,
        )
    return name


class CommandMode(StrEnum):
    AWAITED = "awaited"
    QUEUED = "queued"


class CommandStatus(StrEnum):
    PENDING = "Pending"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    EXPIRED = "Expired"

    @property
    def is_final(self) -> bool:
        return self is not CommandStatus.PENDING


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    account_id: str
    device_id: str
    name: str
    payload: Any
    mode: CommandMode
    status: CommandStatus
    created_at: float
    expires_at: float
    response_timeout_s: float
    completed_at: float | None = None
    response_code: int | None = None
    result: Any = None

    def finish(
        self, status: CommandStatus, now: float, code: int | None = None, result: Any = None
    ) -> Command:
        if self.status.is_final:
            raise Conflict(f"command {self.id} is already {self.status}", field="status")
        if not status.is_final:
            raise ValueError("finish needs a final status")
        return replace(self, status=status, completed_at=now, response_code=code, result=result)
