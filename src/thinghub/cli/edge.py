"""`thinghub edge`: the iTwin IoT Edge API on a Linux gateway, connected to a cloud."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from thinghub.cli._logging import setup_logging

__all__ = ["edge", "register"]


@click.command()
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
    setup_logging(settings.log_level)
    try:
        asyncio.run(run_edge(settings))
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


def register(cli: click.Group) -> None:
    cli.add_command(edge)
