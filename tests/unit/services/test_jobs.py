"""JobService on the memory stores: one change applied to every device of a list, with
per-device status, rerun of the failed devices, and who may run jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.unit.services.node import FakeLink, Node
from thinghub.domain.errors import Forbidden, Invalid, NotFound
from thinghub.domain.jobs import DeviceRunStatus, JobStatus, JobStep, StepKind
from thinghub.domain.model import Device, Principal, Role
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
IN_P1 = Principal("acc-1", Role.OPERATOR, "limited", project="p1")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")
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


async def wait_job(services: Services, job_id: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not (await services.jobs.get(ADMIN, job_id)).status.is_final:
            await asyncio.sleep(0.01)


async def test_a_job_changes_every_device_and_reruns_the_failed(
    running: Services, live: Node
) -> None:
    devices = [await running.registry.create_device(ADMIN, name=n, device_id=n) for n in "abc"]
    links = {d.id: FakeLink(d.id) for d in devices[:2]}
    for device in devices[:2]:
        await connect(running, live, device, links[device.id])

    job = await running.jobs.create(
        ADMIN,
        "set",
        display_name="Set",
        group="g",
        device_ids=["a", "b", "c"],
        steps=[JobStep(StepKind.PROPERTY, "target", 21), JobStep(StepKind.CLOUD_PROPERTY, "x", 1)],
    )
    assert job.status is JobStatus.RUNNING
    await wait_job(running, "set")
    done = await running.jobs.get(ADMIN, "set")
    assert done.status is JobStatus.COMPLETED
    assert done.count(DeviceRunStatus.COMPLETED) == 3
    assert (await running.properties.read(ADMIN, "c", "target")).value == 21

    await running.jobs.create(
        ADMIN,
        "cmd",
        display_name="Reboot",
        group="g",
        device_ids=["a", "b", "c"],
        steps=[JobStep(StepKind.COMMAND, "reboot", 5)],
    )
    await wait_job(running, "cmd")
    ran = await running.jobs.get(ADMIN, "cmd")
    assert ran.status is JobStatus.FAILED
    assert [(r.device_id, r.status) for r in ran.devices] == [
        ("a", DeviceRunStatus.COMPLETED),
        ("b", DeviceRunStatus.COMPLETED),
        ("c", DeviceRunStatus.FAILED),
    ]
    assert "404" in (ran.devices[2].error or "")
    await connect(running, live, devices[2], FakeLink("c"))
    rerun = await running.jobs.rerun(ADMIN, "cmd", "cmd-again")
    assert [r.device_id for r in rerun.devices] == ["c"]
    await wait_job(running, "cmd-again")
    assert (await running.jobs.get(ADMIN, "cmd-again")).status is JobStatus.COMPLETED
    assert [c[0] for c in links["a"].calls] == ["reboot"]


async def test_job_rules(services: Services) -> None:
    step = JobStep(StepKind.PROPERTY, "p", 1)
    with pytest.raises(Forbidden):
        await services.jobs.create(
            VIEWER, "j", display_name="j", group="g", device_ids=[], steps=[step]
        )
    with pytest.raises(Invalid):
        await services.jobs.create(ADMIN, "j", display_name="j", group="g", device_ids=[], steps=[])
    with pytest.raises(Invalid):
        await services.jobs.create(
            ADMIN, "bad id!", display_name="j", group="g", device_ids=[], steps=[step]
        )
    empty = await services.jobs.create(
        ADMIN, "j", display_name="j", group="g", device_ids=[], steps=[step]
    )
    assert empty.status is JobStatus.COMPLETED
    with pytest.raises(Exception, match="already exists"):
        await services.jobs.create(
            ADMIN, "j", display_name="j", group="g", device_ids=[], steps=[step]
        )
    with pytest.raises(Exception, match="not running"):
        await services.jobs.stop(ADMIN, "j")
    with pytest.raises(NotFound):
        await services.jobs.get(Principal("acc-2", Role.ADMIN, "x"), "j")


async def test_jobs_belong_to_the_whole_account(services: Services) -> None:
    step = JobStep(StepKind.PROPERTY, "p", 1)
    with pytest.raises(Forbidden):
        await services.jobs.create(
            IN_P1, "j", display_name="j", group="g", device_ids=[], steps=[step]
        )
    await services.jobs.create(ADMIN, "j", display_name="j", group="g", device_ids=[], steps=[step])
    with pytest.raises(Forbidden):
        await services.jobs.list(IN_P1)
    assert [j.id for j in await services.jobs.list(VIEWER)] == ["j"]
