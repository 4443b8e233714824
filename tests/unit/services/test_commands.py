"""CommandService on the memory stores and one node's LocalLinks: awaited commands (direct
methods) and queued ones (Pending until delivered, then Completed, Failed, TimedOut, or Expired
when their time runs out), who may send them, and every rule of their inputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import FakeLink, Node
from thinghub.domain.commands import Command, CommandStatus
from thinghub.domain.errors import DeviceOffline, Forbidden, Invalid, NotFound, TimedOut, TooLarge
from thinghub.domain.model import Device, Principal, Role
from thinghub.ports import Stores
from thinghub.services.commands import (
    DEFAULT_TIMEOUT_S,
    MAX_COMMAND_PAYLOAD_BYTES,
    CommandFields,
)
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
OPERATOR = Principal("acc-1", Role.OPERATOR, "op")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")
IN_P1 = Principal("acc-1", Role.OPERATOR, "limited", project="p1")
OTHER = Principal("acc-2", Role.ADMIN, "other")
CENTRAL = CommandFields(
    name="commandName", payload="request", timeout="responseTimeout", ttl="connectionTimeout"
)
DEADLINE_S = 5.0
TEMPLATE = {
    "@id": "dtmi:test:commands;1",
    "capabilityModel": {
        "@id": "dtmi:test:commands:cm;1",
        "@type": "Interface",
        "contents": [
            {
                "@type": "Command",
                "name": "reboot",
                "request": {"name": "delay", "schema": "integer"},
            },
            {"@type": "Command", "name": "ping"},
        ],
    },
}


@pytest.fixture
async def delivering(services: Services) -> AsyncIterator[Services]:
    """The services with the command delivery loop running."""
    async with asyncio.TaskGroup() as tasks:
        loop = tasks.create_task(services.commands.run(), name="commands.run")
        yield services
        loop.cancel()


async def connect(services: Services, live: Node, device: Device, link: FakeLink) -> None:
    """What the device adapter does when a device connects."""
    await live.links.attach(link)
    await services.registry.set_connected(device, True)
    await services.commands.device_connected(device.id)


async def settled(services: Services, device: Device, command: Command) -> Command:
    """The command once it left Pending (bounded)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            current = await services.commands.get(ADMIN, device, command.id)
            if current.status is not CommandStatus.PENDING:
                return current
            await asyncio.sleep(0.001)


# -- awaited ------------------------------------------------------------------------------------


async def test_a_direct_method_reaches_a_connected_device_and_answers(
    services: Services, live: Node
) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    with pytest.raises(DeviceOffline):
        await services.commands.invoke(OPERATOR, "d", "reboot", {"delay": 1})
    link = FakeLink("d", answer=(201, {"rebooting": True}))
    await connect(services, live, device, link)
    result = await services.commands.invoke(OPERATOR, "d", "reboot", {"delay": 1}, 10)
    assert (result.status, result.payload) == (201, {"rebooting": True})
    # by id or by the Device in hand; the default timeout when none is given
    await services.commands.invoke(OPERATOR, device, "ping", None)
    assert link.calls == [("reboot", {"delay": 1}, 10.0), ("ping", None, DEFAULT_TIMEOUT_S)]
    link.answer = None
    with pytest.raises(TimedOut):
        await services.commands.invoke(OPERATOR, "d", "reboot", None, 5)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (4.9, "from 5 to 300, got 4.9"),
        (301, "from 5 to 300, got 301"),
        ("30", "must be a number of seconds"),
        (True, "must be a number of seconds"),
    ],
)
async def test_response_timeouts_are_5_s_to_the_setting_and_name_the_faces_field(
    services: Services, live: Node, given: Any, message: str
) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    link = FakeLink("d")
    await connect(services, live, device, link)
    with pytest.raises(Invalid, match=message) as bad:
        await services.commands.invoke(ADMIN, "d", "m", None, given)
    assert bad.value.field == "responseTimeoutInSeconds"
    with pytest.raises(Invalid) as named:
        await services.commands.submit(ADMIN, "d", "m", None, given, fields=CENTRAL)
    assert named.value.field == "responseTimeout"
    assert link.calls == []
    assert await services.commands.invoke(ADMIN, "d", "m", None, 5)
    assert await services.commands.invoke(ADMIN, "d", "m", None, 300.0)


