"""Hot routes answered before the routing and middleware stack of the HTTP port, when they can.

Theory of operation. A request to the shared HTTP port goes through Starlette's root app (two
middleware layers, a router scanning every route), a Mount, the face's FastAPI app (its own
middleware layers, a second router, dependency resolution) before its handler runs: for
`GET /v1/devices/{id}`, whose answer comes from caches, that stack was three quarters of the
CPU per request (docs/performance.md, "HTTP"). A face may name a few read routes as
`FastRoute`s: `FastPath` sits right inside the request log (so every request is still
counted and logged) and gives a request whose method and path fit a FastRoute to its
`answer` first. A route at the root whose handler answers every outcome itself (the device
HTTPS ingest) may be a `FastEndpoint`: requests it matches go straight to it.

`answer` returns the JSON body of a 200, or None; it may raise. Anything but a body (an
unknown token, a device not found, a bug) sends the request on to the full stack, untouched,
which answers it as it always did: so every error keeps the face's shape, status and headers
by construction, and the fast path only ever gives the answers the face's own route gives
when all goes well. Only bodiless methods (GET) take it, so nothing was read from the client
when the full stack takes over. The 200 is written like the face's OrjsonResponse writes it
(content-length, content-type: application/json) in one send.

A fast GET is not watched for its client going away (faces._disconnect): it answers from
caches, at worst after one store read, so there is no long query to cancel.

A FastEndpoint skips the root app's router and middleware, so FastPath does what they would
have done for it: the path parameters go into the scope as Starlette's router puts them, and
an exception escaping the endpoint before it answered gets `crashed` (the root app's 500),
then goes on to the server, as Starlette's ServerErrorMiddleware does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thinghub.domain import errors

__all__ = ["FastAnswer", "FastEndpoint", "FastPath", "FastRoute", "header"]

logger = logging.getLogger(__name__)

# (the request's scope, the last path segment, as Starlette decodes it) -> body or None
FastAnswer = Callable[[Scope, str], Awaitable[bytes | None]]

CONTENT_TYPE = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class FastRoute:
    """`GET {face prefix}{prefix}{segment}`, where segment is one non-empty path segment."""

    method: str  # "GET" (a method without a body: see the module docstring)
    prefix: str  # under the face's prefix, e.g. "/devices/"
    answer: FastAnswer


@dataclass(frozen=True, slots=True)
class FastEndpoint:
    """A root route whose handler answers every outcome itself (see the module docstring)."""

    method: str
    match: Callable[[str], dict[str, str] | None]  # a path -> its path parameters, or None
    app: ASGIApp


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case), as Starlette decodes it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class FastPath:
    """ASGI: `routes` (full path prefix -> route) first, then `app` for everything else."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[tuple[str, FastRoute]],
        endpoints: Sequence[FastEndpoint] = (),
        crashed: ASGIApp | None = None,
    ) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.endpoints = tuple(endpoints)
        self.crashed = crashed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            path: str = scope["path"]
            for endpoint in self.endpoints:
                if method == endpoint.method:
                    params = endpoint.match(path)
                    if params is not None:
                        scope["path_params"] = params
                        await self._endpoint(endpoint.app, scope, receive, send)
                        return
            for prefix, route in self.routes:
                if method != route.method or not path.startswith(prefix):
                    continue
                segment = path[len(prefix) :]
                if not segment or "/" in segment:
                    continue
                try:
                    body = await route.answer(scope, segment)
                except errors.Error:
                    body = None  # the full stack answers it in the face's shape
                except Exception:
                    logger.warning("fast path of %s failed; the full stack answers", prefix,
                                   exc_info=True)  # fmt: skip
                    body = None
                if body is not None:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", str(len(body)).encode("ascii")),
                                CONTENT_TYPE,
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
                break
        await self.app(scope, receive, send)

    async def _endpoint(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await app(scope, receive, sending)
        except Exception:
            if not started and self.crashed is not None:
                await self.crashed(scope, receive, send)
            raise
