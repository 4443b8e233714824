"""The gateway's identity on the cloud: connection strings, SAS tokens and MQTT usernames.

Shapes are IoT Hub's, as the cloud's device port expects them (docs/faces/device-mqtt.md):
client id `gateway` or `gateway/module`, username `{hub}/{client id}/?api-version=...`, and a
SAS token over `{hub}/devices/{gateway}[/modules/{module}]` signed with that identity's key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from thinghub.security import sas

__all__ = [
    "API_VERSION",
    "SAS_TTL_S",
    "ConnectionString",
    "HubIdentity",
    "parse_connection_string",
]

API_VERSION = "2021-04-12"
#: Lifetime of the SAS tokens we sign. A token is checked at CONNECT only; every reconnect
#: signs a fresh one.
SAS_TTL_S = 3600


@dataclass(frozen=True, slots=True)
class ConnectionString:
    host_name: str
    device_id: str
    key: str = field(repr=False)


def parse_connection_string(text: str) -> ConnectionString:
    """`HostName=...;DeviceId=...;SharedAccessKey=...` (other keys ignored); ValueError names
    what is missing. A ModuleId is refused: the edge connects as the gateway itself."""
    parts: dict[str, str] = {}
    for item in text.strip().split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{key!r} is not Key=Value")
        parts[key.strip()] = value.strip()
    missing = [k for k in ("HostName", "DeviceId", "SharedAccessKey") if not parts.get(k)]
    if missing:
        raise ValueError(f"the connection string has no {', '.join(missing)}")
    if parts.get("ModuleId"):
        raise ValueError("give the gateway's connection string (no ModuleId)")
    try:
        sas.sign(parts["SharedAccessKey"], "check", 0)
    except sas.SasError as exc:
        raise ValueError(f"SharedAccessKey: {exc.reason}") from exc
    return ConnectionString(parts["HostName"], parts["DeviceId"], parts["SharedAccessKey"])


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """Who connects: the gateway (module None) or one of its modules, with its key."""

    host_name: str
    device_id: str
    module_id: str | None
    key: str = field(repr=False)

    @property
    def client_id(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"

    @property
    def username(self) -> str:
        return f"{self.host_name}/{self.client_id}/?api-version={API_VERSION}"

    def password(self, now: float | None = None, ttl_s: int = SAS_TTL_S) -> str:
        resource = f"{self.host_name}/devices/{self.device_id}"
        if self.module_id is not None:
            resource += f"/modules/{self.module_id}"
        expiry = math.ceil((time.time() if now is None else now) + ttl_s)  # at least ttl_s
        return sas.sign(self.key, resource, expiry)

    @property
    def root(self) -> str:
        """The topic root: `devices/{gateway}` or `devices/{gateway}/modules/{module}`."""
        root = f"devices/{self.device_id}"
        return root if self.module_id is None else f"{root}/modules/{self.module_id}"
