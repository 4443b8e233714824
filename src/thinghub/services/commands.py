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
import contextlib
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
    "MAX_CONNECT_TIMEOUT_S",
    "MAX_HISTORY",
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
# How long a waited-for command may wait for its device to connect (IoT Central's bound on
# connectionTimeout; 0, its default, is "only if it is connected now").
MAX_CONNECT_TIMEOUT_S = 30.0
# The most commands one page of a history answers (newest first).
MAX_HISTORY = 100
# How often a waiting caller looks at the store for a command finished on another node.
_WAIT_POLL_S = 2.0
# Beyond connect + response timeout, how long a waiting caller gives the delivery to record
# its outcome.
_WAIT_SLACK_S = 2.0
# The response code of a command whose device was not connected in time (IoT Hub's "device
# not online" is a 404).
OFFLINE_RESPONSE_CODE = 404


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
        # Commands a caller waits for (execute), set when this node records their outcome.
        self._finished: dict[str, asyncio.Event] = {}

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
        ttl = self.time_to_live(ttl_s, fields.ttl)
        command = await self._new(target, name, payload, timeout_s, ttl, CommandMode.QUEUED, fields)
        await self.stores.commands.insert(command)
        if await self._reachable(target.id):
            self._deliveries.put_nowait(command)
        return command

    async def _new(
        self,
        target: Device,
        name: str,
        payload: Any,
        timeout_s: Any,
        ttl: float,
        mode: CommandMode,
        fields: CommandFields,
    ) -> Command:
        """A Pending command, checked: name, timeout, request size and template."""
        parse_method_name(name, fields.name)  # `component*command` for a component's command
        timeout = self.response_timeout(timeout_s, fields.timeout)
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
        return Command(
            id=new_uuid(),
            account_id=target.account_id,
            device_id=target.id,
            name=name,
            payload=payload,
            mode=mode,
            status=CommandStatus.PENDING,
            created_at=now,
            expires_at=now + ttl,
            response_timeout_s=timeout,
        )

    async def _reachable(self, device_id: str) -> bool:
        return await self.presence.is_connected(device_id) and await self.channel.has_subscribed(
            device_id, "methods"
        )

    # -- sent and waited for -------------------------------------------------------------

    def connect_timeout(self, value: Any, field: str = _NATIVE.ttl) -> float:
        """How long a command waits for its device to connect: None and 0 are "not at
        all", else a number of seconds up to MAX_CONNECT_TIMEOUT_S.

        Raises:
            Invalid: naming `field`.
        """
        if value is None:
            return 0.0
        return _seconds(value, field, 0.0, MAX_CONNECT_TIMEOUT_S)

    async def execute(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        payload: Any,
        timeout_s: Any = None,
        connect_s: Any = None,
        *,
        fields: CommandFields = _NATIVE,
    ) -> Command:
        """Send a command (Permission.DEVICES_WRITE) and wait for its outcome, as IoT
        Central's command API does: up to `connect_s` for the device to connect (0: only if
        it is connected now), then up to the response timeout for its answer. The command is
        stored (its history shows it) and answered final: Completed or Failed with the
        device's response, TimedOut, or Expired with OFFLINE_RESPONSE_CODE when the device
        was not connected in time. Checks as `submit`.

        Raises:
            Forbidden, NotFound, Invalid, TooLarge: as `submit` (`connect_s` naming
                fields.ttl).
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        connect = self.connect_timeout(connect_s, fields.ttl)
        reachable = await self._reachable(target.id)
        # A device connected now gets its command at once; the TTL only has to cover the
        # hand-over to the delivery loop.
        ttl = max(connect, MIN_TTL_S) if reachable else connect
        command = await self._new(
            target, name, payload, timeout_s, ttl, CommandMode.AWAITED, fields
        )
        if not reachable and connect == 0:
            command = command.finish(CommandStatus.EXPIRED, self.clock.now(), OFFLINE_RESPONSE_CODE)
            await self.stores.commands.insert(command)
            return command
        finished = self._finished[command.id] = asyncio.Event()
        try:
            await self.stores.commands.insert(command)
            if reachable:
                self._deliveries.put_nowait(command)
            return await self._wait(command, finished, ttl + command.response_timeout_s)
        finally:
            self._finished.pop(command.id, None)

    async def _wait(self, command: Command, finished: asyncio.Event, budget_s: float) -> Command:
        """The command once final: this node's delivery sets `finished`; one on another node
        is seen in the store, read every _WAIT_POLL_S (and once the connection timeout
        passed, to expire it), so many waiting callers cost the store little."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s + _WAIT_SLACK_S
        next_poll = loop.time() + _WAIT_POLL_S
        while True:
            now = loop.time()
            if now >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), min(next_poll, deadline) - now)
            due = self.clock.now() >= command.expires_at and command.id not in self._in_flight
            if not (finished.is_set() or due or loop.time() >= next_poll):
                continue
            next_poll = loop.time() + _WAIT_POLL_S
            stored = await self.stores.commands.get(command.id)
            if stored is None:  # the device was deleted meanwhile
                raise NotFound(f"device {command.device_id!r} not found", field="deviceId")
            stored = await self._expire_if_due(stored)
            if stored.status.is_final:
                return stored
            finished.clear()
        stored = await self.stores.commands.get(command.id)
        return stored if stored is not None else command

    async def history(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        limit: int = MAX_HISTORY,
        before: tuple[float, str] | None = None,
    ) -> list[Command]:
        """The device's commands of that name, newest first (Permission.READ), at most
        MAX_HISTORY; with `before` (a command's created_at and id), the older ones."""
        page, _ = await self.history_page(principal, device, name, limit, before)
        return page

    async def history_page(
        self,
        principal: Principal,
        device: Device | str,
        name: str,
        limit: int = MAX_HISTORY,
        before: tuple[float, str] | None = None,
    ) -> tuple[list[Command], bool]:
        """A page of `history` (at most MAX_HISTORY) and whether older commands follow."""
        target = await self.registry.device_for(principal, device, Permission.READ)
        parse_method_name(name, "commandName")
        size = max(1, min(limit, MAX_HISTORY))
        commands = await self.stores.commands.history(target.id, name, size + 1, before)
        return [await self._expire_if_due(c) for c in commands[:size]], len(commands) > size

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
            # A command sent and waited for answers like IoT Hub's "device not online".
            code = OFFLINE_RESPONSE_CODE if command.mode is CommandMode.AWAITED else None
            command = command.finish(CommandStatus.EXPIRED, self.clock.now(), code)
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
            waiter = self._finished.get(command.id)
            if waiter is not None:
                waiter.set()
