"""Tests for thinghub.services.live: live events scoped to an account, project and device."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from thinghub.bus.memory import MemoryBus
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
)
from thinghub.domain.model import Principal, Role
from thinghub.services.core import Services
from thinghub.services.live import LiveService


def telemetry(account: str, project: str | None, device: str, n: int = 1) -> TelemetryReceived:
    return TelemetryReceived(account, project, device, 1.0, {"n": n}, {}, None, "mqtt", None)


def twin(account: str, project: str | None, device: str) -> TwinChanged:
    return TwinChanged(account, project, device, "desired", {"a": 1}, 2)


async def drain(stream: AsyncGenerator[LiveEvent, None]) -> list[LiveEvent]:
    """What the stream holds up to the end marker, a device deletion published last (the bus
    keeps order)."""
    got: list[LiveEvent] = []
    try:
        async with asyncio.timeout(2):
            async for event in stream:
                if isinstance(event, DeviceChanged) and event.operation == "deleted":
                    break
                got.append(event)
    finally:
        await stream.aclose()
    return got


async def publish_all(bus: MemoryBus, events: list[LiveEvent], account: str = "a") -> None:
    for event in events:
        await bus.publish(event)
    for project, device in (("p", "END"), ("q", "END"), (None, "END"), ("q", "gw/m1")):
        await bus.publish(DeviceChanged(account, project, device, "deleted"))  # end markers


async def test_a_watch_sees_its_account_only() -> None:
    bus = MemoryBus()
    live = LiveService(bus)
    stream = live.watch("a", kinds={"telemetry", "device"})
    await publish_all(bus, [telemetry("b", "p", "d1"), telemetry("a", "p", "d1", 2)])
    assert [e.body for e in await drain(stream) if isinstance(e, TelemetryReceived)] == [{"n": 2}]


async def test_kinds_project_and_device_narrow_the_watch() -> None:
    bus = MemoryBus()
    live = LiveService(bus)
    by_kind = live.watch("a", kinds={"twin", "device"})
    by_device = live.watch("a", kinds={"telemetry", "device"}, device_id="gw/m1")
    by_project = live.watch("a", kinds={"telemetry", "device"}, project="p")
    events: list[LiveEvent] = [
        telemetry("a", "p", "d1"),
        twin("a", "p", "d1"),
        telemetry("a", "q", "gw/m1"),
        ConnectionChanged("a", "p", "d1", True, 1.0),
    ]
    await publish_all(bus, events)
    assert [e.kind for e in await drain(by_kind) if e.device_id != "END"] == ["twin"]
    assert [e.device_id for e in await drain(by_device)] == ["gw/m1"]
    assert [(e.kind, e.device_id) for e in await drain(by_project) if e.device_id != "END"] == [
        ("telemetry", "d1")
    ]


async def test_one_kind_is_one_exact_bus_pattern() -> None:
    bus = MemoryBus()
    stream = LiveService(bus).watch("a", kinds={"telemetry"}, project=None, device_id="d.1")
    await bus.publish(telemetry("a", None, "d.1"))
    await bus.publish(telemetry("a", "p", "d.1"))  # another project: not this watch's
    async with asyncio.timeout(2):
        first = await anext(stream)
    assert isinstance(first, TelemetryReceived) and first.project is None
    assert bus.subscriptions == 1
    await stream.aclose()
    assert bus.subscriptions == 0


async def test_a_project_limited_principal_sees_its_project_only() -> None:
    bus = MemoryBus()
    live = LiveService(bus)
    limited = Principal("a", Role.VIEWER, "t1", project="p")
    mine = live.watch_for(limited, kinds={"telemetry", "device"})
    asked_other = live.watch_for(limited, kinds={"telemetry"}, project="q")
    await publish_all(bus, [telemetry("a", "q", "d2"), telemetry("a", "p", "d1")])
    assert [e.device_id for e in await drain(mine)] == ["d1"]
    async with asyncio.timeout(2):
        assert [e async for e in asked_other] == []


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown live event kinds"):
        LiveService(MemoryBus()).watch("a", kinds={"telemetry", "gossip"})


async def test_the_services_bundle_feeds_live_from_ingest(services: Services) -> None:
    """End to end in one process: a stored message comes out of services.live."""
    account = await services.auth.ensure_account()
    principal = Principal(account.id, Role.ADMIN, "t")
    device = await services.registry.create_device(principal, name="d", project="p")
    stream = services.live.watch_for(principal, kinds={"telemetry"})
    message = services.ingest.build(device, b'{"t": 21.5}')
    assert await services.ingest.ingest(device, message)
    async with asyncio.timeout(2):
        event = await anext(stream)
    await stream.aclose()
    assert isinstance(event, TelemetryReceived)
    assert (event.device_id, event.project, event.body) == (device.id, "p", {"t": 21.5})