async def test_who_may_call_a_method(services: Services, live: Node) -> None:
    await services.registry.create_device(ADMIN, name="a", device_id="a", project="p1")
    device = await services.registry.create_device(ADMIN, name="b", device_id="b", project="p2")
    link = FakeLink("b")
    await connect(services, live, device, link)
    with pytest.raises(Forbidden):  # the role first: even for a device that does not exist
        await services.commands.invoke(VIEWER, "nope", "m", None)
    with pytest.raises(Forbidden):
        await services.commands.invoke(VIEWER, device, "m", None)
    for outsider in (IN_P1, OTHER):
        with pytest.raises(NotFound):
            await services.commands.invoke(outsider, "b", "m", None)
        with pytest.raises(NotFound):
            await services.commands.invoke(outsider, device, "m", None)
    assert link.calls == []
    with pytest.raises(Invalid) as bad_name:
        await services.commands.invoke(ADMIN, "b", "a/b", None)
    assert bad_name.value.field == "name"


# -- queued -------------------------------------------------------------------------------------


async def test_a_queued_command_waits_for_its_device_and_is_delivered_on_connect(
    delivering: Services, live: Node, clock: TestClock
) -> None:
    services = delivering
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    command = await services.commands.submit(OPERATOR, "d", "reboot", {"delay": 1})
    assert command.status is CommandStatus.PENDING
    assert command.expires_at == clock.t + services.commands.ttl_s
    assert await services.commands.get(VIEWER, "d", command.id) == command
    link = FakeLink("d", answer=(200, {"done": 1}))
    await connect(services, live, device, link)
    done = await settled(services, device, command)
    assert (done.status, done.response_code, done.result) == (
        CommandStatus.COMPLETED,
        200,
        {"done": 1},
    )
    assert link.calls == [("reboot", {"delay": 1}, DEFAULT_TIMEOUT_S)]
    # Connecting again delivers nothing twice.
    await services.commands.device_connected("d")
    marker = await services.commands.submit(OPERATOR, "d", "marker", None)
    await settled(services, device, marker)
    assert [call[0] for call in link.calls] == ["reboot", "marker"]


@pytest.mark.parametrize(
    ("answer", "status"),
    [((200, 1), CommandStatus.COMPLETED), ((500, {"error": "x"}), CommandStatus.FAILED),
     (None, CommandStatus.TIMED_OUT)],
)  # fmt: skip
async def test_a_command_to_a_connected_device_goes_at_once_and_its_answer_finishes_it(
    delivering: Services, live: Node, answer: tuple[int, Any] | None, status: CommandStatus
) -> None:
    services = delivering
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    link = FakeLink("d", answer=answer)
    await connect(services, live, device, link)
    command = await services.commands.submit(OPERATOR, device, "blink", {"n": 2}, 7, 60)
    done = await settled(services, device, command)
    assert done.status is status
    assert done.completed_at is not None
    assert link.calls == [("blink", {"n": 2}, 7.0)]


async def test_a_device_that_does_not_listen_for_methods_gets_its_command_later(
    delivering: Services, live: Node
) -> None:
    services = delivering
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    deaf = FakeLink("d", feeds=frozenset({"desired"}))
    await live.links.attach(deaf)
    first = await services.commands.submit(ADMIN, "d", "first", None)
    # A second device that listens gets its command: the loop ran, and passed `d` by.
    other = await services.registry.create_device(ADMIN, name="o", device_id="o")
    await connect(services, live, other, FakeLink("o"))
    assert await settled(services, other, await services.commands.submit(ADMIN, "o", "x", None))
    assert deaf.calls == []
    assert (await services.commands.get(ADMIN, "d", first.id)).status is CommandStatus.PENDING
    await live.links.detach(deaf)
    listening = FakeLink("d")
    await connect(services, live, device, listening)
    assert (await settled(services, device, first)).status is CommandStatus.COMPLETED


