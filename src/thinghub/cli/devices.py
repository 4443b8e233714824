"""`thinghub device list|show|create|delete|enable|disable`: the device registry, offline (on
the data directory's store, through the services, acting as an admin of the account).

A running server sees these changes within 5 s (its registry cache). It does not drop a
connection it holds: a device disabled or deleted here is refused when it next connects;
`PUT /v1/devices/{id}` with provisioningStatus disabled also cuts it off at once.
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

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from thinghub.config import Settings
    from thinghub.domain.model import Account, Device, Principal
    from thinghub.services.core import Services

__all__ = ["register"]

LIST_COLUMNS = ("id", "name", "project", "deployment", "kind", "enabled", "connectionState")


def _time(ts: float | None) -> str | None:
    from thinghub.domain.clock import format_ts

    return None if ts is None else format_ts(ts)


def _summary(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "name": device.name,
        "project": device.project,
        "deployment": device.deployment,
        "kind": device.kind.value,
        "enabled": device.enabled,
        "connectionState": device.connection_state,
        "lastActivityTime": _time(device.last_activity_at),
    }


def _detail(settings: Settings, account: Account, device: Device) -> dict[str, Any]:
    """Everything a device needs to connect: keys, id scope and its connection string."""
    return {
        **_summary(device),
        "createdAt": _time(device.created_at),
        "account": account.name,
        "idScope": account.id_scope,
        "primaryKey": device.primary_key,
        "secondaryKey": device.secondary_key,
        "connectionString": (
            f"HostName={settings.hub_hostname};DeviceId={device.id};"
            f"SharedAccessKey={device.primary_key}"
        ),
    }


def _offline(
    ctx: click.Context,
    options: dict[str, Any],
    account: str,
    work: Callable[[Services, Account, Principal], Awaitable[Any]],
    *,
    init: bool = False,
) -> Any:
    """Run `work` as an admin of `account`; a domain error becomes the command's error."""
    from thinghub.domain.errors import Error

    settings = load(ctx, **options)

    async def go(services: Services) -> Any:
        acct, principal = await operator(services, account)
        try:
            return await work(services, acct, principal)
        except Error as exc:
            raise click.ClickException(exc.message) from exc

    return run_offline(settings, go, init=init)


@click.group()
def device() -> None:
    """Devices of an account: list, show, create, delete, enable, disable."""


@device.command("list")
@click.option("--project", help="Only this project's devices.")
@click.option("--deployment", help="Only this deployment's devices (with --project).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the ids, one per line.")
@account_option
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def device_list(
    ctx: click.Context,
    /,
    project: str | None,
    deployment: str | None,
    quiet: bool,
    account: str,
    as_json: bool,
    init: bool,
    **options: Any,
) -> None:
    """List devices and gateways (modules: `thinghub device show GATEWAY`)."""

    async def work(services: Services, _: Account, principal: Principal) -> list[dict[str, Any]]:
        found = await services.registry.list_devices(
            principal, project=project, deployment=deployment
        )
        return [_summary(d) for d in sorted(found, key=lambda d: (d.created_at, d.id))]

    rows = _offline(ctx, options, account, work, init=init)
    if quiet:
        for row in rows:
            click.echo(row["id"])
    else:
        emit(rows, as_json=as_json, columns=LIST_COLUMNS)


@device.command("show")
@click.argument("device_id")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def device_show(
    ctx: click.Context, /, device_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Show a device with its keys, id scope and connection string."""
    settings = load(ctx, **options)

    async def work(services: Services, acct: Account, principal: Principal) -> dict[str, Any]:
        found = await services.registry.get_device(principal, device_id)
        detail = _detail(settings, acct, found)
        if found.is_gateway:
            modules = await services.registry.list_modules(principal, found.id)
            detail["modules"] = [m.module_id for m in modules]
        return detail

    emit(_offline(ctx, options, account, work), as_json=as_json)


@device.command("create")
@click.argument("name")
@click.option("--id", "device_id", help="The device id [default: a new UUID].")
@click.option("--project", help="The project it belongs to (created if new).")
@click.option("--deployment", help="The deployment in the project (created if new).")
@click.option("--gateway", is_flag=True, help="An IoT Edge gateway (it may have modules).")
@click.option("--disabled", is_flag=True, help="Create it disabled (it cannot connect).")
@account_option
@json_option
@data_dir_option
@database_option
@init_option
@click.pass_context
def device_create(
    ctx: click.Context,
    /,
    name: str,
    device_id: str | None,
    project: str | None,
    deployment: str | None,
    gateway: bool,
    disabled: bool,
    account: str,
    as_json: bool,
    init: bool,
    **options: Any,
) -> None:
    """Create a device and print its id, keys and connection string."""
    from thinghub.domain.model import DeviceKind

    settings = load(ctx, **options)

    async def work(services: Services, acct: Account, principal: Principal) -> dict[str, Any]:
        created = await services.registry.create_device(
            principal,
            name=name,
            device_id=device_id,
            project=project,
            deployment=deployment,
            kind=DeviceKind.GATEWAY if gateway else DeviceKind.DEVICE,
            enabled=not disabled,
        )
        return _detail(settings, acct, created)

    emit(_offline(ctx, options, account, work, init=init), as_json=as_json)


@device.command("delete")
@click.argument("device_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def device_delete(
    ctx: click.Context, /, device_id: str, yes: bool, account: str, as_json: bool, **options: Any
) -> None:
    """Delete a device with its twin, modules, telemetry and events."""
    if not yes:
        click.confirm(f"Delete device {device_id} and all its data?", abort=True, err=True)

    async def work(services: Services, _: Account, principal: Principal) -> None:
        await services.registry.delete_device(principal, device_id)

    _offline(ctx, options, account, work)
    emit({"deleted": device_id}, as_json=as_json)


def _set_enabled(
    ctx: click.Context,
    device_id: str,
    account: str,
    as_json: bool,
    options: dict[str, Any],
    *,
    enabled: bool,
) -> None:
    async def work(services: Services, _: Account, principal: Principal) -> dict[str, Any]:
        found = await services.registry.get_device(principal, device_id)
        if found.enabled != enabled:
            found = await services.registry.update_device(principal, found, enabled=enabled)
        return _summary(found)

    emit(_offline(ctx, options, account, work), as_json=as_json)
    if not enabled:
        click.echo(
            "note: a running server refuses the device's next connection; one it holds now "
            "stays until the device reconnects",
            err=True,
        )


@device.command("enable")
@click.argument("device_id")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def device_enable(
    ctx: click.Context, /, device_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Enable a device: it may connect again."""
    _set_enabled(ctx, device_id, account, as_json, options, enabled=True)


@device.command("disable")
@click.argument("device_id")
@account_option
@json_option
@data_dir_option
@database_option
@click.pass_context
def device_disable(
    ctx: click.Context, /, device_id: str, account: str, as_json: bool, **options: Any
) -> None:
    """Disable a device: its connections are refused."""
    _set_enabled(ctx, device_id, account, as_json, options, enabled=False)


def register(cli: click.Group) -> None:
    cli.add_command(device)
