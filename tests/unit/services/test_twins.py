"""TwinService on the memory stores: versions, and patches from two nodes that both land
(the optimistic write retries on a stale copy)."""

from __future__ import annotations

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import node
from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.services.core import Services
from thinghub.services.twins import TwinService

ADMIN = Principal("acc-1", Role.ADMIN, "admin")


async def test_patches_bump_versions_and_are_stored(services: Services, stores: Stores) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    twin = await services.twins.patch_desired(device, {"fan": {"speed": 3}})
    assert (twin.version, twin.desired.version) == (2, 2)
    twin = await services.twins.patch_reported(device, {"temp": 21.5})
    assert (twin.version, twin.reported.version) == (3, 2)
    twin = await services.twins.patch_desired(device, {"fan": {"speed": None}, "mode": "eco"})
    stored = await stores.twins.get("d")
    assert stored == twin
    assert stored.desired.properties == {"fan": {}, "mode": "eco"}
    assert stored.reported.properties == {"temp": 21.5}
    with pytest.raises(Invalid):
        await services.twins.patch_desired(device, ["not", "an", "object"])
    assert await stores.twins.get("d") == twin


async def test_a_patch_on_a_stale_copy_retries_and_keeps_both(
    services: Services, stores: Stores, clock: TestClock
) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    await services.twins.get(device)  # this node now holds version 1
    # Another node (its own service, cache and live ports; the same storage) writes first.
    there = node(clock)
    other = TwinService(
        stores, clock, services.events, there.bus, presence=there.presence, channel=there.links
    )
    await other.patch_reported(device, {"temp": 20})
    twin = await services.twins.patch_desired(device, {"mode": "eco"})
    assert twin.version == 3
    assert twin.reported.properties == {"temp": 20}
    assert twin.desired.properties == {"mode": "eco"}
    assert await stores.twins.get("d") == twin


async def test_a_deleted_device_has_no_twin(services: Services) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    await services.twins.patch_desired(device, {"a": 1})
    await services.registry.delete_device(ADMIN, "d")
    with pytest.raises(NotFound):
        await services.twins.get(device)
