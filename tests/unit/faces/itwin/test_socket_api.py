"""Tests for the iTwin socket API over the core services on memory stores: streams read the
store a batch at a time as the client reads, feeds are shared by subscribers, pushes are
encoded once, entities created here are core devices, and projects scope what is seen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.unit.faces.itwin.conftest import FakeTransport
from tests.unit.services.node import Node
from thinghub.domain.model import DeviceKind, Principal, Role
from thinghub.domain.telemetry import Observation
from thinghub.faces.itwin.backend import Backend
from thinghub.faces.itwin.connection import RpcConnection
from thinghub.faces.itwin.data import BATCH_ROWS
from thinghub.faces.itwin.ids import EntityKind
from thinghub.faces.itwin.network import Facts
from thinghub.faces.itwin.scope import scope_of
from thinghub.faces.itwin.series import MAX_CHUNK_POINTS
from thinghub.faces.itwin.socket_api import build_table
from thinghub.ports import Stores
from thinghub.services.core import Services

T0 = 1_700_000_000.0


class Client:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def send(self, method: str, request_id: Any, **params: Any) -> None:
        self._queue.put_nowait({"jsonrpc": "2.0", "method": method, "id": request_id,
                                "params": params})  # fmt: skip

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def values(self) -> AsyncIterator[Any]:
        while (value := await self._queue.get()) is not None:
            yield value


async def admin_token(services: Services, project: str | None = None) -> str:
    account = await services.auth.ensure_account()
    issued = await services.auth.create_token(account.id, Role.ADMIN, project=project)
    return issued.secret


async def open_connection(
    services: Services, backend: Backend, transport: FakeTransport, token: str
) -> tuple[Client, asyncio.Task[None]]:
    client = Client()
    connection = RpcConnection(build_table(backend), transport)
    task = asyncio.create_task(connection.serve(client.values(), close_on_frame_error=False))
    client.send("authenticate", 0, code=token)
    await transport.wait_for(1)
    return client, task


async def device_with_history(services: Services, count: int, project: str = "p1") -> str:
    account = await services.auth.ensure_account()
    device = await services.registry.register(account.id, name="d", project=project)
    rows = [Observation(account.id, device.id, "T", T0 + i, float(i)) for i in range(count)]
    await services.ingest.stores.telemetry.append([], rows)  # the store, as ingest would
    return device.id


@pytest.fixture
async def backend(services: Services) -> AsyncIterator[Backend]:
    """The face's backend with its fan-out worker running, as the server runs it."""
    built = Backend.build(services)
    worker = asyncio.create_task(built.fanout.run(), name="itwin.fanout")
    yield built
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    assert built.fanout.feeds == 0


