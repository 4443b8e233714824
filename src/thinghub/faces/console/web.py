"""The console's request plumbing: sessions and their cookie, who is calling, CSRF and
same-origin checks, form bodies, and rendering pages.

Every page is rendered on the server (Jinja2, autoescaped). Every change is a POST of an
HTML form carrying the session's CSRF token; `changing` refuses one that does not (403)
before any service is called. Who the caller is comes from the session's access token,
presented to services.auth on every request, so the console's roles are the services' own.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from thinghub.config import Settings
from thinghub.domain.errors import Invalid, TooLarge, Unauthorized
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.faces._http import api_base_url
from thinghub.faces.console.sessions import (
    ConsoleSession,
    Flash,
    LoginFailures,
    SessionStore,
    form_csrf,
    is_form_id,
)
from thinghub.services.authz import may
from thinghub.services.core import Services

__all__ = [
    "COOKIE",
    "Caller",
    "Console",
    "CsrfRefused",
    "LoginRequired",
    "form_field",
]

logger = logging.getLogger(__name__)

COOKIE = "thinghub_console"
PREFIX = "/console"
# Forms are small (a twin patch is at most 32 KiB of JSON, a C2D message 64 KiB); their
# URL-encoded bodies may take three bytes a character.
MAX_FORM_BYTES = 262_144
FORM_TYPE = "application/x-www-form-urlencoded"


class LoginRequired(Exception):
    """No live session: a page redirects to the login form (a WebSocket closes)."""


class CsrfRefused(Exception):
    """A change without the session's CSRF token, or from another site: 403, nothing done."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Caller:
    """A signed-in request: its session and the principal the services see."""

    session: ConsoleSession
    principal: Principal

    @property
    def can_write(self) -> bool:
        """Whether to show the forms that change devices (the services decide anyway)."""
        return may(self.principal, Permission.DEVICES_WRITE)

    @property
    def can_admin(self) -> bool:
        """Whether to show the tokens and users pages (the services decide anyway)."""
        return may(self.principal, Permission.TOKENS_ADMIN)


def form_field(form: Mapping[str, str], name: str, *, max_chars: int = 1000) -> str:
    """A form field's text (stripped), "" when absent; Invalid past `max_chars`."""
    value = form.get(name, "")
    if len(value) > max_chars:
        raise Invalid(f"{name} is longer than {max_chars} characters", field=name)
    return value.strip()


