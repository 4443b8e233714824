"""`thinghub telemetry tail DEVICE`: follow a device's live telemetry and events from the
running server, over its native stream (`GET /v1/devices/{id}/stream`, Server-Sent Events)."""

from __future__ import annotations

import json
from typing import Any

import click

from thinghub.cli._common import ServerGone, data_dir_option, load, running_server

__all__ = ["register"]


@click.group()
def telemetry() -> None:
    """Live telemetry of devices, from the running server."""


@telemetry.command("tail")
@click.argument("device_id")
@click.option(
    "--url",
    help="The server's HTTP base URL [default: from <data-dir>/server.json, else the "
    "host and http_port settings].",
)
@click.option(
    "--token",
    envvar="THINGHUB_TOKEN",
    required=True,
    help="An API token that sees the device (or THINGHUB_TOKEN).",
)
@click.option(
    "--kinds",
    default="telemetry,connection",
    show_default=True,
    help="What to show, comma-separated: telemetry, connection, twin, event, device.",
)
@click.option("--count", type=int, help="Stop after this many telemetry messages and events.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for scripts).")
@data_dir_option
@click.pass_context
def tail(
    ctx: click.Context,
    /,
    device_id: str,
    url: str | None,
    token: str,
    kinds: str,
    count: int | None,
    duration: float | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Print a device's telemetry (and connection changes) as it arrives, until Ctrl-C,
    --count or --duration.

    Exits 0 when stopped so, 1 when the device is not found for the token, 4 when the server
    cannot be reached or goes away.
    """
    import asyncio

    settings = load(ctx, **options)
    found = running_server(settings)
    base = (url or found["url"]).rstrip("/")
    source = "--url" if url else found["source"]
    try:
        asyncio.run(_follow(base, source, device_id, token, kinds, count, duration, as_json))
    except KeyboardInterrupt:
        return


async def _follow(
    base: str,
    source: str,
    device_id: str,
    token: str,
    kinds: str,
    count: int | None,
    duration: float | None,
    as_json: bool,
) -> None:
    import asyncio

    import httpx

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    # No read timeout: a quiet device is normal (the server sends a comment every 15 s).
    timeout = httpx.Timeout(10.0, read=None)
    shown = 0
    try:
        async with (
            asyncio.timeout(duration),
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream(
                "GET",
                f"{base}/v1/devices/{device_id}/stream",
                params={"kinds": kinds},
                headers=headers,
            ) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise click.ClickException(_refusal(response))
            name = "message"
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    if name == "ready":
                        if not as_json:
                            click.echo(f"following {device_id} at {base} (Ctrl-C stops)", err=True)
                        continue
                    _show(name, data, as_json)
                    shown += 1
                    if count is not None and shown >= count:
                        return
    except TimeoutError:
        return  # --duration is up
    except httpx.TransportError as exc:
        raise ServerGone(
            f"cannot reach thinghub at {base} ({exc!r}); the address came from {source}"
        ) from exc
    raise ServerGone(
        f"the server at {base} closed the stream (it stopped, or the device was deleted)"
    )


def _refusal(response: Any) -> str:
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"the server answered {response.status_code}: {message}"


def _show(name: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, separators=(",", ":")))
        return
    when = data.get("timestamp", "")
    if name == "telemetry":
        body = data.get("body")
        text = json.dumps(body) if not isinstance(body, str) else body
        click.echo(f"{when}  {data['deviceId']}  telemetry  {text}")
    elif name == "connection":
        click.echo(f"{when}  {data['deviceId']}  {data.get('connectionState', '').lower()}")
    elif name == "event":
        click.echo(
            f"{when}  {data['deviceId']}  {data.get('eventType')}  {json.dumps(data.get('body'))}"
        )
    elif name == "twin":
        click.echo(
            f"{data['deviceId']}  twin {data.get('section')} v{data.get('version')}  "
            f"{json.dumps(data.get('patch'))}"
        )
    else:
        click.echo(f"{data['deviceId']}  {name}  {json.dumps(data)}")


def register(cli: click.Group) -> None:
    cli.add_command(telemetry)
