"""`thinghub token`, `thinghub account` and `thinghub user`: credentials and tenants, offline
(on the data directory's store, through the services).

A running server sees what these change within 5 s (its token cache): a revoked token may
still be accepted for up to 5 s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from thinghub.cli._common import (
    account_option,
    data_dir_option,
    database_option,
    emit,
    init_option,
    json_option,
    load,
    operator,
    run_offline,
)
from thinghub.domain.model import Role

if TYPE_CHECKING:
    from thinghub.domain.model import ApiToken, Retention
    from thinghub.services.core import Services

__all__ = ["register"]

ROLES = click.Choice([role.value for role in Role])


def _time(ts: float | None) -> str | None:
    from thinghub.domain.clock import format_ts

    return None if ts is None else format_ts(ts)


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "role": token.face_role or token.role.value,
        "label": token.label,
        "project": token.project,
        "face": token.face,
        "createdAt": _time(token.created_at),
        "expiresAt": _time(token.expires_at),
    }


def _error(exc: Exception) -> click.ClickException:
    return click.ClickException(getattr(exc, "message", str(exc)))


# -- token ----------------------------------------------------------------------------------


@click.group()
def token() -> None:
    """API tokens (Bearer credentials of the REST faces)."""


@token.command("create")
@click.option("--role", type=ROLES, default="admin", show_default=True)
@account_option
@click.option("--label", default="", help="A note to tell tokens apart.")
@click.option("--project", default=None, help="Limit the token to this project.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the token (for scripts).")
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def token_create(
    ctx: click.Context,
    /,
    role: str,
    account: str,
    label: str,
    project: str | None,
    quiet: bool,
    as_json: bool,
    init: bool,
    **options: Any,
) -> None:
    """Create an API token and print its id and the token (shown only this once).

    The id is what the client-credentials grant calls client_id (the token is the secret).
    """
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)

    async def work(services: Services) -> dict[str, Any]:
        acct, _ = await operator(services, account)
        try:
            issued = await services.auth.create_token(
                acct.id, Role(role), label=label, project=project
            )
        except Error as exc:
            raise _error(exc) from exc
        return {"id": issued.token.id, "token": issued.secret, "account": acct.name} | {
            k: v for k, v in _token_json(issued.token).items() if k not in ("id", "face")
        }

    created = run_offline(settings, work, init=init)
    if quiet:
        click.echo(created["token"])
    else:
        emit(created, as_json=as_json)


@token.command("list")
@account_option
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def token_list(
    ctx: click.Context, /, account: str, as_json: bool, init: bool, **options: Any
) -> None:
    """List the account's API tokens (never their secrets)."""
    settings = load(ctx, **options)

    async def work(services: Services) -> list[dict[str, Any]]:
        _, principal = await operator(services, account)
        return [_token_json(t) for t in await services.auth.list_tokens(principal)]

    emit(
        run_offline(settings, work, init=init),
        as_json=as_json,
        columns=("id", "role", "label", "project", "face", "createdAt", "expiresAt"),
    )


@token.command("revoke")
@click.argument("token_id")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def token_revoke(
    ctx: click.Context, /, token_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Revoke an API token by its id: calls with it get 401 (a running server forgets it
    within 5 s)."""
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)

    async def work(services: Services) -> None:
        acct, _ = await operator(services, account)
        try:
            await services.auth.revoke_token(acct.id, token_id)
        except Error as exc:
            raise _error(exc) from exc

    run_offline(settings, work)
    emit({"revoked": token_id}, as_json=as_json)


# -- account --------------------------------------------------------------------------------


@click.group()
def account() -> None:
    """Accounts (tenants)."""


@account.command("create")
@click.argument("name")
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def account_create(
    ctx: click.Context, /, name: str, as_json: bool, init: bool, **options: Any
) -> None:
    """Create an account and print it (id, name, idScope)."""
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)

    async def work(services: Services) -> dict[str, str]:
        try:
            acct = await services.auth.create_account(name)
        except Error as exc:
            raise _error(exc) from exc
        return {"id": acct.id, "name": acct.name, "idScope": acct.id_scope}

    emit(run_offline(settings, work, init=init), as_json=as_json)


def _days_option(value: str | None) -> float | str | None:
    """A --*-days value: a number of days, or `default` (the server's setting)."""
    if value is None or value == "default":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of days or 'default'") from None


@account.command("retention")
@click.argument("name")
@click.option(
    "--telemetry-days",
    help="Days telemetry is kept (0 = forever, `default` = the server's setting).",
)
@click.option(
    "--events-days", help="Days events are kept (0 = forever, `default` = the server's setting)."
)
@click.option(
    "--files-days",
    help="Days device files are kept (0 = forever, `default` = the server's setting).",
)
@json_option
@data_dir_option
@database_option
@click.pass_context
def account_retention(
    ctx: click.Context,
    /,
    name: str,
    telemetry_days: str | None,
    events_days: str | None,
    files_days: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Show, or with options set, how long an account keeps telemetry, events and files."""
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)
    changes: dict[str, Any] = {}
    for key, raw in (
        ("telemetry_days", telemetry_days),
        ("events_days", events_days),
        ("files_days", files_days),
    ):
        value = _days_option(raw)
        if value is not None:
            changes[key] = None if value == "default" else value

    async def work(services: Services) -> dict[str, Any]:
        acct = await services.auth.find_account(name)
        if acct is None:
            raise click.ClickException(f"no account named {name!r}")
        try:
            if changes:
                view = await services.retention.set_account(acct.id, **changes)
            else:
                view = services.retention.view(acct)
        except Error as exc:
            raise _error(exc) from exc

        def days(r: Retention) -> dict[str, float | None]:
            return {
                "telemetryDays": r.telemetry_days,
                "eventsDays": r.events_days,
                "filesDays": r.files_days,
            }

        return {
            "name": acct.name,
            **days(view.effective),
            "account": days(view.account),
            "server": days(view.server),
        }

    emit(run_offline(settings, work), as_json=as_json)


# -- user -----------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Users (for the OAuth2 password grant)."""


@user.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", type=ROLES, default="operator", show_default=True)
@account_option
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def user_create(
    ctx: click.Context,
    /,
    username: str,
    password: str,
    role: str,
    account: str,
    as_json: bool,
    init: bool,
    **options: Any,
) -> None:
    """Create a user who can get access tokens with the password grant."""
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)

    async def work(services: Services) -> dict[str, Any]:
        acct, _ = await operator(services, account)
        try:
            created = await services.auth.create_user(acct.id, username, password, Role(role))
        except Error as exc:
            raise _error(exc) from exc
        return {"id": created.id, "username": username, "role": role, "account": acct.name}

    emit(run_offline(settings, work, init=init), as_json=as_json)


def register(cli: click.Group) -> None:
    for group in (token, account, user):
        cli.add_command(group)
