"""Cloud-to-device messages: queued durably, delivered when the device is connected.

Deliveries to one device hold the named lock `c2d/<device>` (Locks), so a message sent while
the device (re)connects goes out once; the push goes through the DeviceChannel, on whichever
node holds the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from thinghub.domain.errors import Invalid, PreconditionFailed, TooLarge
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.ports import C2DMessage, Clock, DeviceChannel, Locks, Stores
from thinghub.services.registry import Registry

__all__ = ["C2D_LOCK_S", "DEFAULT_C2D_TTL_S", "MAX_C2D_BYTES", "C2DService", "Received"]

DEFAULT_C2D_TTL_S = 3600.0
# IoT Hub's C2D limit is 64 KiB per message.
MAX_C2D_BYTES = 65_536
# How long a message received by polling (IoT Hub's HTTPS receive) stays locked to its
# receiver before it may be received again: IoT Hub's default C2D lock duration.
C2D_LOCK_S = 60.0


@dataclass(frozen=True, slots=True)
class Received:
    """A message received by polling, locked until it is settled or its lock expires."""

    message: C2DMessage
    lock_token: str
    delivery_count: int  # how many times it was received, this one included


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
        # Polling receives (receive/settle): lock token -> (message, locked until), and per
        # device how often each of its waiting messages was received. Kept by the node that
        # answered the receive (in memory: a restart unlocks every message).
        self._locked: dict[str, tuple[C2DMessage, float]] = {}
        self._deliveries: dict[str, dict[str, int]] = {}

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

    async def receive(self, device_id: str) -> Received | None:
        """The oldest message waiting for the device that no receiver holds, locked for
        C2D_LOCK_S (IoT Hub's HTTPS receive), or None. Expired messages are dropped."""
        async with self.locks.hold(f"c2d/{device_id}"):
            now = self.clock.now()
            for token, (held, until) in list(self._locked.items()):
                if until <= now or held.expires_at <= now:
                    del self._locked[token]
            held_ids = {held.id for held, _ in self._locked.values()}
            pending = await self.stores.c2d.pending(device_id)
            counts = self._deliveries.pop(device_id, {})
            counts = {m.id: counts[m.id] for m in pending if m.id in counts}  # only waiting ones
            received = None
            for message in pending:
                if message.expires_at <= now:
                    await self.stores.c2d.delete(message.id)
                    counts.pop(message.id, None)
                elif message.id not in held_ids:
                    count = counts[message.id] = counts.get(message.id, 0) + 1
                    token = new_uuid()
                    self._locked[token] = (message, now + C2D_LOCK_S)
                    received = Received(message, token, count)
                    break
            if counts:
                self._deliveries[device_id] = counts
            return received

    async def settle(
        self, device_id: str, lock_token: str, outcome: Literal["complete", "reject", "abandon"]
    ) -> None:
        """Settle a message received by `receive`: complete or reject deletes it, abandon
        lets it be received again.

        Raises:
            PreconditionFailed: no message of the device holds this lock (a wrong token, a
                lock that expired, a message settled already).
        """
        async with self.locks.hold(f"c2d/{device_id}"):
            held = self._locked.get(lock_token)
            now = self.clock.now()
            if held is None or held[0].device_id != device_id or held[1] <= now:
                raise PreconditionFailed(
                    "no message is locked with this lock token", field="lockToken"
                )
            del self._locked[lock_token]
            if outcome != "abandon":
                await self.stores.c2d.delete(held[0].id)
