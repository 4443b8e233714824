"""The Socket.IO channel (faces/ux4iot/live.py), without sockets.

python-socketio's own room bookkeeping runs for real (its manager keeps rooms in memory);
only the two calls that would write to a connection are recorded instead: engineio's
`send_packet` (so the tests see the exact Engine.IO text each socket would get) and
`disconnect`. The real transports are proven end to end by the e2e tests with the Node clients.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from thinghub.faces.ux4iot.fanout import ConnectionChanged, MessageArrived
from thinghub.faces.ux4iot.grants import Grant, GrantType, Subscription, SubscriptionType
from thinghub.faces.ux4iot.live import NAMESPACES, LiveChannel, session_of
from thinghub.faces.ux4iot.sessions import SessionTable
from thinghub.faces.ux4iot.store import MemorySessionStore

T0 = 1_700_000_000.0


class Recorded:
    def __init__(self, live: LiveChannel) -> None:
        self.sent: list[tuple[str, str]] = []  # (engine.io sid, encoded packet text)
        self.disconnects: list[tuple[str, str]] = []
        self.attached: list[tuple[str, str]] = []
        live.server.eio.send_packet = self._send_packet
        live.server.disconnect = self._disconnect

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        self.sent.append((eio_sid, pkt.encode()))

    async def _disconnect(self, sid: str, namespace: str = "/") -> None:
        self.disconnects.append((sid, namespace))


def make() -> tuple[LiveChannel, MemorySessionStore, Recorded]:
    counter = itertools.count()
    store = MemorySessionStore(SessionTable(new_id=lambda: f"s{next(counter)}"))
    attached: list[tuple[str, str]] = []

    async def on_attach(session_id: str, namespace: str) -> None:
        attached.append((session_id, namespace))

    live = LiveChannel(store, lambda: T0, on_attach=on_attach)
    rec = Recorded(live)
    rec.attached = attached
    return live, store, rec


async def open_socket(
    live: LiveChannel, eio_sid: str, namespace: str, query: str
) -> tuple[str, bool]:
    """What python-socketio does for a CONNECT with always_connect: register, then the handler."""
    sid = await live.server.manager.connect(eio_sid, namespace)
    ok = await live._connect(namespace, sid, {"QUERY_STRING": query})
    return sid, ok


def test_the_session_id_comes_from_the_handshake_query() -> None:
    assert session_of({"QUERY_STRING": "sessionId=abc&EIO=4&transport=polling&t=x"}) == "abc"
    assert session_of({"QUERY_STRING": "EIO=4"}) is None
    assert session_of({}) is None


def test_the_server_serves_every_namespace_over_both_transports() -> None:
    live, _, _ = make()
    assert NAMESPACES == ("/", "/ux4iot", "/ux4iot/")
    assert live.server.always_connect is True
    assert live.server.eio.transports == ["polling", "websocket"]


async def test_a_known_session_joins_its_room_and_counts_as_attached() -> None:
    live, store, rec = make()
    session = await store.create(T0)
    sid, ok = await open_socket(live, "e1", "/ux4iot", f"sessionId={session.id}&EIO=4")
    assert ok and rec.disconnects == []
    assert session.id in live.server.rooms(sid, namespace="/ux4iot")
    assert (await store.get(session.id, T0)).sockets == 1  # type: ignore[union-attr]
    assert rec.attached == [(session.id, "/ux4iot")]
    await live._disconnect("/ux4iot", sid)
    assert (await store.get(session.id, T0)).sockets == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("query", ["sessionId=unknown&EIO=4", "EIO=4", "sessionId=&EIO=4"])
async def test_an_unknown_session_is_acknowledged_then_disconnected_by_the_server(
    query: str,
) -> None:
    live, store, rec = make()
    sid, ok = await open_socket(live, "e1", "/", query)
    # True, not False: python-socketio would add a payload to the DISCONNECT, which
    # socket.io-client rejects; the explicit disconnect sends a bare one.
    assert ok is True
    assert rec.disconnects == [(sid, "/")]
    assert rec.attached == []
    assert len(store.table) == 0


def decode(text: str) -> tuple[str, list[Any]]:
    """`4` (engine.io message) `2` (socket.io event) `/nsp,` then the JSON arguments."""
    assert text[:2] == "42", text
    rest = text[2:]
    namespace = "/"
    if rest.startswith("/"):
        namespace, _, rest = rest.partition(",")
    return namespace, json.loads(rest)


async def test_publish_queues_one_data_event_per_watching_socket() -> None:
    live, store, rec = make()
    a, b, idle = [(await store.create(T0)).id for _ in range(3)]
    for sid in (a, b, idle):
        await store.grant(sid, "acct", Grant("d", GrantType.CONNECTION_STATE), T0)
    for sid in (a, b):
        await store.subscribe(sid, Subscription("d", SubscriptionType.CONNECTION_STATE), T0)
    await open_socket(live, "ea", "/", f"sessionId={a}")
    await open_socket(live, "eb", "/ux4iot", f"sessionId={b}")
    await open_socket(live, "ei", "/", f"sessionId={idle}")  # connected, not subscribed
    assert await live.publish(ConnectionChanged("acct", "d", T0, True)) == 1
    payload = {"deviceId": "d", "timestamp": "2023-11-14T22:13:20.000Z", "connectionState": True}
    assert sorted((eio, decode(text)) for eio, text in rec.sent) == [
        ("ea", ("/", ["data", payload])),
        ("eb", ("/ux4iot", ["data", payload])),
    ]


async def test_nothing_is_sent_when_nobody_watches() -> None:
    live, store, rec = make()
    other = (await store.create(T0)).id
    await open_socket(live, "e1", "/", f"sessionId={other}")
    assert await live.publish(MessageArrived("acct", "d", T0, {"t": 1})) == 0
    # An empty recipient list must not turn into "everyone in the namespace".
    assert await live.send_to([], {"deviceId": "d"}) == 0
    assert await live.send_to(["no-such-session"], {"deviceId": "d"}) == 0
    assert rec.sent == []


async def test_closing_a_session_disconnects_its_sockets_only() -> None:
    live, store, rec = make()
    a, b = (await store.create(T0)).id, (await store.create(T0)).id
    sa1, _ = await open_socket(live, "e1", "/", f"sessionId={a}")
    sa2, _ = await open_socket(live, "e2", "/ux4iot", f"sessionId={a}")
    await open_socket(live, "e3", "/", f"sessionId={b}")
    assert await live.close_session(a) == 2
    assert sorted(rec.disconnects) == sorted([(sa1, "/"), (sa2, "/ux4iot")])


async def test_close_all_does_not_wait_for_a_long_poll_that_never_comes_back() -> None:
    """A polling client that went away leaves its Engine.IO queue undrained: closing must not
    wait for it (engineio's own disconnect() does, which hung the server's shutdown)."""
    from engineio.async_socket import AsyncSocket

    live, _, _ = make()
    eio = live.server.eio
    gone = AsyncSocket(eio, "e-gone")
    gone.connected = True
    eio.sockets["e-gone"] = gone
    async with asyncio.timeout(5):
        await live.close_all()
    assert gone.closed
    assert eio.sockets == {}
    assert gone.queue.qsize() == 1  # the CLOSE packet, for a reader that may still come
