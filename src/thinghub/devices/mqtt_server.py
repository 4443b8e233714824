"""The device listener: MQTT 3.1.1 over TLS, optionally behind an HTTP CONNECT first line.

Theory of operation: the accept loop hands each socket to `_handle`, which peeks at the first
bytes without consuming them. `CONNECT host:port HTTP/1.1` (what PySocks sends for
MQTT_PROXY, specs/azure-device-protocol.md §1.2) is read up to its blank line and answered
`200` in one write; then TLS starts on the same socket. Anything else goes straight to TLS.
The TLS connection is driven by a `Connection`: bytes go into the sans-IO ServerSession, its
events go to a dialect (the IoT Hub device dialect or DPS, told apart by the CONNECT
username), and every byte the session wants sent is flushed after each round.

QoS 1 from the device is acknowledged in order and only after its work is durable: the
dialect returns an awaitable per PUBLISH, and the ack pump awaits them first-in first-out
before each PUBACK. Telemetry work runs concurrently (so one device's messages share group
commits); twin, method and DPS requests are handled in order on the read loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from thinghub.domain.errors import DeviceOffline
from thinghub.mqtt import (
    ConnectRequested,
    DisconnectRequested,
    PingReceived,
    ProtocolViolation,
    PubackReceived,
    Publish,
    PublishReceived,
    ServerSession,
    SubscribeRequested,
    UnsubscribeRequested,
)
from thinghub.mqtt.packets import Connect

__all__ = ["Connection", "Dialect", "DialectRouter", "MqttServer"]

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 30.0  # TCP accept to CONNECT packet
PROXY_HEADER_MAX_BYTES = 8192
READ_CHUNK_BYTES = 65_536
IDLE_NO_KEEPALIVE_S = 3600.0  # keep-alive 0 disables the timer; still bound idle sockets
CLOSE_DRAIN_S = 10.0  # how long a closing connection waits for its messages to be stored


class DropConnection(Exception):
    """A dialect decided the client broke a rule: log it, close only this connection."""


class Dialect(Protocol):
    """What speaks on an authenticated connection (the hub or DPS)."""

    async def on_connect(self, conn: Connection, connect: Connect) -> int:
        """Authenticate; return 0 to accept (setting conn.session_present) or a CONNACK
        refusal code (1..5)."""

    async def on_accepted(self, conn: Connection) -> None: ...

    async def on_publish(self, conn: Connection, publish: Publish) -> Awaitable[Any] | None:
        """Handle a PUBLISH in order; work it returns runs concurrently, before the PUBACK."""

    async def on_subscribe(
        self, conn: Connection, filters: tuple[tuple[str, int], ...]
    ) -> list[int]: ...

    async def on_unsubscribe(self, conn: Connection, filters: tuple[str, ...]) -> None: ...

    async def on_puback(self, conn: Connection, publish: Publish) -> None: ...

    async def on_close(self, conn: Connection) -> None: ...


class DialectRouter(Protocol):
    def dialect_for(self, connect: Connect) -> Dialect: ...


class Connection:
    """One device connection: drives the session, owns the ack pump, flushes bytes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        router: DialectRouter,
        peer: str,
        peer_cert: bytes | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.router = router
        self.peer = peer
        self.peer_cert = peer_cert
        self.session = ServerSession()
        self.client_id = ""
        self.dialect: Dialect | None = None
        self.state: Any = None  # the dialect's per-connection state
        self.session_present = False  # set by the dialect's on_connect
        # The will is published when the client's side ends the connection without
        # DISCONNECT (EOF, keep-alive expiry, protocol error: MQTT 3.1.1 §3.1.2.5); not after
        # DISCONNECT (§3.14.4) nor when we close it (takeover, shutdown, device disabled).
        self.will_discarded = False
        self._ended = False  # the read loop is over (whoever ended it)
        self.closed = asyncio.Event()
        self._acks: deque[tuple[int, asyncio.Future[Any] | None]] = deque()
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- bytes out -----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to the device now (from any task on the loop). Raises ConnectionError."""
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        try:
            self.session.publish(topic, payload, qos)
        except ValueError as exc:
            raise ConnectionError(str(exc)) from exc
        self.flush()

    def close(self) -> None:
        """Close from outside (takeover, device deleted or disabled)."""
        if not self._ended:  # the client broke it first: its Will still stands
            self.will_discarded = True
        self.session.close()
        self.closed.set()
        self.writer.close()

    # -- the read loop -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._read_loop()
        except DropConnection as exc:
            logger.warning("mqtt %s (%s): %s; closing", self.client_id or "-", self.peer, exc)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("mqtt %s (%s): %r", self.client_id or "-", self.peer, exc)
        except DeviceOffline:
            logger.info("mqtt %s (%s): closed while busy", self.client_id or "-", self.peer)
        except Exception:
            logger.exception("mqtt %s (%s): connection failed", self.client_id or "-", self.peer)
        finally:
            self._ended = True
            self.closed.set()
            pending = [*self._tasks, *(f for _, f in self._acks if f is not None)]
            if pending:  # let accepted work (telemetry of any QoS) finish storing
                await asyncio.wait(pending, timeout=CLOSE_DRAIN_S)
            self.session.close()
            self.writer.close()
            if self.dialect is not None:
                try:
                    await self.dialect.on_close(self)
                except Exception:
                    logger.exception("mqtt %s: closing failed", self.client_id)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while not self.closed.is_set():
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(READ_CHUNK_BYTES)
            except TimeoutError:
                logger.info("mqtt %s (%s): keep-alive expired", self.client_id or "-", self.peer)
                return
            if not data:
                return
            self.session.receive_data(data, time.monotonic())
            while (event := self.session.next_event()) is not None:
                if not await self._dispatch(event):
                    self.flush()
                    return
            self.flush()
            await self.writer.drain()
            keepalive = self.session.keepalive_deadline
            if self.dialect is None:
                continue  # still before CONNACK: the connect deadline stands
            if keepalive is None:
                deadline = loop.time() + IDLE_NO_KEEPALIVE_S
            else:
                deadline = loop.time() + (keepalive - time.monotonic())

    async def _dispatch(self, event: Any) -> bool:
        """Handle one session event; False ends the connection."""
        match event:
            case PublishReceived(publish=publish):
                assert self.dialect is not None
                work = await self.dialect.on_publish(self, publish)
                future = None if work is None else asyncio.ensure_future(work)
                if publish.qos and publish.packet_id is not None:
                    # The ack queue holds it (and closing waits for it): no tracking needed.
                    self._acks.append((publish.packet_id, future))
                    if future is None or future.done():
                        self._drain_acks()
                    else:
                        future.add_done_callback(self._drain_acks)
                elif future is not None:
                    self._track(future)
            case SubscribeRequested(subscribe=sub):
                assert self.dialect is not None
                codes = await self.dialect.on_subscribe(self, sub.filters)
                if self.closed.is_set():  # taken over while we awaited
                    return False
                self.session.suback(sub.packet_id, codes)
            case UnsubscribeRequested(unsubscribe=unsub):
                assert self.dialect is not None
                await self.dialect.on_unsubscribe(self, unsub.filters)
                if self.closed.is_set():
                    return False
                self.session.unsuback(unsub.packet_id)
            case PubackReceived(publish=publish):
                assert self.dialect is not None
                await self.dialect.on_puback(self, publish)
            case PingReceived():
                pass
            case ConnectRequested(connect=connect):
                return await self._connect(connect)
            case DisconnectRequested():
                self.will_discarded = True
                return False
            case ProtocolViolation(error=error):
                logger.warning(
                    "mqtt %s (%s): protocol violation: %s", self.client_id or "-", self.peer, error
                )
                return False
        return True

    async def _connect(self, connect: Connect) -> bool:
        self.client_id = connect.client_id
        dialect = self.router.dialect_for(connect)
        code = await dialect.on_connect(self, connect)
        if self.closed.is_set():
            return False
        if code:
            logger.info("mqtt %s (%s): refused with CONNACK %d", connect.client_id, self.peer, code)
            self.session.reject(code)
            return False
        self.session.accept(session_present=self.session_present)
        self.flush()  # the CONNACK goes now, not after on_accepted's bookkeeping
        self.dialect = dialect
        await dialect.on_accepted(self)
        return True

    def _track(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
        return future

    def _drain_acks(self, _: object = None) -> None:
        """PUBACK in arrival order (§4.6), each once its work is done; one write for all.

        Runs when a message's work completes; the head of the queue decides. Work that failed
        is not durable, so it is not acknowledged: the connection closes and the device
        resends.
        """
        sent = False
        while self._acks:
            packet_id, future = self._acks[0]
            if future is not None:
                if not future.done():
                    break
                error = None if future.cancelled() else future.exception()
                if future.cancelled() or error is not None:
                    if isinstance(error, DropConnection):
                        logger.warning("mqtt %s: %s; closing", self.client_id, error)
                    elif not self.closed.is_set():
                        logger.error(
                            "mqtt %s: message not stored (%r); closing unacknowledged",
                            self.client_id,
                            error,
                        )
                    self._acks.clear()
                    self.close()
                    return
            self._acks.popleft()
            if self.closed.is_set():
                self._acks.clear()
                return
            self.session.puback(packet_id)
            sent = True
        if sent:
            self.flush()


class MqttServer:
    """Listens on one port; proxy CONNECT + TLS + MQTT; routes by CONNECT username."""

    def __init__(
        self, router: DialectRouter, ssl_context: ssl.SSLContext, host: str, port: int
    ) -> None:
        self.router = router
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._accepting: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(4096)
        sock.setblocking(False)
        self._sock = sock
        self._accepting = asyncio.create_task(self._accept_loop(), name="mqtt.accept")
        host, port = sock.getsockname()[:2]
        logger.info("MQTT/TLS listening on %s:%d", host, port)
        return host, port

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._sock is not None:
            self._sock.close()
        for conn in list(self._connections):
            conn.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=10)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            try:
                client, address = await loop.sock_accept(self._sock)
            except OSError as exc:
                logger.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._handle(client, address), name=f"mqtt[{address}]")
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, client: socket.socket, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                if await _peek(loop, client, 8) == b"CONNECT ":
                    await _answer_proxy(loop, client)
                reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES * 4)
                protocol = asyncio.StreamReaderProtocol(reader)
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    client,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
                )
        except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
            logger.info("device connection from %s failed before MQTT: %s", peer, exc)
            client.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        conn = Connection(reader, writer, self.router, peer, cert)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """The first bytes of a socket, left in place for whoever reads next."""
    while True:
        try:
            data = sock.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data is not None and (
            len(data) >= size or data == b"" or b"CONNECT "[: len(data)] != data
        ):
            return data
        ready: asyncio.Future[None] = loop.create_future()
        # The reader may fire again before we remove it: settle the future only once.
        loop.add_reader(sock.fileno(), _settle_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())
        if data is not None and len(data) < size:
            await asyncio.sleep(0.005)  # a partial first line: let the rest arrive


def _settle_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _answer_proxy(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Consume `CONNECT host:port HTTP/1.1 ...\\r\\n\\r\\n` exactly; answer 200 in one write."""
    while True:  # peek until the blank line is in, then take exactly the header
        peeked = await _peek(loop, sock, PROXY_HEADER_MAX_BYTES)
        end = peeked.find(b"\r\n\r\n")
        if end >= 0:
            break
        if not peeked:
            raise ConnectionError("closed during proxy CONNECT")
        if len(peeked) >= PROXY_HEADER_MAX_BYTES:
            raise ValueError("proxy CONNECT header too long")
        await asyncio.sleep(0.005)  # the client sends nothing more until it has our answer
    buffered = b""
    while len(buffered) < end + 4:
        chunk = await loop.sock_recv(sock, end + 4 - len(buffered))
        if not chunk:
            raise ConnectionError("closed during proxy CONNECT")
        buffered += chunk
    request_line = buffered.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        await loop.sock_sendall(sock, b"HTTP/1.1 400 Bad Request\r\n\r\n")
        raise ValueError(f"bad proxy request line {request_line!r}")
    await loop.sock_sendall(sock, b"HTTP/1.1 200 Connection established\r\n\r\n")
