"""The device registry: projects, deployments, devices, gateways and their modules.

Every change to a device's record is published as a DeviceChanged (connections as a
ConnectionChanged), and whether a device is connected is asked of Presence, so the answer
is the same on every node. Devices are cached by id for DEVICE_CACHE_S (unknown ids too);
`watch` drops what other nodes change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal

from thinghub.domain.errors import Forbidden, Invalid, NotFound
from thinghub.domain.events import EventType
from thinghub.domain.ids import entity_id, new_uuid, parse_id
from thinghub.domain.live import ConnectionChanged, DeviceChanged, live_pattern
from thinghub.domain.model import Deployment, Device, DeviceKind, Principal, Project
from thinghub.domain.twin import Twin
from thinghub.ports import Bus, Clock, DeviceChannel, Locks, Presence, Stores
from thinghub.security.sas import generate_key
from thinghub.services.auth import authorize
from thinghub.services.events import EventService
from thinghub.services.ttl_cache import TtlCache

__all__ = ["ACTIVITY_FLUSH_S", "Registry", "connection_lock"]

logger = logging.getLogger(__name__)

# lastActivityTime is kept in memory on every message and written at most this often.
ACTIVITY_FLUSH_S = 10.0
# Devices are cached by id. Changes made through this registry replace the cached copy at
# once; a change made by another node (PostgreSQL scale-out) arrives on the bus, and what the
# bus misses is seen within this time.
DEVICE_CACHE_S = 5.0
DEVICE_CACHE_MAX = 100_000


def connection_lock(device_id: str) -> str:
    """The name (Locks) under which a device's connection-state transitions run one at a time."""
    return f"connection/{device_id}"


