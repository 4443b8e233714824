"""Signing in and out of the console.

The login form posts a user name and password; services.auth's password grant checks them
and issues the access token the session keeps (see sessions.py for the session's life).
Showing the form stores nothing: its cookie is a random form id and its CSRF token the HMAC
of that id (sessions.form_csrf); only a successful sign-in writes a session.
Failed logins are limited per user name and per client address (LoginFailures): past the
limit the form answers 429 without checking the password.
"""

from __future__ import annotations

import hmac
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from thinghub.domain.errors import Unauthorized
from thinghub.faces.console.sessions import form_id_alive, new_form_id, new_session
from thinghub.faces.console.web import (
    COOKIE,
    PREFIX,
    Console,
    CsrfRefused,
    LoginRequired,
    form_field,
    read_form,
    safe_next,
)

__all__ = ["routes"]

logger = logging.getLogger(__name__)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def login_form(request: Request) -> Response:
    console = _console(request)
    try:
        await console.caller(request)
    except LoginRequired:
        pass
    else:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return await _show_form(console, request, error=None, status=200)


async def _show_form(
    console: Console, request: Request, *, error: str | None, status: int, username: str = ""
) -> Response:
    now = console.now()
    form_id = request.cookies.get(COOKIE, "")
    if not form_id_alive(form_id, now):
        form_id = new_form_id(now)
    response = console.render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "error": error,
            "username": username,
            "next": safe_next(request.query_params.get("next")),
            "csrf": await console.form_csrf(form_id),
        },
        status=status,
    )
    console.set_cookie(request, response, form_id)
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def login(request: Request) -> Response:
    console = _console(request)
    if not console.same_origin(request):
        raise CsrfRefused("this sign-in came from another site")
    form = await read_form(request)
    form_id = request.cookies.get(COOKIE, "")
    if not form_id_alive(form_id, console.now()) or not hmac.compare_digest(
        form.get("csrf", "").encode(), (await console.form_csrf(form_id)).encode()
    ):
        raise CsrfRefused("the sign-in form expired; reload it and try again")
    username = form_field(form, "username", max_chars=200)
    password = form.get("password", "")
    client = _client(request)
    now = console.now()
    if await console.logins.blocked(username, client, now):
        logger.warning("console: login of %r from %s refused: too many failures", username, client)
        return await _show_form(
            console,
            request,
            error="Too many failed sign-ins. Wait a few minutes, then try again.",
            status=429,
            username=username,
        )
    try:
        if not username or not password or len(password) > 1000:
            raise Unauthorized("invalid username or password", field="username")
        token, ttl_s = await console.services.auth.password_grant(username, password)
        principal = await console.services.auth.authenticate_bearer(token)
    except Unauthorized:
        await console.logins.failed(username, client, now)
        logger.info("console: failed login of %r from %s", username, client)
        # 200, as a form shown again with its error: the page itself is fine (a 401 would
        # also need a WWW-Authenticate challenge that no browser form answers).
        return await _show_form(
            console, request, error="Wrong user name or password.", status=200, username=username
        )
    await console.logins.succeeded(username)
    # A new session id and CSRF token: the form id the browser had is worth nothing after.
    signed_in = new_session(
        now,
        now + ttl_s,
        access_token=token,
        user_id=principal.subject,
        username=username,
    )
    await console.store.put(signed_in)
    logger.info("console: %s signed in (role %s)", username, principal.role.value)
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    console.set_cookie(request, response, signed_in.id)
    return response


async def logout(request: Request) -> Response:
    console = _console(request)
    caller, _ = await console.changing(request)
    await console.store.delete(caller.session.id)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    console.clear_cookie(request, response)
    return response


async def index(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/devices", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
