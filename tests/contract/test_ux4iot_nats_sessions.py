"""The shared ux4iot session store (NatsSessionStore) against a real nats-server.

Three stores, each on its own NATS connection with its own node id, stand for three nodes of a
cluster; each test has a bucket of its own. Time is an argument (`now`), as on one node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from tests.nats_server import NatsServer
from thinghub.domain.errors import Forbidden, NotFound, RateLimited, TimedOut
from thinghub.faces.ux4iot import nats_store
from thinghub.faces.ux4iot.grants import Grant, GrantType, Subscription, SubscriptionType
from thinghub.faces.ux4iot.nats_store import NatsSessionStore
from thinghub.services.kv_watch import next_entry

WITHIN_S = 10.0
STOP_WITHIN_S = 10.0  # a cancelled store task must end within this
IDLE_S = 10.0
T0 = 1_000_000.0
TEL = SubscriptionType.TELEMETRY
REWATCHES = 50


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server.url


class Node:
    def __init__(self, store: NatsSessionStore, nc: Client, task: asyncio.Task[None]) -> None:
        self.store = store
        self.nc = nc
        self.task = task
        self.removed: list[str] = []
        self.bound: list[str] = []

        async def on_removed(session_id: str) -> None:
            self.removed.append(session_id)

        async def on_bound(account_id: str) -> None:
            self.bound.append(account_id)

        store.on_removed = on_removed
        store.on_bound = on_bound


Make = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
async def make_nodes(nats_url: str) -> AsyncIterator[Make]:
    started: list[Node] = []
    bucket = f"ux4iot_test_{time.monotonic_ns()}"

    async def make(count: int = 3, **limits: int) -> list[Node]:
        made = []
        for index in range(count):
            nc = await nats.connect(nats_url)
            store = NatsSessionStore(nc, f"n{index}", idle_s=IDLE_S, bucket=bucket, **limits)
            node = Node(store, nc, asyncio.create_task(store.run()))
            started.append(node)
            made.append(node)
            await asyncio.wait_for(store.replica_ready.wait(), WITHIN_S)
        return made

    yield make
    for node in started:
        node.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(node.task), STOP_WITHIN_S)
        await node.nc.close()


async def eventually(probe: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def watchers(node: Node, account: str, device: str) -> set[str]:
    return {sid for group in node.store.audience(account, device, TEL) for sid in group.session_ids}


async def test_a_session_is_one_session_on_every_node(make_nodes: Make) -> None:
    a, b, c = await make_nodes()
    info = await a.store.create(T0)
    sid = info.id
    assert (await b.store.get(sid, T0 + 1)) is not None
    grant = Grant("dev", GrantType.TELEMETRY)
    assert await b.store.grant(sid, "acc", grant, T0 + 1) is None
    await c.store.subscribe(sid, Subscription("dev", TEL), T0 + 2)
    assert await a.store.subscriptions(sid, T0 + 2) == {Subscription("dev", TEL)}
    assert await c.store.session_account(sid, T0 + 2) == "acc"
    assert await a.store.allows(sid, Grant("dev", GrantType.TELEMETRY, "t"), T0 + 2)
    for node in (a, b, c):  # every replica answers the fan-out
        await eventually(lambda n=node: watchers(n, "acc", "dev") == {sid}, "the replicas")
        await eventually(lambda n=node: "acc" in n.bound, "the binding announced")
    assert watchers(a, "other", "dev") == set()
    # Another account's key sees no such session, on any node.
    with pytest.raises(NotFound):
        await c.store.grant(sid, "other", grant, T0 + 3)
    assert not await a.store.delete(sid, "other")
    # Without the grant no subscription: a node applies the same rules as one node.
    with pytest.raises(Forbidden):
        await a.store.subscribe(sid, Subscription("dev2", TEL), T0 + 3)
    revoked = await a.store.revoke(sid, "acc", grant, T0 + 4)
    assert revoked == [Subscription("dev", TEL)]
    for node in (a, b, c):
        await eventually(lambda n=node: not watchers(n, "acc", "dev"), "the revoke replicated")


async def test_concurrent_changes_from_several_nodes_all_land(make_nodes: Make) -> None:
    a, b, c = await make_nodes()
    sid = (await a.store.create(T0)).id
    stores = [a.store, b.store, c.store]
    grants = [Grant(f"dev{i}", GrantType.TELEMETRY) for i in range(30)]
    await asyncio.gather(
        *(stores[i % 3].grant(sid, "acc", g, T0 + 1) for i, g in enumerate(grants))
    )
    subs = [Subscription(g.device_id, TEL) for g in grants]
    await asyncio.gather(*(stores[i % 3].subscribe(sid, s, T0 + 2) for i, s in enumerate(subs)))
    info = await b.store.get(sid, T0 + 3)
    assert info is not None and (info.grants, info.subscriptions) == (30, 30)
    await eventually(
        lambda: all(watchers(c, "acc", s.device_id) == {sid} for s in subs), "every watcher"
    )


async def test_a_socket_on_any_node_keeps_the_session(make_nodes: Make) -> None:
    a, b, c = await make_nodes()
    sid = (await a.store.create(T0)).id
    attached = await c.store.attach(sid, T0 + 1)
    assert attached is not None and attached.sockets == 1
    await b.store.detach(sid, T0 + 2)  # b holds no socket of it: its count stays
    late = T0 + 1 + IDLE_S * 5
    await eventually(lambda: b.store.replica.state(sid) is not None, "the replica")
    assert await b.store.expire(late) == []
    assert (await a.store.get(sid, late)) is not None
    await c.store.detach(sid, late)
    later = late + IDLE_S + 1
    await eventually(lambda: len(a.store.replica.idle(later)) == 1, "the detach replicated")
    await eventually(lambda: len(b.store.replica.idle(later)) == 1, "the detach replicated")
    # Every node sweeps at once: exactly one deletes it.
    swept = await asyncio.gather(
        a.store.expire(later), b.store.expire(later), c.store.expire(later)
    )
    assert sorted(sid for ids in swept for sid in ids) == [sid]
    for node in (a, b, c):
        await eventually(lambda n=node: sid in n.removed, "the removal announced")
    assert await b.store.get(sid, later) is None


async def test_a_touched_session_is_not_swept_and_an_idle_one_is_unknown(make_nodes: Make) -> None:
    a, b = await make_nodes(2)
    kept = (await a.store.create(T0)).id
    idle = (await a.store.create(T0)).id
    assert await b.store.touch(kept, T0 + IDLE_S)
    assert await b.store.get(idle, T0 + IDLE_S + 1) is None  # lazy expiry, on another node
    assert await a.store.touch(kept, T0 + IDLE_S + 1)
    assert await a.store.get(kept, T0 + IDLE_S + 2) is not None
    assert not await a.store.touch(idle, T0 + IDLE_S + 2)
    await eventually(lambda: idle in a.removed and idle in b.removed, "the idle one removed")


async def test_delete_on_one_node_reaches_the_others(make_nodes: Make) -> None:
    a, b, c = await make_nodes()
    sid = (await a.store.create(T0)).id
    await a.store.grant(sid, "acc", Grant("dev", GrantType.TELEMETRY), T0)
    await a.store.subscribe(sid, Subscription("dev", TEL), T0)
    other = (await a.store.create(T0)).id
    await a.store.grant(other, "acc2", Grant("dev", GrantType.TELEMETRY), T0)
    await eventually(lambda: watchers(c, "acc", "dev") == {sid}, "the replica")
    assert await b.store.delete(sid, "acc")
    await eventually(lambda: sid in c.removed, "the removal on c")
    assert watchers(c, "acc", "dev") == set()
    assert await c.store.accounts() == frozenset({"acc2"})
    with pytest.raises(NotFound):
        await c.store.subscriptions(sid, T0 + 1)
    # DELETE /sessions of one account from another node: only that account's sessions.
    more = [(await a.store.create(T0)).id for _ in range(3)]
    for session_id in more:
        await a.store.grant(session_id, "acc", Grant("d", GrantType.DEVICE_TWIN), T0)
    assert await c.store.delete_account("acc") == sorted(more)
    assert await b.store.get(other, T0 + 1) is not None


async def test_the_session_limit_is_cluster_wide(make_nodes: Make) -> None:
    a, b = await make_nodes(2, max_sessions=2)
    await a.store.create(T0)
    await a.store.create(T0)
    await eventually(lambda: len(b.store.replica) == 2, "the replica")
    with pytest.raises(RateLimited):
        await b.store.create(T0 + 1)
    # Once both idle out, the sweep the limit triggers makes room.
    assert (await b.store.create(T0 + IDLE_S + 1)).id


def test_session_keys_hold_any_id(tmp_path: Path) -> None:
    from thinghub.faces.ux4iot.nats_store import key_session, session_key

    for value in ("3f0c", "a.b*c>d", "ü ñ", "x" * 200):
        key = session_key(value)
        assert all(ch.isalnum() or ch in "-_" for ch in key)
        assert key_session(key) == value


async def test_the_replicas_follow_after_nats_restarts(tmp_path: Path) -> None:
    """After a NATS restart each node watches the bucket anew: a session changed on one node
    reaches the other's replica, and one removed meanwhile leaves it."""
    with NatsServer(tmp_path / "nats") as server:
        clients = [
            await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
            for _ in range(2)
        ]
        stores = [NatsSessionStore(nc, f"r{i}", idle_s=IDLE_S) for i, nc in enumerate(clients)]
        tasks = [asyncio.create_task(store.run()) for store in stores]
        try:
            a, b = stores
            await asyncio.wait_for(b.replica_ready.wait(), WITHIN_S)
            before = (await a.create(T0)).id
            await eventually(lambda: b.replica.state(before) is not None, "the replica")
            server.stop()
            server.start()
            await eventually(lambda: all(nc.is_connected for nc in clients), "reconnected")
            started = time.monotonic()
            sid = ""
            deadline = time.monotonic() + WITHIN_S
            while not sid:  # JetStream may need a moment after the restart
                try:
                    sid = (await a.create(T0)).id
                except TimedOut:  # the store's Unavailable
                    assert time.monotonic() < deadline, "no session after the restart"
                    await asyncio.sleep(0.1)
            print(f"JetStream answered {time.monotonic() - started:.2f} s after reconnecting")
            started = time.monotonic()
            await a.grant(sid, "acc", Grant("dev", GrantType.TELEMETRY), T0)
            await a.subscribe(sid, Subscription("dev", TEL), T0)
            assert await a.delete(before, "acc")
            node_b = Node(b, clients[1], tasks[1])
            await eventually(lambda: watchers(node_b, "acc", "dev") == {sid}, "b's replica")
            await eventually(lambda: b.replica.state(before) is None, "the removal on b")
            print(f"replica current {time.monotonic() - started:.2f} s after reconnecting")
        finally:
            for task in tasks:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), STOP_WITHIN_S)
            for nc in clients:
                await nc.close()