class Registry:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        events: EventService,
        bus: Bus,
        *,
        presence: Presence,
        channel: DeviceChannel,
        locks: Locks,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.events = events
        self.bus = bus
        self.presence = presence
        self.channel = channel
        self.locks = locks
        self._activity: dict[str, float] = {}
        self._flushed: dict[str, float] = {}
        self._cache: TtlCache[str, Device | None] = TtlCache(
            clock, ttl_s=DEVICE_CACHE_S, max_entries=DEVICE_CACHE_MAX
        )
        # Called with a device key after it (and its modules) is deleted, so that other
        # services drop what they cache for it.
        self.on_delete: list[Callable[[str], None]] = []
        # Awaited with a device (not a module) before it is deleted on any face, so that
        # services that manage it undo what they hold for it first (an Ioto device is
        # released: services.claims).
        self.on_deleting: list[Callable[[Device], Awaitable[None]]] = []

    async def load(self, device_id: str) -> Device | None:
        """A device (or module) by key, from the cache when fresh."""
        hit = self._cache.lookup(device_id)
        if hit is not None:
            return hit.value
        device = await self.stores.devices.get(device_id)
        self._cache.put(device_id, device)
        return device

    def forget(self, device_id: str) -> None:
        self._cache.invalidate(device_id)

    async def watch(self) -> None:
        """Drop cached devices that changed on another node (DeviceChanged and
        ConnectionChanged on the bus), until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for kind in (DeviceChanged.kind, ConnectionChanged.kind):
                tasks.create_task(self._watch(kind), name=f"registry.watch[{kind}]")

    async def _watch(self, kind: str) -> None:
        async for event in self.bus.subscribe(live_pattern(kind)):
            if isinstance(event, DeviceChanged) and event.operation == "deleted":
                self._cache.invalidate(event.device_id)
                self._cache.invalidate_prefix(event.device_id + "/")
            else:
                self._cache.invalidate(event.device_id)

    async def _changed(
        self, device: Device, operation: Literal["created", "updated", "deleted"]
    ) -> None:
        await self.bus.publish(
            DeviceChanged(device.account_id, device.project, device.id, operation)
        )

    # -- projects ------------------------------------------------------------------------

    async def list_projects(self, principal: Principal) -> list[Project]:
        projects = await self.stores.devices.list_projects(principal.account_id)
        return [p for p in projects if principal.sees(p.name)]

    async def list_deployments(self, principal: Principal, project: str) -> list[Deployment]:
        projects = {p.name for p in await self.stores.devices.list_projects(principal.account_id)}
        if project not in projects or not principal.sees(project):
            raise NotFound(f"project {project!r} not found", field="project")
        return await self.stores.devices.list_deployments(principal.account_id, project)

    # -- devices -------------------------------------------------------------------------

    async def create_device(
        self,
        principal: Principal,
        *,
        name: str,
        device_id: str | None = None,
        project: str | None = None,
        deployment: str | None = None,
        kind: DeviceKind = DeviceKind.DEVICE,
        template: str | None = None,
        simulated: bool = False,
        enabled: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> Device:
        authorize(principal, "write")
        if not principal.sees(project):
            raise Forbidden(
                f"this token is limited to project {principal.project!r}", field="project"
            )
        return await self.register(
            principal.account_id,
            name=name,
            device_id=device_id,
            project=project,
            deployment=deployment,
            kind=kind,
            template=template,
            simulated=simulated,
            enabled=enabled,
            attributes=attributes,
            created_by=principal.subject,
        )

    async def register(
        self,
        account_id: str,
        *,
        name: str,
        device_id: str | None = None,
        project: str | None = None,
        deployment: str | None = None,
        kind: DeviceKind = DeviceKind.DEVICE,
        template: str | None = None,
        simulated: bool = False,
        enabled: bool = True,
        attributes: dict[str, Any] | None = None,
        created_by: str | None = None,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        provisioned: bool = False,
        model_id: str | None = None,
    ) -> Device:
        """Create a device in an account (also used by DPS group enrollment)."""
        did = parse_id(device_id, "id") if device_id is not None else new_uuid()
        if project is not None:
            parse_id(project, "project")
        if deployment is not None:
            parse_id(deployment, "deployment")
            if project is None:
                raise Invalid("a deployment needs a project", field="project")
        now = self.clock.now()
        if project is not None and deployment is not None:
            await self.stores.devices.ensure_deployment(account_id, project, deployment, now)
        elif project is not None:
            await self.stores.devices.ensure_project(account_id, project, now)
        device = Device(
            id=did,
            account_id=account_id,
            kind=kind,
            name=name,
            primary_key=primary_key or generate_key(),
            secondary_key=secondary_key or generate_key(),
            model_id=model_id,
            created_at=now,
            updated_at=now,
            project=project,
            deployment=deployment,
            template=template,
            simulated=simulated,
            enabled=enabled,
            provisioned=provisioned,
            created_by=created_by,
            attributes=attributes or {},
        )
        await self.stores.devices.insert(device, Twin(did))
        self.forget(did)  # drop a cached "not found"
        await self._changed(device, "created")
        await self.events.record(device, EventType.LIFECYCLE, {"operation": "createDevice"}, now)
        logger.info("device %s created (account %s)", did, account_id)
        return device

    async def get_device(self, principal: Principal, device_id: str) -> Device:
        device = await self.load(device_id)
        if (
            device is None
            or device.account_id != principal.account_id
            or device.kind is DeviceKind.MODULE
            or not principal.sees(device.project)
        ):
            raise NotFound(f"device {device_id!r} not found", field="deviceId")
        return self._with_activity(device)

    async def find(self, device_id: str) -> Device | None:
        """A device by id, with no principal: for device-side authentication.

        lastActivityTime is as stored (authentication does not need the live value).
        """
        return await self.load(device_id)

    async def list_devices(
        self,
        principal: Principal,
        *,
        project: str | None = None,
        deployment: str | None = None,
        kinds: tuple[DeviceKind, ...] = (DeviceKind.DEVICE, DeviceKind.GATEWAY),
    ) -> list[Device]:
        if principal.project is not None:
            if project not in (None, principal.project):
                return []
            project = principal.project
        devices = await self.stores.devices.find(
            principal.account_id, project=project, deployment=deployment, kinds=kinds
        )
        return [self._with_activity(d) for d in devices]

    async def update_device(self, principal: Principal, device: Device, **changes: Any) -> Device:
        authorize(principal, "write")
        return await self.save(device, **changes)

    async def save(self, device: Device, **changes: Any) -> Device:
        updated = replace(device, **changes, updated_at=self.clock.now())
        await self.stores.devices.update(updated)
        self.forget(updated.id)
        await self._changed(updated, "updated")
        return updated

    async def delete_device(self, principal: Principal, device_id: str) -> None:
        authorize(principal, "write")
        device = await self.get_device(principal, device_id)
        for hook in self.on_deleting:
            await hook(device)
        await self.stores.devices.delete(device.id)
        self._forget_tree(device.id)
        await self._changed(device, "deleted")
        await self.events.record(device, EventType.LIFECYCLE, {"operation": "deleteDevice"})
        self._activity.pop(device.id, None)

    # -- modules of gateways -------------------------------------------------------------

    async def create_module(self, principal: Principal, gateway_id: str, module_id: str) -> Device:
        authorize(principal, "write")
        gateway = await self.get_device(principal, gateway_id)
        if not gateway.is_gateway:
            raise Invalid(
                f"device {gateway_id!r} is not IoT Edge capable, so it has no modules",
                field="isIoTEdgeCapable",
            )
        module_id = parse_id(module_id, "moduleId")
        now = self.clock.now()
        key = entity_id(gateway.id, module_id)
        module = Device(
            id=key,
            account_id=gateway.account_id,
            kind=DeviceKind.MODULE,
            name=module_id,
            primary_key=generate_key(),
            secondary_key=generate_key(),
            created_at=now,
            updated_at=now,
            project=gateway.project,
            deployment=gateway.deployment,
            parent_id=gateway.id,
            module_id=module_id,
            created_by=principal.subject,
        )
        await self.stores.devices.insert(module, Twin(key))
        self.forget(key)
        await self._changed(module, "created")
        return module

    async def list_modules(self, principal: Principal, gateway_id: str) -> list[Device]:
        gateway = await self.get_device(principal, gateway_id)
        modules = await self.stores.devices.find(
            principal.account_id, parent_id=gateway.id, kinds=(DeviceKind.MODULE,)
        )
        return [self._with_activity(m) for m in modules]

    async def get_module(self, principal: Principal, gateway_id: str, module_id: str) -> Device:
        gateway = await self.get_device(principal, gateway_id)
        module = await self.load(entity_id(gateway.id, module_id))
        if module is None or module.kind is not DeviceKind.MODULE:
            raise NotFound(f"module {module_id!r} of {gateway_id!r} not found", field="moduleId")
        return self._with_activity(module)

    async def delete_module(self, principal: Principal, gateway_id: str, module_id: str) -> None:
        authorize(principal, "write")
        module = await self.get_module(principal, gateway_id, module_id)
        await self.stores.devices.delete(module.id)
        self._forget_tree(module.id)
        await self._changed(module, "deleted")

    # -- connection state and activity ---------------------------------------------------

    async def is_connected(self, device_id: str) -> bool:
        """Whether the device (or module) is connected, to this node or another."""
        return await self.presence.is_connected(device_id)

    async def disconnect(self, device_id: str) -> bool:
        """Close the device's live connection, wherever it is (after it is deleted or
        disabled); False when it had none."""
        return await self.channel.disconnect(device_id)

    async def set_connected(self, device: Device, connected: bool) -> Device:
        """Record that the device connected or disconnected: its stored state, a
        connection_state_event and a ConnectionChanged on the bus.

        A device's transitions run one at a time, in the order they were asked for, under the
        lock `connection_lock(device.id)` (Locks), and each takes its time and its event's
        sequence number inside it. Without that, a quick reconnect's Connected (whose store
        write finished first) got a lower sequence number than the old connection's
        Disconnected, and the stored state could end as Disconnected while the device was
        connected. The adapter asks in the order its links changed (devices/links.py changes
        its table at once), and an asyncio lock is taken first come, first served.
        """
        async with self.locks.hold(connection_lock(device.id)):
            now = self.clock.now()
            self._activity[device.id] = now
            self._flushed[device.id] = now
            state = "Connected" if connected else "Disconnected"
            await self.stores.devices.touch(device.id, now, state)
            self.forget(device.id)
            updated = replace(
                device, connection_state=state, last_activity_at=now, provisioned=True
            )
            await self.events.connection_changed(updated, connected, now)
            await self.bus.publish(
                ConnectionChanged(device.account_id, device.project, device.id, connected, now)
            )
            return updated

    async def touch(self, device: Device) -> None:
        """Note activity; persist lastActivityTime at most every ACTIVITY_FLUSH_S."""
        now = self.clock.now()
        self._activity[device.id] = now
        if now - self._flushed.get(device.id, 0.0) >= ACTIVITY_FLUSH_S:
            self._flushed[device.id] = now
            await self.stores.devices.touch(device.id, now)

    def _forget_tree(self, device_id: str) -> None:
        """Forget a device and its modules (their keys start with `device/`)."""
        self._cache.invalidate(device_id)
        self._cache.invalidate_prefix(device_id + "/")
        for callback in self.on_delete:
            callback(device_id)

    def _with_activity(self, device: Device) -> Device:
        seen = self._activity.get(device.id)
        if seen is not None and (device.last_activity_at or 0.0) < seen:
            return replace(device, last_activity_at=seen)
        return device
