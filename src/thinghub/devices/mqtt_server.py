"""The device listener: MQTT 3.1.1 over TLS, optionally behind an HTTP CONNECT first line.

Theory of operation: the accept loop hands each socket to a tls_channel.TlsChannel, driven by
the event loop's reader and writer callbacks: an optional proxy `CONNECT host:port HTTP/1.1`
first line (what PySocks sends for MQTT_PROXY) answered `200`, the TLS handshake on a
non-blocking ssl.SSLSocket, then decrypted bytes. Once TLS is up the channel's bytes go to a
`Connection`: into the sans-IO ServerSession, whose events go to a dialect (the IoT Hub device
dialect or DPS, told apart by the CONNECT username; Ioto, by a client certificate without a
username), and every byte the session wants sent is flushed after each round. A connection
holds no task while idle: one is started when a read brings events that need awaiting
(PINGREQ is answered at once, and telemetry the dialect takes with `publish_now` is queued at
once, both without one), and it ends when they are handled.

QoS 1 from the device is acknowledged in order and only after its work is durable: the
dialect returns an awaitable per PUBLISH, and the ack queue holds them first-in first-out;
only its head has a done callback, which sends every PUBACK whose work is done by then in one
write (a connection's messages of one ingest batch go together). Telemetry work runs
concurrently (so one device's messages share group commits); twin, method and DPS requests
are handled in order, reading paused meanwhile.

Limits (ListenerLimits, docs/limits.md). The listener never grows memory to keep up with a
device; it stops reading from it instead, and the device's own TCP buffers hold the rest:
- at most `max_connections` open sockets (also kept under the open-file limit) and at most
  `max_handshakes` of them before their CONNECT; a socket over either is closed at once;
- the proxy line and TLS within `handshake_timeout_s`, the CONNECT `connect_timeout_s` after;
- a connection silent for 1.5 keep-alive periods is closed (an hour with keep-alive 0);
- before each PUBLISH is handled, `_admit` waits (1) for a slot in the connection's in-flight
  window (`max_inflight` messages received and not yet stored or acknowledged), (2) for the
  device's message and byte budgets (throttle.ThroughputLimiter: traffic shaping, as IoT Hub
  does it), and (3) for room in the ingest queue (the global memory bound, shared by every
  connection). Acknowledged messages are never dropped; what is waiting is simply not read
  (beyond READ_AHEAD_BYTES already decrypted and waiting in the session's decoder).
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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from thinghub.devices.deadlines import DeadlineWheel
from thinghub.devices.throttle import ThroughputLimiter
from thinghub.devices.tls_channel import CLOSE_ABORT_S, TlsChannel, enable_read_ahead
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
    "Channel",
    "Connection",
    "ConnectionClosed",
    "Dialect",
    "DialectRouter",
    "IngestGate",
    "ListenerLimits",
    "MqttServer",
]

logger = logging.getLogger(__name__)

IDLE_NO_KEEPALIVE_S = 3600.0  # keep-alive 0 disables the timer; still bound idle sockets
#: While a connection's task handles its events, reading goes on into the session's decoder
#: until it holds this many bytes; then it pauses until the task is done (backpressure).
READ_AHEAD_BYTES = 65_536
CLOSE_DRAIN_S = 10.0  # how long a closing connection waits for its messages to be stored
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

    def publish_now(self, conn: Connection, publish: Publish) -> asyncio.Future[Any] | None:
        """Take a PUBLISH without awaiting anything, when the dialect can (telemetry): its
        work, which the PUBACK waits for. None: it cannot, on_publish (awaited) takes it."""

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


class Channel(Protocol):
    """What a Connection reads from and writes to (tls_channel.TlsChannel)."""

    @property
    def socket(self) -> Any: ...

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Connection:
    """One device connection: feeds the session, runs its events, owns the ack pump.

    Driven by its channel's callbacks: `data_received` decodes what arrived and, when it holds
    more than PINGREQs, starts a task that handles the events (awaiting the dialect) until the
    session holds no more; what arrives meanwhile joins them, and reading pauses while more
    than READ_AHEAD_BYTES wait undecoded. An idle connection has no task and no buffer.
    Deadlines (the CONNECT after TLS, then the keep-alive) sit in the server's DeadlineWheel,
    moved lazily: the connection is told at the deadline last filed, and only then looks at
    when the client last sent bytes.
    """

    __slots__ = (
        "_acks",
        "_ended",
        "_ending",
        "_gate",
        "_interrupt",
        "_is_throttle_logged",
        "_last_read",
        "_loop",
        "_on_connect",
        "_on_finished",
        "_spawn",
        "_task",
        "_tasks",
        "_throughput",
        "_wheel",
        "_window",
        "channel",
        "client_id",
        "connect_seen",
        "deadline_key",
        "dialect",
        "dialect_name",
        "is_closed",
        "is_peer_gone",
        "limits",
        "peer",
        "peer_cert",
        "router",
        "session",
        "session_present",
        "state",
        "traffic",
        "will_discarded",
    )

    def __init__(
        self,
        channel: Channel,
        router: DialectRouter,
        peer: str,
        peer_cert: bytes | None,
        *,
        limits: ListenerLimits,
        gate: IngestGate,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None,
        on_connect: Callable[[], None] | None = None,
        on_finished: Callable[[Connection], None] | None = None,
        traffic: Counter[tuple[str, str]] | None = None,
        wheel: DeadlineWheel | None = None,
    ) -> None:
        self.channel = channel
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
        self.is_closed = False  # closing or closed: nothing more is sent or acknowledged
        self.is_peer_gone = False  # the peer closed its side (EOF) or the socket failed
        self.connect_seen = False  # the CONNECT arrived
        self.limits = limits
        self._ended = False  # the client's side ended it (EOF, expiry, violation, error)
        self._ending = False  # _finish has started
        # Made when first needed: most connections are idle most of the time.
        self._acks: deque[tuple[int, asyncio.Future[Any] | None]] | None = None
        self._tasks: set[asyncio.Future[Any]] | None = None
        self._window: asyncio.Event | None = None  # set when in-flight work ends (or closing)
        self._interrupt: asyncio.Event | None = None  # stop waiting in _admit: closing, gone
        self._throughput: ThroughputLimiter | None = None
        self._task: asyncio.Task[None] | None = None  # handling events, or finishing
        self._gate = gate
        self._spawn = spawn or asyncio.ensure_future
        self._on_connect = on_connect  # the server's handshake count: CONNECT has arrived
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._is_throttle_logged = False
        self._last_read = self._loop.time()
        self.deadline_key: int | None = None  # the deadline wheel's
        self._wheel = DeadlineWheel(self._loop) if wheel is None else wheel
        self._wheel.add(self, self._last_read + limits.connect_timeout_s)

    # -- bytes out -----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.channel.is_closing():
            self.channel.write(data)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send to the device now (from any task on the loop).

        Raises:
            ConnectionClosed: The connection is closed or closing.
            LocalProtocolError: A topic or QoS the session cannot send, or a publish before
                the CONNACK: the caller's bug, let through as such.
        """
        if self.is_closed or self.session.state is ServerState.CLOSED:
            # CLOSED while open: the peer's DISCONNECT or violation was just read and the
            # connection is on its way out.
            raise ConnectionClosed(f"the connection of {self.client_id or self.peer} is closed")
        self.session.publish(topic, payload, qos)
        self.traffic[self.dialect_name, "out"] += 1
        self.flush()

    def close(self) -> None:
        """Close from outside (takeover, device deleted or disabled, shutdown)."""
        if not (self._ended or self.is_peer_gone):  # the client broke it first: its Will
            self.will_discarded = True  # still stands (even if its events lag behind)
        self.session.close()
        self.is_closed = True
        self._wake()
        self.channel.close()  # aborted after CLOSE_ABORT_S if the peer stopped reading
        if self._task is None:
            self._end()

    def _wake(self) -> None:
        if self._interrupt is not None:
            self._interrupt.set()
        if self._window is not None:
            self._window.set()

    # -- bytes in (the channel's callbacks) ----------------------------------------------

    def data_received(self, data: memoryview) -> None:
        now = self._loop.time()
        self._last_read = now
        session = self.session
        session.receive_data(data, now)
        if self._task is not None:  # its loop takes these packets too
            if session.buffered_bytes >= READ_AHEAD_BYTES:
                self.channel.pause_reading()  # until the task is done with them
            return
        # Telemetry that needs no waiting is taken here, without a task (most reads hold only
        # that), and so is the keep-alive; the first event that needs more starts the task.
        event = session.next_event()
        admitted = False
        try:
            while event is not None:
                if type(event) is PublishReceived:
                    if not self._admit_now(event.publish):
                        break
                    admitted = True
                    if not self._take_now(event.publish):
                        break
                    admitted = False
                    if self.is_closed:  # its work failed at once: closing already
                        return
                elif type(event) is not PingReceived:
                    break
                event = session.next_event()
        except Exception as exc:  # refused (DropConnection) or failed: as the task would
            if self._task is None and not self._ending:
                self._task = self._spawn(self._run(None, error=exc))
            return
        if event is None:
            self.flush()
            return
        self._task = self._spawn(self._run(event, admitted=admitted))

    def connection_lost(self, exc: BaseException | None) -> None:
        """The peer closed or the socket failed: what is buffered needs no backpressure."""
        if exc is not None:
            logger.debug("mqtt %s (%s): %r", self.client_id or "-", self.peer, exc)
        self.is_peer_gone = True
        self._wake()
        if self._task is None:
            self._ended = True
            self._end()

    def on_deadline(self) -> None:
        """The deadline last filed has come: the CONNECT's, or the keep-alive's."""
        if self._ending:
            return
        now = self._loop.time()
        if self.dialect is None:
            deadline = (
                now + self.limits.connect_timeout_s if self._task is not None else now
            )  # awaiting on_connect: its own time; else no (accepted) CONNECT in time
        else:
            keepalive = self.session.keepalive_deadline
            deadline = self._last_read + IDLE_NO_KEEPALIVE_S if keepalive is None else keepalive
            if self._task is not None:  # busy with its events (or waiting to read them)
                deadline = max(deadline, now + 1.0)
        if deadline > now:
            self._wheel.add(self, deadline)
            return
        logger.info("mqtt %s (%s): keep-alive expired", self.client_id or "-", self.peer)
        self._ended = True
        self._end()

    # -- handling events -----------------------------------------------------------------

    def _end(self) -> None:
        """Finish the connection (once), unless a task is on it (it finishes it)."""
        if not self._ending and self._task is None:
            self._ending = True
            self._task = self._spawn(self._finish())

    async def _run(
        self, event: Any, *, admitted: bool = False, error: Exception | None = None
    ) -> None:
        """Handle `event` and the rest (see _handle_events), or end with `error` raised
        from taking a PUBLISH in data_received; finish the connection when it ends."""
        keep = False
        try:
            if error is not None:
                raise error
            keep = await self._handle_events(event, admitted=admitted)
        except DropConnection as exc:
            logger.warning("mqtt %s (%s): %s; closing", self.client_id or "-", self.peer, exc)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            logger.debug("mqtt %s (%s): %r", self.client_id or "-", self.peer, exc)
        except DeviceOffline:
            logger.info("mqtt %s (%s): closed while busy", self.client_id or "-", self.peer)
        except Exception:
            logger.exception("mqtt %s (%s): connection failed", self.client_id or "-", self.peer)
        finally:
            if keep and not self.is_closed and not self.channel.is_closing():
                self._task = None
                self.channel.resume_reading()  # if paused; reads to the EOF of a peer gone
            else:
                self._ended = self._ended or not self.is_closed
                self._ending = True
                await self._finish()

    async def _handle_events(self, event: Any, *, admitted: bool = False) -> bool:
        """Handle `event` and every later one the session holds; False ends the connection.

        `admitted`: `event` is a PUBLISH already admitted and counted (by _take_now)."""
        session = self.session
        while event is not None:
            if type(event) is PublishReceived:  # the common event: no coroutine for it
                publish = event.publish
                dialect = self.dialect
                assert dialect is not None
                if admitted:
                    admitted = False
                    work: Any = None
                else:
                    if not self._admit_now(publish) and not await self._admit(publish):
                        return False  # closed while it waited
                    self.traffic[self.dialect_name, "in"] += 1
                    work = dialect.publish_now(self, publish)
                if work is None:
                    work = await dialect.on_publish(self, publish)
                self._queue_ack(publish, work)
            elif not await self._dispatch(event):
                self.flush()
                return False
            if self.is_closed:
                return False
            event = session.next_event()
        self.flush()
        return True

    async def _finish(self) -> None:
        self._ending = True
        self.is_closed = True
        self._wheel.remove(self)
        self._wake()
        pending = [*(self._tasks or ()), *(f for _, f in (self._acks or ()) if f is not None)]
        try:
            if pending:  # let accepted work (telemetry of any QoS) finish storing
                await asyncio.wait(pending, timeout=CLOSE_DRAIN_S)
        finally:  # even when cancelled: the bookkeeping below must run
            self.session.close()
            self.channel.close()
            try:
                if self.dialect is not None:
                    try:
                        await self.dialect.on_close(self)
                    except Exception:
                        logger.exception("mqtt %s: closing failed", self.client_id)
            finally:
                if self._on_finished is not None:
                    self._on_finished(self)

    def _in_flight(self) -> int:
        return len(self._acks or ()) + len(self._tasks or ())

    def _limiter(self, now: float) -> ThroughputLimiter:
        limiter = self._throughput
        if limiter is None:
            limiter = self._throughput = ThroughputLimiter(
                self.limits.messages_per_s, self.limits.bytes_per_s, now
            )
        return limiter

    def _admit_now(self, publish: Publish) -> bool:
        """_admit's common case without a coroutine: open, room in the window, under the
        device's rate, the ingest queue not full. False: let _admit decide (and wait)."""
        acks = self._acks
        tasks = self._tasks
        in_flight = (len(acks) if acks else 0) + (len(tasks) if tasks else 0)
        if self.is_closed or in_flight >= self.limits.max_inflight or self._gate.is_full:
            return False
        now = self._loop.time()
        limiter = self._throughput
        if limiter is None:
            limiter = self._limiter(now)
        return limiter.try_take(len(publish.payload) + len(publish.topic), now)

    def _interrupted(self) -> asyncio.Event:
        event = self._interrupt
        if event is None:
            event = self._interrupt = asyncio.Event()
            if self.is_closed or self.is_peer_gone:
                event.set()
        return event

    async def _admit(self, publish: Publish) -> bool:
        """Wait until `publish` may be handled; False if the connection closed meanwhile.

        While this waits the socket is read at most READ_AHEAD_BYTES ahead: the device's
        further packets stay in its own buffers, and our memory does not grow with its rate.
        """
        loop = self._loop
        while self._in_flight() >= self.limits.max_inflight:
            if self.is_closed or self.is_peer_gone:
                break
            if self._window is None:
                self._window = asyncio.Event()
            self._window.clear()  # set again when a message's work ends (or on close)
            await self._window.wait()
        limiter = self._limiter(loop.time())
        delay = limiter.delay_s(loop.time())
        if delay > 0 and not self.is_peer_gone:  # over its rate: wait the debt off (IoT
            self._log_throttled(loop.time())  # Hub's "traffic shaping")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._interrupted().wait()
        limiter.take(len(publish.payload) + len(publish.topic), loop.time())
        if self._gate.is_full and not self.is_peer_gone:  # all readers wait while it is full
            room = asyncio.ensure_future(self._gate.wait_for_room())
            interrupted = asyncio.ensure_future(self._interrupted().wait())
            try:
                await asyncio.wait((room, interrupted), return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
                interrupted.cancel()
        # A peer that left sent all it will send: the rest of its buffer (bounded) is handled
        # at once, so a DISCONNECT in it is seen and the connection ends as it would have.
        return not self.is_closed

    def _log_throttled(self, now: float) -> None:
        limiter = self._throughput
        over = None if limiter is None else limiter.over(now)
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
            case SubscribeRequested(subscribe=sub):
                assert self.dialect is not None
                codes = await self.dialect.on_subscribe(self, sub.filters)
                if self.is_closed:  # taken over while we awaited
                    return False
                self.session.suback(sub.packet_id, codes)
            case UnsubscribeRequested(unsubscribe=unsub):
                assert self.dialect is not None
                await self.dialect.on_unsubscribe(self, unsub.filters)
                if self.is_closed:
                    return False
                self.session.unsuback(unsub.packet_id)
            case PubackReceived(publish=publish):
                assert self.dialect is not None
                self._ack_now()
                await self.dialect.on_puback(self, publish)
            case PingReceived():
                pass
            case ConnectRequested(connect=connect):
                if not self.connect_seen:
                    self.connect_seen = True
                    if self._on_connect is not None:
                        self._on_connect()
                return await self._connect(connect)
            case DisconnectRequested():
                self.will_discarded = True
                return False
            case ProtocolViolation(error=error):
                self._ended = True
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
        if self.is_closed:
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
        sock = self.channel.socket
        if sock is not None and QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def _track(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(future)
        future.add_done_callback(self._untrack)
        return future

    def _untrack(self, future: asyncio.Future[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(future)
        if self._window is not None:
            self._window.set()

    def _take_now(self, publish: Publish) -> bool:
        """Take an admitted PUBLISH without awaiting (telemetry); False when the dialect
        must await for it (on_publish does it then)."""
        dialect = self.dialect
        assert dialect is not None
        self.traffic[self.dialect_name, "in"] += 1
        work = dialect.publish_now(self, publish)
        if work is None:
            return False
        self._queue_ack(publish, work)
        return True

    def _queue_ack(self, publish: Publish, work: Awaitable[Any] | None) -> None:
        """A PUBLISH is taken: its PUBACK (QoS 1) waits in the ack queue for `work`."""
        future = (
            None
            if work is None
            else work
            if isinstance(work, asyncio.Future)
            else asyncio.ensure_future(work)
        )
        if publish.qos and publish.packet_id is not None:
            # The ack queue holds it (and closing waits for it): no tracking needed.
            acks = self._acks
            if acks is None:
                acks = self._acks = deque()
            acks.append((publish.packet_id, future))
            if len(acks) == 1:  # the new head: acknowledge it now, or when it is done
                if future is None or future.done():
                    self._drain_acks()
                else:
                    future.add_done_callback(self._drain_acks)
        elif future is not None:
            self._track(future)

    def _drain_acks(self, _: object = None) -> None:
        """PUBACK in arrival order (§4.6), each once its work is done; one write for all.

        Only the head of the queue has a done callback (this): messages of one connection
        in one ingest batch are all done by the time it runs, so the whole batch is
        acknowledged in one call and one write, with no callback per message. Where it stops
        at work not yet done, that work gets the callback. Work that failed is not durable,
        so it is not acknowledged: the connection closes and the device resends.
        """
        acks = self._acks
        if acks is None:
            return
        done: list[int] = []
        while acks:
            packet_id, future = acks[0]
            if future is not None:
                if not future.done():
                    if not self.is_closed:
                        future.add_done_callback(self._drain_acks)
                    break
                error = None if future.cancelled() else future.exception()
                if future.cancelled() or error is not None:
                    if done and not self.is_closed:  # those before it are stored
                        self.session.pubacks(done)
                        self.flush()
                    if isinstance(error, DropConnection):
                        logger.warning("mqtt %s: %s; closing", self.client_id, error)
                    elif not self.is_closed:
                        logger.error(
                            "mqtt %s: message not stored (%r); closing unacknowledged",
                            self.client_id,
                            error,
                        )
                    acks.clear()
                    self.close()
                    return
            acks.popleft()
            if self.is_closed:
                acks.clear()
                return
            done.append(packet_id)
        if done:
            self.session.pubacks(done)
            self.flush()
            if self._window is not None:
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
        self.read_ahead = enable_read_ahead(ssl_context)  # fewer read calls per message
        self.host = host
        self.port = port
        self.limits = limits
        self.gate = gate
        self.max_connections = limits.max_connections  # lowered to fit the open-file limit
        self._sock: socket.socket | None = None
        self._connections: set[Connection] = set()
        self._accepting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # connections handling events, closing
        self._handshaking: set[TlsChannel] = set()  # before TLS is up: aborted on close
        self._open = 0  # sockets accepted and not yet closed
        self.traffic: Counter[tuple[str, str]] = Counter()  # see Connection.traffic
        self._before_connect = 0  # of those, the ones whose CONNECT has not arrived
        self._refused = 0  # refused since the last log line
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
        self._wheel: DeadlineWheel | None = None  # the connections' deadlines
        # Bound once: every connection holds these (a bound method is 64 bytes each).
        self._spawn_bound = self._spawn
        self._connect_arrived_bound = self._connect_arrived
        self._finished_bound = self._finished
        self._tls_ready_bound = self._tls_ready
        self._channel_failed_bound = self._channel_failed

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
        self._wheel = DeadlineWheel(asyncio.get_running_loop())
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
        for channel in list(self._handshaking):  # nothing to keep: no device behind them yet
            channel.close()
        for conn in list(self._connections):
            conn.close()  # aborted after CLOSE_ABORT_S if the peer stopped reading
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_DRAIN_S + CLOSE_ABORT_S + 1
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        late = set(self._tasks)
        if late:
            logger.warning("%d device connections did not close in time; cancelling", len(late))
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=CLOSE_ABORT_S)
        if self._wheel is not None:
            self._wheel.close()

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
            try:
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                client.close()
                self._channel_failed(None, f"{exc}")
                continue
            channel = TlsChannel(
                loop,
                client,
                self.ssl_context,
                f"{address[0]}:{address[1]}",
                handshake_timeout_s=self.limits.handshake_timeout_s,
                on_ready=self._tls_ready_bound,
                on_failed=self._channel_failed_bound,
            )
            if not channel.is_closing():
                self._handshaking.add(channel)

    def _refuse(self, client: socket.socket, why: str) -> None:
        """Close a new socket at once: no TLS, no task, no buffers."""
        client.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            logger.warning("MQTT: closed %d new connection(s) at once: %s", self._refused, why)
            self._refused = 0
            self._refusal_logged_at = now

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _channel_failed(self, channel: TlsChannel | None, why: str) -> None:
        if channel is not None:
            self._handshaking.discard(channel)
            logger.info("device connection from %s failed before MQTT: %s", channel.peer, why)
        self._open -= 1
        self._before_connect -= 1

    def _tls_ready(self, channel: TlsChannel) -> Connection:
        self._handshaking.discard(channel)
        conn = Connection(
            channel,
            self.router,
            channel.peer,
            channel.peer_certificate(),
            limits=self.limits,
            gate=self.gate,
            spawn=self._spawn_bound,
            on_connect=self._connect_arrived_bound,
            on_finished=self._finished_bound,
            traffic=self.traffic,
            wheel=self._wheel,
        )
        self._connections.add(conn)
        return conn

    def _connect_arrived(self) -> None:
        self._before_connect -= 1

    def _finished(self, conn: Connection) -> None:
        self._connections.discard(conn)
        if not conn.connect_seen:
            self._before_connect -= 1
        self._open -= 1


def _connection_cap(configured: int) -> int:
    """`configured`, lowered to leave FD_RESERVE (at most a quarter) of the open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - min(FD_RESERVE, soft // 4)))
