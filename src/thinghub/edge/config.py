"""Edge settings: one frozen object from defaults < edge.toml < command-line flags.

edge.toml (every key optional; docs/edge.md has the full table):

    listen = "127.0.0.1:8090"        # the local API; elsewhere than loopback needs api_token
    data_dir = "/var/lib/thinghub-edge"
    [cloud]   url, ca_file, connection_string | dps_id_scope + dps_registration_id + dps_key,
              reconnect_max_s, max_inflight, keepalive_s, sas_ttl_s
    [queue]   max_items
    [update]  url_template, install_command, version_command, max_bytes, timeout_s
    [board]   kind ("linux" or "simulated"), serial_number, thermal_zone, led, led_green,
              led_red, sysfs_root
    [board.simulated]  the simulated board's values
    [ports.1] COMM_TYPE, DEVICE, BAUD_RATE, ... (the PUT /api/configure keys)
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .board_sim import SimulatedValues
from .credentials import ConnectionString, parse_connection_string
from .port_config import PortConfigError, check_port_number, check_properties, effective
from .queue import DEFAULT_MAX_ITEMS

__all__ = [
    "DEFAULT_LISTEN",
    "CloudSettings",
    "EdgeConfigError",
    "EdgeSettings",
    "UpdateSettings",
    "load_edge_settings",
]

DEFAULT_LISTEN = "127.0.0.1:8090"
DEFAULT_MQTT_PORT = 8883
BOARDS = ("linux", "simulated")


class EdgeConfigError(ValueError):
    """A setting has a bad value; the message names the key and the value."""


@dataclass(frozen=True, slots=True)
class DpsSettings:
    id_scope: str
    registration_id: str
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CloudSettings:
    host: str | None  # where to dial (from --cloud); None: the hub host name
    port: int
    ca_file: Path | None
    connection: ConnectionString | None
    dps: DpsSettings | None
    reconnect_max_s: float = 30.0
    max_inflight: int = 16
    keepalive_s: int = 60
    # The lifetime of the SAS tokens the edge signs for its hub connections: the cloud closes
    # a connection when its token expires, so the edge reconnects with a new one before.
    sas_ttl_s: int = 3600


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    url_template: str | None = None
    install_command: tuple[str, ...] = ()
    version_command: tuple[str, ...] = ()
    max_bytes: int = 256 * 1024 * 1024
    timeout_s: float = 600.0


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    cloud: CloudSettings
    listen_host: str = "127.0.0.1"
    listen_port: int = 8090
    api_token: str | None = field(default=None, repr=False)
    data_dir: Path = Path("thinghub-edge-data")
    board: str = "linux"
    board_options: Mapping[str, Any] = field(default_factory=dict)
    simulated: SimulatedValues = field(default_factory=SimulatedValues)
    ports: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    queue_max_items: int = DEFAULT_MAX_ITEMS
    update: UpdateSettings = field(default_factory=UpdateSettings)
    log_level: str = "info"
    ready_file: Path | None = None

    @property
    def is_loopback(self) -> bool:
        host = self.listen_host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _fail(key: str, value: Any, why: str) -> EdgeConfigError:
    return EdgeConfigError(f"{key}: {value!r} {why}")


def _positive(key: str, value: Any, integer: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0 or (integer and int(value) != value):
        raise _fail(key, value, "must be a positive " + ("whole number" if integer else "number"))
    return int(value) if integer else float(value)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "must be a non-empty string")
    return value


def _command(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(key, value, 'must be a list of strings, e.g. ["pip", "install", "{file}"]')
    return tuple(value)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`); port 0 is ephemeral."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _fail("listen", value, "is not HOST:PORT")
    return host, int(port)


def parse_cloud_url(value: str) -> tuple[str, int]:
    """`mqtts://HOST[:PORT]` (port 8883 by default): where the cloud's device port is."""
    parts = urlsplit(value)
    if parts.scheme != "mqtts" or not parts.hostname:
        raise _fail("cloud.url", value, "is not mqtts://HOST[:PORT]")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise _fail("cloud.url", value, "has a bad port") from exc
    return parts.hostname, port


