"""Events: record what happened to a device, durably and on the live bus."""

from __future__ import annotations

from typing import Any

from thinghub.domain.events import Event, EventType, sequence_number
from thinghub.domain.live import EventRecorded
from thinghub.domain.model import Device
from thinghub.ports import Bus, Clock, Counter, Stores

__all__ = ["CONNECTION_SEQUENCE", "EventService"]

# The counter behind connection events' sequence numbers (IoT Hub's are ever-increasing).
CONNECTION_SEQUENCE = "events.connection"


class EventService:
    def __init__(self, stores: Stores, bus: Bus, clock: Clock, counter: Counter) -> None:
        self.stores = stores
        self.bus = bus
        self.clock = clock
        self.counter = counter

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
        await self.announce(event)
        return event

    async def announce(self, event: Event) -> None:
        """Publish a stored event on the live bus."""
        await self.bus.publish(
            EventRecorded(event.account_id, event.project, event.device_id, event)
        )

    async def connection_changed(
        self, device: Device, connected: bool, ts: float | None = None
    ) -> Event:
        """Record a connection_state_event; its sequence number is taken now, so callers
        that serialize a device's transitions (Registry.set_connected) get them in order."""
        event = await self.connection_event(device, connected, ts)
        await self.stores.events.append(event)
        await self.announce(event)
        return event

    async def connection_event(
        self, device: Device, connected: bool, ts: float | None = None
    ) -> Event:
        """A connection_state_event, not stored yet (Registry.set_connected stores it with the
        device's state); its sequence number is taken now."""
        now = self.clock.now() if ts is None else ts
        body = {
            "sequenceNumber": sequence_number(now, await self.counter.next(CONNECTION_SEQUENCE)),
            "state": "deviceConnected" if connected else "deviceDisconnected",
        }
        return Event(
            device.account_id,
            device.id,
            EventType.CONNECTION_STATE,
            now,
            body,
            device.project,
            device.deployment,
        )
