"""`thinghub ca`: the hub's CA certificate, which devices trust to reach the MQTT port."""

from __future__ import annotations

from typing import Any

import click

from thinghub.cli._common import data_dir_option, init_option, json_option, load

__all__ = ["ca", "register"]


@click.command()
@data_dir_option
@init_option
@json_option
@click.pass_context
def ca(ctx: click.Context, /, init: bool, as_json: bool, **options: Any) -> None:
    """Print the hub CA certificate (PEM); devices trust it to reach the MQTT port.

    It is the data directory's (certs/ca.pem, made by `thinghub serve`); with --init one is
    made if there is none.
    """
    settings = load(ctx, **options)
    certs = settings.data_dir / "certs"
    if not init and not (certs / "ca.pem").is_file():
        raise click.ClickException(
            f"no CA certificate at {(certs / 'ca.pem').resolve()}: point to the server's data "
            "directory with --data-dir DIR (or THINGHUB_DATA_DIR), or create a CA there with "
            "--init (`thinghub serve` creates one too)."
        )
    from thinghub.security.ca import CertificateAuthority

    authority = CertificateAuthority.load_or_create(
        certs, hostnames=[settings.hub_hostname, *settings.hostnames]
    )
    if as_json:
        import json

        click.echo(json.dumps({"path": str(authority.ca_path.resolve()), "pem": authority.ca_pem}))
    else:
        click.echo(authority.ca_pem, nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(ca)
