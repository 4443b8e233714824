"""The services behind IoT Central's real API: commands sent and waited for
(CommandService.execute) and their history, several properties in one patch
(PropertyService.write_many/read_all), moving a device (Registry.edit_device), cloud
properties, and jobs over many devices (JobService)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import FakeLink, Node
from thinghub.domain.commands import CommandMode, CommandStatus
from thinghub.domain.errors import Forbidden, Invalid, NotFound, PreconditionFailed
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.services.commands import MAX_CONNECT_TIMEOUT_S, CommandFields
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
IN_P1 = Principal("acc-1", Role.OPERATOR, "limited", project="p1")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")
CENTRAL = CommandFields(
    name="commandName", payload="request", timeout="responseTimeout", ttl="connectionTimeout"
)
DEADLINE_S = 10.0


@pytest.fixture
async def running(services: Services) -> AsyncIterator[Services]:
    """The services with the command delivery and job loops running."""
    async with asyncio.TaskGroup() as tasks:
        loops = [
            tasks.create_task(services.commands.run(), name="commands.run"),
            tasks.create_task(services.jobs.run(), name="jobs.run"),
        ]
        yield services
        for loop in loops:
            loop.cancel()


async def connect(services: Services, live: Node, device: Device, link: FakeLink) -> None:
    await live.links.attach(link)
    await services.registry.set_connected(device, True)
    await services.commands.device_connected(device.id)


# -- commands sent and waited for ---------------------------------------------------------------


async def test_execute_answers_with_the_devices_response(
    running: Services, live: Node, clock: TestClock
) -> None:
    device = await running.registry.create_device(ADMIN, name="d", device_id="d")
    link = FakeLink("d", answer=(201, {"done": 1}))
    await connect(running, live, device, link)
    done = await running.commands.execute(ADMIN, "d", "reboot", {"x": 1}, 10, 0, fields=CENTRAL)
    assert done.status is CommandStatus.COMPLETED
    assert (done.response_code, done.result) == (201, {"done": 1})
    assert done.mode is CommandMode.AWAITED
    assert link.calls == [("reboot", {"x": 1}, 10.0)]
    clock.t += 1
    first = await running.commands.execute(ADMIN, "d", "ping", None)
    assert first.status is CommandStatus.COMPLETED  # the link answers 201 to everything
    link.answer = (500, "no")
    clock.t += 1
    failed = await running.commands.execute(ADMIN, "d", "ping", None)
    assert (failed.status, failed.response_code) == (CommandStatus.FAILED, 500)
    link.answer = None
    clock.t += 1
    silent = await running.commands.execute(ADMIN, "d", "ping", None)
    assert silent.status is CommandStatus.TIMED_OUT
    history = await running.commands.history(ADMIN, "d", "ping")
    assert [c.id for c in history] == [silent.id, failed.id, first.id]
    assert [c.id for c in await running.commands.history(ADMIN, "d", "reboot")] == [done.id]


async def test_an_offline_device_ends_at_once_or_when_it_connects(
    running: Services, live: Node, clock: TestClock
) -> None:
    device = await running.registry.create_device(ADMIN, name="d", device_id="d")
    gone = await running.commands.execute(ADMIN, "d", "reboot", 1)
    assert (gone.status, gone.response_code) == (CommandStatus.EXPIRED, 404)
    assert (await running.commands.get(ADMIN, "d", gone.id)).status is CommandStatus.EXPIRED

    link = FakeLink("d", answer=(200, "hi"))
    clock.t += 1  # newer than the first, so first in the history
    waiting = asyncio.create_task(running.commands.execute(ADMIN, "d", "reboot", 2, None, 20))
    async with asyncio.timeout(DEADLINE_S):
        while not await running.commands.history(ADMIN, "d", "reboot") or (
            (await running.commands.history(ADMIN, "d", "reboot"))[0].id == gone.id
        ):
            await asyncio.sleep(0.01)
        await connect(running, live, device, link)
        came = await waiting
    assert (came.status, came.result) == (CommandStatus.COMPLETED, "hi")

    # Never connected: Expired once its connection timeout passed (the clock says).
    await live.links.detach(link)
    await running.registry.set_connected(device, False)
    never = asyncio.create_task(running.commands.execute(ADMIN, "d", "reboot", 3, None, 2))
    await asyncio.sleep(0.05)
    clock.t += 3
    async with asyncio.timeout(DEADLINE_S):
        expired = await never
    assert (expired.status, expired.response_code) == (CommandStatus.EXPIRED, 404)


@pytest.mark.parametrize("seconds", [-1, MAX_CONNECT_TIMEOUT_S + 1, "5", True])
async def test_connection_timeouts_are_0_to_30_s(services: Services, seconds: object) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d")
    with pytest.raises(Invalid) as bad:
        await services.commands.execute(ADMIN, "d", "m", None, None, seconds, fields=CENTRAL)
    assert bad.value.field == "connectionTimeout"
    assert await services.commands.history(ADMIN, "d", "m") == []


async def test_who_may_execute_and_read_history(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d", project="p2")
    with pytest.raises(Forbidden):
        await services.commands.execute(VIEWER, "d", "m", None)
    with pytest.raises(NotFound):
        await services.commands.execute(IN_P1, "d", "m", None)
    with pytest.raises(NotFound):
        await services.commands.history(IN_P1, "d", "m")
    assert await services.commands.history(VIEWER, "d", "m") == []


# -- properties, moves, cloud properties ------------------------------------------------------


async def test_write_many_checks_everything_before_one_patch(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d")
    patch = await services.properties.write_many(
        ADMIN, "d", {"a": 1, "thermostat1": {"__t": "c", "b": 2}}
    )
    assert patch == {"a": 1, "thermostat1": {"__t": "c", "b": 2}}
    found = await services.properties.read_all(ADMIN, "d")
    assert {k: v.value for k, v in found.items()} == {"a": 1, "thermostat1*b": 2}
    part = await services.properties.read_all(ADMIN, "d", "thermostat1")
    assert {k: v.value for k, v in part.items()} == {"b": 2}
    for bad in ({"c": 3, "d": None}, {}, [1], {"$version": 1}):
        with pytest.raises(Invalid):
            await services.properties.write_many(ADMIN, "d", bad)
    found = await services.properties.read_all(ADMIN, "d")
    assert "c" not in found  # nothing of the refused write


async def test_a_device_moves_with_its_modules_within_reach(services: Services) -> None:
    gateway = await services.registry.create_device(
        ADMIN, name="gw", device_id="gw", project="p1", deployment="d1", kind=DeviceKind.GATEWAY
    )
    await services.registry.create_module(ADMIN, gateway.id, "m")
    moved = await services.registry.edit_device(ADMIN, "gw", project="p2", deployment="d2")
    assert (moved.project, moved.deployment) == ("p2", "d2")
    module = await services.registry.get_module(ADMIN, "gw", "m")
    assert (module.project, module.deployment) == ("p2", "d2")
    assert [d.name for d in await services.registry.list_deployments(ADMIN, "p2")] == ["d2"]
    back_in_p1 = await services.registry.edit_device(ADMIN, "gw", project="p1")
    assert (back_in_p1.project, back_in_p1.deployment) == ("p1", "d2")
    with pytest.raises(Forbidden):
        await services.registry.edit_device(IN_P1, "gw", project="p3")
    assert (await services.registry.get_device(ADMIN, "gw")).project == "p1"
    with pytest.raises(Invalid):
        await services.registry.edit_device(ADMIN, "gw", project="bad id!")


async def test_if_match_guards_edits_and_deletes(services: Services) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    with pytest.raises(PreconditionFailed) as stale:
        await services.registry.edit_device(ADMIN, "d", name="x", if_match='"nope"')
    assert stale.value.field == "If-Match"
    renamed = await services.registry.edit_device(ADMIN, "d", name="x", if_match=device.etag)
    assert renamed.etag != device.etag
    with pytest.raises(PreconditionFailed):
        await services.registry.delete_device(ADMIN, "d", if_match=device.etag)
    await services.registry.delete_device(ADMIN, "d", if_match=f'W/"{renamed.etag}"')


async def test_cloud_properties(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d")
    await services.registry.set_cloud_property(ADMIN, "d", "site", "Plant 7")
    found = await services.properties.read_all(ADMIN, "d")
    assert found["site"].value == "Plant 7"
    for name, value in (("", 1), ("$x", 1), ("ok", None)):
        with pytest.raises(Invalid):
            await services.registry.set_cloud_property(ADMIN, "d", name, value)
    with pytest.raises(Forbidden):
        await services.registry.set_cloud_property(VIEWER, "d", "site", "x")
