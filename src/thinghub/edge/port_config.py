"""Port properties: the seed's `PUT /api/configure` keys, checked, with thinghub's additions.

One vocabulary for edge.toml's `[ports.N]` tables and the local API: a port is a dict of
upper-case properties. The seed's keys (COMM_TYPE, BAUD_RATE, DATA_BITS, PARITY_BIT,
DELIMITERS_HEX, PORT, HOST) keep their meaning; thinghub adds DEVICE (the serial device
path), STOP_BITS, REGEX / JSON_PATHS (the line parser) and MODULE / MODULE_KEY (the port's
module on the cloud). `PortSettings` is the effective view with defaults filled in.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMM_TYPES",
    "MAX_PORT",
    "PORT_KEYS",
    "SECRET_KEYS",
    "PortConfigError",
    "PortSettings",
    "check_port_number",
    "check_properties",
    "effective",
]

#: Port numbers run 1..MAX_PORT (the THREAD has 1 to 3; a Linux gateway may have more).
MAX_PORT = 64

#: RS232/RS485: a serial device (DEVICE). USB: a serial device, or HOST:PORT when both are set
#: (the seed's RNDIS case). TCP: HOST:PORT (thinghub's addition). ANALOG/OFF: no byte stream.
COMM_TYPES = ("RS232", "RS485", "USB", "TCP", "ANALOG", "OFF")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
PARITIES = ("NONE", "ODD", "EVEN", "MARK", "SPACE")

#: Bytes of one delimiter; a longer one is surely a typo.
MAX_DELIMITER_BYTES = 16
#: Metrics one port's parser may produce per line.
MAX_METRICS = 64

PORT_KEYS = (
    "COMM_TYPE",
    "BAUD_RATE",
    "DATA_BITS",
    "PARITY_BIT",
    "STOP_BITS",
    "DELIMITERS_HEX",
    "PORT",
    "HOST",
    "DEVICE",
    "REGEX",
    "JSON_PATHS",
    "MODULE",
    "MODULE_KEY",
)
#: Write-only: never answered by GET /api/configure.
SECRET_KEYS = frozenset({"MODULE_KEY"})

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_MODULE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}")
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_JSON_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\['[^']*'\])+")


class PortConfigError(ValueError):
    """A port property has a bad value; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = f"{key}: {message}"


def check_port_number(value: Any) -> int:
    """A port number 1..MAX_PORT from an int or a string of digits (curl sends `"1"`)."""
    if isinstance(value, bool):
        raise PortConfigError("port", f"{value!r} is not a port number")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_PORT:
        raise PortConfigError("port", f"{value!r} is not a port number 1 to {MAX_PORT}")
    return value


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise PortConfigError(key, f"{value!r} is not a whole number")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise PortConfigError(key, f"{value!r} is not a whole number")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).upper() if isinstance(value, str) else None
    if text not in choices:
        raise PortConfigError(key, f"{value!r} is not one of {', '.join(choices)}")
    return text


def _text(key: str, value: Any, max_len: int = 4096) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise PortConfigError(key, f"expected a non-empty string of at most {max_len} characters")
    return value


