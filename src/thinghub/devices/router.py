"""Routes a device CONNECT to the hub or DPS dialect by its username shape (spec §9)."""

from __future__ import annotations

from thinghub.devices.dps import Dps
from thinghub.devices.hub import Hub
from thinghub.devices.hub_topics import parse_dps_username
from thinghub.devices.mqtt_server import Dialect
from thinghub.mqtt.packets import Connect

__all__ = ["DeviceRouter"]


class DeviceRouter:
    def __init__(self, hub: Hub, dps: Dps) -> None:
        self.hub = hub
        self.dps = dps

    def dialect_for(self, connect: Connect) -> Dialect:
        if connect.username and parse_dps_username(connect.username) is not None:
            return self.dps
        return self.hub
