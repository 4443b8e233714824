"""Cloud-to-device messages: queued durably, delivered when the device is connected.

Deliveries to one device hold the named lock `c2d/<device>` (Locks), so a message sent while
the device (re)connects goes out once; the push goes through the DeviceChannel, on whichever
node holds the connection.
"""

from __future__ import annotations

from typing import Any

import orjson

from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.ports import C2DMessage, Clock, DeviceChannel, Locks, Stores
from thinghub.services.registry import Registry

__all__ = ["DEFAULT_C2D_TTL_S", "MAX_C2D_BYTES", "C2DService"]

DEFAULT_C2D_TTL_S = 3600.0
# IoT Hub's C2D limit is 64 KiB per message.
MAX_C2D_BYTES = 65_536


class C2DService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        channel: DeviceChannel,
        locks: Locks,
        registry: Registry,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.channel = channel
        self.locks = locks
        self.registry = registry

    async def send(
        self,
        principal: Principal,
        device: Device | str,
        body: Any,
        properties: dict[str, str],
        ttl_s: float | None = None,
    ) -> C2DMessage:
        """Queue a message for a device (Permission.DEVICES_WRITE; `device` is a Device the
        caller holds or its id) and deliver it now if the device is connected.

        Raises:
            Forbidden, NotFound: see Registry.device_for.
            Invalid: a reserved or unstorable property, an unstorable body.
            TooLarge: the body is over MAX_C2D_BYTES.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        check_storable(body, "body")
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
        if len(raw) > MAX_C2D_BYTES:
            raise TooLarge(
                f"message is {len(raw)} bytes; the limit is {MAX_C2D_BYTES}", field="body"
            )
        for key in properties:
            if not key or key.startswith("$"):
                raise Invalid(f"property name {key!r} is reserved or empty", field="properties")
        # Names and values go into the store and the topic as UTF-8: a lone surrogate
        # ("\ud800", which JSON parsers let through) has no UTF-8 form.
        check_storable(properties, "properties")
        now = self.clock.now()
        message = C2DMessage(
            new_uuid(), target.id, raw, dict(properties), now, now + (ttl_s or DEFAULT_C2D_TTL_S)
        )
        await self.stores.c2d.enqueue(message)
        await self.deliver_pending(target.id)  # the one way out, so nothing goes twice
        return message

    async def deliver_pending(self, device_id: str) -> int:
        """Send what waited for this device; expired messages are dropped. Returns the count.

        One delivery per device at a time, reading the queue afresh under its lock: a message
        sent while the device (re)connects is pushed by exactly one of the two deliveries.
        """
        async with self.locks.hold(f"c2d/{device_id}"):
            sent = 0
            now = self.clock.now()
            for message in await self.stores.c2d.pending(device_id):
                if message.expires_at <= now:
                    await self.stores.c2d.delete(message.id)
                elif await self.channel.push_c2d(message):
                    await self.stores.c2d.delete(message.id)
                    sent += 1
            return sent