def _delimiters(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise PortConfigError("DELIMITERS_HEX", "expected a hex string or a list of them")
    out = []
    for item in items:
        if not isinstance(item, str) or not _HEX.fullmatch(item):
            raise PortConfigError("DELIMITERS_HEX", f"{item!r} is not hex bytes like 0D0A")
        if len(item) // 2 > MAX_DELIMITER_BYTES:
            raise PortConfigError("DELIMITERS_HEX", f"{item!r} is over {MAX_DELIMITER_BYTES} bytes")
        out.append(item.upper())
    return out


def _regex(value: Any) -> str:
    text = _text("REGEX", value)
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise PortConfigError("REGEX", f"{text!r} does not compile: {exc}") from exc
    names = list(compiled.groupindex)
    if not names:
        raise PortConfigError("REGEX", "name each value's group: (?P<temperature>[-0-9.]+)")
    if len(names) > MAX_METRICS:
        raise PortConfigError("REGEX", f"at most {MAX_METRICS} named groups")
    for name in names:
        if name == "readAt":
            raise PortConfigError("REGEX", "readAt is the reading time; name the group otherwise")
    return text


def _json_paths(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value or len(value) > MAX_METRICS:
        raise PortConfigError(
            "JSON_PATHS", f'expected {{"metric": "$.path"}} with 1 to {MAX_METRICS} entries'
        )
    out = {}
    for metric, path in value.items():
        if not isinstance(metric, str) or not _METRIC.fullmatch(metric) or metric == "readAt":
            raise PortConfigError("JSON_PATHS", f"{metric!r} is not a metric name")
        if not isinstance(path, str) or not _JSON_PATH.fullmatch(path):
            raise PortConfigError("JSON_PATHS", f"{path!r} is not a path like $.a.b[0]")
        out[metric] = path
    return out


def _check(key: str, value: Any) -> Any:
    match key:
        case "COMM_TYPE":
            return _choice(key, value, COMM_TYPES)
        case "BAUD_RATE":
            rate = _int(key, value)
            if rate not in BAUD_RATES:
                raise PortConfigError(key, f"{rate} is not one of {BAUD_RATES}")
            return rate
        case "DATA_BITS":
            bits = _int(key, value)
            if bits not in (5, 6, 7, 8):
                raise PortConfigError(key, f"{bits} is not 5, 6, 7 or 8")
            return bits
        case "PARITY_BIT":
            return _choice(key, value, PARITIES)
        case "STOP_BITS":
            if value not in (1, 1.5, 2) or isinstance(value, bool):
                raise PortConfigError(key, f"{value!r} is not 1, 1.5 or 2")
            return value
        case "DELIMITERS_HEX":
            return _delimiters(value)
        case "PORT":
            port = _int(key, value)
            if not 1 <= port <= 65535:
                raise PortConfigError(key, f"{port} is not a TCP port 1 to 65535")
            return port
        case "HOST":
            return _text(key, value, 253)
        case "DEVICE":
            path = _text(key, value)
            if "\x00" in path:
                raise PortConfigError(key, "a device path has no NUL byte")
            return path
        case "REGEX":
            return _regex(value)
        case "JSON_PATHS":
            return _json_paths(value)
        case "MODULE":
            if not isinstance(value, str) or not _MODULE_ID.fullmatch(value):
                raise PortConfigError(key, f"{value!r} is not a module id")
            return value
        case "MODULE_KEY":
            text = _text(key, value, 256)
            try:
                base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise PortConfigError(key, "is not a base64 key (the module's primaryKey)") from exc
            return text
    raise PortConfigError(key, f"unknown property; known: {', '.join(PORT_KEYS)}")


def check_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Each property checked and normalised (upper-case choices, ints); raises on the first
    bad one. Keys are matched case-sensitively, as the seed writes them."""
    if not isinstance(properties, Mapping):
        raise PortConfigError("body", "expected a JSON object of port properties")
    return {key: _check(key, value) for key, value in properties.items()}


@dataclass(frozen=True, slots=True)
class PortSettings:
    """A port's effective configuration: its properties with defaults filled in."""

    number: int
    comm_type: str
    device: str | None
    host: str | None
    tcp_port: int | None
    baud_rate: int
    data_bits: int
    parity: str
    stop_bits: float
    delimiters: tuple[bytes, ...]
    regex: str | None
    json_paths: dict[str, str] | None
    module: str
    module_key: str | None

    @property
    def is_tcp(self) -> bool:
        """Reached over TCP (COMM_TYPE TCP, or USB with HOST and PORT)."""
        if self.comm_type == "TCP":
            return True
        return self.comm_type == "USB" and self.host is not None and self.tcp_port is not None

    @property
    def has_stream(self) -> bool:
        """Whether the port carries bytes at all (ANALOG and OFF do not)."""
        return self.comm_type not in ("ANALOG", "OFF")

    def where(self) -> str | None:
        """What to open: `host:port`, a device path, or None when nothing is configured."""
        if self.is_tcp:
            return f"{self.host}:{self.tcp_port}" if self.host and self.tcp_port else None
        return self.device


def effective(number: int, properties: Mapping[str, Any]) -> PortSettings:
    """The settings of port `number` from its (already checked) properties."""
    if "REGEX" in properties and "JSON_PATHS" in properties:
        raise PortConfigError("REGEX", "set REGEX or JSON_PATHS, not both")
    delimiters = properties.get("DELIMITERS_HEX", ["0A"])
    return PortSettings(
        number=number,
        comm_type=properties.get("COMM_TYPE", "RS232"),
        device=properties.get("DEVICE"),
        host=properties.get("HOST"),
        tcp_port=properties.get("PORT"),
        baud_rate=properties.get("BAUD_RATE", 9600),
        data_bits=properties.get("DATA_BITS", 8),
        parity=properties.get("PARITY_BIT", "NONE"),
        stop_bits=float(properties.get("STOP_BITS", 1)),
        delimiters=tuple(bytes.fromhex(d) for d in delimiters),
        regex=properties.get("REGEX"),
        json_paths=properties.get("JSON_PATHS"),
        module=properties.get("MODULE", f"port{number}"),
        module_key=properties.get("MODULE_KEY"),
    )
