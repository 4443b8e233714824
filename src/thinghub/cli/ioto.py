"""`thinghub ioto product create|list|revoke`: the Ioto face's products, offline (on the data
directory's store, through the services).

A product is what an Ioto agent registers with (its device.json5 `product` token). `create`
prints the product token, shown only this once (the product's id goes to stderr), or with
`--json` an object with both.
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
    run_offline,
)

if TYPE_CHECKING:
    from thinghub.config import Settings
    from thinghub.services.core import Services

__all__ = ["register"]

T = TypeVar("T")


def _in_account(
    settings: Settings, account: str, work: Callable[[Services, str], Awaitable[T]]
) -> T:
    """Run `work(services, account_id)` offline; domain errors become CLI errors."""
    from thinghub.domain.errors import Error

    async def go(services: Services) -> T:
        acct = await services.auth.find_account(account)
        if acct is None:
            if account != "default":
                raise click.ClickException(f"no account named {account!r}")
            acct = await services.auth.ensure_account()
        try:
            return await work(services, acct.id)
        except Error as exc:
            raise click.ClickException(exc.message) from exc

    return run_offline(settings, go)


@click.group()
def ioto() -> None:
    """The Embedthis Ioto face."""


@ioto.group("product")
def product() -> None:
    """Ioto products: what devices register with (device.json5 `product`)."""


@product.command("create")
@click.argument("name")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def product_create(
    ctx: click.Context, /, name: str, account: str, as_json: bool, **options: Any
) -> None:
    """Create a product and print its token (shown only once). NAME is also the project its
    claimed devices go into. The product's id goes to stderr."""
    settings = load(ctx, **options)

    async def work(services: Services, account_id: str) -> tuple[str, str]:
        made, token = await services.products.create_in(account_id, name)
        return made.id, token

    product_id, token = _in_account(settings, account, work)
    if as_json:
        emit({"id": product_id, "name": name, "token": token}, as_json=True)
    else:
        click.echo(f"product {product_id}", err=True)
        click.echo(token)


@product.command("list")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def product_list(ctx: click.Context, /, account: str, as_json: bool, **options: Any) -> None:
    """List the account's products (id, name, createdAt, revokedAt)."""
    from thinghub.domain.clock import format_ts

    settings = load(ctx, **options)

    async def work(services: Services, account_id: str) -> list[dict[str, Any]]:
        return [
            {
                "id": p.id,
                "name": p.name,
                "createdAt": format_ts(p.created_at),
                "revokedAt": None if p.revoked_at is None else format_ts(p.revoked_at),
            }
            for p in await services.products.list_in(account_id)
        ]

    emit(
        _in_account(settings, account, work),
        as_json=as_json,
        columns=("id", "name", "createdAt", "revokedAt"),
    )


@product.command("revoke")
@click.argument("product_id")
@account_option
@data_dir_option
@database_option
@click.pass_context
def product_revoke(ctx: click.Context, /, product_id: str, account: str, **options: Any) -> None:
    """Revoke a product: its token registers no more devices (claimed ones keep working)."""
    settings = load(ctx, **options)

    async def work(services: Services, account_id: str) -> None:
        await services.products.revoke_in(account_id, product_id)

    _in_account(settings, account, work)


def register(cli: click.Group) -> None:
    cli.add_command(ioto)
