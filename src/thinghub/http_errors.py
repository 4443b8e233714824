"""Domain errors as HTTP statuses: the one mapping of the REST faces, each of which writes the
body in its own shape. (Devices are answered in their protocols' terms by devices/errors.py,
the HTTPS device ingest included.)"""

from __future__ import annotations

from thinghub.domain import errors

__all__ = ["STATUS_OF", "status_of"]

STATUS_OF: dict[type[errors.Error], int] = {
    errors.Invalid: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.DeviceOffline: 404,
    errors.Conflict: 409,
    errors.PreconditionFailed: 412,
    errors.TooLarge: 413,
    errors.RateLimited: 429,
    errors.TimedOut: 504,
}


def status_of(error: errors.Error) -> int:
    """The status of an error's class (or its nearest base class that has one); else 400."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 400
