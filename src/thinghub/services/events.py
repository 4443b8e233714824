"""Events: record what happened to a device, durably and on the live bus."""

from __future__ import annotations

import itertools
from typing import Any

from thinghub.domain.events import Event, EventType, sequence_number
from thinghub.domain.model import Device
from thinghub.ports import Bus, Clock, Stores

__all__ = ["EventService"]


class EventService:
    def __init__(self, stores: Stores, bus: Bus, clock: Clock) -> None:
        self.stores = stores
        self.bus = bus
        self.clock = clock
        self._counter = itertools.count(1)

    async def record(
        self, device: Device, type_: EventType, body: dict[str, Any], ts: float | None = None
    ) -> Event:
        event = Event(
            device.account_id,
            device.id,
            type_,
            self.clock.now() if ts is None else ts,
            body,
            device.project,
            device.deployment,
        )
        await self.stores.events.append(event)
        await self.bus.publish(
            f"event.{device.account_id}.{_subject_token(device.id)}",
            {"type": type_.value, "deviceId": device.id, "ts": event.ts, "body": body},
        )
        return event

    async def connection_changed(self, device: Device, connected: bool) -> Event:
        now = self.clock.now()
        body = {
            "sequenceNumber": sequence_number(now, next(self._counter)),
            "state": "deviceConnected" if connected else "deviceDisconnected",
        }
        return await self.record(device, EventType.CONNECTION_STATE, body, now)


def _subject_token(device_id: str) -> str:
    # Subjects are dot-separated; device ids may hold dots and modules hold a slash.
    return device_id.replace(".", "%2E").replace("/", "%2F")
