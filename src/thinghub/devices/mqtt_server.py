"""The device listener: MQTT 3.1.1 over TLS, optionally behind an HTTP CONNECT first line.

Theory of operation: the accept loop hands each socket to `_handle`, which looks at its first
byte without consuming it. A `C` starts `CONNECT host:port HTTP/1.1` (what PySocks sends for
MQTT_PROXY; the SDK always dials port 8883): the header is taken up to its blank line and
answered `200` in one write; then TLS starts on the same socket. Anything else (a TLS record
starts with 0x16) goes straight to TLS. Waiting for the proxy header is event-driven: what is
peeked at is consumed before waiting again, so a readable socket always means new bytes. The
TLS connection is driven by a `Connection`: bytes go into the sans-IO ServerSession, its events
go to a dialect (the IoT Hub device dialect or DPS, told apart by the CONNECT username; Ioto,
by a client certificate without a username), and
every byte the session wants sent is flushed after each round.

QoS 1 from the device is acknowledged in order and only after its work is durable: the
dialect returns an awaitable per PUBLISH, and the ack pump awaits them first-in first-out
before each PUBACK. Telemetry work runs concurrently (so one device's messages share group
commits); twin, method and DPS requests are handled in order on the read loop.

Limits (ListenerLimits, docs/limits.md). The listener never grows memory to keep up with a
device; it stops reading from it instead, and the device's own TCP buffers hold the rest:
- at most `max_connections` open sockets (also kept under the open-file limit) and at most
  `max_handshakes` of them before their CONNECT; a socket over either is closed at once;
- the proxy line and TLS within `handshake_timeout_s`, the CONNECT `connect_timeout_s` after;
- before each PUBLISH is handled, `_admit` waits (1) for a slot in the connection's in-flight
  window (`max_inflight` messages received and not yet stored or acknowledged), (2) for the
  device's message and byte budgets (throttle.ThroughputLimiter: traffic shaping, as IoT Hub
  does it), and (3) for room in the ingest queue (the global memory bound, shared by every
  connection). Acknowledged messages are never dropped; what is waiting is simply not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from thinghub.devices.throttle import ThroughputLimiter
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
    ServerState,
    SubscribeRequested,
    UnsubscribeRequested,
)
from thinghub.mqtt.packets import Connect

__all__ = [
    "Connection",
    "ConnectionClosed",
    "Dialect",
    "DialectRouter",
    "IngestGate",
    "ListenerLimits",
    "MqttServer",
]

logger = logging.getLogger(__name__)

PROXY_HEADER_MAX_BYTES = 8192
READ_CHUNK_BYTES = 65_536
IDLE_NO_KEEPALIVE_S = 3600.0  # keep-alive 0 disables the timer; still bound idle sockets
CLOSE_DRAIN_S = 10.0  # how long a closing connection waits for its messages to be stored
#: A connection we close gets this long to take its last bytes (TLS close_notify); then it is
#: aborted, so a peer that stopped reading cannot keep its task (and shutdown) waiting.
CLOSE_ABORT_S = 2.0
#: Open files kept for everything but device sockets (HTTP, the database, logs): the
#: connection limit stays this far under the process's open-file limit (at most a quarter).
FD_RESERVE = 256
#: Linux's TCP_QUICKACK (None elsewhere): see Connection._ack_now.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: Refused sockets are logged at most once per this many seconds (with a count).
REFUSAL_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The device listener's limits; each is a setting (mqtt_*, see docs/limits.md)."""

    max_connections: int  # open sockets on the port
    max_handshakes: int  # sockets before their CONNECT (proxy line, TLS, CONNECT wait)
    handshake_timeout_s: float  # proxy line and TLS handshake
    connect_timeout_s: float  # TLS handshake done to CONNECT received
    max_inflight: int  # per connection: PUBLISHes received, not yet stored or acknowledged
    messages_per_s: float  # per connection, sustained (burst: throttle.THROTTLE_BURST_S)
    bytes_per_s: float  # topic + payload bytes, per connection, sustained


