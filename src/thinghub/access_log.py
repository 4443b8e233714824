"""The request log and response counts of an HTTP listener: one ASGI middleware.

Each HTTP request gets a note in its scope (faces._http.REQUEST_NOTE_KEY) that the face which
authenticates the caller fills with the principal's id. When the response is over (a stream:
when it ends), the middleware counts it for /metrics and, with `access_log` on, logs one line
on the `thinghub.access` logger: method, path (never the query string, where a client might
put a credential), status, duration, face, principal id and the error code of an error
answer (which the face's error handlers note in the scope too). Control characters in the path
are escaped, so a line is always one line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thinghub.faces._http import REQUEST_NOTE_KEY

__all__ = ["RequestLog"]

logger = logging.getLogger("thinghub.access")

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\s]")


def _printable(path: str) -> str:
    return _UNPRINTABLE.sub(lambda m: "%" + "%".join(f"{b:02X}" for b in m[0].encode()), path)


class RequestLog:
    def __init__(
        self,
        app: ASGIApp,
        *,
        listener: str,
        face_of: Callable[[str], str],
        count: Callable[[str, str, int, str | None], None],
        log: bool,
    ) -> None:
        self.app = app
        self.listener = listener
        self.face_of = face_of
        self.count = count
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        note: dict[str, Any] = {}
        scope[REQUEST_NOTE_KEY] = note
        status = 500  # what a request that fails before it answers gets

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            face = self.face_of(path)
            error = note.get("error")
            self.count(self.listener, face, status, error)
            if self.log:
                ms = (time.perf_counter() - started) * 1000
                principal = note.get("principal") or "-"
                shown = _printable(path)
                method = scope.get("method", "")
                logger.info(
                    "%s %s %d %.1fms face=%s principal=%s%s",
                    method,
                    shown,
                    status,
                    ms,
                    face,
                    principal,
                    f" error={error}" if error else "",
                    extra={
                        "fields": {
                            "method": method,
                            "path": shown,
                            "status": status,
                            "duration_ms": round(ms, 3),
                            "face": face,
                            "principal": note.get("principal"),
                            "error": error,
                            "listener": self.listener,
                        }
                    },
                )
