"""The device registry: projects, deployments, devices, gateways and their modules.

Every change to a device's record is published as a DeviceChanged (connections as a
ConnectionChanged), and whether a device is connected is asked of Presence, so the answer
is the same on every node. Devices are cached by id for DEVICE_CACHE_S (unknown ids too);
`watch` drops what other nodes change.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final, Literal

from thinghub.domain.dtdl import parse_template_id
from thinghub.domain.errors import Conflict, Invalid, NotFound, TooLarge
from thinghub.domain.etags import check_if_match
from thinghub.domain.events import EventType
from thinghub.domain.ids import entity_id, new_uuid, parse_id
from thinghub.domain.live import ConnectionChanged, DeviceChanged, live_pattern
from thinghub.domain.model import Deployment, Device, DeviceKind, Principal, Project
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import Twin, check_patch_size, validate_patch
from thinghub.ports import Bus, Clock, ConnectionChange, DeviceChannel, Locks, Presence, Stores
from thinghub.security.sas import generate_key
from thinghub.services.authz import NewIn, authorize, may
from thinghub.services.connection_writes import ConnectionWriter
from thinghub.services.events import EventService
from thinghub.services.ttl_cache import TtlCache
from thinghub.services.twins import TwinService

__all__ = [
    "ACTIVITY_FLUSH_S",
    "CLOUD_PROPERTIES",
    "KEEP",
    "MAX_CLOUD_PROPERTY_BYTES",
    "DeviceKeys",
    "Keep",
    "Registry",
    "connection_lock",
]

logger = logging.getLogger(__name__)

# lastActivityTime is kept in memory on every message and written at most this often.
ACTIVITY_FLUSH_S = 10.0
# Where a device's cloud properties live in its attributes, and how large (JSON bytes) they
# may be together (IoT Hub's twin section cap, for want of another).
CLOUD_PROPERTIES = "cloudProperties"
MAX_CLOUD_PROPERTY_BYTES = 32 * 1024
# Devices are cached by id. Changes made through this registry replace the cached copy at
# once; a change made by another node (PostgreSQL scale-out) arrives on the bus, and what the
# bus misses is seen within this time.
DEVICE_CACHE_S = 5.0
DEVICE_CACHE_MAX = 100_000


class Keep(Enum):
    """A keyword left as it is (where None means something: `template=None` unassigns)."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's symmetric keys (what it signs SAS tokens with)."""

    primary_key: str
    secondary_key: str


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
        twins: TwinService | None = None,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.events = events
        self.bus = bus
        self.presence = presence
        self.channel = channel
        self.locks = locks
        # Desired patches of `edit_device` (the composition root hands in the one TwinService;
        # without one, a twin service over the same ports).
        self.twins = twins or TwinService(
            stores, clock, events, bus, presence=presence, channel=channel
        )
        self.connection_writes = ConnectionWriter(stores)
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
        authorize(principal, Permission.READ)
        projects = await self.stores.devices.list_projects(principal.account_id)
        return [p for p in projects if principal.sees(p.name)]

    async def list_deployments(self, principal: Principal, project: str) -> list[Deployment]:
        authorize(principal, Permission.READ)
        projects = {p.name for p in await self.stores.devices.list_projects(principal.account_id)}
        if project not in projects or not principal.sees(project):
            raise NotFound(f"project {project!r} not found", field="project")
        return await self.stores.devices.list_deployments(principal.account_id, project)

    async def delete_project(self, principal: Principal, project: str) -> None:
        """Delete an empty project (and its deployments); Conflict while devices use it.
        Permission.ACCOUNT_ADMIN: the account's structure, so a token limited to one project
        may not, whatever its role (nothing tells it whether the project exists)."""
        authorize(principal, Permission.ACCOUNT_ADMIN)
        projects = {p.name for p in await self.stores.devices.list_projects(principal.account_id)}
        if project not in projects or not principal.sees(project):
            raise NotFound(f"project {project!r} not found", field="project")
        if not await self.stores.devices.delete_project(principal.account_id, project):
            raise Conflict(
                f"project {project!r} still has devices; delete or move them first",
                field="project",
            )
        logger.info("project %s deleted (account %s)", project, principal.account_id)

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
        parent_id: str | None = None,
        id_field: str = "id",
    ) -> Device:
        """Create a device in the caller's account (Permission.DEVICES_WRITE), in `project`,
        which a project-limited caller must name as its own.

        `template` is a device template id (the template need not exist yet: the device is
        checked against it once it does). `id_field` names the id in errors (a face's name
        for it, e.g. "deviceId").

        Raises:
            Forbidden: the caller may not create devices, or not in that project.
            Invalid: a malformed id, project, deployment or template id.
            Conflict: the id is taken (device ids are global).
        """
        authorize(principal, Permission.DEVICES_WRITE, NewIn(project))
        if template is not None:
            parse_template_id(template, "template")
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
            parent_id=parent_id,
            id_field=id_field,
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
        parent_id: str | None = None,
        id_field: str = "id",
    ) -> Device:
        """Create a device in an account (also used by DPS group enrollment). `parent_id`: an
        entity it belongs to (an iTwin sensor's device); deleting the parent deletes it."""
        did = parse_id(device_id, id_field) if device_id is not None else new_uuid()
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
            parent_id=parent_id,
        )
        await self.stores.devices.insert(device, Twin(did))
        self.forget(did)  # drop a cached "not found"
        await self._changed(device, "created")
        await self.events.record(device, EventType.LIFECYCLE, {"operation": "createDevice"}, now)
        logger.info("device %s created (account %s)", did, account_id)
        return device

    async def get_device(self, principal: Principal, device_id: str) -> Device:
        """A device or gateway within the caller's reach (Permission.READ), else NotFound."""
        return self._with_activity(await self._device(principal, device_id, Permission.READ))

    async def device_for(
        self, principal: Principal, device: Device | str, permission: Permission
    ) -> Device:
        """The device (or module) an action is on, if the caller may do `permission` to it:
        the role is checked first (Forbidden), then the device must be within the caller's
        reach (NotFound). `device` is an id (of a device or gateway, never a module) or a
        Device the caller already holds (a module too).

        Other services take a device or its id through this, so every action on a device is
        authorized the same way, whichever face asks.
        """
        if isinstance(device, str):
            return self._with_activity(await self._device(principal, device, permission))
        authorize(
            principal,
            permission,
            device,
            absent=NotFound(f"device {device.id!r} not found", field="deviceId"),
        )
        return device

    async def _device(self, principal: Principal, device_id: str, permission: Permission) -> Device:
        """The device `device_id` names, if the caller may do `permission` to it: the role is
        checked first (Forbidden), then the device must be within its reach (NotFound)."""
        authorize(principal, permission)
        missing = NotFound(f"device {device_id!r} not found", field="deviceId")
        device = await self.load(device_id)
        if device is None or device.kind is DeviceKind.MODULE:
            raise missing
        authorize(principal, permission, device, absent=missing)
        return device

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
        authorize(principal, Permission.READ)
        if principal.project is not None:
            if project not in (None, principal.project):
                return []
            project = principal.project
        devices = await self.stores.devices.find(
            principal.account_id, project=project, deployment=deployment, kinds=kinds
        )
        return [self._with_activity(d) for d in devices]

    async def edit_device(
        self,
        principal: Principal,
        device_id: str,
        *,
        desired: Any = None,
        name: str | None = None,
        enabled: bool | None = None,
        simulated: bool | None = None,
        template: str | Keep | None = KEEP,
        project: str | Keep = KEEP,
        deployment: str | Keep = KEEP,
        desired_field: str = "properties",
        if_match: str | None = None,
    ) -> Device:
        """Change a device as an application asks (Permission.DEVICES_WRITE): a desired
        patch, a new name, enabled or not, simulated or not, another template (None
        unassigns), another project and deployment (a move: a gateway's modules move with
        it; a caller limited to a project may not move a device out of it); what is None
        (template, project, deployment: KEEP) stays as it is.

        `if_match` (an If-Match header) must name the device's current etag, else nothing
        changes (PreconditionFailed). Everything is checked before anything changes; the
        desired patch goes first, so a
        patch the twin refuses (413: the section would be too large) leaves the record as it
        was too. A device left disabled is disconnected (`update_device`). An empty desired
        patch (`{}`, or only `$version`) changes nothing: it is not sent.

        Raises:
            Forbidden: the caller may not change devices.
            NotFound: no such device within the caller's reach.
            Invalid, TooLarge: the desired patch (naming `desired_field`) or the template id.
            PreconditionFailed: `if_match` names another state of the device.
        """
        device = await self._device(principal, device_id, Permission.DEVICES_WRITE)
        check_if_match(if_match, device.etag, f"device {device.id!r}")
        patch = self._desired_patch(desired, desired_field)
        changes: dict[str, Any] = {}
        if name:
            changes["name"] = name
        if enabled is not None:
            changes["enabled"] = enabled
        if simulated is not None:
            changes["simulated"] = simulated
        if not isinstance(template, Keep):
            if template is not None:
                parse_template_id(template, "template")
            changes["template"] = template
        moved = await self._move(principal, device, project, deployment)
        changes.update(moved)
        if patch:
            await self.twins.patch_desired(device, patch)
        if changes:
            device = await self.update_device(principal, device, **changes)
        elif not device.enabled:
            await self.disconnect(device.id)
        return self._with_activity(device)

    async def _move(
        self,
        principal: Principal,
        device: Device,
        project: str | Keep,
        deployment: str | Keep,
    ) -> dict[str, Any]:
        """The record changes of moving `device` to another project and/or deployment (none
        when they are the same); the target is checked and made to exist."""
        new_project = device.project if isinstance(project, Keep) else project
        new_deployment = device.deployment if isinstance(deployment, Keep) else deployment
        if (new_project, new_deployment) == (device.project, device.deployment):
            return {}
        if device.kind is DeviceKind.MODULE:
            raise Invalid("a module moves with its gateway", field="project")
        if new_project is None:
            raise Invalid("a device cannot be moved out of every project", field="project")
        parse_id(new_project, "project")
        if new_deployment is None:
            raise Invalid("a moved device needs a deployment", field="deployment")
        parse_id(new_deployment, "deployment")
        authorize(principal, Permission.DEVICES_WRITE, NewIn(new_project))
        now = self.clock.now()
        await self.stores.devices.ensure_deployment(
            device.account_id, new_project, new_deployment, now
        )
        for module in await self.stores.devices.find(
            device.account_id, parent_id=device.id, kinds=(DeviceKind.MODULE,)
        ):
            await self.save(module, project=new_project, deployment=new_deployment)
        logger.info(
            "device %s moved to %s/%s (account %s)",
            device.id,
            new_project,
            new_deployment,
            device.account_id,
        )
        return {"project": new_project, "deployment": new_deployment}

    async def set_cloud_property(
        self, principal: Principal, device_id: str, name: str, value: Any
    ) -> Device:
        """Keep `value` as the device's cloud property `name` (Permission.DEVICES_WRITE): a
        value the application keeps with the device, never sent to it.

        Raises:
            Invalid: a bad name, a null or unstorable value; TooLarge past
                MAX_CLOUD_PROPERTY_BYTES for all of a device's cloud properties.
        """
        device = await self._device(principal, device_id, Permission.DEVICES_WRITE)
        if not name or name.startswith("$") or len(name) > 256:
            raise Invalid("a cloud property name is 1 to 256 characters, not $…", field="path")
        if value is None:
            raise Invalid("a cloud property value must not be null", field="value")
        check_storable(value, "value")
        current = device.attributes.get(CLOUD_PROPERTIES)
        props = {**(current if isinstance(current, dict) else {}), name: value}
        size = len(json.dumps(props))
        if size > MAX_CLOUD_PROPERTY_BYTES:
            raise TooLarge(
                f"cloud properties would be {size} bytes; the limit is {MAX_CLOUD_PROPERTY_BYTES}",
                field="value",
            )
        return await self.save(device, attributes={**device.attributes, CLOUD_PROPERTIES: props})

    @staticmethod
    def _desired_patch(properties: Any, field: str) -> dict[str, Any] | None:
        """A desired patch, checked (names, depth, storable, size); None when it is absent or
        changes nothing (it would bump the twin's version and push an empty change)."""
        if properties is None:
            return None
        patch = validate_patch(properties, field)
        check_storable(patch, field)  # e.g. an integer beyond 64 bits
        check_patch_size(patch, field)  # IoT Hub caps a twin section at 32 KiB
        return patch or None

    async def update_device(self, principal: Principal, device: Device, **changes: Any) -> Device:
        """Change fields of a device record (Permission.DEVICES_WRITE); a device left
        disabled is disconnected, wherever it is connected."""
        device = await self.device_for(principal, device, Permission.DEVICES_WRITE)
        return await self.save(device, **changes)

    async def save(self, device: Device, **changes: Any) -> Device:
        """Store changed fields of a device (no principal: DPS, the device side). A disabled
        device may not stay connected: it is disconnected here, the one place every change
        of a device record passes. The record is written whole: its activity time is the
        newest this node saw (a device loaded before its last message must not write an older
        one back, which lost lastActivityTime / lastSeen at the next restart)."""
        updated = replace(self._with_activity(device), **changes, updated_at=self.clock.now())
        await self.stores.devices.update(updated)
        self.forget(updated.id)
        await self._changed(updated, "updated")
        if not updated.enabled:
            await self.disconnect(updated.id)
        return updated

    async def delete_device(
        self, principal: Principal, device_id: str, *, if_match: str | None = None
    ) -> None:
        """Delete a device or gateway (Permission.DEVICES_WRITE) with its modules, twins and
        what waits for them, and close their connections; `if_match` as in edit_device."""
        device = await self._device(principal, device_id, Permission.DEVICES_WRITE)
        check_if_match(if_match, device.etag, f"device {device.id!r}")
        modules = await self.stores.devices.find(
            device.account_id, parent_id=device.id, kinds=(DeviceKind.MODULE,)
        )
        for hook in self.on_deleting:
            await hook(device)
        await self.stores.devices.delete(device.id)
        self._forget_tree(device.id)
        await self._changed(device, "deleted")
        await self.events.record(device, EventType.LIFECYCLE, {"operation": "deleteDevice"})
        self._activity.pop(device.id, None)
        for gone in (device, *modules):
            await self.disconnect(gone.id)

    async def keys(self, principal: Principal, device_id: str) -> DeviceKeys:
        """A device's symmetric keys (Permission.DEVICES_WRITE).

        Raises:
            Forbidden: the caller may not see keys (a viewer).
            NotFound: no such device within the caller's reach.
        """
        device = await self._device(principal, device_id, Permission.DEVICES_WRITE)
        return DeviceKeys(device.primary_key, device.secondary_key)

    @staticmethod
    def keys_shown(principal: Principal, device: Device) -> DeviceKeys | None:
        """A device's (or module's) keys as a view shows them: None for a caller that may
        not see keys (a viewer sees that a device has keys, not the keys)."""
        if not may(principal, Permission.DEVICES_WRITE):
            return None
        return DeviceKeys(device.primary_key, device.secondary_key)

    # -- modules of gateways -------------------------------------------------------------

    async def create_module(self, principal: Principal, gateway_id: str, module_id: str) -> Device:
        """Add a module to a gateway (Permission.DEVICES_WRITE).

        Raises:
            Invalid: the device is no gateway, or a malformed module id.
            Conflict: the gateway has a module of that id (naming `moduleId`).
        """
        gateway = await self._device(principal, gateway_id, Permission.DEVICES_WRITE)
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
        try:
            await self.stores.devices.insert(module, Twin(key))
        except Conflict as exc:
            raise Conflict(
                f"module {module_id!r} of {gateway_id!r} already exists", field="moduleId"
            ) from exc
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

    async def edit_module(
        self,
        principal: Principal,
        gateway_id: str,
        module_id: str,
        *,
        desired: Any = None,
        desired_field: str = "properties",
    ) -> Device:
        """Patch a module's desired properties (Permission.DEVICES_WRITE), checked as
        `edit_device` checks them; an empty patch changes nothing."""
        authorize(principal, Permission.DEVICES_WRITE)
        module = await self.get_module(principal, gateway_id, module_id)
        patch = self._desired_patch(desired, desired_field)
        if patch:
            await self.twins.patch_desired(module, patch)
        return module

    async def delete_module(self, principal: Principal, gateway_id: str, module_id: str) -> None:
        """Delete a gateway's module (Permission.DEVICES_WRITE) and close its connection."""
        authorize(principal, Permission.DEVICES_WRITE)
        module = await self.get_module(principal, gateway_id, module_id)
        await self.stores.devices.delete(module.id)
        self._forget_tree(module.id)
        await self._changed(module, "deleted")
        await self.disconnect(module.id)

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

        The state and the event are one write, shared with the transitions of other devices
        asked for meanwhile (ConnectionWriter): it returns once they are stored.
        """
        async with self.locks.hold(connection_lock(device.id)):
            now = self.clock.now()
            self._activity[device.id] = now
            self._flushed[device.id] = now
            state = "Connected" if connected else "Disconnected"
            updated = replace(
                device, connection_state=state, last_activity_at=now, provisioned=True
            )
            event = await self.events.connection_event(updated, connected, now)
            await self.connection_writes.write(ConnectionChange(device.id, now, state, event))
            self.forget(device.id)
            await self.events.announce(event)
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
