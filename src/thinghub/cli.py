"""The `thinghub` command: serve, token, account, user, ux4iot, ca."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from thinghub import __version__
from thinghub.config import SETTINGS, ConfigError, Setting, Settings, load_settings
from thinghub.domain.model import Role

if TYPE_CHECKING:  # imported where used: `thinghub --help` stays fast
    from thinghub.services.core import Services

__all__ = ["main"]

T = TypeVar("T")
_F = TypeVar("_F", bound=Callable[..., Any])

logger = logging.getLogger("thinghub")


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    config: Path | None = ctx.obj.get("config") if ctx.obj else None
    try:
        return load_settings(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migrations at start-up are routine; their step-by-step notes only at debug level.
    # uvicorn's start/stop notes repeat per listener what the ready line already says.
    if level != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="thinghub")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML settings file (also THINGHUB_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """thinghub: a self-hosted IoT device cloud."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


_SETTING = {setting.name: setting for setting in SETTINGS}


def setting_help(setting: Setting, note: str = "") -> str:
    """A flag's help: the settings table's text, and its default as the table has it."""
    default = setting.default
    if isinstance(default, tuple):
        default = ",".join(default)
    text = f"{setting.help}{note}"
    return text if default in (None, "") else f"{text} [default: {default}]"


def setting_option(*decls: str, setting: str, note: str = "", **attrs: Any) -> Callable[[_F], _F]:
    """A `thinghub` flag for a setting: help and default from SETTINGS. The flag has no click
    default of its own, so an absent flag leaves the file and environment values in force."""
    return click.option(*decls, help=setting_help(_SETTING[setting], note), **attrs)


data_dir_option = setting_option(
    "--data-dir", setting="data_dir", type=click.Path(path_type=Path, file_okay=False)
)
database_option = setting_option("--database", setting="database")


@cli.command()
@data_dir_option
@database_option
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@setting_option("--mqtt-port", setting="mqtt_port", type=int)
@setting_option("--hub-hostname", setting="hub_hostname")
@setting_option(
    "--hostname",
    "hostnames",
    setting="hostnames",
    note=" On the command line, repeat the flag.",
    multiple=True,
)
@setting_option("--face-listen", setting="face_listen", note=" Repeatable.", multiple=True)
@setting_option(
    "--ready-file", setting="ready_file", type=click.Path(path_type=Path, dir_okay=False)
)
@setting_option(
    "--log-level", setting="log_level", type=click.Choice(["debug", "info", "warning", "error"])
)
@click.pass_context
def serve(
    ctx: click.Context, /, hostnames: tuple[str, ...], face_listen: tuple[str, ...], **options: Any
) -> None:
    """Run the device cloud until SIGTERM or SIGINT."""
    overrides = dict(options)
    if hostnames:
        overrides["hostnames"] = list(hostnames)
    if face_listen:
        overrides["face_listen"] = list(face_listen)
    settings = _settings(ctx, **overrides)
    _setup_logging(settings.log_level)
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    try:
        runner(_serve(settings))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


async def _serve(settings: Settings) -> None:
    from thinghub.app import ThingHub, write_ready_file

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ThingHub(settings) as hub:
        text = json.dumps(hub.addresses, separators=(",", ":"))
        if settings.ready_file is not None:
            write_ready_file(settings.ready_file, text)
        print(f"thinghub ready {text}", flush=True)
        http = hub.addresses["http"]["url"]
        logger.info("serving: REST faces under %s (docs %s/v1/docs)", http, http)
        if not settings.admin_token:
            logger.info(
                "get an admin token with: thinghub token create --role admin --data-dir %s",
                settings.data_dir,
            )
        await stop.wait()
        logger.info("shutting down")
        watchdog = asyncio.create_task(_report_slow_shutdown(), name="shutdown.watchdog")
    watchdog.cancel()
    logger.info("stopped")


SLOW_SHUTDOWN_S = 15.0  # a shutdown still running after this long logs what it waits for


