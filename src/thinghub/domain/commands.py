"""Commands: one model, two modes. Awaited = direct method; queued = status lifecycle.

Queued status moves Pending -> Completed | Failed | TimedOut | Expired, never back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from thinghub.domain.errors import Conflict

__all__ = ["Command", "CommandMode", "CommandStatus"]


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
