"""Twins: desired patches from applications, reported patches from devices.

Every change bumps the section's `$version`, records a change_event whose body carries the
patched properties with their `$metadata` and the section `$version` (as IoT Hub's twin change
events do), publishes a TwinChanged on the bus, and desired patches are pushed to the device
when it is connected (on whichever node: DeviceChannel).

Twins are cached per device for TWIN_CACHE_S. A put through this service replaces the cached
copy; a stale copy makes the compare-and-set fail and is re-read; `watch` drops a copy when
another node's TwinChanged names a newer version.
"""

from __future__ import annotations

from typing import Any

from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Conflict, NotFound
from thinghub.domain.events import EventType
from thinghub.domain.live import TwinChanged, live_pattern
from thinghub.domain.model import Device
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import Twin, TwinSection, validate_patch
from thinghub.ports import Bus, Clock, DeviceChannel, Presence, Stores
from thinghub.services.events import EventService
from thinghub.services.ttl_cache import TtlCache

__all__ = ["TwinService"]

CAS_RETRIES = 20
# Twins are cached by device (see the module docstring); a change the bus does not bring shows
# within:
TWIN_CACHE_S = 5.0
TWIN_CACHE_MAX = 100_000


def _patch_document(section: TwinSection, patch: dict[str, Any]) -> dict[str, Any]:
    """The patch as it landed: values, `$metadata` of the patched keys, the new `$version`."""
    meta: dict[str, Any] = {}
    if section.last_updated is not None:
        meta["$lastUpdated"] = format_ts(section.last_updated)
    for key in patch:
        if key in section.metadata:
            meta[key] = section.metadata[key]
    return {**patch, "$metadata": meta, "$version": section.version}


def _storable(patch: dict[str, Any], field: str) -> dict[str, Any]:
    """A patch must also be storable (integers within 64 bits...; else a 500 later)."""
    check_storable(patch, field)
    return patch


class TwinService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        events: EventService,
        bus: Bus,
        *,
        presence: Presence,
        channel: DeviceChannel,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.events = events
        self.bus = bus
        self.presence = presence
        self.channel = channel
        self._cache: TtlCache[str, Twin] = TtlCache(
            clock, ttl_s=TWIN_CACHE_S, max_entries=TWIN_CACHE_MAX
        )

    async def get(self, device: Device, *, fresh: bool = False) -> Twin:
        hit = None if fresh else self._cache.get(device.id)
        if hit is not None:
            return hit
        twin = await self.stores.twins.get(device.id)
        if twin is None:
            self._cache.invalidate(device.id)
            raise NotFound(f"twin of {device.id!r} not found", field="deviceId")
        self._cache.put(device.id, twin)
        return twin

    def forget(self, device_id: str) -> None:
        """Drop the cached twins of a device and of its modules."""
        self._cache.invalidate(device_id)
        self._cache.invalidate_prefix(device_id + "/")

    async def watch(self) -> None:
        """Drop cached twins that changed on another node (TwinChanged on the bus), until
        cancelled. A cached copy already at the event's version (this node's own change)
        stays."""
        async for event in self.bus.subscribe(live_pattern(TwinChanged.kind)):
            if not isinstance(event, TwinChanged):
                continue
            cached = self._cache.get(event.device_id)
            if cached is None:
                continue
            section = cached.desired if event.section == "desired" else cached.reported
            if section.version < event.version:
                self._cache.invalidate(event.device_id)

    async def patch_desired(self, device: Device, patch: Any) -> Twin:
        """Apply an application's desired patch and send it to the device if connected."""
        clean = _storable(validate_patch(patch), "properties")
        twin = await self._update(device, lambda t, now: t.patch_desired(clean, now))
        version = twin.desired.version
        await self.events.record(
            device,
            EventType.CHANGE,
            {
                "version": twin.version,
                "properties": {"desired": _patch_document(twin.desired, clean)},
            },
        )
        await self.bus.publish(
            TwinChanged(device.account_id, device.project, device.id, "desired", clean, version)
        )
        if await self.presence.is_connected(device.id):
            await self.channel.push_desired(device.id, clean, version)
        return twin

    async def patch_reported(self, device: Device, patch: Any) -> Twin:
        """Apply a device's reported patch (null deletes); returns the new twin."""
        clean = _storable(validate_patch(patch, "reported"), "reported")
        twin = await self._update(device, lambda t, now: t.patch_reported(clean, now))
        await self.events.record(
            device,
            EventType.CHANGE,
            {
                "version": twin.version,
                "properties": {"reported": _patch_document(twin.reported, clean)},
            },
        )
        await self.bus.publish(
            TwinChanged(
                device.account_id,
                device.project,
                device.id,
                "reported",
                clean,
                twin.reported.version,
            )
        )
        return twin

    async def _update(self, device: Device, change: Any) -> Twin:
        for attempt in range(CAS_RETRIES):
            twin = await self.get(device, fresh=attempt > 0)
            updated: Twin = change(twin, self.clock.now())
            if await self.stores.twins.put(updated, twin.version):
                self._cache.put(device.id, updated)
                return updated
        raise Conflict(f"twin of {device.id!r} is changing too fast; retry", field="$version")
