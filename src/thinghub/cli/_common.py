"""What the `thinghub` commands share: settings and their flags, the data directory they refuse
to invent, the services over the store (offline commands), the running server (online
commands), output (`--json` or a table) and progress."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from thinghub.config import SETTINGS, ConfigError, Setting, Settings, load_settings

if TYPE_CHECKING:  # imported where used: `thinghub --help` stays fast
    from rich.console import Console
    from rich.progress import Progress

    from thinghub.domain.model import Account, Principal
    from thinghub.services.core import Services

__all__ = [
    "EXIT_ERROR",
    "EXIT_PORT_UNAVAILABLE",
    "EXIT_SERVER_GONE",
    "RUNTIME_FILE",
    "ServerGone",
    "account_option",
    "data_dir_option",
    "database_option",
    "emit",
    "init_option",
    "json_option",
    "load",
    "operator",
    "progress",
    "reachable",
    "require_data_dir",
    "run_offline",
    "running_server",
    "setting_help",
    "setting_option",
    "stderr_console",
]

T = TypeVar("T")
_F = TypeVar("_F", bound=Callable[..., Any])

# Exit codes (docs/cli.md). click itself exits 2 for a bad flag or argument.
EXIT_ERROR = 1  # the command failed; stderr says why
EXIT_PORT_UNAVAILABLE = 3  # serve: a listener's port is in use or cannot be bound
EXIT_SERVER_GONE = 4  # an online command could not reach the server, or it went away

# Where `thinghub serve` writes its ready JSON inside the data directory while it runs, so
# the online commands (simulate, telemetry tail, status) find its ports and CA.
RUNTIME_FILE = "server.json"


class ServerGone(click.ClickException):
    """The server could not be reached or went away (exit code 4)."""

    exit_code = EXIT_SERVER_GONE


def load(ctx: click.Context, **overrides: Any) -> Settings:
    """The settings: defaults < --config/THINGHUB_CONFIG file < THINGHUB_* < these flags."""
    config: Path | None = ctx.find_root().obj.get("config") if ctx.find_root().obj else None
    try:
        return load_settings(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


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
init_option = click.option(
    "--init",
    is_flag=True,
    help="Create the data directory (and database) if there is none, instead of refusing.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table."
)
account_option = click.option(
    "--account", default="default", show_default=True, help="Account name."
)


# -- the data directory ------------------------------------------------------------------


def require_data_dir(settings: Settings, *, init: bool) -> None:
    """Refuse to invent a data directory: an offline command works on the one a server made
    (`thinghub serve`), or creates one when told to (`--init`).

    With PostgreSQL the database is named explicitly and nothing is invented by using it.
    """
    if init:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return
    if settings.is_postgres:
        return
    database = settings.data_dir / "thinghub.db"
    if not database.is_file():
        raise click.ClickException(
            f"no thinghub data directory at {settings.data_dir.resolve()} (no thinghub.db "
            "there). Point to the server's with --data-dir DIR (or THINGHUB_DATA_DIR, or "
            "data_dir in the --config file), or create a new one with --init (`thinghub "
            "serve` creates one too)."
        )


def run_offline(
    settings: Settings, work: Callable[[Services], Awaitable[T]], *, init: bool = False
) -> T:
    """Open the services over the configured store (no listeners, no devices), run
    `work(services)` and close. The schema is migrated first, with progress when there are
    migrations to run."""
    require_data_dir(settings, init=init)
    from thinghub.app import build_services, node_id
    from thinghub.bus.clock import SystemClock
    from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
    from thinghub.devices.links import LocalLinks
    from thinghub.storage import open_stores

    async def go() -> T:
        await asyncio.to_thread(migrate, settings.database_url)
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


def migrate(database_url: str) -> int:
    """Bring the schema to the newest revision, showing progress on stderr; how many
    migrations ran."""
    from thinghub.storage.migrate import upgrade

    with progress("migrating the database schema") as bar:
        task = bar.add_task("migrating the database schema", total=None, visible=False)
        ran = [0]

        def step(done: int, total: int, revision: str) -> None:
            ran[0] = done
            label = f"migration {revision}" if revision else "migrating the database schema"
            bar.update(task, completed=done, total=total, description=label, visible=True)

        upgrade(database_url, on_step=step)
    return ran[0]


async def operator(services: Services, account: str) -> tuple[Account, Principal]:
    """The account named `account` and the command line acting as its admin: whoever runs an
    offline command can read the database, so it acts with every right in that account."""
    from thinghub.domain.model import Principal, Role

    found = await services.auth.find_account(account)
    if found is None:
        if account != "default":
            raise click.ClickException(f"no account named {account!r}")
        found = await services.auth.ensure_account()
    return found, Principal(found.id, Role.ADMIN, subject="cli", kind="cli")


# -- the running server (online commands) -------------------------------------------------


def reachable(host: str) -> str:
    """Where a local client reaches a server bound to `host` (any address: loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def running_server(settings: Settings) -> dict[str, Any]:
    """What the server of this data directory says about itself (its ready JSON, written to
    <data-dir>/server.json while it runs), or the addresses the settings give when no
    server left that file. Keys: `url`, `mqtt` (host, port), `ca_file`, `source`."""
    path = settings.data_dir / RUNTIME_FILE
    try:
        ready = json.loads(path.read_text())
        http, mqtt = ready["http"], ready["mqtt"]
        return {
            "url": http["url"].replace("://0.0.0.0:", "://127.0.0.1:"),
            "mqtt": (reachable(mqtt["host"]).strip("[]"), int(mqtt["port"])),
            "ca_file": Path(ready["ca_file"]),
            "source": str(path.resolve()),
            "pid": ready.get("pid"),
        }
    except (OSError, ValueError, KeyError, TypeError):
        local = reachable(settings.host)
        return {
            "url": f"http://{local}:{settings.http_port}",
            "mqtt": (local.strip("[]"), settings.mqtt_port),
            "ca_file": settings.data_dir / "certs" / "ca.pem",
            "source": "the settings (host, http_port, mqtt_port)",
            "pid": None,
        }


# -- output -------------------------------------------------------------------------------


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def emit(
    value: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Print one object or a list of them: JSON with `--json`, else a table (a list: one row
    per item with `columns`; one object: a row per field)."""
    if as_json:
        click.echo(json.dumps(value, separators=(",", ":")))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: never wrap a value (an id, a key) over lines
        console = Console(width=100_000)
    if isinstance(value, Mapping):
        table = Table(show_header=False, title=title, box=None, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, item in value.items():
            table.add_row(key, _cell(item))
    else:
        names = list(columns or (value[0].keys() if value else ()))
        table = Table(title=title, box=None, pad_edge=False, header_style="bold")
        for name in names:
            table.add_column(name, no_wrap=name == "id")
        for row in value:
            table.add_row(*(_cell(row.get(name)) for name in names))
        if not value:
            console.print("(none)")
            return
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@contextmanager
def progress(what: str) -> Iterator[Progress]:
    """A progress display on stderr (stdout stays for the result): a bar, the percentage and
    the time left. Shown on a terminal only, and gone when done."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    console = stderr_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        yield bar


def fail(message: str) -> None:
    """Print an error the way click does and exit 1 (for code outside a click command)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_ERROR)
