"""`thinghub serve` (run the device cloud), `thinghub status` (is it up, where) and
`thinghub migrate` (bring the database schema to the newest revision)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from thinghub.cli._common import (
    EXIT_PORT_UNAVAILABLE,
    RUNTIME_FILE,
    ServerGone,
    data_dir_option,
    database_option,
    emit,
    init_option,
    json_option,
    load,
    require_data_dir,
    running_server,
    setting_option,
)
from thinghub.cli._common import (
    migrate as run_migrations,
)
from thinghub.cli._logging import setup_logging
from thinghub.config import Settings

__all__ = ["migrate", "register", "serve", "status"]

logger = logging.getLogger("thinghub")


@click.command()
@data_dir_option
@database_option
@setting_option("--bus", setting="bus")
@setting_option("--node-id", setting="node_id")
@setting_option("--node-lease", "node_lease_s", setting="node_lease_s", type=float)
@setting_option("--host", setting="host")
@setting_option("--http-port", setting="http_port", type=int)
@setting_option("--mqtt-port", setting="mqtt_port", type=int)
@setting_option("--itwin-ws-port", setting="itwin_ws_port", type=int)
@setting_option("--itwin-tcp-port", setting="itwin_tcp_port", type=int)
@setting_option("--itwin-tls/--no-itwin-tls", setting="itwin_tls", default=None)
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
@setting_option("--log-format", setting="log_format", type=click.Choice(["text", "json"]))
@setting_option("--access-log/--no-access-log", setting="access_log", default=None)
@setting_option("--metrics", setting="metrics", type=click.Choice(["off", "on", "token"]))
@click.pass_context
def serve(
    ctx: click.Context, /, hostnames: tuple[str, ...], face_listen: tuple[str, ...], **options: Any
) -> None:
    """Run the device cloud until SIGTERM or SIGINT.

    Every port is bound before anything is created; a busy one ends start-up with exit
    code 3 and names the flag that moves it.
    """
    from thinghub.binding import PortUnavailable

    overrides = dict(options)
    if hostnames:
        overrides["hostnames"] = list(hostnames)
    if face_listen:
        overrides["face_listen"] = list(face_listen)
    settings = load(ctx, **overrides)
    setup_logging(settings.log_level, settings.log_format)
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    try:
        runner(_serve(settings))
    except PortUnavailable as exc:
        flags = {p.name: p.opts[0] for p in serve.params if isinstance(p, click.Option) and p.name}
        flags["face_listen"] = "--face-listen FACE=HOST:PORT"
        click.echo(f"Error: {exc.message(flags.get(exc.address.setting))}", err=True)
        ctx.exit(EXIT_PORT_UNAVAILABLE)
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
        runtime = settings.data_dir / RUNTIME_FILE
        write_ready_file(runtime, text)  # how the online commands find this server
        try:
            print(f"thinghub ready {text}", flush=True)
            http = hub.addresses["http"]["url"]
            logger.info("serving: REST faces under %s (API docs %s/docs)", http, http)
            if not settings.admin_token:
                logger.info(
                    "get an admin token with: thinghub token create --role admin --data-dir %s",
                    settings.data_dir,
                )
            await stop.wait()
            logger.info("shutting down")
            watchdog = asyncio.create_task(_report_slow_shutdown(), name="shutdown.watchdog")
        finally:
            with contextlib.suppress(OSError):
                runtime.unlink()
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


@click.command()
@data_dir_option
@click.option("--url", help="The server's HTTP base URL [default: from <data-dir>/server.json].")
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for the server to answer before giving up.",
)
@json_option
@click.pass_context
def status(
    ctx: click.Context, /, url: str | None, wait: float, as_json: bool, **options: Any
) -> None:
    """Whether the server answers, and where: its URLs, ports, version and process.

    Exits 4 when no server answers (within --wait seconds).
    """
    import httpx

    settings = load(ctx, **options)
    found = running_server(settings)
    base = (url or found["url"]).rstrip("/")
    deadline = time.monotonic() + wait
    while True:
        try:
            index = httpx.get(f"{base}/", timeout=5).json()
            health = httpx.get(f"{base}/healthz", timeout=5).json()
            break
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() >= deadline:
                raise ServerGone(
                    f"no thinghub answers at {base} ({exc}); the address came from "
                    f"{'--url' if url else found['source']}"
                ) from exc
            time.sleep(0.2)
    host, port = found["mqtt"]
    emit(
        {
            "status": health.get("status"),
            "url": base,
            "version": index.get("version"),
            "faces": index.get("faces"),
            "docs": f"{base}/docs",
            "mqtt": f"{host}:{port}",
            "ca_file": str(found["ca_file"]),
            "pid": found["pid"],
        },
        as_json=as_json,
    )


@click.command()
@data_dir_option
@database_option
@init_option
@json_option
@click.pass_context
def migrate(ctx: click.Context, /, init: bool, as_json: bool, **options: Any) -> None:
    """Bring the database schema to the newest revision (serve does it at start too).

    Shows progress with the time left on a terminal.
    """
    settings = load(ctx, **options)
    require_data_dir(settings, init=init)
    ran = run_migrations(settings.database_url)
    emit({"migrations": ran, "database": _shown(settings)}, as_json=as_json)


def _shown(settings: Settings) -> str:
    """The database, without a password."""
    if settings.is_postgres:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.database_url)
        host = parts.hostname or ""
        return f"postgresql://{host}{':' if parts.port else ''}{parts.port or ''}{parts.path}"
    return str((settings.data_dir / "thinghub.db").resolve())


def register(cli: click.Group) -> None:
    for command in (serve, status, migrate):
        cli.add_command(command)