class Console:
    """What every console route needs: the services, the settings, the session store, the
    page renderer and the clock."""

    def __init__(
        self,
        services: Services,
        settings: Settings,
        store: SessionStore,
        *,
        addresses: Callable[[], Mapping[str, Any]],
        has_chart: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.settings = settings
        self.store = store
        self.addresses = addresses
        self.has_chart = has_chart
        self.now = clock
        self.logins = LoginFailures(store, settings.console_login_failures)
        self.templates = Environment(
            loader=PackageLoader("thinghub.faces.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- sessions and callers -----------------------------------------------------------

    async def session(self, conn: HTTPConnection) -> ConsoleSession | None:
        """The request's live session (anonymous or signed in), else None."""
        session_id = conn.cookies.get(COOKIE)
        if not session_id or len(session_id) > 200 or is_form_id(session_id):
            return None  # a login form's id is no session (and never stored)
        return await self.store.get(session_id, self.now())

    async def caller(self, conn: HTTPConnection) -> Caller:
        """The signed-in caller; LoginRequired when there is none (or its token died)."""
        session = await self.session(conn)
        if session is None or session.access_token is None:
            raise LoginRequired
        try:
            principal = await self.services.auth.authenticate_bearer(session.access_token)
        except Unauthorized as exc:
            await self.store.delete(session.id)
            raise LoginRequired from exc
        now = self.now()
        if now - session.seen_at >= 1.0:  # touch (the idle clock), at most once a second
            session = replace(session, seen_at=now)
            await self.store.put(session)
        return Caller(session, principal)

    async def flash(self, caller: Caller, flash: Flash) -> None:
        session = await self.store.get(caller.session.id, self.now()) or caller.session
        await self.store.put(session.with_flash(flash))

    async def take_flashes(self, session: ConsoleSession) -> tuple[Flash, ...]:
        if not session.flashes:
            return ()
        current = await self.store.get(session.id, self.now()) or session
        await self.store.put(replace(current, flashes=()))
        return current.flashes

    async def form_csrf(self, form_id: str) -> str:
        """The login form's CSRF token for the form id in its cookie (sessions.form_csrf)."""
        return form_csrf(await self.services.console_sessions.form_key(), form_id)

    def set_cookie(self, request: Request, response: Response, value: str) -> None:
        """The console cookie: a session's id, or a login form's id."""
        response.set_cookie(
            COOKIE,
            value,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.is_tls(request),
        )

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=PREFIX, httponly=True, samesite="strict", secure=self.is_tls(request)
        )

    def is_tls(self, conn: HTTPConnection) -> bool:
        """Served over TLS: the request came over https (or wss), or the public URL is https
        (TLS ends at a proxy in front)."""
        public = self.settings.public_url
        return conn.url.scheme in ("https", "wss") or (
            public is not None and public.startswith("https:")
        )

    def base_url(self, request: Request) -> str:
        """This server's base URL as the browser reaches it (the public URL when set)."""
        host = request.headers.get("host", "")
        return self.settings.public_url or f"{request.url.scheme}://{host}"

    def api_base_url(self, request: Request) -> str:
        """Where the browser's machine reaches the API faces (faces._http.api_base_url):
        the public URL when set, else the shared HTTP port (a console on a port of its own
        is not that port), with the host name the browser used."""
        return api_base_url(request, self.settings, self.addresses(), trust_host=True)

    # -- same origin and CSRF --------------------------------------------------------------

    def same_origin(self, conn: HTTPConnection) -> bool:
        """Whether the browser says the request comes from this site: `Sec-Fetch-Site` is not
        cross-site, and `Origin`, when sent, is this server's (its Host, or the public URL)."""
        if conn.headers.get("sec-fetch-site", "same-origin") == "cross-site":
            return False
        origin = conn.headers.get("origin")
        if origin is None:
            return True  # old browsers omit it on same-origin posts; the token still counts
        host = conn.headers.get("host", "")
        allowed = {f"http://{host}", f"https://{host}"}
        if self.settings.public_url is not None:
            parts = urlsplit(self.settings.public_url)
            allowed.add(f"{parts.scheme}://{parts.netloc}")
        return origin in allowed

    async def changing(self, request: Request) -> tuple[Caller, dict[str, str]]:
        """A signed-in caller's change: its form, once the origin and CSRF token check out.

        Raises:
            CsrfRefused: another site, no session, or a missing or wrong token (403).
        """
        if not self.same_origin(request):
            raise CsrfRefused("this change came from another site")
        try:
            caller = await self.caller(request)
        except LoginRequired as exc:
            raise CsrfRefused("your session has ended; sign in again") from exc
        form = await read_form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), caller.session.csrf.encode()):
            raise CsrfRefused("the form's security token is missing or stale; reload the page")
        return caller, form

    # -- rendering ------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        session: ConsoleSession | None = None,
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            {
                "prefix": PREFIX,
                "path": request.url.path,
                "session": session,
                "csrf": session.csrf if session is not None else "",
                **context,
            }
        )
        return HTMLResponse(html, status_code=status)

    async def page(
        self,
        request: Request,
        caller: Caller,
        name: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
    ) -> HTMLResponse:
        """A signed-in page: the layout's navigation, the caller, and its pending flashes."""
        flashes = await self.take_flashes(caller.session)
        return self.render(
            request,
            name,
            {"caller": caller, "flashes": flashes, **context},
            status=status,
            session=caller.session,
        )

    def error_page(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(
            request, "error.html", {"title": title, "message": message}, status=status
        )


def login_redirect(request: Request) -> RedirectResponse:
    """To the login form, coming back here afterwards (GET pages only)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after login: a console path only (never another site)."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and all(ch.isprintable() for ch in value)
    ):
        return value
    return f"{PREFIX}/devices"


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, at most MAX_FORM_BYTES; the first value of
    each field.

    Raises:
        Invalid: another content type, or not UTF-8.
        TooLarge: a longer body.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise Invalid(f"a change is a form post ({FORM_TYPE})", field="Content-Type")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise TooLarge(f"the form is over {MAX_FORM_BYTES} bytes", field="body")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError as exc:
        raise Invalid("the form is not UTF-8", field="body") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form
