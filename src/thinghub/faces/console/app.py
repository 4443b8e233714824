"""The console's ASGI app: its routes, static files, error pages and security headers.

Pages are HTML; errors are too: a domain error is a page with the status of the REST faces
(http_errors), no session is a redirect to the login form (a page) or 403 (a change), a
failed CSRF check is 403 and changes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thinghub.config import Settings
from thinghub.domain.errors import Error, Forbidden
from thinghub.faces._http import status_of
from thinghub.faces.console import admin, devices, live, login
from thinghub.faces.console.sessions import SessionStore, SharedSessionStore
from thinghub.faces.console.web import Console, CsrfRefused, LoginRequired, login_redirect
from thinghub.services.core import Services

__all__ = [
    "STATIC",
    "VENDOR_FILES",
    "create_app",
    "has_chart_assets",
    "render_not_found",
    "shared_store",
]

logger = logging.getLogger(__name__)

STATIC = Path(str(files("thinghub.faces.console"))) / "static"
# Built at install time from the pinned npm packages (scripts/console_assets.py).
VENDOR_FILES = ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "Too large",
    429: "Too many requests",
    504: "No answer in time",
}


def has_chart_assets(static: Path = STATIC) -> bool:
    return all((static / name).is_file() for name in VENDOR_FILES)


def _csp(host: str) -> str:
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' ws://{host} wss://{host}",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "object-src 'none'",
        )
    )


class SecurityHeaders:
    """ASGI middleware: every console response gets a strict Content-Security-Policy (no
    inline script or style, nothing from other sites), no framing, no sniffing; pages (not
    the static files) are never cached, since they may show a key once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        is_static = scope.get("path", "").startswith("/static/") or "/static/" in scope.get(
            "path", ""
        )

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [
                    (b"content-security-policy", _csp(host).encode("latin-1")),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if not is_static:
                    headers.append((b"cache-control", b"no-store"))
            await send(message)

        await self.app(scope, receive, with_headers)


def _handlers(console: Console) -> dict[Any, Callable[[Request, Exception], Any]]:
    async def on_login(request: Request, exc: Exception) -> Response:
        if request.method in ("GET", "HEAD"):
            return login_redirect(request)
        return console.error_page(request, 403, "Not allowed", "Your session has ended.")

    async def on_csrf(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CsrfRefused)
        logger.warning("console: refused a change to %s: %s", request.url.path, exc.reason)
        return console.error_page(request, 403, "Refused", exc.reason)

    async def on_domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Error)
        status = status_of(exc)
        title = _TITLES.get(status, "Error")
        message = exc.message
        if isinstance(exc, Forbidden):
            message = f"Your role may not do this: {exc.message}"
        return console.error_page(request, status, title, message)

    async def on_http(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "There is no such page." if status == 404 else "That does not work here."
        return console.error_page(request, status, _TITLES.get(status, "Error"), message)

    async def on_crash(request: Request, exc: Exception) -> Response:
        logger.exception("console: unhandled error on %s", request.url.path)
        return console.error_page(
            request, 500, "Something went wrong", "An internal error; it has been logged."
        )

    return {
        LoginRequired: on_login,
        CsrfRefused: on_csrf,
        Error: on_domain,
        HTTPException: on_http,
        404: on_http,
        405: on_http,
        Exception: on_crash,
    }


def shared_store(services: Services, settings: Settings) -> SharedSessionStore:
    """The console's sessions in the database, as every node sees them."""
    return SharedSessionStore(
        services.console_sessions,
        idle_s=settings.console_session_idle_s,
        max_sessions=settings.console_max_sessions,
        failure_window_s=settings.console_login_window_s,
    )


def create_app(
    services: Services,
    settings: Settings,
    *,
    store: SessionStore | None = None,
    addresses: Callable[[], Mapping[str, Any]] = dict,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The console app (mounted at /console). `store` defaults to the database's
    (`shared_store`)."""
    chart = has_chart_assets()
    if not chart:
        logger.warning(
            "console: the chart files are missing from %s (build them with "
            "`python3 scripts/console_assets.py`, which `pip install .` runs); plots are off",
            STATIC / "vendor",
        )
    console = Console(
        services,
        settings,
        store or shared_store(services, settings),
        addresses=addresses,
        has_chart=chart,
        clock=clock,
    )
    app = Starlette(
        routes=[
            *login.routes(),
            *devices.routes(),
            *admin.routes(),
            *live.routes(),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers=_handlers(console),
    )
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    return app


def render_not_found(error: Error, status: int) -> Response:
    """404 and 405 under /console that no route takes, as a plain page."""
    del error
    title = _TITLES.get(status, "Error")
    return HTMLResponse(
        f"<!doctype html><title>{title}</title><h1>{title}</h1>"
        '<p><a href="/console/devices">Back to the console</a></p>',
        status_code=status,
    )
