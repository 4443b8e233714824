"""`thinghub ux4iot key create|list|rotate|revoke`: the ux4iot face's Shared-Access-Keys,
offline (on the data directory's store, through the services).

`create` and `rotate` print the connection string a ux4iot client is given (the key's id goes
to stderr), or with `--json` an object with both. A running server forgets a revoked key
within 5 s (its token cache).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from thinghub.cli._common import (
    account_option,
    data_dir_option,
    database_option,
    emit,
    json_option,
    load,
    operator,
    reachable,
    run_offline,
    setting_option,
)

if TYPE_CHECKING:
    from thinghub.config import Settings
    from thinghub.domain.model import Principal
    from thinghub.services.core import Services

__all__ = ["register"]

T = TypeVar("T")


def _endpoint(settings: Settings) -> str:
    """The Endpoint of a connection string: public_url, or this machine's HTTP port."""
    if settings.public_url:
        return settings.public_url + "/ux4iot"
    return f"http://{reachable(settings.host)}:{settings.http_port}/ux4iot"


def _as_admin(
    settings: Settings, account: str, work: Callable[[Services, Principal], Awaitable[T]]
) -> T:
    from thinghub.domain.errors import Error

    async def go(services: Services) -> T:
        _, principal = await operator(services, account)
        try:
            return await work(services, principal)
        except Error as exc:
            raise click.ClickException(exc.message) from exc

    return run_offline(settings, go)


def _print_key(key_id: str, connection: str, *, as_json: bool) -> None:
    if as_json:
        emit({"id": key_id, "connectionString": connection}, as_json=True)
    else:
        click.echo(f"key id: {key_id}", err=True)
        click.echo(connection)


@click.group()
def ux4iot() -> None:
    """The ux4iot face: Shared-Access-Keys and their connection strings."""


@ux4iot.group("key")
def key() -> None:
    """Shared-Access-Keys of an account (stored hashed; a key is shown only when created or
    rotated)."""


@key.command("create")
@account_option
@click.option("--label", default="", help="A note to tell keys apart.")
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@json_option
@data_dir_option
@database_option
@click.pass_context
def key_create(
    ctx: click.Context, /, account: str, label: str, as_json: bool, **options: Any
) -> None:
    """Create a key and print its connection string (shown only this once); the key's id
    goes to stderr."""
    settings = load(ctx, **options)

    async def work(services: Services, principal: Principal) -> tuple[str, str]:
        issued = await services.auth.create_face_key(principal, "ux4iot", label=label)
        return issued.token.id, issued.secret

    key_id, secret = _as_admin(settings, account, work)
    _print_key(key_id, f"Endpoint={_endpoint(settings)};SharedAccessKey={secret}", as_json=as_json)


@key.command("list")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def key_list(ctx: click.Context, /, account: str, as_json: bool, **options: Any) -> None:
    """List the account's keys (id, label, createdAt), never their secrets."""
    from thinghub.domain.clock import format_ts

    settings = load(ctx, **options)

    async def work(services: Services, principal: Principal) -> list[dict[str, Any]]:
        keys = await services.auth.list_face_keys(principal, "ux4iot")
        return [{"id": k.id, "label": k.label, "createdAt": format_ts(k.created_at)} for k in keys]

    emit(_as_admin(settings, account, work), as_json=as_json, columns=("id", "label", "createdAt"))


@key.command("rotate")
@click.argument("key_id")
@account_option
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@json_option
@data_dir_option
@database_option
@click.pass_context
def key_rotate(
    ctx: click.Context, /, key_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Give a key a new secret (the old one stops working) and print the connection string."""
    settings = load(ctx, **options)

    async def work(services: Services, principal: Principal) -> tuple[str, str]:
        issued = await services.auth.rotate_face_key(principal, "ux4iot", key_id)
        return issued.token.id, issued.secret

    new_id, secret = _as_admin(settings, account, work)
    _print_key(new_id, f"Endpoint={_endpoint(settings)};SharedAccessKey={secret}", as_json=as_json)


@key.command("revoke")
@click.argument("key_id")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def key_revoke(
    ctx: click.Context, /, key_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Revoke a key: calls with it get 401 (a running server forgets it within 5 s)."""
    settings = load(ctx, **options)

    async def work(services: Services, principal: Principal) -> None:
        await services.auth.revoke_face_key(principal, "ux4iot", key_id)

    _as_admin(settings, account, work)
    emit({"revoked": key_id}, as_json=as_json)


def register(cli: click.Group) -> None:
    cli.add_command(ux4iot)