class IngestGate(Protocol):
    """The global bound on queued telemetry (IngestService): readers wait while it is full."""

    @property
    def is_full(self) -> bool: ...

    async def wait_for_room(self) -> None: ...


class ConnectionClosed(ConnectionError):
    """The connection is closed or closing, so nothing more can be sent on it.

    A normal condition (the device dropped, was taken over or disabled while something was on
    its way to it), which the dialects report as the device being offline. It is not raised
    for our own misuse of the session (a bad topic, publishing before the CONNACK): that is
    mqtt.LocalProtocolError, a bug, and never looks like an offline device.
    """


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
    def dialect_for(self, connect: Connect, peer_cert: bytes | None = None) -> Dialect:
        """The dialect that speaks on a connection, from its CONNECT and its verified client
        certificate (DER), if any."""


class Connection:
    """One device connection: drives the session, owns the ack pump, flushes bytes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        router: DialectRouter,
        peer: str,
        peer_cert: bytes | None,
        *,
        limits: ListenerLimits,
        gate: IngestGate,
        on_connect: Callable[[], None] | None = None,
        traffic: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.router = router
        self.peer = peer
        self.peer_cert = peer_cert
        self.session = ServerSession()
        # (dialect, what) -> count, shared by the server's connections (its metrics): PUBLISH
        # packets "in" and "out", and each CONNACK code ("connack 0", "connack 5").
        self.traffic: Counter[tuple[str, str]] = Counter() if traffic is None else traffic
        self.dialect_name = ""  # "hub", "dps": the dialect's class name, once it is chosen
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
        self.limits = limits
        self._gate = gate
        self._on_connect = on_connect  # the server's handshake count: CONNECT has arrived
        self._loop = asyncio.get_running_loop()
        self._throughput = ThroughputLimiter(
            limits.messages_per_s, limits.bytes_per_s, self._loop.time()
        )
        self._window = asyncio.Event()  # set whenever in-flight work finished (or closing)
        self._interrupt = asyncio.Event()  # stop waiting in _admit: closing, or the peer left
        self.is_peer_gone = False  # the socket is closed (by the peer, or after our close)
        self._is_throttle_logged = False
        self._abort: asyncio.TimerHandle | None = None

    # -- bytes out -----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to the device now (from any task on the loop).

        Raises:
            ConnectionClosed: The connection is closed or closing.
            LocalProtocolError: A topic or QoS the session cannot send, or a publish before
                the CONNACK: the caller's bug, let through as such.
        """
        if self.closed.is_set() or self.session.state is ServerState.CLOSED:
            # CLOSED without `closed` set: the peer's DISCONNECT or violation was just read
            # and the read loop is on its way out.
            raise ConnectionClosed(f"the connection of {self.client_id or self.peer} is closed")
        self.session.publish(topic, payload, qos)
        self.traffic[self.dialect_name, "out"] += 1
        self.flush()

    def close(self) -> None:
        """Close from outside (takeover, device deleted or disabled, shutdown)."""
        if not (self._ended or self.is_peer_gone):  # the client broke it first: its Will
            self.will_discarded = True  # still stands (even if our read loop lags behind)
        self.session.close()
        self.closed.set()
        self._wake()
        self._close_transport()

    def peer_gone(self) -> None:
        """The socket is closed: what is buffered needs no backpressure any more."""
        self.is_peer_gone = True
        self._wake()

    def _wake(self) -> None:
        self._interrupt.set()
        self._window.set()

    def _close_transport(self) -> None:
        """Close the socket; abort it if the peer has not taken our last bytes in time."""
        self.writer.close()
        if self._abort is None:
            transport = self.writer.transport
            self._abort = asyncio.get_running_loop().call_later(CLOSE_ABORT_S, transport.abort)

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
            try:
                if pending:  # let accepted work (telemetry of any QoS) finish storing
                    await asyncio.wait(pending, timeout=CLOSE_DRAIN_S)
            finally:  # even when cancelled: the bookkeeping below must run
                self.session.close()
                self._close_transport()
                if self.dialect is not None:
                    try:
                        await self.dialect.on_close(self)
                    except Exception:
                        logger.exception("mqtt %s: closing failed", self.client_id)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.connect_timeout_s
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
                if (
                    isinstance(event, PublishReceived)
                    and not self._admit_now(event.publish)
                    and not await self._admit(event.publish)
                ):
                    return  # closed while it waited
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

    def _admit_now(self, publish: Publish) -> bool:
        """_admit's common case without a coroutine: open, room in the window, under the
        device's rate, the ingest queue not full. False: let _admit decide (and wait)."""
        if (
            self.closed.is_set()
            or len(self._acks) + len(self._tasks) >= self.limits.max_inflight
            or self._gate.is_full
        ):
            return False
        now = self._loop.time()
        if self._throughput.delay_s(now) > 0:
            return False
        self._throughput.take(len(publish.payload) + len(publish.topic), now)
        return True

    async def _admit(self, publish: Publish) -> bool:
        """Wait until `publish` may be handled; False if the connection closed meanwhile.

        While this waits the socket is not read: the device's further packets stay in its
        own buffers, and our memory does not grow with its rate.
        """
        loop = asyncio.get_running_loop()
        while len(self._acks) + len(self._tasks) >= self.limits.max_inflight:
            if self.closed.is_set() or self.is_peer_gone:
                break
            self._window.clear()  # set again when a message's work ends (or on close)
            await self._window.wait()
        delay = self._throughput.delay_s(loop.time())
        if delay > 0 and not self.is_peer_gone:  # over its rate: wait the debt off (IoT
            self._log_throttled(loop.time())  # Hub's "traffic shaping")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._interrupt.wait()
        self._throughput.take(len(publish.payload) + len(publish.topic), loop.time())
        if self._gate.is_full and not self.is_peer_gone:  # all readers wait while it is full
            room = asyncio.ensure_future(self._gate.wait_for_room())
            interrupted = asyncio.ensure_future(self._interrupt.wait())
            try:
                await asyncio.wait((room, interrupted), return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
                interrupted.cancel()
        # A peer that left sent all it will send: the rest of its buffer (bounded) is handled
        # at once, so a DISCONNECT in it is seen and the connection ends as it would have.
        return not self.closed.is_set()

    def _log_throttled(self, now: float) -> None:
        over = self._throughput.over(now)
        if over is None or self._is_throttle_logged:
            return
        self._is_throttle_logged = True  # once per connection: a flood would flood the log
        logger.warning(
            "mqtt %s (%s): over %d %s/s; reading it at that rate",
            self.client_id or "-",
            self.peer,
            round(over.per_s),
            over.limit,
        )

    async def _dispatch(self, event: Any) -> bool:
        """Handle one session event; False ends the connection."""
        match event:
            case PublishReceived(publish=publish):
                assert self.dialect is not None
                self.traffic[self.dialect_name, "in"] += 1
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
                self._ack_now()
                await self.dialect.on_puback(self, publish)
            case PingReceived():
                pass
            case ConnectRequested(connect=connect):
                if self._on_connect is not None:
                    self._on_connect()
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
        dialect = self.router.dialect_for(connect, self.peer_cert)
        self.dialect_name = type(dialect).__name__.lower()
        code = await dialect.on_connect(self, connect)
        if self.closed.is_set():
            return False
        self.traffic[self.dialect_name, f"connack {code}"] += 1
        if code:
            logger.info("mqtt %s (%s): refused with CONNACK %d", connect.client_id, self.peer, code)
            self.session.reject(code)
            return False
        self.session.accept(session_present=self.session_present)
        self.flush()  # the CONNACK goes now, not after on_accepted's bookkeeping
        self.dialect = dialect
        await dialect.on_accepted(self)
        return True

    def _ack_now(self) -> None:
        """TCP-acknowledge what the device sent at once, not after the delayed-ACK timer.

        A device with Nagle's algorithm on (paho, so the Azure SDK) holds its next small
        write until its last one is acknowledged. A PUBACK is such a write that we answer
        with nothing, so Linux would delay its ACK by ~40 ms, and the device's next packet
        (typically the method response right after the request's PUBACK) waits that long.
        TCP_QUICKACK sends the pending ACK now (the kernel clears the flag again by itself).
        """
        sock = self.writer.get_extra_info("socket")
        if sock is not None and QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def _track(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._tasks.add(future)
        future.add_done_callback(self._untrack)
        return future

    def _untrack(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        self._window.set()

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
            self._window.set()


class MqttServer:
    """Listens on one port; proxy CONNECT + TLS + MQTT; routes by CONNECT username."""

    def __init__(
        self,
        router: DialectRouter,
        ssl_context: ssl.SSLContext,
        host: str,
        port: int,
        *,
        limits: ListenerLimits,
        gate: IngestGate,
    ) -> None:
        self.router = router
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.limits = limits
        self.gate = gate
        self.max_connections = limits.max_connections  # lowered to fit the open-file limit
        self._sock: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._accepting: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._handshaking: set[asyncio.Task[None]] = set()  # before TLS is up: cancel on close
        self._open = 0  # sockets accepted and not yet closed
        self.traffic: Counter[tuple[str, str]] = Counter()  # see Connection.traffic
        self._before_connect = 0  # of those, the ones whose CONNECT has not arrived
        self._refused = 0  # refused since the last log line
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Start accepting, on `sock` (a listening socket bound already: the server binds
        every port before it creates anything) or on a socket bound here to host and port."""
        if sock is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(4096)
        sock.setblocking(False)
        self._sock = sock
        self.max_connections = _connection_cap(self.limits.max_connections)
        self._accepting = asyncio.create_task(self._accept_loop(), name="mqtt.accept")
        host, port = sock.getsockname()[:2]
        logger.info(
            "MQTT/TLS listening on %s:%d (at most %d connections)",
            host,
            port,
            self.max_connections,
        )
        return host, port

    def connections_by_dialect(self) -> dict[str, int]:
        """Open connections by dialect ("hub", "dps"; "" before their CONNECT is handled),
        sockets still in their proxy line or TLS handshake under "handshake"."""
        counts: Counter[str] = Counter(conn.dialect_name for conn in self._connections)
        counts["handshake"] = self._open - len(self._connections)
        return dict(counts)

    async def close(self) -> None:
        """Stop accepting, close every connection and wait for each one's bookkeeping.

        Returns only once every connection's dialect on_close has run (or, past every
        deadline, its task was cancelled and awaited), so callers can stop the services after.
        """
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._sock is not None:
            self._sock.close()
        for task in self._handshaking:  # nothing to keep: no device behind them yet
            task.cancel()
        for conn in list(self._connections):
            conn.close()  # aborted after CLOSE_ABORT_S if the peer stopped reading
        if not self._handlers:
            return
        _, late = await asyncio.wait(self._handlers, timeout=CLOSE_DRAIN_S + CLOSE_ABORT_S + 1)
        if late:
            logger.warning("%d device connections did not close in time; cancelling", len(late))
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=CLOSE_ABORT_S)

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
            if self._open >= self.max_connections:
                self._refuse(client, f"{self._open} connections open (the limit)")
                continue
            if self._before_connect >= self.limits.max_handshakes:
                self._refuse(client, f"{self._before_connect} handshakes pending (the limit)")
                continue
            self._open += 1
            self._before_connect += 1
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._handle(client, address), name=f"mqtt[{address}]")
            self._handlers.add(task)
            self._handshaking.add(task)
            task.add_done_callback(self._handlers.discard)
            task.add_done_callback(self._handshaking.discard)

    def _refuse(self, client: socket.socket, why: str) -> None:
        """Close a new socket at once: no TLS, no task, no buffers."""
        client.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            logger.warning("MQTT: closed %d new connection(s) at once: %s", self._refused, why)
            self._refused = 0
            self._refusal_logged_at = now

    async def _handle(self, client: socket.socket, address: Any) -> None:
        peer = f"{address[0]}:{address[1]}"
        loop = asyncio.get_running_loop()
        before_connect = True

        def connect_arrived() -> None:
            nonlocal before_connect
            if before_connect:
                before_connect = False
                self._before_connect -= 1

        try:
            try:
                async with asyncio.timeout(self.limits.handshake_timeout_s):
                    if await _peek(loop, client, 1) == b"C":  # TLS starts with 0x16
                        await _answer_proxy(loop, client)
                    reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES * 4)
                    protocol = _StreamProtocol(reader)
                    transport, _ = await loop.connect_accepted_socket(
                        lambda: protocol,
                        client,
                        ssl=self.ssl_context,
                        ssl_handshake_timeout=self.limits.handshake_timeout_s,
                    )
            except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
                logger.info("device connection from %s failed before MQTT: %s", peer, exc)
                client.close()
                return
            except asyncio.CancelledError:
                client.close()
                raise
            task = asyncio.current_task()
            if task is not None:
                self._handshaking.discard(task)  # a Connection from here: close() ends it
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            ssl_object = transport.get_extra_info("ssl_object")
            cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            conn = Connection(
                reader,
                writer,
                self.router,
                peer,
                cert,
                limits=self.limits,
                gate=self.gate,
                on_connect=connect_arrived,
                traffic=self.traffic,
            )
            protocol.on_lost = conn.peer_gone
            if protocol.is_lost:
                conn.peer_gone()
            self._connections.add(conn)
            try:
                await conn.run()
            finally:
                self._connections.discard(conn)
        finally:
            connect_arrived()
            self._open -= 1


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that says when the socket is gone, even while nobody reads."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self.is_lost = False
        self.on_lost: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        if self.on_lost is not None:
            self.on_lost()
        super().connection_lost(exc)


def _connection_cap(configured: int) -> int:
    """`configured`, lowered to leave FD_RESERVE (at most a quarter) of the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - min(FD_RESERVE, soft // 4)))


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until the socket has bytes (or EOF) to read."""
    ready: asyncio.Future[None] = loop.create_future()
    # The reader may fire again before we remove it: settle the future only once.
    loop.add_reader(sock.fileno(), _settle_once, ready)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """Up to `size` bytes the socket holds, left in place; waits for one (b"" at EOF)."""
    while True:
        try:
            return sock.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, sock)


async def _take(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes from the socket."""
    out = bytearray()
    while len(out) < size:
        try:
            chunk = sock.recv(size - len(out))
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        if not chunk:
            raise ConnectionError("closed during proxy CONNECT")
        out += chunk
    return bytes(out)


def _settle_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _answer_proxy(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Consume `CONNECT host:port HTTP/1.1 ...\r\n\r\n` exactly; answer 200 in one write.

    Event-driven: whatever is waiting is taken (never past the blank line, so the TLS bytes
    that follow stay for TLS), and then it waits for the socket to be readable again, which
    with nothing left unread means new bytes. A client that stops half-way costs nothing until
    the handshake timeout closes it.
    """
    header = bytearray()
    while True:
        if len(header) >= PROXY_HEADER_MAX_BYTES:
            raise ValueError("proxy CONNECT header too long")
        waiting = await _peek(loop, sock, PROXY_HEADER_MAX_BYTES - len(header))
        if not waiting:
            raise ConnectionError("closed during proxy CONNECT")
        tail = bytes(header[-3:])  # the blank line may straddle what we took and what waits
        end = (tail + waiting).find(b"\r\n\r\n")
        if end >= 0:
            header += await _take(loop, sock, end + 4 - len(tail))
            break
        header += await _take(loop, sock, len(waiting))
    request_line = bytes(header).split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        await loop.sock_sendall(sock, b"HTTP/1.1 400 Bad Request\r\n\r\n")
        raise ValueError(f"bad proxy request line {request_line!r}")
    await loop.sock_sendall(sock, b"HTTP/1.1 200 Connection established\r\n\r\n")
