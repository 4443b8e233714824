"""Settings: one table, loaded once into a frozen object.

Precedence: defaults < TOML file < THINGHUB_* environment < CLI flags.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


def _days(value: Any) -> float:
    """Retention days: 0 (keep forever) up to a century; fractions allowed."""
    if isinstance(value, bool):
        raise ValueError("expected a number of days")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= 36_500:
        raise ValueError("must be 0 (keep forever) to 36500 days")
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


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value)


def _optional_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    url = str(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("expected http(s)://host[:port][/path], without query or fragment")
    return url


def _ttl_s(value: Any) -> float:
    """A credential lifetime: 1 second to 12 hours (AWS STS's usual maximum)."""
    number = _positive(value)
    if number < 1 or number > 43_200:
        raise ValueError("must be 1 to 43200 seconds")
    return number


def _region(value: Any) -> str:
    """An S3 region name, as SigV4 scopes carry it."""
    text = str(value)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", text):
        raise ValueError("a region is 1 to 63 characters of a-z 0-9 -, like us-east-1")
    return text


def _cloud_name(value: Any) -> str:
    text = str(value).strip()
    if not 1 <= len(text) <= 64:
        raise ValueError("must be 1 to 64 characters")
    return text


def _optional_nats_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    url = str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("expected nats://HOST:PORT (or tls://HOST:PORT)")
    return url


def _log_level(value: Any) -> str:
    level = str(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError("one of debug, info, warning, error")
    return level


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return text

    return parse


def _switch(value: Any) -> bool:
    """on/off (also true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ValueError("expected on or off")


# Device listener and ingest limits (docs/limits.md, "MQTT device limits"): named here for the
# table below (and for tests that reason about them).
MQTT_MAX_CONNECTIONS = 15_000  # the benchmark's 10,000 idle devices, ~40 KiB of TLS each
MQTT_MAX_HANDSHAKES = 1024
MQTT_HANDSHAKE_TIMEOUT_S = 10.0
MQTT_CONNECT_TIMEOUT_S = 30.0  # IoT Hub: CONNECT within 30 s of the TLS handshake
MQTT_DEVICE_MAX_INFLIGHT = 64
MQTT_DEVICE_MESSAGES_PER_S = 2000.0  # twice the benchmarks' 1,000 messages/s per device
MQTT_DEVICE_BYTES_PER_S = 2_097_152.0  # 2 MiB/s: 1,000 messages/s of 2 KiB
MQTT_DEVICE_CONNECTS_PER_MIN = 12.0
MQTT_DEVICE_CONNECT_BURST = 30
INGEST_QUEUE_MAX_BYTES = 67_108_864  # 64 MiB


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
        "itwin_ws_port",
        _port,
        4201,
        "iTwin socket API: JSON-RPC over WebSocket, path / (0 = ephemeral).",
    ),
    Setting(
        "itwin_tcp_port",
        _port,
        4200,
        "iTwin socket API: JSON-RPC over TCP, concatenated JSON objects (0 = ephemeral).",
    ),
    Setting(
        "itwin_tls",
        _boolean,
        False,
        "Serve the iTwin WebSocket and TCP ports with TLS (the hub's server certificate).",
    ),
    Setting(
        "database",
        _optional_str,
        None,
        "Database URL; empty means SQLite in the data directory, postgresql://... selects "
        "PostgreSQL.",
    ),
    Setting(
        "bus",
        _optional_nats_url,
        None,
        "NATS URL (nats://HOST:4222) that joins this node to a cluster of nodes on one "
        "PostgreSQL database; empty means the in-process bus (one node). Needs PostgreSQL.",
    ),
    Setting(
        "node_id",
        _optional_str,
        None,
        "This node's name in a cluster (unique per node); empty means HOST:PID.",
    ),
    Setting(
        "node_lease_s",
        _positive,
        15.0,
        "Seconds after a node's last heartbeat that its devices show Disconnected on the other "
        "nodes (with --bus).",
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
        "log_format",
        _choice("text", "json"),
        "text",
        "Logs on stderr as text lines or as JSON objects, one per line.",
    ),
    Setting(
        "access_log",
        _switch,
        False,
        "Log one line per HTTP request (method, path, status, duration, face, principal id; "
        "never a token or query string): on or off.",
    ),
    Setting(
        "metrics",
        _choice("off", "on", "token"),
        "token",
        "Prometheus metrics at /metrics: off (404), on (open to anyone who reaches the HTTP "
        "port), token (Bearer metrics_token, or an admin API token of the default account).",
    ),
    Setting(
        "metrics_token",
        _optional_str,
        None,
        "A bearer token a Prometheus scraper may send for /metrics (with metrics = token).",
    ),
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
    Setting(
        "query_readers",
        _positive_int,
        2,
        "Telemetry and event queries run on this many database readers (SQLite threads, "
        "PostgreSQL connections) of their own, apart from those device login needs.",
    ),
    Setting(
        "query_timeout_s",
        _positive,
        30.0,
        "Longest a telemetry or event query may take, waiting for a reader included; then it "
        "is stopped and answered 504.",
    ),
    Setting(
        "retention_telemetry_days",
        _days,
        0.0,
        "Days telemetry (and its observations) is kept, unless the account sets its own; "
        "0 keeps it forever.",
    ),
    Setting(
        "retention_events_days",
        _days,
        0.0,
        "Days events are kept, unless the account sets its own; 0 keeps them forever.",
    ),
    Setting(
        "retention_files_days",
        _days,
        0.0,
        "Days device files (Ioto uploads) are kept after they were last written, unless the "
        "account sets its own; 0 keeps them forever.",
    ),
    Setting(
        "retention_interval_s",
        _positive,
        3600.0,
        "How often expired telemetry, events and files are deleted (also once at start).",
    ),
    Setting(
        "retention_batch_rows",
        _positive_int,
        5000,
        "Rows deleted per transaction when data expires or a device's data is deleted.",
    ),
    Setting(
        "public_url",
        _optional_url,
        None,
        "The server's public base URL (https://iot.example.com) for absolute links it writes, "
        "such as IoT Central's nextLink; empty: at the address a request reached when its Host "
        "header names that address, else relative. A Host naming another address is never used.",
    ),
    Setting(
        "http_max_header_bytes",
        _positive_int,
        65_536,
        "Largest request line plus headers of one HTTP request (larger: 431 and close).",
    ),
    Setting(
        "http_max_headers",
        _positive_int,
        100,
        "Most header lines in one HTTP request (more: 431 and close).",
    ),
    Setting(
        "http_header_timeout_s",
        _positive,
        10.0,
        "Time a client has to send a request's headers, from connecting (or from the first "
        "byte of a later request); then 408 and close.",
    ),
    Setting(
        "http_body_timeout_s",
        _positive,
        60.0,
        "Time a client has to send a request body once its headers are in; then 408 and close.",
    ),
    Setting(
        "http_keepalive_timeout_s",
        _positive,
        5.0,
        "An idle keep-alive HTTP connection is closed after this long without a request.",
    ),
    Setting(
        "http_max_connections",
        _positive_int,
        512,
        "Most open connections per HTTP listener; over it the longest-idle connection is "
        "closed, or the new one gets 503 when all are busy.",
    ),
    Setting(
        "mqtt_max_connections",
        _positive_int,
        MQTT_MAX_CONNECTIONS,
        "Most open sockets on the MQTT port (also capped below the open-file limit); more are "
        "closed at once.",
    ),
    Setting(
        "mqtt_max_handshakes",
        _positive_int,
        MQTT_MAX_HANDSHAKES,
        "Most MQTT sockets still before their CONNECT (proxy line, TLS); more are closed at once.",
    ),
    Setting(
        "mqtt_handshake_timeout_s",
        _positive,
        MQTT_HANDSHAKE_TIMEOUT_S,
        "Longest a device may take for the proxy CONNECT line and the TLS handshake.",
    ),
    Setting(
        "mqtt_connect_timeout_s",
        _positive,
        MQTT_CONNECT_TIMEOUT_S,
        "Longest a device may take to send its MQTT CONNECT after the TLS handshake.",
    ),
    Setting(
        "mqtt_device_max_inflight",
        _positive_int,
        MQTT_DEVICE_MAX_INFLIGHT,
        "Messages one connection may have received but not yet stored (QoS 1: not yet "
        "acknowledged); at the limit its socket is not read.",
    ),
    Setting(
        "mqtt_device_messages_per_s",
        _positive,
        MQTT_DEVICE_MESSAGES_PER_S,
        "PUBLISH packets per second one device connection may send before it is slowed.",
    ),
    Setting(
        "mqtt_device_bytes_per_s",
        _positive,
        MQTT_DEVICE_BYTES_PER_S,
        "Topic and payload bytes per second one device connection may send before it is slowed.",
    ),
    Setting(
        "mqtt_device_connects_per_min",
        _positive,
        MQTT_DEVICE_CONNECTS_PER_MIN,
        "Accepted connects per minute per device after its burst; more get CONNACK 3.",
    ),
    Setting(
        "mqtt_device_connect_burst",
        _positive_int,
        MQTT_DEVICE_CONNECT_BURST,
        "Connects a device may make at once before mqtt_device_connects_per_min applies.",
    ),
    Setting(
        "files_dir",
        _optional_path,
        None,
        "Folder for device files (Ioto uploads); empty: `files` in the data directory. With "
        "several nodes on PostgreSQL it must be one folder they all share.",
    ),
    Setting(
        "ioto_cloud_name",
        _cloud_name,
        "thinghub",
        "The cloud name Ioto devices are told (cloudName in register and provision answers).",
    ),
    Setting(
        "ioto_region",
        _region,
        "thinghub-1",
        "The region of the S3-compatible file endpoint: SigV4 signatures must name it, and "
        "Ioto devices are told it (cloudRegion, getCreds region).",
    ),
    Setting(
        "ioto_credentials_ttl_s",
        _ttl_s,
        3600.0,
        "Lifetime of the temporary credentials Ioto devices get from getCreds (1 s to 12 h; "
        "under 25 minutes the agent asks for new ones every time it uses them).",
    ),
    Setting(
        "ioto_signed_url_ttl_s",
        _ttl_s,
        3600.0,
        "Lifetime of the URLs getSignedUrl answers (1 s to 12 h).",
    ),
    Setting(
        "ioto_max_file_bytes",
        _positive_int,
        67_108_864,
        "Largest device file one upload may store (64 MiB).",
    ),
    Setting(
        "ingest_queue_max_bytes",
        _positive_int,
        INGEST_QUEUE_MAX_BYTES,
        "Telemetry bytes queued for storage at most; when full, device sockets are not read.",
    ),
    Setting(
        "console_session_idle_s",
        _positive,
        1800.0,
        "A web console session ends after this long without a request (it also ends when its "
        "access token does, jwt_ttl_s after login).",
    ),
    Setting(
        "console_max_sessions",
        _positive_int,
        10_000,
        "Console sessions (signed in, or showing the login form) kept at most; beyond it the "
        "least recently used ends.",
    ),
    Setting(
        "console_login_failures",
        _positive_int,
        5,
        "Failed console logins allowed per user name within console_login_window_s (four "
        "times as many per client address); past it logins are refused with 429.",
    ),
    Setting(
        "console_login_window_s",
        _positive,
        300.0,
        "The sliding window over which failed console logins are counted.",
    ),
    Setting(
        "ux4iot_session_idle_s",
        _positive,
        600.0,
        "A ux4iot session with no socket and no request for this long is gone; its socket "
        "is refused and the client opens a new session.",
    ),
    Setting(
        "ux4iot_max_sessions",
        _positive_int,
        100_000,
        "Most open ux4iot sessions (POST /session needs no credentials); over it: 429.",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The loaded settings, passed down explicitly. Built by load_settings (or, in tests,
    Settings.defaults()); the defaults are the SETTINGS table's, written nowhere else."""

    data_dir: Path
    host: str
    http_port: int
    mqtt_port: int
    itwin_ws_port: int
    itwin_tcp_port: int
    itwin_tls: bool
    database: str | None
    bus: str | None
    node_id: str | None
    node_lease_s: float
    hub_hostname: str
    hostnames: tuple[str, ...]
    admin_token: str | None
    ready_file: Path | None
    log_level: str
    log_format: str
    access_log: bool
    metrics: str
    metrics_token: str | None
    face_listen: tuple[str, ...]
    jwt_ttl_s: int
    commit_interval_ms: float
    batch_max_rows: int
    max_payload_bytes: int
    max_request_bytes: int
    max_json_depth: int
    method_timeout_max_s: float
    command_ttl_s: float
    page_max: int
    query_readers: int
    query_timeout_s: float
    retention_telemetry_days: float
    retention_events_days: float
    retention_files_days: float
    retention_interval_s: float
    retention_batch_rows: int
    public_url: str | None
    http_max_header_bytes: int
    http_max_headers: int
    http_header_timeout_s: float
    http_body_timeout_s: float
    http_keepalive_timeout_s: float
    http_max_connections: int
    mqtt_max_connections: int
    mqtt_max_handshakes: int
    mqtt_handshake_timeout_s: float
    mqtt_connect_timeout_s: float
    mqtt_device_max_inflight: int
    mqtt_device_messages_per_s: float
    mqtt_device_bytes_per_s: float
    mqtt_device_connects_per_min: float
    mqtt_device_connect_burst: int
    files_dir: Path | None
    ioto_cloud_name: str
    ioto_region: str
    ioto_credentials_ttl_s: float
    ioto_signed_url_ttl_s: float
    ioto_max_file_bytes: int
    ingest_queue_max_bytes: int
    console_session_idle_s: float
    console_max_sessions: int
    console_login_failures: int
    console_login_window_s: float
    ux4iot_session_idle_s: float
    ux4iot_max_sessions: int

    @classmethod
    def defaults(cls) -> Settings:
        """The table's defaults, untouched by files, environment or flags (for tests; derive
        other values with dataclasses.replace)."""
        return cls(**{s.name: s.default for s in SETTINGS})

    @property
    def database_url(self) -> str:
        """The database URL, SQLite in the data directory when none is set."""
        return self.database or f"sqlite:///{self.data_dir / 'thinghub.db'}"

    @property
    def files_path(self) -> Path:
        """Where device files are kept: files_dir, else `files` in the data directory."""
        return self.files_dir or self.data_dir / "files"

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
    settings = Settings(**values)
    if settings.bus is not None and not settings.is_postgres:
        raise ConfigError(
            f"bus = {settings.bus!r} needs database = postgresql://...: several nodes share one "
            "PostgreSQL database, and a SQLite file belongs to one node"
        )
    return settings
