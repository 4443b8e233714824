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

The rules of a command live here, for every face: who may send one (services/authz.py), the
response timeout (MIN_TIMEOUT_S to the method_timeout_max_s setting) and the time a queued
command may wait (1 s to the command_ttl_s setting), how large a queued command's request may
be, and that a templated device's command must be in its template and match its request
schema. A face passes its own names for the inputs (CommandFields), so an error names the
field its caller sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from thinghub.domain.commands import Command, CommandMode, CommandStatus, parse_method_name
from thinghub.domain.dtdl import DeviceTemplate, ObjectSchema
from thinghub.domain.errors import DeviceOffline, Invalid, NotFound, TimedOut, TooLarge
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.ports import Clock, DeviceChannel, Locks, MethodResult, Presence, Stores
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_COMMAND_PAYLOAD_BYTES",
    "MIN_TIMEOUT_S",
    "MIN_TTL_S",
    "CommandFields",
    "CommandService",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
# IoT Hub's bounds on a direct method's response timeout: 5 s up (the top is a setting).
MIN_TIMEOUT_S = 5.0
# The shortest time a queued command may wait for its device.
MIN_TTL_S = 1.0
# IoT Hub's limit on a direct method's payload; a queued command's request is stored, so it is
# held to it when it is queued.
MAX_COMMAND_PAYLOAD_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class CommandFields:
    """A face's names for a command's inputs, named in its errors (by default the native
    /v1 names)."""

    name: str = "name"
    payload: str = "payload"
    timeout: str = "responseTimeoutInSeconds"
    ttl: str = "ttlInSeconds"


_NATIVE = CommandFields()


def _seconds(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{field} must be a number of seconds", field=field)
    if not low <= value <= high:
        raise Invalid(
            f"{field} must be a number of seconds from {low:g} to {high:g}, got {value}",
            field=field,
        )
    return float(value)


def _unwrap_request(template: DeviceTemplate, name: str, payload: Any) -> Any:
    """Accept {"<request name>": value} for a command whose request is `value` (IoT Central's
    documented example body), unless the request is an object that has a field of that
    name."""
    _, command = template.command(name)
    request = command.request
    if request is None or not isinstance(payload, dict) or list(payload) != [request.name]:
        return payload
    if isinstance(request.schema, ObjectSchema) and request.name in request.schema.fields:
        return payload
    return payload[request.name]


class CommandService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        presence: Presence,
        channel: DeviceChannel,
        registry: Registry,
        templates: TemplateService,
        max_timeout_s: float,
        ttl_s: float,
        locks: Locks | None = None,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.presence = presence
        self.channel = channel
        self.registry = registry
        self.templates = templates
        # With several nodes, each may hand the same Pending command to its delivery loop (the
        # node that queued it, the node the device connects to): a delivery holds the lock
        # `command/<id>` and reads the command afresh under it, so it goes out once.
        self.locks = locks
        self.max_timeout_s = max_timeout_s
        self.ttl_s = ttl_s
        self._deliveries: asyncio.Queue[Command] = asyncio.Queue()
        self._in_flight: set[str] = set()

    def response_timeout(self, value: Any, field: str = _NATIVE.timeout) -> float:
        """A response timeout in seconds: None is DEFAULT_TIMEOUT_S, else a number from
        MIN_TIMEOUT_S to the method_timeout_max_s setting.

        Raises:
            Invalid: naming `field`.
        """
        if value is None:
            return DEFAULT_TIMEOUT_S
        return _seconds(value, field, MIN_TIMEOUT_S, self.max_timeout_s)

    def time_to_live(self, value: Any, field: str = _NATIVE.ttl) -> float:
        """How long a queued command waits for its device: None is the command_ttl_s
        setting, else a number of seconds from MIN_TTL_S to it.

        Raises:
            Invalid: naming `field`.
        """
        if value is None:
            return self.ttl_s
        return _seconds(value, field, MIN_TTL_S, self.ttl_s)

    def _timeout(self, value: Any) -> float:
        return self.response_timeout(value)

    # -- awaited -------------------------------------------------------------------------

    async def invoke(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        payload: Any,
        timeout_s: Any = None,
        *,
        fields: CommandFields = _NATIVE,
    ) -> MethodResult:
        """Call a direct method (Permission.DEVICES_WRITE) and wait for the device's answer.

        `device` is a Device the caller holds, or a device id (looked up for the caller).

        Raises:
            Forbidden, NotFound: see Registry.device_for.
            Invalid: a bad method name or timeout (naming the face's `fields`).
            DeviceOffline: the device is not connected.
            TimedOut: it did not answer within the timeout.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        parse_method_name(name, fields.name)
        timeout = self.response_timeout(timeout_s, fields.timeout)
        if not await self.presence.is_connected(target.id):
            raise DeviceOffline(f"device {target.id!r} is not connected", field="deviceId")
        return await self.channel.call_method(target.id, name, payload, timeout)

    # -- queued --------------------------------------------------------------------------

    async def submit(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        payload: Any,
        timeout_s: Any = None,
        ttl_s: Any = None,
        *,
        fields: CommandFields = _NATIVE,
    ) -> Command:
        """Queue a command (Permission.DEVICES_WRITE); it reaches the device now if it is
        connected, else when it next connects, until `ttl_s` passes.

        The request must be storable and at most MAX_COMMAND_PAYLOAD_BYTES; for a device with
        a template, the command must be in it and the request must match its schema (a
        request sent as {"<request name>": value} is taken as `value`).

        Raises:
            Forbidden, NotFound: see Registry.device_for; NotFound also for a command its
                template lacks.
            Invalid: a bad name, timeout, TTL or request (naming the face's `fields`).
            TooLarge: the request is over MAX_COMMAND_PAYLOAD_BYTES.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        parse_method_name(name, fields.name)  # `component*command` for a component's command
        timeout = self.response_timeout(timeout_s, fields.timeout)
        ttl = self.time_to_live(ttl_s, fields.ttl)
        check_storable(payload, fields.payload)
        size = len(orjson.dumps(payload))
        if size > MAX_COMMAND_PAYLOAD_BYTES:
            raise TooLarge(
                f"{fields.payload} is {size} bytes; the limit is {MAX_COMMAND_PAYLOAD_BYTES}",
                field=fields.payload,
            )
        template = await self.templates.for_device(target)
        if template is not None:
            payload = _unwrap_request(template, name, payload)
            template.command(name)[1].check_request(payload)
        now = self.clock.now()
        command = Command(
            id=new_uuid(),
            account_id=target.account_id,
            device_id=target.id,
            name=name,
            payload=payload,
            mode=CommandMode.QUEUED,
            status=CommandStatus.PENDING,
            created_at=now,
            expires_at=now + ttl,
            response_timeout_s=timeout,
        )
        await self.stores.commands.insert(command)
        if await self.presence.is_connected(target.id) and await self.channel.has_subscribed(
            target.id, "methods"
        ):
            self._deliveries.put_nowait(command)
        return command

    async def get(self, principal: Principal, device: Device | str, command_id: str) -> Command:
        """A command sent to the device (Permission.READ); Expired once its TTL passed.

        Raises:
            NotFound: no such command of this device within the caller's reach.
        """
        target = await self.registry.device_for(principal, device, Permission.READ)
        command = await self.stores.commands.get(command_id)
        if (
            command is None
            or command.device_id != target.id
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
        finally:
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