async def _report_slow_shutdown() -> None:
    """Log the stack of every task still pending when shutdown takes too long, so a hang
    names what it waits on (and again while it lasts); a blocked loop is caught by
    faulthandler's thread dump instead."""
    import faulthandler
    import io

    faulthandler.dump_traceback_later(SLOW_SHUTDOWN_S * 2, exit=False)
    try:
        while True:
            await asyncio.sleep(SLOW_SHUTDOWN_S)
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    out = io.StringIO()
                    task.print_stack(file=out)
                    logger.warning(
                        "shutdown still waits on %s:\n%s", task.get_name(), out.getvalue()
                    )
    finally:
        faulthandler.cancel_dump_traceback_later()


def _run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Open the services on the configured store (no listeners, no devices), run
    `work(services)`, close."""
    from thinghub.app import build_services, node_id
    from thinghub.bus.clock import SystemClock
    from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
    from thinghub.devices.links import LocalLinks
    from thinghub.storage import open_stores
    from thinghub.storage.migrate import upgrade

    async def go() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade, settings.database_url)
        stores = open_stores(settings)
        clock = SystemClock()
        presence = MemoryPresence(clock)
        services = build_services(
            settings,
            stores,
            bus=MemoryBus(),
            clock=clock,
            presence=presence,
            channel=LocalLinks(presence, node_id()),
            locks=MemoryLocks(),
            counter=MemoryCounter(),
            issuer=None,
        )
        await stores.start()
        try:
            await services.start()
            return await work(services)
        finally:
            await stores.close()

    return asyncio.run(go())


@cli.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@data_dir_option
@database_option
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default="admin",
    show_default=True,
)
@click.option("--account", default="default", show_default=True, help="Account name.")
@click.option("--label", default="", help="A note to tell tokens apart.")
@click.option("--project", default=None, help="Limit the token to this project.")
@click.pass_context
def token_create(
    ctx: click.Context,
    /,
    role: str,
    account: str,
    label: str,
    project: str | None,
    **options: Any,
) -> None:
    """Create an API token and print it (it is shown only once)."""

    settings = _settings(ctx, **options)

    async def work(services: Services) -> str:
        acct = await services.auth.find_account(account)
        if acct is None:
            if account != "default":
                raise click.ClickException(f"no account named {account!r}")
            acct = await services.auth.ensure_account()
        issued = await services.auth.create_token(acct.id, Role(role), label=label, project=project)
        return str(issued.secret)

    click.echo(_run(settings, work))


@cli.group()
def account() -> None:
    """Accounts (tenants)."""


@account.command("create")
@click.argument("name")
@data_dir_option
@database_option
@click.pass_context
def account_create(ctx: click.Context, /, name: str, **options: Any) -> None:
    """Create an account and print it as JSON (id, name, idScope)."""
    from thinghub.domain.errors import Error

    settings = _settings(ctx, **options)

    async def work(services: Services) -> dict[str, str]:
        try:
            acct = await services.auth.create_account(name)
        except Error as exc:
            raise click.ClickException(exc.message) from exc
        return {"id": acct.id, "name": acct.name, "idScope": acct.id_scope}

    click.echo(json.dumps(_run(settings, work)))


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
@data_dir_option
@database_option
@click.pass_context
def account_retention(
    ctx: click.Context,
    /,
    name: str,
    telemetry_days: str | None,
    events_days: str | None,
    **options: Any,
) -> None:
    """Show, or with options set, how long an account keeps telemetry and events."""
    from thinghub.domain.errors import Error
    from thinghub.domain.model import Retention

    settings = _settings(ctx, **options)
    changes: dict[str, Any] = {}
    for key, raw in (("telemetry_days", telemetry_days), ("events_days", events_days)):
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
            raise click.ClickException(exc.message) from exc

        def days(r: Retention) -> dict[str, float | None]:
            return {"telemetryDays": r.telemetry_days, "eventsDays": r.events_days}

        return {
            "name": acct.name,
            **days(view.effective),
            "account": days(view.account),
            "server": days(view.server),
        }

    click.echo(json.dumps(_run(settings, work)))


@cli.group()
def user() -> None:
    """Users (for the OAuth2 password grant)."""


@user.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default="operator",
    show_default=True,
)
@click.option("--account", default="default", show_default=True)
@data_dir_option
@database_option
@click.pass_context
def user_create(
    ctx: click.Context, /, username: str, password: str, role: str, account: str, **options: Any
) -> None:
    """Create a user who can get access tokens with the password grant."""
    from thinghub.domain.errors import Error

    settings = _settings(ctx, **options)

    async def work(services: Services) -> str:
        acct = await services.auth.find_account(account) or (
            await services.auth.ensure_account() if account == "default" else None
        )
        if acct is None:
            raise click.ClickException(f"no account named {account!r}")
        try:
            created = await services.auth.create_user(acct.id, username, password, Role(role))
        except Error as exc:
            raise click.ClickException(exc.message) from exc
        return str(created.id)

    click.echo(_run(settings, work))


@cli.command()
@data_dir_option
@click.pass_context
def ca(ctx: click.Context, /, **options: Any) -> None:
    """Print the hub CA certificate (PEM); devices trust it to reach the MQTT port."""
    from thinghub.security.ca import CertificateAuthority

    settings = _settings(ctx, **options)
    authority = CertificateAuthority.load_or_create(
        settings.data_dir / "certs", hostnames=[settings.hub_hostname, *settings.hostnames]
    )
    click.echo(authority.ca_pem, nl=False)


@cli.command()
@click.option(
    "--url",
    help="thinghub HTTP base URL (devices are registered through /v1) [default: the host and "
    "http_port of the settings].",
)
@click.option(
    "--token",
    envvar="THINGHUB_TOKEN",
    help="API token with operator or admin role (or THINGHUB_TOKEN); needed unless "
    "--connection-string names the devices.",
)
@click.option(
    "--connection-string",
    "connection_strings",
    multiple=True,
    help="Simulate this existing device (HostName=...;DeviceId=...;SharedAccessKey=..., as "
    "the console shows it) instead of registering new ones; repeatable. Such a device also "
    "takes desired properties: it prints each patch (`desired DEVICE {json}`) and reports it "
    "back.",
)
@click.option(
    "--mqtt",
    "mqtt_address",
    help="HOST:PORT of the device port [default: the host and mqtt_port of the settings].",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False),
    help="CA file to trust (default: <data-dir>/certs/ca.pem).",
)
@data_dir_option
@click.option("--devices", "count", type=int, default=10, show_default=True)
@click.option(
    "--rate",
    type=float,
    default=1.0,
    show_default=True,
    help="Messages per second per device (0 = as fast as acks allow).",
)
@click.option("--duration", type=float, default=30.0, show_default=True, help="Seconds.")
@click.option("--messages", type=int, default=None, help="Stop each device after N messages.")
@click.option("--qos", type=click.IntRange(0, 1), default=1, show_default=True)
@click.option("--project", default="simulation", show_default=True)
@click.option("--deployment", default="sim", show_default=True)
@click.option("--proxy", is_flag=True, help="Send an HTTP CONNECT line first (as MQTT_PROXY).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def simulate(
    ctx: click.Context,
    /,
    url: str | None,
    token: str | None,
    connection_strings: tuple[str, ...],
    mqtt_address: str | None,
    ca_file: str | None,
    count: int,
    rate: float,
    duration: float,
    messages: int | None,
    qos: int,
    project: str,
    deployment: str,
    proxy: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Simulate devices: register, connect over MQTT/TLS, send telemetry, answer methods."""
    import ssl
    import time

    import httpx
    from rich.progress import Progress

    from thinghub.edge.credentials import parse_connection_string
    from thinghub.security import sas
    from thinghub.simulator import DeviceSpec, SimStats, run_devices

    settings = _settings(ctx, **options)
    local = _reachable(settings.host)
    url = url or f"http://{local}:{settings.http_port}"
    mqtt_address = mqtt_address or f"{local}:{settings.mqtt_port}"
    host, _, port = mqtt_address.rpartition(":")
    host = host.strip("[]")
    ca_path = ca_file or str(settings.data_dir / "certs" / "ca.pem")
    context = ssl.create_default_context(cafile=ca_path)
    specs = []
    for text in connection_strings:
        try:
            given = parse_connection_string(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--connection-string") from exc
        expiry = int(time.time()) + 3600 + int(duration)
        did = given.device_id
        specs.append(
            DeviceSpec(
                did,
                f"{given.host_name}/{did}/?api-version=2021-04-12",
                sas.sign(given.key, f"{given.host_name}/devices/{did}", expiry),
                f"devices/{did}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
                twin=True,
            )
        )
    if connection_strings:
        count = len(specs)
    elif not token:
        raise click.UsageError("give --token (or THINGHUB_TOKEN), or --connection-string")
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for i in range(0 if connection_strings else count):
            response = http.post(
                "/v1/devices",
                json={"name": f"sim-{i}", "project": project, "deployment": deployment},
            )
            if response.status_code != 200:
                raise click.ClickException(f"registering a device failed: {response.text}")
            device = response.json()
            key = device["credentials"]["symmetricKey"]["primaryKey"]
            did = device["id"]
            expiry = int(time.time()) + 3600 + int(duration)
            specs.append(
                DeviceSpec(
                    did,
                    f"localhost/{did}/?api-version=2021-04-12",
                    sas.sign(key, f"localhost/devices/{did}", expiry),
                    f"devices/{did}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
                )
            )

    with Progress(transient=as_json) as progress:
        bar = progress.add_task("simulating", total=None)

        def show(stats: SimStats) -> None:
            progress.update(
                bar,
                completed=stats.acked,
                description=(
                    f"{stats.connected}/{count} connected, {stats.sent} sent, {stats.acked} acked, "
                    f"{stats.methods} methods"
                ),
            )

        stats = asyncio.run(
            run_devices(
                specs,
                host,
                int(port),
                context,
                rate_per_s=rate,
                duration_s=duration,
                count=messages,
                qos=qos,
                proxy=proxy,
                on_progress=show,
                on_desired=lambda did, patch: click.echo(
                    f"desired {did} {json.dumps(patch, sort_keys=True)}"
                ),
            )
        )
    result = {
        "devices": count,
        "connected": stats.connected,
        "failed": stats.failed,
        "sent": stats.sent,
        "acked": stats.acked,
        "methods": stats.methods,
        "desired": stats.desired,
        "seconds": round(stats.elapsed_s, 3),
        "acked_per_s": round(stats.acked / stats.elapsed_s, 1) if stats.elapsed_s else 0,
        "puback_p50_ms": _ms(stats.percentile(0.5)),
        "puback_p99_ms": _ms(stats.percentile(0.99)),
        "errors": stats.errors[:10],
    }
    click.echo(json.dumps(result, indent=None if as_json else 2))


@cli.command()
@click.option("--cloud", "cloud_url", help="The cloud's device port: mqtts://HOST[:PORT] (8883).")
@click.option(
    "--connection-string",
    envvar="THINGHUB_EDGE_CONNECTION_STRING",
    help="The gateway's HostName=...;DeviceId=...;SharedAccessKey=... (or the env variable).",
)
@click.option("--dps-id-scope", help="DPS: the account's idScope.")
@click.option("--dps-registration-id", help="DPS: the gateway's registration id.")
@click.option("--dps-key", envvar="THINGHUB_EDGE_DPS_KEY", help="DPS: the gateway's key.")
@click.option(
    "--cloud-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="CA file the cloud's certificate chains to (`thinghub ca`); default: system CAs.",
)
@click.option("--listen", help="HOST:PORT of the local API (default 127.0.0.1:8090; 0 = any).")
@click.option(
    "--api-token",
    envvar="THINGHUB_EDGE_API_TOKEN",
    help="Bearer token the local API requires (needed when --listen is not loopback).",
)
@click.option(
    "--config",
    "edge_config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="edge.toml: ports, board, queue, update settings.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Queue and state (default ./thinghub-edge-data).",
)
@click.option("--board", type=click.Choice(["linux", "simulated"]), help="Default: linux.")
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the ready JSON here.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def edge(edge_config: Path | None, **options: Any) -> None:
    """Run the iTwin IoT Edge API on this gateway, connected to a thinghub cloud."""
    from thinghub.edge import EdgeConfigError, load_edge_settings, run_edge

    try:
        settings = load_edge_settings(edge_config, options)
    except EdgeConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _setup_logging(settings.log_level)
    try:
        asyncio.run(run_edge(settings))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.group()
def ux4iot() -> None:
    """The ux4iot face: Shared-Access-Keys and their connection strings."""


@ux4iot.group("key")
def ux4iot_key() -> None:
    """Shared-Access-Keys of an account (stored hashed; a key is shown only when created or
    rotated)."""


def _ux4iot_endpoint(settings: Settings) -> str:
    """The Endpoint of a connection string: public_url, or this machine's HTTP port."""
    if settings.public_url:
        return settings.public_url + "/ux4iot"
    return f"http://{_reachable(settings.host)}:{settings.http_port}/ux4iot"


def _ux4iot_run(
    ctx: click.Context, account: str, options: dict[str, Any], work: Callable[..., Awaitable[T]]
) -> T:
    """Run `work(services, principal)` as an admin of `account`."""
    from thinghub.domain.errors import Error
    from thinghub.domain.model import Principal, Role

    settings = _settings(ctx, **options)

    async def go(services: Services) -> T:
        acct = await services.auth.find_account(account)
        if acct is None:
            if account != "default":
                raise click.ClickException(f"no account named {account!r}")
            acct = await services.auth.ensure_account()
        try:
            return await work(services, Principal(acct.id, Role.ADMIN, "cli", "cli"))
        except Error as exc:
            raise click.ClickException(exc.message) from exc

    return _run(settings, go)


account_option = click.option("--account", default="default", show_default=True)


@ux4iot_key.command("create")
@account_option
@click.option("--label", default="", help="A note to tell keys apart.")
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@data_dir_option
@database_option
@click.pass_context
def ux4iot_key_create(ctx: click.Context, /, account: str, label: str, **options: Any) -> None:
    """Create a key and print its connection string (shown only this once); the key's id
    goes to stderr."""

    async def work(services: Services, principal: Any) -> str:
        issued = await services.auth.create_face_key(principal, "ux4iot", label=label)
        click.echo(f"key id: {issued.token.id}", err=True)
        return _connection(ctx, options, issued.secret)

    click.echo(_ux4iot_run(ctx, account, options, work))


@ux4iot_key.command("list")
@account_option
@data_dir_option
@database_option
@click.pass_context
def ux4iot_key_list(ctx: click.Context, /, account: str, **options: Any) -> None:
    """List the account's keys as JSON lines (id, label, createdAt), without secrets."""
    from thinghub.domain.clock import format_ts

    async def work(services: Services, principal: Any) -> list[str]:
        keys = await services.auth.list_face_keys(principal, "ux4iot")
        return [
            json.dumps({"id": k.id, "label": k.label, "createdAt": format_ts(k.created_at)})
            for k in keys
        ]

    for line in _ux4iot_run(ctx, account, options, work):
        click.echo(line)


@ux4iot_key.command("rotate")
@click.argument("key_id")
@account_option
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@data_dir_option
@database_option
@click.pass_context
def ux4iot_key_rotate(ctx: click.Context, /, key_id: str, account: str, **options: Any) -> None:
    """Give a key a new secret (the old one stops working) and print the connection string."""

    async def work(services: Services, principal: Any) -> str:
        issued = await services.auth.rotate_face_key(principal, "ux4iot", key_id)
        click.echo(f"key id: {issued.token.id}", err=True)
        return _connection(ctx, options, issued.secret)

    click.echo(_ux4iot_run(ctx, account, options, work))


@ux4iot_key.command("revoke")
@click.argument("key_id")
@account_option
@data_dir_option
@database_option
@click.pass_context
def ux4iot_key_revoke(ctx: click.Context, /, key_id: str, account: str, **options: Any) -> None:
    """Revoke a key: calls with it get 401 (a running server forgets it within 5 s)."""

    async def work(services: Services, principal: Any) -> str:
        await services.auth.revoke_face_key(principal, "ux4iot", key_id)
        return f"revoked {key_id}"

    click.echo(_ux4iot_run(ctx, account, options, work))


def _connection(ctx: click.Context, options: dict[str, Any], secret: str) -> str:
    return f"Endpoint={_ux4iot_endpoint(_settings(ctx, **options))};SharedAccessKey={secret}"


def _reachable(host: str) -> str:
    """Where a local client reaches a server bound to `host` (any address: loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def main() -> None:
    cli(prog_name="thinghub")