async def test_a_command_expires_when_its_time_runs_out(
    delivering: Services, live: Node, clock: TestClock
) -> None:
    services = delivering
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    command = await services.commands.submit(ADMIN, "d", "reboot", None, None, 60)
    assert command.expires_at == clock.t + 60
    clock.t += 60
    expired = await services.commands.get(ADMIN, "d", command.id)
    assert expired.status is CommandStatus.EXPIRED
    # An expired command is never delivered, even when the device connects.
    link = FakeLink("d")
    await connect(services, live, device, link)
    marker = await services.commands.submit(ADMIN, "d", "marker", None)
    await settled(services, device, marker)
    assert [call[0] for call in link.calls] == ["marker"]


@pytest.mark.parametrize("ttl", [0.5, 86_401, "60", False])
async def test_the_time_to_live_is_1_s_to_the_setting(services: Services, ttl: Any) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d")
    with pytest.raises(Invalid) as bad:
        await services.commands.submit(ADMIN, "d", "reboot", None, None, ttl, fields=CENTRAL)
    assert bad.value.field == "connectionTimeout"


async def test_a_queued_request_must_be_storable_and_at_most_128_kib(
    services: Services, stores: Stores
) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d")
    with pytest.raises(TooLarge) as large:
        await services.commands.submit(
            ADMIN, "d", "m", "x" * MAX_COMMAND_PAYLOAD_BYTES, fields=CENTRAL
        )
    assert large.value.field == "request"
    with pytest.raises(Invalid) as unstorable:
        await services.commands.submit(ADMIN, "d", "m", {"n": float("nan")}, fields=CENTRAL)
    assert unstorable.value.field == "request"
    with pytest.raises(Invalid) as bad_name:
        await services.commands.submit(ADMIN, "d", "no spaces", None, fields=CENTRAL)
    assert bad_name.value.field == "commandName"
    assert await stores.commands.pending("d") == []


async def test_a_templated_devices_command_must_match_its_template(services: Services) -> None:
    await services.templates.put(ADMIN, "dtmi:test:commands;1", TEMPLATE)
    await services.registry.create_device(
        ADMIN, name="d", device_id="d", template="dtmi:test:commands;1"
    )
    with pytest.raises(NotFound) as unknown:
        await services.commands.submit(ADMIN, "d", "dance", None)
    assert unknown.value.field == "commandName"
    with pytest.raises(Invalid) as wrong:
        await services.commands.submit(ADMIN, "d", "reboot", "soon")
    assert wrong.value.field == "delay"
    # {"<request name>": value} is taken as the value (IoT Central's documented example).
    wrapped = await services.commands.submit(ADMIN, "d", "reboot", {"delay": 5})
    bare = await services.commands.submit(ADMIN, "d", "reboot", 5)
    assert wrapped.payload == bare.payload == 5
    with pytest.raises(Invalid):
        await services.commands.submit(ADMIN, "d", "ping", {"x": 1})  # takes no request
    await services.commands.submit(ADMIN, "d", "ping", None)


async def test_who_may_queue_and_read_commands(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d", project="p2")
    await services.registry.create_device(ADMIN, name="e", device_id="e", project="p2")
    command = await services.commands.submit(ADMIN, "d", "reboot", None)
    with pytest.raises(Forbidden):
        await services.commands.submit(VIEWER, "d", "reboot", None)
    with pytest.raises(NotFound):
        await services.commands.submit(IN_P1, "d", "reboot", None)
    for outsider in (IN_P1, OTHER):
        with pytest.raises(NotFound):
            await services.commands.get(outsider, "d", command.id)
    with pytest.raises(NotFound):  # a command of another device, asked through this one
        await services.commands.get(ADMIN, "e", command.id)
    assert (await services.commands.get(VIEWER, "d", command.id)).id == command.id