def _table(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _fail(key, value, "must be a table")
    return value


def _ports(raw: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, table in _table(raw, "ports").items():
        try:
            number = check_port_number(key)
            if not isinstance(table, Mapping):
                raise PortConfigError("ports", "each port is a table of properties")
            props = check_properties(table)
            effective(number, props)
        except PortConfigError as exc:
            raise EdgeConfigError(f"ports.{key}.{exc.message}") from exc
        out[number] = props
    return out


def load_edge_settings(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> EdgeSettings:
    """Read edge.toml (if given) and apply command-line overrides (None values ignored).

    Overrides: cloud_url, connection_string, dps_id_scope, dps_registration_id, dps_key,
    cloud_ca, listen, api_token, data_dir, board, log_level, ready_file.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EdgeConfigError(f"config file {config_file}: {exc}") from exc
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    cloud = _table(raw, "cloud")
    queue = _table(raw, "queue")
    update = _table(raw, "update")
    board_table = dict(_table(raw, "board"))
    simulated_table = board_table.pop("simulated", {})

    known_top = {
        "listen", "api_token", "data_dir", "board", "log_level",
        "cloud", "queue", "update", "ports",
    }  # fmt: skip
    for key in raw:
        if key not in known_top:
            raise _fail(key, raw[key], f"is not a setting; known: {', '.join(sorted(known_top))}")

    listen_host, listen_port = parse_listen(
        str(flags.get("listen", raw.get("listen", DEFAULT_LISTEN)))
    )

    connection_text = flags.get("connection_string", cloud.get("connection_string"))
    connection = None
    if connection_text is not None:
        try:
            connection = parse_connection_string(_text("connection_string", connection_text))
        except ValueError as exc:
            raise EdgeConfigError(f"connection_string: {exc}") from exc
    dps_values = {
        name: flags.get(f"dps_{name}", cloud.get(f"dps_{name}"))
        for name in ("id_scope", "registration_id", "key")
    }
    dps = None
    if any(v is not None for v in dps_values.values()):
        missing = [f"dps_{k}" for k, v in dps_values.items() if not v]
        if missing:
            raise EdgeConfigError(f"DPS needs dps_id_scope, dps_registration_id and dps_key; "
                                  f"missing: {', '.join(missing)}")  # fmt: skip
        dps = DpsSettings(**{k: _text(f"dps_{k}", v) for k, v in dps_values.items()})
    if connection is None and dps is None:
        raise EdgeConfigError(
            "the cloud: give --connection-string (HostName=...;DeviceId=...;SharedAccessKey=...) "
            "or DPS settings (--dps-id-scope, --dps-registration-id, --dps-key)"
        )
    if connection is not None and dps is not None:
        raise EdgeConfigError("give a connection string or DPS settings, not both")

    url = flags.get("cloud_url", cloud.get("url"))
    if url is None:
        if connection is None:
            raise EdgeConfigError("cloud.url (--cloud mqtts://HOST:PORT) is needed with DPS")
        host, port = None, DEFAULT_MQTT_PORT
    else:
        host, port = parse_cloud_url(_text("cloud.url", url))
    ca = flags.get("cloud_ca", cloud.get("ca_file"))
    cloud_settings = CloudSettings(
        host=host,
        port=port,
        ca_file=Path(ca) if ca is not None else None,
        connection=connection,
        dps=dps,
        reconnect_max_s=_positive("cloud.reconnect_max_s", cloud.get("reconnect_max_s", 30.0)),
        max_inflight=_positive("cloud.max_inflight", cloud.get("max_inflight", 16), True),
        keepalive_s=_positive("cloud.keepalive_s", cloud.get("keepalive_s", 60), True),
        sas_ttl_s=_positive("cloud.sas_ttl_s", cloud.get("sas_ttl_s", 3600), True),
    )

    board = flags.get("board", board_table.pop("kind", "linux"))
    if board not in BOARDS:
        raise _fail("board.kind", board, f"is not one of {', '.join(BOARDS)}")
    if not isinstance(simulated_table, Mapping):
        raise _fail("board.simulated", simulated_table, "must be a table")
    try:
        simulated = SimulatedValues.from_table(simulated_table)
    except ValueError as exc:
        raise EdgeConfigError(str(exc)) from exc
    board_keys = ("serial_number", "thermal_zone", "led", "led_green", "led_red", "sysfs_root")
    for key, value in board_table.items():
        if key not in board_keys:
            raise _fail(f"board.{key}", value, f"is not a setting; known: {', '.join(board_keys)}")
        _text(f"board.{key}", value)

    update_settings = UpdateSettings(
        url_template=(
            _text("update.url_template", update["url_template"])
            if "url_template" in update
            else None
        ),
        install_command=(
            _command("update.install_command", update["install_command"])
            if "install_command" in update
            else ()
        ),
        version_command=(
            _command("update.version_command", update["version_command"])
            if "version_command" in update
            else ()
        ),
        max_bytes=_positive("update.max_bytes", update.get("max_bytes", 256 * 1024 * 1024), True),
        timeout_s=_positive("update.timeout_s", update.get("timeout_s", 600.0)),
    )
    settings = EdgeSettings(
        cloud=cloud_settings,
        listen_host=listen_host,
        listen_port=listen_port,
        api_token=flags.get("api_token", raw.get("api_token")),
        data_dir=Path(flags.get("data_dir", raw.get("data_dir", "thinghub-edge-data"))),
        board=board,
        board_options=board_table,
        simulated=simulated,
        ports=_ports(raw),
        queue_max_items=_positive(
            "queue.max_items", queue.get("max_items", DEFAULT_MAX_ITEMS), True
        ),
        update=update_settings,
        log_level=str(flags.get("log_level", raw.get("log_level", "info"))),
        ready_file=Path(flags["ready_file"]) if "ready_file" in flags else None,
    )
    if settings.api_token is not None:
        _text("api_token", settings.api_token)
    if not settings.is_loopback and not settings.api_token:
        raise EdgeConfigError(
            f"listen: {settings.listen_host!r} is not a loopback address: set api_token "
            "(--api-token or THINGHUB_EDGE_API_TOKEN) so the local API is not open to the network"
        )
    return replace(settings)
