"""The device listener's Connection: a closed connection vs our own misuse of the session.

Publishing on a connection that is gone is a normal condition (ConnectionClosed, which the
hub reports as DeviceOffline); a bad topic, or a publish before the CONNACK, is a bug
(mqtt.LocalProtocolError) and must never look like an offline device.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from thinghub.devices.mqtt_server import Connection, ConnectionClosed, ListenerLimits
from thinghub.mqtt import (
    Connack,
    Connect,
    ConnectRequested,
    Disconnect,
    LocalProtocolError,
    Puback,
    PubackReceived,
    Publish,
    decode,
    encode,
)
from thinghub.mqtt.packets import Packet

LIMITS = ListenerLimits(
    max_connections=10,
    max_handshakes=10,
    handshake_timeout_s=5.0,
    connect_timeout_s=5.0,
    max_inflight=10,
    messages_per_s=100.0,
    bytes_per_s=1e6,
)


class _Sink:
    """A channel that keeps what is written (no socket)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.is_closed = False
        self.is_paused = False
        self.socket: Any = None

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.is_closed

    def close(self) -> None:
        self.is_closed = True

    def pause_reading(self) -> None:
        self.is_paused = True

    def resume_reading(self) -> None:
        self.is_paused = False


class _NeverFull:
    is_full = False

    async def wait_for_room(self) -> None:
        return None


class _NoDialects:
    def dialect_for(self, connect: Connect, peer_cert: bytes | None = None) -> Any:
        raise AssertionError("no CONNECT is routed in these tests")


_OPEN: list[Connection] = []


@pytest.fixture(autouse=True)
async def _close_connections() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _connection() -> tuple[Connection, _Sink]:
    sink = _Sink()
    conn = Connection(sink, _NoDialects(), "127.0.0.1:1", None, limits=LIMITS, gate=_NeverFull())
    _OPEN.append(conn)
    return conn, sink


def _accepted() -> tuple[Connection, _Sink]:
    conn, sink = _connection()
    conn.session.receive_data(encode(Connect("dev-1", "hub/dev-1/?api-version=1", b"sas")), 0.0)
    assert isinstance(conn.session.next_event(), ConnectRequested)
    conn.session.accept()
    conn.flush()
    return conn, sink


def _packets(data: bytes | bytearray) -> list[Packet]:
    out: list[Packet] = []
    view = bytes(data)
    while view:
        result = decode(view)
        assert result is not None
        out.append(result[0])
        view = view[result[1] :]
    return out


async def test_publish_on_an_open_connection_is_written() -> None:
    conn, sink = _accepted()
    conn.publish("devices/dev-1/messages/devicebound/", b"hi", 1)
    assert _packets(sink.data) == [
        Connack(False, 0),
        Publish("devices/dev-1/messages/devicebound/", b"hi", 1, packet_id=1),
    ]


async def test_a_closed_connection_raises_connection_closed() -> None:
    conn, sink = _accepted()
    conn.close()
    with pytest.raises(ConnectionClosed):
        conn.publish("devices/dev-1/messages/devicebound/", b"late", 1)
    assert _packets(sink.data) == [Connack(False, 0)]


async def test_a_session_the_peer_closed_raises_connection_closed() -> None:
    """The device's DISCONNECT was read (the session is CLOSED) and the read loop has not
    ended yet: still the normal condition, not a misuse."""
    conn, _ = _accepted()
    conn.session.receive_data(encode(Disconnect()), 1.0)
    conn.session.next_event()
    assert not conn.is_closed
    with pytest.raises(ConnectionClosed):
        conn.publish("devices/dev-1/messages/devicebound/", b"late", 1)
    assert issubclass(ConnectionClosed, ConnectionError)  # what the read loop logs quietly


