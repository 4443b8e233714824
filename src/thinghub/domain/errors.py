"""Domain errors: one base, a few kinds, each naming the bad value; faces translate them once."""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "DeviceOffline",
    "Error",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "TimedOut",
    "TooLarge",
    "Unauthorized",
]


class Error(Exception):
    """Base of every error a user can cause. `code` is stable and shown on the wire."""

    code = "Error"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class Invalid(Error):
    """The input is malformed or does not satisfy a rule; `field` names it."""

    code = "InvalidInput"


class Unauthorized(Error):
    """No credential, or one that does not authenticate."""

    code = "Unauthorized"


class Forbidden(Error):
    """Authenticated, but the role does not allow the action."""

    code = "Forbidden"


class NotFound(Error):
    """No such thing, or not visible to this principal (other accounts look absent)."""

    code = "NotFound"


class Conflict(Error):
    """It already exists, or a concurrent change won."""

    code = "Conflict"


class PreconditionFailed(Error):
    """A conditional request (If-Match) named a state the thing is no longer in."""

    code = "PreconditionFailed"


class TooLarge(Error):
    """A payload is over a named limit."""

    code = "PayloadTooLarge"


class DeviceOffline(Error):
    """The device is not connected, so an awaited command cannot reach it."""

    code = "DeviceNotOnline"


class TimedOut(Error):
    """The device did not answer within the timeout."""

    code = "GatewayTimeout"


class RateLimited(Error):
    """Too many requests or connections; a named limit was hit."""

    code = "TooManyRequests"