@pytest.mark.parametrize("early_marker", [False, True], ids=["as-sent", "marker-first"])
async def test_a_watch_is_ready_with_every_session_and_a_rewatch_removes_none(
    make_nodes: Make, monkeypatch: pytest.MonkeyPatch, early_marker: bool
) -> None:
    """nats-py's end-of-current-values marker can come before values the server already sent
    (it is put first when the consumer has nothing pending and its callback has not yet run,
    though the values are on the wire): a replica must hold every session when it says it is
    ready, and watching anew (as after a NATS reconnect) must not drop a session the bucket
    still holds, not even for a moment. Each round changes the sessions just before b watches
    anew; `marker-first` has every watch's marker come before its values, as that race does."""
    if early_marker:
        firsts: set[int] = set()

        async def marker_first(watcher: object, timeout_s: float) -> object:
            if id(watcher) not in firsts:
                firsts.add(id(watcher))
                return None
            return await next_entry(watcher, timeout_s)

        monkeypatch.setattr(nats_store, "next_entry", marker_first)
    a, b = await make_nodes(2)
    sids = [(await a.store.create(T0)).id for _ in range(3)]
    await eventually(lambda: all(b.store.replica.state(sid) for sid in sids), "b's replica")
    for n in range(REWATCHES):
        b.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(b.task), STOP_WITHIN_S)
        for sid in sids:  # the bucket's newest values, just written
            assert await a.store.touch(sid, T0 + n + 1)
        b.store.replica_ready.clear()
        b.task = asyncio.create_task(b.store.run())
        await asyncio.wait_for(b.store.replica_ready.wait(), WITHIN_S)
        assert b.removed == [], n
        assert [sid for sid in sids if b.store.replica.state(sid) is None] == [], n
    (late,) = await make_nodes(1)  # a node that starts now is ready once it holds them all
    assert [sid for sid in sids if late.store.replica.state(sid) is None] == []
    assert await a.store.delete(sids[0], "acc")
    await eventually(lambda: b.removed == [sids[0]], "the one removal on b")


