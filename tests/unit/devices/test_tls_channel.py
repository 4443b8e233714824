"""TlsChannel: a device socket driven by the loop's reader/writer callbacks.

Real sockets and real TLS (a blocking client in a thread): the proxy first line taken exactly
(even split across writes), TLS 1.2 and 1.3, bytes both ways, decrypted bytes OpenSSL holds
while reading is paused delivered on resume, the peer's EOF noticed while paused, and the
handshake timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest

from thinghub.devices.tls_channel import READ_BATCH_BYTES, TlsChannel, enable_read_ahead
from thinghub.security.ca import CertificateAuthority


class _Handler:
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[BaseException | None] = []
        self.arrived = asyncio.Event()

    def data_received(self, data: memoryview) -> None:
        self.data += data
        self.arrived.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        self.arrived.set()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(
        tmp_path_factory.mktemp("ca"), hostnames=["localhost"]
    )


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(10)
    yield server, client
    server.close()
    client.close()


def _client_context(ca: CertificateAuthority, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.ca_pem)
    context.check_hostname = False
    context.minimum_version = context.maximum_version = version
    return context


class _Channel:
    """A channel whose handler is recorded; failures too."""

    def __init__(
        self,
        sock: socket.socket,
        ca: CertificateAuthority,
        timeout_s: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = _Handler()
        self.failed: list[str] = []
        self.version: str | None = None
        self.ready = asyncio.Event()
        self.channel = TlsChannel(
            asyncio.get_running_loop(),
            sock,
            ca.server_ssl_context() if context is None else context,
            "test",
            handshake_timeout_s=timeout_s,
            on_ready=self._ready,
            on_failed=self._failed,
        )

    def _ready(self, channel: TlsChannel) -> _Handler:
        self.version = channel.tls_version()
        self.ready.set()
        return self.handler

    def _failed(self, channel: TlsChannel, why: str) -> None:
        self.failed.append(why)
        self.ready.set()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_proxy_line_then_tls_both_ways(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket], version: ssl.TLSVersion
) -> None:
    server, client = pair
    side = _Channel(server, ca, timeout_s=10)

    def device() -> tuple[bytes, bytes, str | None]:
        client.sendall(b"CONNECT hub:8883 HTTP/1.1\r\nHost: hub:8883\r\n")
        client.sendall(b"\r\n")  # the blank line in a write of its own
        answer = b""
        while not answer.endswith(b"\r\n\r\n"):
            answer += client.recv(1)
        with _client_context(ca, version).wrap_socket(client, server_hostname="localhost") as tls:
            tls.sendall(b"hello")
            echoed = tls.recv(100)
            return answer, echoed, tls.version()

    task = asyncio.ensure_future(asyncio.to_thread(device))
    await asyncio.wait_for(side.ready.wait(), 10)
    assert side.failed == []
    while len(side.handler.data) < 5:
        side.handler.arrived.clear()
        await asyncio.wait_for(side.handler.arrived.wait(), 10)
    side.channel.write(bytes(side.handler.data))
    answer, echoed, negotiated = await asyncio.wait_for(task, 10)
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert echoed == b"hello"
    assert negotiated == ("TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    assert side.version == negotiated
    side.channel.close()


async def test_a_bad_proxy_line_is_answered_400_and_closed(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    side = _Channel(server, ca, timeout_s=10)
    client.sendall(b"CONNECTX hub:8883 FTP/1\r\n\r\n")
    await asyncio.wait_for(side.ready.wait(), 10)
    assert side.failed and "bad proxy request line" in side.failed[0]
    assert await asyncio.to_thread(client.recv, 100) == b"HTTP/1.1 400 Bad Request\r\n\r\n"


async def test_a_client_that_never_completes_tls_is_closed_after_the_timeout(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    side = _Channel(server, ca, timeout_s=0.3)
    client.sendall(b"\x16\x03\x01")  # the start of a ClientHello, never finished
    await asyncio.wait_for(side.ready.wait(), 10)
    assert side.failed == ["no TLS within the handshake timeout"]
    assert await asyncio.to_thread(client.recv, 100) == b""  # closed


async def test_paused_reading_keeps_bytes_for_resume_and_notices_the_eof(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    side = _Channel(server, ca, timeout_s=10)
    context = _client_context(ca, ssl.TLSVersion.TLSv1_3)
    tls = await asyncio.to_thread(context.wrap_socket, client, server_hostname="localhost")
    await asyncio.wait_for(side.ready.wait(), 10)
    side.channel.pause_reading()
    await asyncio.to_thread(tls.sendall, b"x" * 100_000)  # more than one read batch
    assert len(side.handler.data) == 0  # paused: nothing was read
    side.channel.resume_reading()  # now it all arrives, in order
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(side.handler.data) < 100_000 and loop.time() < deadline:
        side.handler.arrived.clear()
        await asyncio.wait_for(side.handler.arrived.wait(), 10)
    assert bytes(side.handler.data) == b"x" * 100_000
    side.channel.pause_reading()
    tls.close()  # the peer goes while we are not reading
    while not side.handler.lost and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert side.handler.lost == [None]


class _PausingHandler(_Handler):
    """Pauses its channel after the first bytes it gets."""

    channel: TlsChannel | None = None

    def data_received(self, data: memoryview) -> None:
        super().data_received(data)
        if self.channel is not None:
            self.channel.pause_reading()
            self.channel = None


async def test_records_read_ahead_are_delivered_after_a_pause(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    """With read-ahead one read takes every record the socket holds: records then wait
    inside OpenSSL, where the socket does not signal them. A pause after the first delivery
    (at most READ_BATCH_BYTES) must not strand the others: resuming reads them without a
    signal."""
    context = ca.server_ssl_context()
    assert enable_read_ahead(context) is True  # CPython with its own _ssl: available
    assert enable_read_ahead(context) is True  # and asking twice is harmless
    server, client = pair
    side = _Channel(server, ca, timeout_s=10, context=context)
    pausing = _PausingHandler()
    side.handler = pausing
    client_context = _client_context(ca, ssl.TLSVersion.TLSv1_3)
    tls = await asyncio.to_thread(client_context.wrap_socket, client, server_hostname="localhost")
    await asyncio.wait_for(side.ready.wait(), 10)
    pausing.channel = side.channel

    records = [b"%04d" % n * 500 for n in range(60)]  # 2,000 bytes each, 120,000 in all
    expected = b"".join(records)
    assert len(expected) > READ_BATCH_BYTES

    def send() -> None:
        for record in records:  # one record per write
            tls.sendall(record)

    sending = asyncio.create_task(asyncio.to_thread(send))
    await asyncio.wait_for(pausing.arrived.wait(), 10)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.2  # a moment for anything (wrongly) read while paused
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert 0 < len(pausing.data) <= READ_BATCH_BYTES  # paused after the first delivery
    side.channel.resume_reading()
    deadline = loop.time() + 10
    while len(pausing.data) < len(expected) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await sending
    assert bytes(pausing.data) == expected
    tls.close()
    side.channel.close()


class _CountingHandler(_Handler):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def data_received(self, data: memoryview) -> None:
        self.calls += 1
        super().data_received(data)


async def _read_ahead_pair(
    ca: CertificateAuthority,
    pair: tuple[socket.socket, socket.socket],
    handler: _Handler,
) -> tuple[_Channel, ssl.SSLSocket]:
    """A channel with read-ahead on, its handler `handler`, and a TLS 1.3 client of it."""
    context = ca.server_ssl_context()
    enable_read_ahead(context)
    server, client = pair
    side = _Channel(server, ca, timeout_s=10, context=context)
    side.handler = handler
    client_context = _client_context(ca, ssl.TLSVersion.TLSv1_3)
    tls = await asyncio.to_thread(client_context.wrap_socket, client, server_hostname="localhost")
    await asyncio.wait_for(side.ready.wait(), 10)
    return side, tls


async def test_the_records_of_one_read_reach_the_handler_together(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Records waiting together (a device's PUBLISHes, a record each) are one call of the
    handler, not one each, in order."""
    counting = _CountingHandler()
    side, tls = await _read_ahead_pair(ca, pair, counting)
    for n in range(50):  # in the socket before the loop reads (small: taken at once)
        tls.sendall(b"%04d" % n)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(counting.data) < 200 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(counting.data) == b"".join(b"%04d" % n for n in range(50))
    assert counting.calls == 1
    tls.close()
    side.channel.close()


async def test_records_before_the_peer_closes_arrive_before_the_loss(
    ca: CertificateAuthority, pair: tuple[socket.socket, socket.socket]
) -> None:
    """The peer's last records and its close in one read: the records reach the handler
    first, whole, then the loss (a device's last PUBLISHes before it hangs up are kept)."""
    counting = _CountingHandler()
    side, tls = await _read_ahead_pair(ca, pair, counting)
    side.channel.pause_reading()  # so records and close wait together in the socket
    for n in range(20):
        tls.sendall(b"%04d" % n)
    tls.shutdown(socket.SHUT_WR)  # no close_notify: a plain TCP close (a crashed device)
    side.channel.resume_reading()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not counting.lost and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert bytes(counting.data) == b"".join(b"%04d" % n for n in range(20))
    assert counting.lost == [None]
    tls.close()
