"""Settings: one table, loaded once into a frozen object.

Precedence: defaults < TOML file < THINGHUB_* environment < CLI flags.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH, JSON_DEPTH_CEILING

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "load_settings"]


class ConfigError(ValueError):
    """A setting has a bad value; the message names the key and the value."""


def _integer(value: Any) -> int:
    """An int from an int or a string of digits; no bools, no fractions."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected a whole number")
    return int(value)


def _port(value: Any) -> int:
    port = _integer(value)
    if not 0 <= port <= 65535:
        raise ValueError("a port is 0 (ephemeral) to 65535")
    return port


def _positive(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _positive_int(value: Any) -> int:
    number = _integer(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _json_depth(value: Any) -> int:
    depth = _integer(value)
    if not 1 <= depth <= JSON_DEPTH_CEILING:
        # Above the ceiling, bodies wrapped for an answer could reach what orjson refuses to
        # write (254 levels).
        raise ValueError(f"must be 1 to {JSON_DEPTH_CEILING}")
    return depth


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(str(part) for part in value)
    raise ValueError("expected a list or a comma-separated string")


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value)


def _log_level(value: Any) -> str:
    level = str(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("one of debug, info, warning, error")
    return level


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir", Path, Path("thinghub-data"), "Folder for the database, files and certificates."
    ),
    Setting("host", str, "127.0.0.1", "Address every listener binds to."),
    Setting("http_port", _port, 8080, "HTTP port: REST faces and OpenAPI docs (0 = ephemeral)."),
    Setting("mqtt_port", _port, 8883, "MQTT over TLS port for devices and DPS (0 = ephemeral)."),
    Setting(
        "database",
        _optional_str,
        None,
        "Database URL; empty means SQLite in the data directory, postgresql://... selects "
        "PostgreSQL.",
    ),
    Setting(
        "hub_hostname",
        str,
        "localhost",
        "Host name devices are told to connect to (DPS assignedHub); it is in the server "
        "certificate.",
    ),
    Setting(
        "hostnames",
        _str_list,
        (),
        "Extra host names and IPs for the server certificate (comma-separated).",
    ),
    Setting(
        "admin_token",
        _optional_str,
        None,
        "On first start, create an admin API token with this value for the default account.",
    ),
    Setting("ready_file", _optional_path, None, "Also write the ready JSON to this file."),
    Setting("log_level", _log_level, "info", "debug, info, warning or error."),
    Setting(
        "face_listen",
        _str_list,
        (),
        "FACE=HOST:PORT pairs: also serve a face at the root of its own port.",
    ),
    Setting(
        "jwt_ttl_s", _positive_int, 3600, "Lifetime of access tokens from POST /v1/auth/token."
    ),
    Setting(
        "commit_interval_ms",
        _positive,
        2.0,
        "PostgreSQL: longest a telemetry write waits for others to share its COPY batch "
        "(SQLite commits what is queued without waiting).",
    ),
    Setting("batch_max_rows", _positive_int, 2000, "Most writes committed in one transaction."),
    Setting(
        "max_payload_bytes",
        _positive_int,
        262_144,
        "Largest telemetry body accepted (the Azure SDK's own limit is 256 KiB).",
    ),
    Setting(
        "max_request_bytes",
        _positive_int,
        4_194_304,
        "Largest HTTP request body a REST face reads (larger: 413 in the face's error shape).",
    ),
    Setting(
        "max_json_depth",
        _json_depth,
        DEFAULT_MAX_JSON_DEPTH,
        f"Deepest nesting of arrays and objects in a JSON document: HTTP bodies of every face, "
        f"twin patches, DPS requests (deeper: 400); deeper device telemetry is kept as text "
        f"(1 to {JSON_DEPTH_CEILING}).",
    ),
    Setting(
        "method_timeout_max_s",
        _positive,
        300.0,
        "Largest responseTimeoutInSeconds a direct method call may ask for.",
    ),
    Setting(
        "command_ttl_s",
        _positive,
        86_400.0,
        "How long a queued command waits for its device before it expires.",
    ),
    Setting("page_max", _positive_int, 1000, "Most items one list request returns."),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The loaded settings. Built only by load_settings; passed down explicitly."""

    data_dir: Path = Path("thinghub-data")
    host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 8883
    database: str | None = None
    hub_hostname: str = "localhost"
    hostnames: tuple[str, ...] = ()
    admin_token: str | None = None
    ready_file: Path | None = None
    log_level: str = "info"
    face_listen: tuple[str, ...] = ()
    jwt_ttl_s: int = 3600
    commit_interval_ms: float = 2.0
    batch_max_rows: int = 2000
    max_payload_bytes: int = 262_144
    max_request_bytes: int = 4_194_304
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    method_timeout_max_s: float = 300.0
    command_ttl_s: float = 86_400.0
    page_max: int = 1000

    @property
    def database_url(self) -> str:
        """The database URL, SQLite in the data directory when none is set."""
        return self.database or f"sqlite:///{self.data_dir / 'thinghub.db'}"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))


_BY_NAME = {s.name: s for s in SETTINGS}
assert {f.name for f in fields(Settings)} == set(_BY_NAME), "Settings and SETTINGS disagree"
ENV_PREFIX = "THINGHUB_"


def _apply(values: dict[str, Any], source: Mapping[str, Any], origin: str) -> None:
    for key, raw in source.items():
        setting = _BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        try:
            values[key] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {key} = {raw!r} is invalid: {exc}") from exc


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings: defaults < TOML file < THINGHUB_* environment < CLI overrides.

    Args:
        config_file: a TOML file with a flat table of settings (or a [thinghub] table).
        environ: the environment; os.environ when None.
        overrides: values given on the command line; None values are ignored.

    Raises:
        ConfigError: naming the key and the bad value.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    path = config_file or (Path(env["THINGHUB_CONFIG"]) if env.get("THINGHUB_CONFIG") else None)
    if path is not None:
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        _apply(values, table.get("thinghub", table), str(path))
    from_env = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in _BY_NAME
    }
    _apply(values, from_env, "environment")
    _apply(values, {k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
    return Settings(**values)
