"""Twins: desired patches from applications, reported patches from devices.

Every change bumps the section's `$version`, records a change_event whose body carries the
patched properties with their `$metadata` and the section `$version` (as IoT Hub's twin change
events do), and desired patches are pushed to the device when it is connected.
"""

from __future__ import annotations

from typing import Any

from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Conflict, NotFound
from thinghub.domain.events import EventType
from thinghub.domain.model import Device
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import Twin, TwinSection, validate_patch
from thinghub.ports import Bus, Clock, DeviceLinks, Store
from thinghub.services.events import EventService

__all__ = ["TwinService"]

CAS_RETRIES = 20
# Twins are cached by device; a put through this service replaces the cached copy, a stale
# copy makes the compare-and-set fail and is re-read, and other nodes' changes show within:
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
        self, store: Store, clock: Clock, events: EventService, links: DeviceLinks, bus: Bus
    ) -> None:
        self.store = store
        self.clock = clock
        self.events = events
        self.links = links
        self.bus = bus
        self._cache: dict[str, tuple[Twin, float]] = {}

    async def get(self, device: Device, *, fresh: bool = False) -> Twin:
        now = self.clock.now()
        hit = None if fresh else self._cache.get(device.id)
        if hit is not None and now - hit[1] < TWIN_CACHE_S:
            return hit[0]
        twin = await self.store.get_twin(device.id)
        if twin is None:
            self._cache.pop(device.id, None)
            raise NotFound(f"twin of {device.id!r} not found", field="deviceId")
        self._remember(twin, now)
        return twin

    def forget(self, device_id: str) -> None:
        """Drop the cached twins of a device and of its modules."""
        prefix = device_id + "/"
        for key in [k for k in self._cache if k == device_id or k.startswith(prefix)]:
            del self._cache[key]

    def _remember(self, twin: Twin, now: float) -> None:
        if len(self._cache) >= TWIN_CACHE_MAX:
            self._cache.clear()
        self._cache[twin.device_id] = (twin, now)

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
            f"twin.{device.account_id}",
            {"deviceId": device.id, "section": "desired", "patch": clean, "version": version},
        )
        if self.links.is_connected(device.id):
            await self.links.push_desired(device.id, clean, version)
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
            f"twin.{device.account_id}",
            {
                "deviceId": device.id,
                "section": "reported",
                "patch": clean,
                "version": twin.reported.version,
            },
        )
        return twin

    async def _update(self, device: Device, change: Any) -> Twin:
        for attempt in range(CAS_RETRIES):
            twin = await self.get(device, fresh=attempt > 0)
            updated: Twin = change(twin, self.clock.now())
            if await self.store.put_twin(updated, twin.version):
                self._remember(updated, self.clock.now())
                return updated
        raise Conflict(f"twin of {device.id!r} is changing too fast; retry", field="$version")