async def test_get_data_reads_the_store_only_as_the_client_reads(
    services: Services, backend: Backend, stores: Stores
) -> None:
    count = 2 * BATCH_ROWS + 10
    device_id = await device_with_history(services, count)
    reads: list[int] = []
    original = stores.telemetry.stream_observations

    async def counted(*args: Any) -> AsyncIterator[list[tuple[int, float]]]:
        async for batch in original(*args):
            reads.append(len(batch))
            yield batch

    stores.telemetry.stream_observations = counted  # type: ignore[method-assign,assignment]
    transport = FakeTransport()
    client, served = await open_connection(
        services, backend, transport, await admin_token(services)
    )
    transport.gate.clear()  # a client that does not read
    sensor = f"/thinghub/{device_id}/node/device/{device_id}/device/default/sensor"
    client.send("getData", 7, sensor=sensor, metric="T", unit="F")
    for _ in range(50):
        await asyncio.sleep(0)
    # The batch being sent, and one read ahead; nothing more while the client does not read.
    assert reads == [BATCH_ROWS, BATCH_ROWS]
    transport.gate.set()
    messages = await transport.wait_for(1 + count // MAX_CHUNK_POINTS + 2)
    client.end()
    await served
    assert reads == [BATCH_ROWS, BATCH_ROWS, 10]
    chunks = [m["result"] for m in messages[1:]]
    assert chunks[-1] == {"requestStatus": "finished"}
    assert all(len(c["data"]) <= MAX_CHUNK_POINTS for c in chunks[:-1])
    values = [v for c in chunks[:-1] for v in c["data"].values()]
    assert len(values) == count and values[:2] == [32.0, 33.8]  # 0 C, 1 C in F


async def test_subscribers_share_one_feed_and_one_encoding(
    services: Services, backend: Backend, live: Node
) -> None:
    device_id = await device_with_history(services, 1)
    device = await services.registry.find(device_id)
    assert device is not None
    token = await admin_token(services)
    sensor = f"/thinghub/{device_id}/node/device/{device_id}/device/default/sensor"
    transports = [FakeTransport() for _ in range(3)]
    clients = []
    before = live.bus.subscriptions
    for i, transport in enumerate(transports):
        client, task = await open_connection(services, backend, transport, token)
        client.send("subscribeData", 100 + i, sensors=[sensor], metric="T", unit="F",
                    projectIds=["p1"])  # fmt: skip
        await transport.wait_for(2)
        clients.append((client, task))
    assert backend.fanout.feeds == 1 and live.bus.subscriptions == before + 1
    message = services.ingest.build(device, b'{"T": 100}', enqueued_at=T0 + 60)
    await services.ingest.ingest(device, message)
    pushed = [await t.wait_for(3) for t in transports]
    heads = [frames[-1] for frames in pushed]
    assert [h["id"] for h in heads] == [100, 101, 102]
    assert {orjson.dumps(h["result"]) for h in heads} == {
        b'{"data":{"2023-11-14T22:14:20.000Z":212.0}}'
    }
    for client, task in clients:
        client.end()
        await task
    assert backend.fanout.feeds == 0 and live.bus.subscriptions == before


async def test_a_full_client_loses_pushes_not_the_feed(
    services: Services, backend: Backend
) -> None:
    device_id = await device_with_history(services, 1)
    device = await services.registry.find(device_id)
    assert device is not None
    token = await admin_token(services)
    sensor = f"/thinghub/{device_id}/node/device/{device_id}/device/default/sensor"
    slow, fast = FakeTransport(push_room=1), FakeTransport()
    opened = []
    for transport in (slow, fast):
        client, task = await open_connection(services, backend, transport, token)
        client.send("subscribeData", 5, sensors=[sensor], metric="T", unit="C")
        await transport.wait_for(2)
        opened.append((client, task))
    for i in range(3):
        await services.ingest.ingest(device, services.ingest.build(device, b'{"T": %d}' % i))
    await fast.wait_for(5)
    assert len(slow.pushed) == 1 and slow.dropped == 2 and len(fast.pushed) == 3
    for client, task in opened:
        client.end()
        await task


async def test_created_entities_are_core_devices_in_the_scoped_project(
    services: Services, backend: Backend
) -> None:
    account = await services.auth.ensure_account()
    principal = Principal(account.id, Role.ADMIN, "t")
    scope = scope_of(principal, "p9")
    sensor = await backend.writer.create(
        scope,
        EntityKind.SENSOR,
        "/fn/A1/node/x/B2/device/s/sensor",
        "X",
        {"NAME": "n"},
        field_name="s",
    )
    devices = await services.registry.list_devices(
        principal, kinds=(DeviceKind.NODE, DeviceKind.DEVICE, DeviceKind.SENSOR)
    )
    kinds = sorted((d.kind.value, d.project) for d in devices)
    assert kinds == [("device", "p9"), ("node", "p9"), ("sensor", "p9")]
    core = next(d for d in devices if d.kind is DeviceKind.SENSOR)
    assert core.attributes["itwin"]["id"] == sensor.id
    assert core.parent_id == next(d.id for d in devices if d.kind is DeviceKind.DEVICE)
    # The account's id names devices without a project; another project sees none of these.
    assert await backend.network.sensors(scope_of(principal, account.id), Facts()) == []
    assert [s.id for s in await backend.network.sensors(scope, Facts())] == [sensor.id]
    limited = Principal(account.id, Role.ADMIN, "t2", project="p8")
    assert (
        await backend.network.find(
            scope_of(limited, None), sensor.id, EntityKind.SENSOR, "s", Facts()
        )
        is None
    )
