"""Routes a device CONNECT to its dialect (spec §9): DPS and the hub by the user name's shape,
Ioto by the client certificate without a user name."""

from __future__ import annotations

from thinghub.devices.dps import Dps
from thinghub.devices.hub import Hub
from thinghub.devices.hub_topics import parse_dps_username
from thinghub.devices.ioto import Ioto
from thinghub.devices.mqtt_server import Dialect
from thinghub.mqtt.packets import Connect

__all__ = ["DeviceRouter"]


class DeviceRouter:
    def __init__(self, hub: Hub, dps: Dps, ioto: Ioto | None = None) -> None:
        self.hub = hub
        self.dps = dps
        self.ioto = ioto

    def dialect_for(self, connect: Connect, peer_cert: bytes | None = None) -> Dialect:
        """DPS: `{idScope}/registrations/{id}/...`; Ioto: a client certificate and no user
        name (Azure devices always send one, X.509 ones too); the hub: everything else."""
        if connect.username and parse_dps_username(connect.username) is not None:
            return self.dps
        if self.ioto is not None and connect.username is None and peer_cert is not None:
            return self.ioto
        return self.hub
