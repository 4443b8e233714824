"""Abandoned requests: a GET whose client goes away is cancelled, with the query it awaits.

Theory of operation: Starlette and FastAPI notice that a client left only when they next read
from it, which a GET handler never does; a slow telemetry query would run to its end for
nobody (issue 7 saw one run 650 s). Here the request's task runs the handler while a watcher
task waits on the server's `receive()`: a GET has no body, so the server's first message is
the empty request (kept for the handler, should it ask), and the next one comes only when the
client disconnects or the response is complete. On a disconnect before the response is
complete, the watcher cancels the request's task; the CancelledError reaches what the handler
awaits (the database drivers stop the statement then, see storage/database.py) and is
absorbed here, answering nothing to nobody.

Only GET and HEAD are watched: they change nothing, so stopping one halfway leaves nothing
half done. A request that changes state runs to its end even if its client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CancelOnDisconnect"]

logger = logging.getLogger(__name__)

WATCHED_METHODS = frozenset({"GET", "HEAD"})


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"


class CancelOnDisconnect:
    """ASGI middleware: cancel a GET or HEAD whose client disconnects before the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WATCHED_METHODS or _has_body(scope):
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - ASGI servers always run requests in tasks
            await self.app(scope, receive, send)
            return
        first: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        gone = asyncio.Event()
        given = answered = finished = abandoned = False

        async def watch() -> None:
            nonlocal abandoned
            first.set_result(await receive())
            while (await receive())["type"] != "http.disconnect":
                pass  # a bodiless request has nothing more to read
            gone.set()
            if not answered and not finished:
                abandoned = True
                task.cancel()

        async def app_receive() -> Message:
            nonlocal given
            if not given:
                given = True
                return await first
            await gone.wait()
            return {"type": "http.disconnect"}

        async def app_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True  # before the server marks the response complete
            await send(message)

        watcher = asyncio.create_task(watch(), name=f"http.watch[{scope['path']}]")
        try:
            try:
                await self.app(scope, app_receive, app_send)
            finally:
                finished = True  # no await since: the watcher cannot cancel a finished task
        except asyncio.CancelledError:
            if not abandoned or task.uncancel() > 0:
                raise  # not (only) ours: shutdown, or an outer timeout
            logger.debug("%s %s: the client went away; request cancelled",
                         scope["method"], scope["path"])  # fmt: skip
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
