"""C2DService on a real SQLite store: each queued message reaches the device exactly once,
even when a send races the delivery of a (re)connect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from thinghub.app import build_services
from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.config import Settings
from thinghub.domain.errors import Invalid, PreconditionFailed
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult, Stores
from thinghub.services.c2d import C2D_LOCK_S, C2DService
from thinghub.storage.memory import memory_stores
from thinghub.storage.migrate import upgrade
from thinghub.storage.sql import sql_stores
from thinghub.storage.sqlite import SqliteDatabase

ADMIN = Principal("acc-1", Role.ADMIN, "tok-1", "token")


class Clock:
    def now(self) -> float:
        return 1_700_000_000.0


class Links:
    """A connected device whose pushes take a few loop passes (as a real write does)."""

    def __init__(self) -> None:
        self.pushed: list[str] = []

    async def call_method(
        self, device_id: str, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        raise NotImplementedError

    async def push_desired(self, device_id: str, patch: dict[str, Any], version: int) -> None:
        return None

    async def push_c2d(self, message: C2DMessage) -> bool:
        for _ in range(3):
            await asyncio.sleep(0)
        self.pushed.append(message.id)
        return True

    async def disconnect(self, device_id: str, *, revoked: bool = False) -> bool:
        return False

    async def has_subscribed(self, device_id: str, feed: DeviceFeed) -> bool:
        return True


class Offline(Links):
    """A device with no MQTT connection: nothing is pushed, it polls over HTTPS."""

    async def push_c2d(self, message: C2DMessage) -> bool:
        return False


class MovingClock(Clock):
    def __init__(self) -> None:
        self.at = 1_700_000_000.0

    def now(self) -> float:
        return self.at


def c2d_service(stores: Stores, links: Links, clock: Clock | None = None) -> C2DService:
    """The C2D service as the composition root builds it, over `links` as its channel."""
    clock = clock or Clock()
    return build_services(
        Settings.defaults(),
        stores,
        bus=MemoryBus(),
        clock=clock,
        presence=MemoryPresence(clock),
        channel=links,
        locks=MemoryLocks(),
        counter=MemoryCounter(),
        issuer=None,
    ).c2d


def device() -> Device:
    return Device(
        id="d1",
        account_id="acc-1",
        name="d1",
        kind=DeviceKind.DEVICE,
        primary_key="k1",
        secondary_key="k2",
        created_at=1.0,
        updated_at=1.0,
    )


async def test_a_send_racing_a_reconnect_delivers_each_message_once(tmp_path: Path) -> None:
    path = tmp_path / "c2d.db"
    upgrade(f"sqlite:///{path}")
    stores = sql_stores(SqliteDatabase(path))
    await stores.start()
    try:
        links = Links()
        c2d = c2d_service(stores, links)
        sent = []
        for n in range(20):
            # The device (re)connects (deliver_pending) while a message is being sent.
            message, _ = await asyncio.gather(
                c2d.send(ADMIN, device(), {"n": n}, {}), c2d.deliver_pending("d1")
            )
            sent.append(message.id)
        assert sorted(links.pushed) == sorted(sent)  # each once, none twice
        assert await stores.c2d.pending("d1") == []
    finally:
        await stores.close()


@pytest.mark.parametrize("properties", [{"\ud800": "v"}, {"k": "a\udc00b"}], ids=["name", "value"])
async def test_a_property_with_a_lone_surrogate_is_refused_and_nothing_queued(
    properties: dict[str, str],
) -> None:
    """Every face sends through here: such a name was a 500 when the message was stored."""
    stores = memory_stores()
    links = Links()
    c2d = c2d_service(stores, links)
    with pytest.raises(Invalid) as refused:
        await c2d.send(ADMIN, device(), {"n": 1}, properties)
    assert refused.value.field == "properties"
    assert "lone surrogate" in refused.value.message
    assert await stores.c2d.pending("d1") == []
    assert links.pushed == []


async def test_a_polled_message_is_locked_until_settled_or_its_lock_expires() -> None:
    """HTTPS receive (IoT Hub's): a received message is skipped by other receives while
    locked; an expired lock makes it receivable again (its delivery count grows) and its
    old lock token settles nothing; complete deletes it."""
    stores, clock = memory_stores(), MovingClock()
    c2d = c2d_service(stores, Offline(), clock)
    sent = await c2d.send(ADMIN, device(), "hello", {"k": "v"})
    first = await c2d.receive("d1")
    assert first is not None and first.message.id == sent.id and first.delivery_count == 1
    assert await c2d.receive("d1") is None  # locked
    clock.at += C2D_LOCK_S + 1
    second = await c2d.receive("d1")
    assert second is not None and second.message.id == sent.id and second.delivery_count == 2
    with pytest.raises(PreconditionFailed):
        await c2d.settle("d1", first.lock_token, "complete")
    with pytest.raises(PreconditionFailed):  # another device's path cannot settle it
        await c2d.settle("d2", second.lock_token, "complete")
    await c2d.settle("d1", second.lock_token, "complete")
    assert await stores.c2d.pending("d1") == []
    assert await c2d.receive("d1") is None
