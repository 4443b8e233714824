"""Cloud-to-device messages: queued durably, delivered when the device is connected."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import orjson

from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device, Principal
from thinghub.domain.storable import check_storable
from thinghub.ports import C2DMessage, Clock, DeviceLinks, Store
from thinghub.services.auth import authorize

__all__ = ["DEFAULT_C2D_TTL_S", "MAX_C2D_BYTES", "C2DService"]

DEFAULT_C2D_TTL_S = 3600.0
# IoT Hub's C2D limit is 64 KiB per message.
MAX_C2D_BYTES = 65_536


class C2DService:
    def __init__(self, store: Store, clock: Clock, links: DeviceLinks) -> None:
        self.store = store
        self.clock = clock
        self.links = links
        # Held only while delivering: weak values, so idle devices keep no lock.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def send(
        self,
        principal: Principal,
        device: Device,
        body: Any,
        properties: dict[str, str],
        ttl_s: float | None = None,
    ) -> C2DMessage:
        authorize(principal, "write")
        check_storable(body, "body")
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        if len(raw) > MAX_C2D_BYTES:
            raise TooLarge(
                f"message is {len(raw)} bytes; the limit is {MAX_C2D_BYTES}", field="body"
            )
        for key in properties:
            if not key or key.startswith("$"):
                raise Invalid(f"property name {key!r} is reserved or empty", field="properties")
        now = self.clock.now()
        message = C2DMessage(
            new_uuid(), device.id, raw, dict(properties), now, now + (ttl_s or DEFAULT_C2D_TTL_S)
        )
        await self.store.enqueue_c2d(message)
        await self.deliver_pending(device.id)  # the one way out, so nothing goes twice
        return message

    async def deliver_pending(self, device_id: str) -> int:
        """Send what waited for this device; expired messages are dropped. Returns the count.

        One delivery per device at a time, reading the queue afresh under its lock: a message
        sent while the device (re)connects is pushed by exactly one of the two deliveries.
        """
        lock = self._locks.get(device_id)
        if lock is None:
            lock = self._locks[device_id] = asyncio.Lock()
        async with lock:
            sent = 0
            now = self.clock.now()
            for message in await self.store.pending_c2d(device_id):
                if message.expires_at <= now:
                    await self.store.delete_c2d(message.id)
                elif await self.links.push_c2d(message):
                    await self.store.delete_c2d(message.id)
                    sent += 1
            return sent