async def test_sockets_of_a_dead_node_do_not_keep_a_session(nats_url: str) -> None:
    """With the cluster's node leases, a session whose only socket was on a node that died
    idles out; a socket on a live node keeps its session."""
    dead: set[tuple[str, str]] = set()

    async def node_alive(node: str, boot: str) -> bool:
        return (node, boot) not in dead

    bucket = f"ux4iot_test_{time.monotonic_ns()}"
    clients = [await nats.connect(nats_url) for _ in range(2)]
    a, b = (
        NatsSessionStore(nc, f"run{i}:node{i}", idle_s=IDLE_S, bucket=bucket, node_alive=node_alive)
        for i, nc in enumerate(clients)
    )
    tasks = [asyncio.create_task(store.run()) for store in (a, b)]
    try:
        await asyncio.wait_for(a.replica_ready.wait(), WITHIN_S)
        orphan = (await a.create(T0)).id
        kept = (await a.create(T0)).id
        assert await b.attach(orphan, T0) is not None
        assert await b.attach(kept, T0) is not None
        assert await a.attach(kept, T0) is not None

        def replicated() -> bool:
            states = (a.replica.state(orphan), a.replica.state(kept))
            return [None if st is None else st.sockets for st in states] == [1, 2]

        await eventually(replicated, "the attaches replicated")
        late = T0 + IDLE_S * 3
        assert await a.expire(late) == []  # node1 is alive: its sockets keep both
        dead.add(("node1", "run1"))
        assert await a.expire(late) == [orphan]  # node0's own socket keeps `kept`
        assert await a.get(kept, late) is not None
        assert await b.get(orphan, late) is None
    finally:
        for task in tasks:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), STOP_WITHIN_S)
        for nc in clients:
            await nc.close()
