"""Console pages of an account's administration: API tokens (list, create with the secret
shown once, revoke), ux4iot Shared-Access-Keys (the same, with their connection string),
users (list, create, delete) and device templates (list, view).

Tokens and users are the admin's (services.auth refuses other roles); templates are seen by
every role.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from thinghub.domain.dtdl.schemas import describe
from thinghub.domain.errors import Conflict, Error, Forbidden, Invalid
from thinghub.domain.model import Role
from thinghub.faces._http import status_of
from thinghub.faces.console.devices import console_of, run_change
from thinghub.faces.console.sessions import Flash
from thinghub.faces.console.views import pretty_json, show_time, ux4iot_endpoint
from thinghub.faces.console.web import PREFIX, Caller, Console, form_field

__all__ = ["routes"]

ROLES = tuple(role.value for role in Role)
DAY_S = 86_400.0
UX4IOT_FACE = "ux4iot"  # the face whose Shared-Access-Keys the tokens page manages
MAX_TOKEN_DAYS = 3650


# -- API tokens -----------------------------------------------------------------------------


def _role(form: Mapping[str, str]) -> str:
    """The form's `role`, one of ROLES (a 400 naming the field otherwise)."""
    role = form_field(form, "role", max_chars=20)
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


async def _tokens_page(
    request: Request, caller: Caller, *, form: dict[str, str] | None = None,
    error: str | None = None, key_error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    console = console_of(request)
    tokens = await console.services.auth.list_tokens(caller.principal)
    rows = [
        {
            "token": t,
            "created": show_time(t.created_at),
            "expires": show_time(t.expires_at) if t.expires_at is not None else "never",
        }
        for t in tokens
    ]
    keys = [
        {"token": k, "created": show_time(k.created_at)}
        for k in await console.services.auth.list_face_keys(caller.principal, UX4IOT_FACE)
    ]
    return await console.page(
        request,
        caller,
        "tokens.html",
        {"title": "API tokens", "rows": rows, "keys": keys, "roles": ROLES,
         "form": form or {}, "error": error, "key_error": key_error,
         "ux4iot_endpoint": ux4iot_endpoint(console.api_base_url(request))},
        status=status,
    )  # fmt: skip


async def list_tokens(request: Request) -> Response:
    caller = await console_of(request).caller(request)
    return await _tokens_page(request, caller)


async def create_token(request: Request) -> Response:
    console = console_of(request)
    caller, form = await console.changing(request)
    principal = caller.principal
    try:
        role = _role(form)
        label = form_field(form, "label", max_chars=200)
        days_text = form_field(form, "days", max_chars=10)
        expires_at = None
        if days_text:
            try:
                days = float(days_text)
            except ValueError as exc:
                raise Invalid("expiry days is a number", field="days") from exc
            if not 0 < days <= MAX_TOKEN_DAYS:
                raise Invalid(f"expiry days is 1 to {MAX_TOKEN_DAYS}", field="days")
            expires_at = console.now() + days * DAY_S
        # The auth service decides who may mint tokens, and for which project.
        issued = await console.services.auth.issue_token(
            principal, Role(role), label=label, expires_at=expires_at
        )
    except Forbidden:
        raise
    except Error as exc:
        return await _tokens_page(
            request, caller, form=form, error=exc.message, status=status_of(exc)
        )
    return await console.page(
        request,
        caller,
        "token_created.html",
        {"title": "API token created", "token": issued.token, "secret": issued.secret,
         "expires": show_time(issued.token.expires_at) if issued.token.expires_at else "never"},
        status=201,
    )  # fmt: skip


async def revoke_token(request: Request) -> Response:
    token_id = request.path_params["token_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        auth = console.services.auth
        token = await auth.get_token(caller.principal, token_id)  # 403, or 404 out of reach
        await auth.revoke(caller.principal, token.id)
        return Flash("ok", f"Token {token.label or token.id} revoked.")

    return await run_change(request, act, back=f"{PREFIX}/tokens")


# -- ux4iot Shared-Access-Keys --------------------------------------------------------------


async def create_ux4iot_key(request: Request) -> Response:
    console = console_of(request)
    caller, form = await console.changing(request)
    try:
        label = form_field(form, "label", max_chars=200)
        issued = await console.services.auth.create_face_key(
            caller.principal, UX4IOT_FACE, label=label
        )
    except Forbidden:
        raise
    except Error as exc:
        return await _tokens_page(request, caller, key_error=exc.message, status=status_of(exc))
    endpoint = ux4iot_endpoint(console.api_base_url(request))
    return await console.page(
        request,
        caller,
        "ux4iot_key_created.html",
        {"title": "ux4iot key created", "token": issued.token, "secret": issued.secret,
         "endpoint": endpoint,
         "connection_string": f"Endpoint={endpoint};SharedAccessKey={issued.secret}"},
        status=201,
    )  # fmt: skip


async def revoke_ux4iot_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        await console.services.auth.revoke_face_key(caller.principal, UX4IOT_FACE, key_id)
        return Flash("ok", f"ux4iot key {key_id} revoked.")

    return await run_change(request, act, back=f"{PREFIX}/tokens#ux4iot-keys")


# -- users ----------------------------------------------------------------------------------


async def _users_page(
    request: Request, caller: Caller, *, form: dict[str, str] | None = None,
    error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    console = console_of(request)
    users = await console.services.auth.list_users(caller.principal)
    rows = [{"user": u, "created": show_time(u.created_at)} for u in users]
    return await console.page(
        request,
        caller,
        "users.html",
        {"title": "Users", "rows": rows, "roles": ROLES, "form": form or {}, "error": error},
        status=status,
    )


async def list_users(request: Request) -> Response:
    caller = await console_of(request).caller(request)
    return await _users_page(request, caller)


async def create_user(request: Request) -> Response:
    console = console_of(request)
    caller, form = await console.changing(request)
    principal = caller.principal
    try:
        role = _role(form)
        password = form.get("password", "")
        if len(password) > 1000:
            raise Invalid("the password is longer than 1000 characters", field="password")
        user = await console.services.auth.add_user(
            principal, form_field(form, "username", max_chars=200), password, Role(role)
        )
    except Forbidden:
        raise
    except Conflict as exc:
        return await _users_page(request, caller, form=form, error=exc.message, status=409)
    except Error as exc:
        return await _users_page(
            request, caller, form=form, error=exc.message, status=status_of(exc)
        )
    await console.flash(caller, Flash("ok", f"User {user.username} ({user.role.value}) created."))
    return RedirectResponse(f"{PREFIX}/users", status_code=303)


async def delete_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]

    async def act(console: Console, caller: Caller, form: dict[str, str]) -> Flash:
        # services.auth ends the user's console sessions too, on every node.
        user = await console.services.auth.delete_user(caller.principal, user_id)
        return Flash("ok", f"User {user.username} deleted; its console sessions have ended.")

    return await run_change(request, act, back=f"{PREFIX}/users")


# -- device templates -----------------------------------------------------------------------


async def list_templates(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    templates = await console.services.templates.list(caller.principal)
    rows = [
        {
            "template": t,
            "telemetry": len(t.model.telemetry),
            "properties": len(t.model.properties),
            "commands": len(t.model.commands),
            "components": len(t.model.components),
            "updated": show_time(t.updated_at),
        }
        for t in sorted(templates, key=lambda t: t.id)
    ]
    return await console.page(
        request, caller, "templates.html", {"title": "Device templates", "rows": rows}
    )


async def view_template(request: Request) -> Response:
    console = console_of(request)
    caller = await console.caller(request)
    template = await console.services.templates.get(
        caller.principal, request.path_params["template_id"]
    )
    interfaces = []
    for component, iface in [(None, template.model), *template.model.components.items()]:
        interfaces.append(
            {
                "component": component,
                "telemetry": [
                    (t.name, describe(t.schema), t.unit) for t in iface.telemetry.values()
                ],
                "properties": [
                    (p.name, describe(p.schema), p.writable, p.unit)
                    for p in iface.properties.values()
                ],
                "commands": [
                    (
                        c.name,
                        describe(c.request.schema) if c.request else "—",
                        describe(c.response.schema) if c.response else "—",
                    )
                    for c in iface.commands.values()
                ],
            }
        )
    return await console.page(
        request,
        caller,
        "template.html",
        {
            "title": template.display_name or template.id,
            "template": template,
            "interfaces": interfaces,
            "document": pretty_json(template.document),
            "updated": show_time(template.updated_at),
        },
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/tokens", list_tokens, methods=["GET"]),
        Route("/tokens", create_token, methods=["POST"]),
        Route("/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
        Route("/ux4iot-keys", create_ux4iot_key, methods=["POST"]),
        Route("/ux4iot-keys/{key_id}/revoke", revoke_ux4iot_key, methods=["POST"]),
        Route("/users", list_users, methods=["GET"]),
        Route("/users", create_user, methods=["POST"]),
        Route("/users/{user_id}/delete", delete_user, methods=["POST"]),
        Route("/templates", list_templates, methods=["GET"]),
        Route("/templates/{template_id}", view_template, methods=["GET"]),
    ]
