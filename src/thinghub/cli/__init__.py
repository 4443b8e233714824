"""The `thinghub` command: one module per command group.

| module | commands |
| --- | --- |
| server | `serve`, `status`, `migrate` |
| accounts | `token`, `account`, `user` |
| devices | `device` |
| telemetry | `telemetry tail` |
| simulate | `simulate` |
| ioto | `ioto product` |
| ux4iot | `ux4iot key` |
| ca | `ca` |
| edge | `edge` |

Offline commands (token, account, user, device, ioto, ux4iot, ca, migrate) work on the store
of a data directory through the services (`_common.run_offline`) and refuse to invent one; online
commands (status, simulate, telemetry tail) talk to a running server over its API. Each has
`--json`; exit codes are in `_common` and docs/cli.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from thinghub import __version__
from thinghub.cli._common import setting_help, setting_option

__all__ = ["cli", "main", "serve", "setting_help", "setting_option"]


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


# Each module adds its commands to `cli`.
from thinghub.cli import (  # noqa: E402
    accounts,
    ca,
    devices,
    edge,
    ioto,
    server,
    simulate,
    telemetry,
    ux4iot,
)

for _module in (server, accounts, devices, ioto, ux4iot, telemetry, simulate, ca, edge):
    _module.register(cli)
serve = server.serve  # the serve command (its flags are the settings': tests read them)


def main() -> None:
    cli(prog_name="thinghub")