async def test_misuse_is_a_local_protocol_error_not_a_closed_connection() -> None:
    conn, _ = _connection()
    with pytest.raises(LocalProtocolError, match="AWAIT_CONNECT") as before_connack:
        conn.publish("devices/dev-1/messages/devicebound/", b"early", 1)
    assert not isinstance(before_connack.value, ConnectionError)
    conn, _ = _accepted()
    with pytest.raises(LocalProtocolError, match="topic") as bad_topic:
        conn.publish("devices/+/messages/devicebound/", b"x", 1)
    assert not isinstance(bad_topic.value, ConnectionError)


class _SocketOptions:
    """What the connection sets on its socket (the transport's `socket` extra)."""

    def __init__(self) -> None:
        self.set: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.set.append((level, option, value))


class _AcceptsPubacks:
    def __init__(self) -> None:
        self.pubacked: list[Publish] = []

    async def on_puback(self, conn: Connection, publish: Publish) -> None:
        self.pubacked.append(publish)


async def test_a_device_puback_is_tcp_acknowledged_at_once() -> None:
    """A device with Nagle's algorithm on (the Azure SDK) holds the method response it writes
    right after the request's PUBACK until that PUBACK is TCP-acknowledged: the listener
    must not leave the ACK to the ~40 ms delayed-ACK timer."""
    conn, sink = _accepted()
    options = _SocketOptions()
    sink.socket = options
    dialect = _AcceptsPubacks()
    conn.dialect = dialect  # type: ignore[assignment]
    conn.publish("$iothub/methods/POST/ping/?$rid=1", b"{}", 1)
    assert options.set == []  # sending sets nothing
    conn.session.receive_data(encode(Puback(1)), 1.0)
    event = conn.session.next_event()
    assert isinstance(event, PubackReceived)
    assert await conn._dispatch(event)
    assert dialect.pubacked == [Publish("$iothub/methods/POST/ping/?$rid=1", b"{}", 1, packet_id=1)]
    assert options.set == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)]


class _Telemetry:
    """A dialect whose telemetry work is a future per PUBLISH, resolved by the test."""

    def __init__(self) -> None:
        self.work: list[asyncio.Future[Any]] = []

    def publish_now(self, conn: Connection, publish: Publish) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.work.append(future)
        return future

    async def on_close(self, conn: Connection) -> None:
        return None


async def _settle(conn: Connection) -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def _publishes(*packet_ids: int) -> memoryview:
    topic = "devices/dev-1/messages/events/"
    return memoryview(b"".join(encode(Publish(topic, b"{}", 1, packet_id=i)) for i in packet_ids))


async def test_pubacks_wait_for_their_work_and_go_in_order_in_one_write() -> None:
    conn, sink = _accepted()
    dialect = _Telemetry()
    conn.dialect = dialect  # type: ignore[assignment]
    conn.data_received(_publishes(1, 2, 3, 4))
    await _settle(conn)
    assert len(dialect.work) == 4
    sent = len(sink.data)
    dialect.work[1].set_result(None)  # done before the head: nothing may be acknowledged
    dialect.work[3].set_result(None)
    await _settle(conn)
    assert len(sink.data) == sent
    dialect.work[0].set_result(None)  # the head: it and 2 go, 3 still waits
    await _settle(conn)
    assert _packets(sink.data[sent:]) == [Puback(1), Puback(2)]
    sent = len(sink.data)
    writes: list[bytes] = []
    sink.write = writes.append  # type: ignore[method-assign,assignment]
    dialect.work[2].set_result(None)
    await _settle(conn)
    assert [_packets(w) for w in writes] == [[Puback(3), Puback(4)]]  # one write for both


async def test_work_that_failed_closes_the_connection_unacknowledged() -> None:
    conn, sink = _accepted()
    dialect = _Telemetry()
    conn.dialect = dialect  # type: ignore[assignment]
    conn.data_received(_publishes(1, 2, 3))
    await _settle(conn)
    sent = len(sink.data)
    dialect.work[0].set_result(None)
    dialect.work[1].set_exception(OSError("disk full"))
    dialect.work[2].set_result(None)
    await _settle(conn)
    assert _packets(sink.data[sent:]) == [Puback(1)]  # stored; 2 failed, 3 after it waits
    assert conn.is_closed and sink.is_closed
