"""`thinghub simulate`: devices registered through /v1 that connect over MQTT/TLS, send
telemetry and answer direct methods, against a running server, for `--duration` seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from thinghub.cli._common import (
    EXIT_SERVER_GONE,
    ServerGone,
    data_dir_option,
    emit,
    load,
    progress,
    running_server,
)

if TYPE_CHECKING:
    from thinghub.simulator import DeviceSpec, SimStats

__all__ = ["register"]

HTTP_TIMEOUT_S = 10.0


@click.command()
@click.option(
    "--url",
    help="thinghub HTTP base URL (devices are registered through /v1) [default: from "
    "<data-dir>/server.json, else the host and http_port settings].",
)
@click.option(
    "--token",
    envvar="THINGHUB_TOKEN",
    required=True,
    help="API token with operator or admin role (or THINGHUB_TOKEN).",
)
@click.option(
    "--mqtt",
    "mqtt_address",
    help="HOST:PORT of the device port [default: as --url, from <data-dir>/server.json or "
    "the settings].",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA file to trust [default: the server's, <data-dir>/certs/ca.pem].",
)
@data_dir_option
@click.option("--devices", "count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Messages per second per device (0 = as fast as acks allow).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds the whole run takes at most (registering and connecting included).",
)
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
    token: str,
    mqtt_address: str | None,
    ca_file: Path | None,
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
    """Simulate devices: register, connect over MQTT/TLS, send telemetry, answer methods.

    Prints a summary. Exits 4 when the server cannot be reached or goes away during the run
    (with the summary of what was done until then).
    """
    import asyncio
    import ssl

    from thinghub.simulator import run_devices

    started = time.monotonic()
    settings = load(ctx, **options)
    found = running_server(settings)
    base = (url or found["url"]).rstrip("/")
    if mqtt_address:
        host, _, port_text = mqtt_address.rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            raise click.BadParameter(f"{mqtt_address!r} is not HOST:PORT", param_hint="--mqtt")
        port = int(port_text)
    else:
        host, port = found["mqtt"]
    ca_path = ca_file or found["ca_file"]
    if not Path(ca_path).is_file():
        raise click.ClickException(
            f"CA file {Path(ca_path).resolve()} not found. Pass the server's with --ca FILE "
            "(`thinghub ca --data-dir DIR > ca.pem` on the server's machine writes it; its "
            "path is the ca_file of the server's ready line), or --data-dir of the server."
        )
    try:
        context = ssl.create_default_context(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"CA file {ca_path} cannot be read: {exc}") from exc
    source = "--url" if url else found["source"]
    specs = _register(base, source, token, count, project, deployment, duration)
    left = duration - (time.monotonic() - started)
    if left <= 0:
        raise click.ClickException(
            f"registering {count} devices took the whole --duration of {duration} s"
        )

    with progress("simulating") as bar:
        total = float(messages * count) if messages is not None else left
        task = bar.add_task("connecting", total=total)
        begun = time.monotonic()

        def show(stats: SimStats) -> None:
            bar.update(
                task,
                completed=stats.acked if messages is not None else time.monotonic() - begun,
                description=(
                    f"{stats.connected}/{count} connected, {stats.sent} sent, "
                    f"{stats.acked} acked, {stats.methods} methods"
                ),
            )

        stats = asyncio.run(
            run_devices(
                specs,
                host,
                port,
                context,
                rate_per_s=rate,
                duration_s=left,
                count=messages,
                qos=qos,
                proxy=proxy,
                on_progress=show,
                bounded=True,
            )
        )
    result = {
        "devices": count,
        "connected": stats.connected,
        "failed": stats.failed,
        "lost": stats.lost,
        "sent": stats.sent,
        "acked": stats.acked,
        "methods": stats.methods,
        "seconds": round(stats.elapsed_s, 3),
        "acked_per_s": round(stats.acked / stats.elapsed_s, 1) if stats.elapsed_s else 0,
        "puback_p50_ms": _ms(stats.percentile(0.5)),
        "puback_p99_ms": _ms(stats.percentile(0.99)),
        "errors": stats.errors[:10],
    }
    emit(result, as_json=as_json)
    if stats.lost:
        click.echo(
            f"Error: the server at {host}:{port} went away: {stats.lost} of {stats.connected} "
            "connected devices lost their connection",
            err=True,
        )
        ctx.exit(EXIT_SERVER_GONE)
    if stats.connected == 0:
        click.echo(
            f"Error: no device could connect to {host}:{port} ({len(stats.errors)} errors)",
            err=True,
        )
        ctx.exit(EXIT_SERVER_GONE)


def _register(
    base: str,
    source: str,
    token: str,
    count: int,
    project: str,
    deployment: str,
    duration: float,
) -> list[DeviceSpec]:
    """Create the devices through /v1 and return their MQTT credentials."""
    import httpx

    from thinghub.security import sas
    from thinghub.simulator import DeviceSpec

    specs = []
    timeout = min(HTTP_TIMEOUT_S, duration)
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        ) as http:
            for i in range(count):
                response = http.post(
                    "/v1/devices",
                    json={"name": f"sim-{i}", "project": project, "deployment": deployment},
                )
                if response.status_code != 200:
                    raise click.ClickException(
                        f"registering a device at {base} failed ({response.status_code}): "
                        f"{response.text[:300]}"
                    )
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
    except httpx.TransportError as exc:
        raise ServerGone(
            f"cannot reach thinghub at {base} ({exc!r}); the address came from {source}. Is "
            "`thinghub serve` running? Pass --url, or --data-dir of the running server."
        ) from exc
    return specs


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def register(cli: click.Group) -> None:
    cli.add_command(simulate)
