"""Commands: awaited (direct method, answer or timeout) and queued (status lifecycle).

Theory of operation: an awaited command goes to the device through the DeviceChannel (on
whichever node holds its connection) and waits for its answer, bounded by the caller's
timeout. A queued command is stored Pending at once; if Presence says the device is connected
and it listens for methods, it is handed to this node's delivery loop, else it waits in the
store until the device connects, on any node (that node's device adapter calls
`device_connected`, which reads the store). Delivery is a direct method through the
DeviceChannel; its answer finishes the command: 2xx Completed, other status Failed, no answer
TimedOut. A Pending command whose TTL passes becomes Expired, checked on read and on each
connect. The delivery loop owns its tasks in a TaskGroup (`run`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from thinghub.domain.commands import Command, CommandMode, CommandStatus, parse_method_name
from thinghub.domain.errors import DeviceOffline, Invalid, NotFound, TimedOut
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device, Principal
from thinghub.ports import Clock, DeviceChannel, Locks, MethodResult, Presence, Stores
from thinghub.services.auth import authorize

__all__ = ["DEFAULT_TIMEOUT_S", "CommandService"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
MIN_TIMEOUT_S = 5.0


class CommandService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        presence: Presence,
        channel: DeviceChannel,
        max_timeout_s: float,
        ttl_s: float,
        locks: Locks | None = None,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.presence = presence
        self.channel = channel
        # With several nodes, each may hand the same Pending command to its delivery loop (the
        # node that queued it, the node the device connects to): a delivery holds the lock
        # `command/<id>` and reads the command afresh under it, so it goes out once.
        self.locks = locks
        self.max_timeout_s = max_timeout_s
        self.ttl_s = ttl_s
        self._deliveries: asyncio.Queue[Command] = asyncio.Queue()
        self._in_flight: set[str] = set()

    def _timeout(self, value: Any) -> float:
        if value is None:
            return DEFAULT_TIMEOUT_S
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(
                "responseTimeoutInSeconds must be a number", field="responseTimeoutInSeconds"
            )
        if not MIN_TIMEOUT_S <= value <= self.max_timeout_s:
            raise Invalid(
                f"responseTimeoutInSeconds must be {MIN_TIMEOUT_S:g} to "
                f"{self.max_timeout_s:g}, got {value}",
                field="responseTimeoutInSeconds",
            )
        return float(value)

    # -- awaited -------------------------------------------------------------------------

    async def invoke(
        self,
        principal: Principal,
        device: Device,
        name: str,
        payload: Any,
        timeout_s: Any = None,
    ) -> MethodResult:
        """Call a direct method and wait for the device's answer."""
        authorize(principal, "write")
        parse_method_name(name)
        timeout = self._timeout(timeout_s)
        if not await self.presence.is_connected(device.id):
            raise DeviceOffline(f"device {device.id!r} is not connected", field="deviceId")
        return await self.channel.call_method(device.id, name, payload, timeout)

    # -- queued --------------------------------------------------------------------------

    async def submit(
        self,
        principal: Principal,
        device: Device,
        name: str,
        payload: Any,
        timeout_s: Any = None,
        ttl_s: float | None = None,
    ) -> Command:
        authorize(principal, "write")
        parse_method_name(name, "commandName")
        now = self.clock.now()
        command = Command(
            id=new_uuid(),
            account_id=device.account_id,
            device_id=device.id,
            name=name,
            payload=payload,
            mode=CommandMode.QUEUED,
            status=CommandStatus.PENDING,
            created_at=now,
            expires_at=now + (ttl_s or self.ttl_s),
            response_timeout_s=self._timeout(timeout_s),
        )
        await self.stores.commands.insert(command)
        if await self.presence.is_connected(device.id) and await self.channel.has_subscribed(
            device.id, "methods"
        ):
            self._deliveries.put_nowait(command)
        return command

    async def get(self, principal: Principal, device: Device, command_id: str) -> Command:
        command = await self.stores.commands.get(command_id)
        if (
            command is None
            or command.device_id != device.id
            or command.account_id != principal.account_id
        ):
            raise NotFound(f"command {command_id!r} not found", field="commandId")
        return await self._expire_if_due(command)

    async def device_connected(self, device_id: str) -> None:
        """Hand the device's pending commands to the delivery loop."""
        for command in await self.stores.commands.pending(device_id):
            command = await self._expire_if_due(command)
            if command.status is CommandStatus.PENDING and command.id not in self._in_flight:
                self._deliveries.put_nowait(command)

    async def _expire_if_due(self, command: Command) -> Command:
        if (
            command.status is CommandStatus.PENDING
            and self.clock.now() >= command.expires_at
            and command.id not in self._in_flight
        ):
            command = command.finish(CommandStatus.EXPIRED, self.clock.now())
            await self.stores.commands.update(command)
        return command

    async def run(self) -> None:
        """The delivery loop; runs until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                command = await self._deliveries.get()
                if command.id in self._in_flight:
                    continue
                self._in_flight.add(command.id)
                tasks.create_task(self._deliver(command), name=f"command[{command.id}]")

    async def _deliver(self, command: Command) -> None:
        if self.locks is None:
            await self._deliver_once(command)
            return
        try:
            async with self.locks.hold(f"command/{command.id}"):
                current = await self.stores.commands.get(command.id)
                if current is not None:
                    await self._deliver_once(current)
        except Exception:
            logger.exception("delivering command %s to %s failed", command.id, command.device_id)
            self._in_flight.discard(command.id)

    async def _deliver_once(self, command: Command) -> None:
        try:
            command = await self._expire_if_due(command)
            if command.status is not CommandStatus.PENDING:
                return
            try:
                result = await self.channel.call_method(
                    command.device_id, command.name, command.payload, command.response_timeout_s
                )
            except DeviceOffline:
                return  # stays Pending; delivered on the next connect
            except TimedOut:
                command = command.finish(CommandStatus.TIMED_OUT, self.clock.now())
            else:
                status = (
                    CommandStatus.COMPLETED if 200 <= result.status < 300 else CommandStatus.FAILED
                )
                command = command.finish(status, self.clock.now(), result.status, result.payload)
            await self.stores.commands.update(command)
        except Exception:
            logger.exception("delivering command %s to %s failed", command.id, command.device_id)
        finally:
            self._in_flight.discard(command.id)
