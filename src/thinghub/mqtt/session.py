"""Per-connection MQTT 3.1.1 session state machines, server side and client side (sans-IO)."""

# Theory of operation
# -------------------
# A session holds the protocol state of one network connection and nothing else: no socket, no
# clock, no logging, no tasks. The adapter that owns the socket drives it in three moves:
#
#   1. Bytes in. Call receive_data(data, now) with whatever the socket produced. The bytes are
#      only buffered (a codec.Decoder); `now` feeds the keep-alive clock.
#   2. Events out. Call next_event() until it returns None. Each call decodes at most one
#      packet, checks it against the transition table below and returns what happened
#      (PublishReceived, SubscribeRequested, ...). None means "need more bytes", or on the server
#      side "waiting for accept() or reject()": decoding is lazy so that packets pipelined
#      behind the CONNECT (§3.1.4: clients may send before CONNACK arrives) are only looked at
#      after the adapter has authenticated, and never at all if it rejects (§3.1.4-5).
#   3. Bytes out. Every byte the session wants sent goes into one outgoing buffer that
#      data_to_send() drains: answers the adapter asks for (accept, puback, suback, publish),
#      answers the session makes by itself (PINGRESP, PUBREC/PUBCOMP, a CONNACK for a CONNECT it
#      had to refuse), and queued publishes released when a PUBACK frees an in-flight slot.
#      Write data_to_send() to the socket after every receive_data/next_event round and after
#      every local call; it returns b"" when there is nothing to send.
#
# Transitions live in one table per side, keyed by (state, trigger). A trigger is either the
# class of a packet received from the peer or the name of a local call. A received packet with no
# entry is a ProtocolViolation event (and the state becomes CLOSED; the adapter flushes
# data_to_send() and closes the socket). A local call with no entry is our own bug: ValueError.
# close() and violations lead to CLOSED from every state and are not repeated in the tables.
#
# Outgoing QoS 1 (§4.3.2): a packet id (1..65535, wrapping, skipping ids in use) is assigned
# when the PUBLISH is actually written. At most `max_inflight` publishes await their PUBACK; the
# rest wait in a FIFO queue (not yet encoded, no packet id) and go out as PUBACKs arrive. After
# the connection ends, inflight() (sent, unacknowledged, with their ids) and queued() (never
# sent) hold what the adapter must deliver on the client's next connection: redeliver() takes
# both, re-sending the former with DUP set and their ids unchanged (§4.4, §3.3.1-1) and
# publishing the latter afresh.
#
# Incoming QoS 2 (§4.3.3), which the Azure SDK never uses but a generic client may: the PUBLISH is
# reported once; puback() then answers PUBREC instead of PUBACK, a re-sent duplicate is answered
# (PUBREC again) without a second event, and PUBREL is answered with PUBCOMP by the session.
# Neither side ever publishes with QoS 2, so PUBREC/PUBCOMP from the peer are violations.

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeAlias

from .codec import MAX_PACKET_BYTES, Decoder, ProtocolError, encode
from .packets import (
    SUBACK_FAILURE,
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)

__all__ = [
    "KEEPALIVE_GRACE_FACTOR",
    "MAX_INFLIGHT",
    "ClientEvent",
    "ClientSession",
    "ClientState",
    "Connacked",
    "ConnectRequested",
    "DisconnectRequested",
    "PingReceived",
    "PingResponse",
    "ProtocolViolation",
    "PubackReceived",
    "PublishReceived",
    "ServerEvent",
    "ServerSession",
    "ServerState",
    "SubackReceived",
    "SubscribeRequested",
    "UnsubackReceived",
    "UnsubscribeRequested",
]

#: Outgoing QoS 1 publishes awaiting PUBACK per connection, in messages. Bounds what one slow
#: device pins in memory and what must be redelivered after a drop; paho (under the Azure SDK)
#: itself keeps at most 20 in flight, so 64 never throttles a well-behaved device.
MAX_INFLIGHT = 64

#: The server closes a connection silent for this many keep-alive periods (§3.1.2-24).
KEEPALIVE_GRACE_FACTOR = 1.5

_MAX_PACKET_ID = 0xFFFF


# --- Events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The client sent its CONNECT; answer with accept() or reject()."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class PublishReceived:
    """The peer published. For QoS 1/2 the server acknowledges with puback(packet_id)."""

    publish: Publish


@dataclass(frozen=True, slots=True)
class SubscribeRequested:
    """The client asked to subscribe; answer with suback(packet_id, return_codes)."""

    subscribe: Subscribe


@dataclass(frozen=True, slots=True)
class UnsubscribeRequested:
    """The client asked to unsubscribe; answer with unsuback(packet_id)."""

    unsubscribe: Unsubscribe


@dataclass(frozen=True, slots=True)
class PubackReceived:
    """The peer acknowledged our QoS 1 publish `publish` (as it was sent)."""

    packet_id: int
    publish: Publish


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The client sent PINGREQ; the session has already queued the PINGRESP (§3.12.4)."""


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The client sent DISCONNECT: discard its will and close the connection (§3.14.4)."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol; the session is CLOSED.

    Send data_to_send() (it may hold a CONNACK with `error.connack_code`), then close.
    """

    error: ProtocolError


@dataclass(frozen=True, slots=True)
class Connacked:
    """The server answered our CONNECT; a non-zero `return_code` leaves the session CLOSED."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class SubackReceived:
    """The server answered our SUBSCRIBE, one return code per filter (0x80 = refused)."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnsubackReceived:
    """The server answered our UNSUBSCRIBE."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PingResponse:
    """The server answered our PINGREQ."""


ServerEvent: TypeAlias = (
    ConnectRequested
    | PublishReceived
    | SubscribeRequested
    | UnsubscribeRequested
    | PubackReceived
    | PingReceived
    | DisconnectRequested
    | ProtocolViolation
)

ClientEvent: TypeAlias = (
    Connacked
    | PublishReceived
    | PubackReceived
    | SubackReceived
    | UnsubackReceived
    | PingResponse
    | ProtocolViolation
)


# --- States and transitions ---------------------------------------------------------------------


class ServerState(enum.Enum):
    """Where a server-side connection stands."""

    AWAIT_CONNECT = "AWAIT_CONNECT"  # nothing decoded yet
    AWAIT_ACCEPT = "AWAIT_ACCEPT"  # CONNECT reported, adapter deciding (accept / reject)
    CONNECTED = "CONNECTED"  # CONNACK 0 sent
    CLOSED = "CLOSED"  # rejected, disconnected, violated or closed; terminal


class ClientState(enum.Enum):
    """Where a client-side connection stands."""

    IDLE = "IDLE"  # connect() not called yet
    AWAIT_CONNACK = "AWAIT_CONNACK"  # CONNECT sent (publishing is already allowed, §3.1.4)
    CONNECTED = "CONNECTED"  # CONNACK 0 received
    CLOSED = "CLOSED"  # refused, disconnected, violated or closed; terminal


_Trigger: TypeAlias = type[object] | str
_REFUSED = "CONNACK refused"  # a CONNACK with a non-zero return code

_S = ServerState
_SERVER_TRANSITIONS: dict[tuple[ServerState, _Trigger], ServerState] = {
    # Received from the client.
    (_S.AWAIT_CONNECT, Connect): _S.AWAIT_ACCEPT,  # the first packet must be CONNECT (§3.1.0-1)
    (_S.CONNECTED, Publish): _S.CONNECTED,
    (_S.CONNECTED, Puback): _S.CONNECTED,
    (_S.CONNECTED, Pubrel): _S.CONNECTED,
    (_S.CONNECTED, Subscribe): _S.CONNECTED,
    (_S.CONNECTED, Unsubscribe): _S.CONNECTED,
    (_S.CONNECTED, Pingreq): _S.CONNECTED,
    (_S.CONNECTED, Disconnect): _S.CLOSED,  # §3.14.4
    # Local calls.
    (_S.AWAIT_ACCEPT, "accept"): _S.CONNECTED,
    (_S.AWAIT_ACCEPT, "reject"): _S.CLOSED,  # close after a non-zero CONNACK (§3.2.2-5)
    (_S.CONNECTED, "publish"): _S.CONNECTED,
    (_S.CONNECTED, "redeliver"): _S.CONNECTED,
    (_S.CONNECTED, "puback"): _S.CONNECTED,
    (_S.CONNECTED, "suback"): _S.CONNECTED,
    (_S.CONNECTED, "unsuback"): _S.CONNECTED,
}

_C = ClientState
_CLIENT_TRANSITIONS: dict[tuple[ClientState, _Trigger], ClientState] = {
    # Received from the server. The first packet must be CONNACK (§3.2.0-1).
    (_C.AWAIT_CONNACK, Connack): _C.CONNECTED,
    (_C.AWAIT_CONNACK, _REFUSED): _C.CLOSED,  # the server closes after refusing (§3.2.2-5)
    (_C.CONNECTED, Publish): _C.CONNECTED,
    (_C.CONNECTED, Puback): _C.CONNECTED,
    (_C.CONNECTED, Pubrel): _C.CONNECTED,
    (_C.CONNECTED, Suback): _C.CONNECTED,
    (_C.CONNECTED, Unsuback): _C.CONNECTED,
    (_C.CONNECTED, Pingresp): _C.CONNECTED,
    # Local calls; anything but connect() may be pipelined behind the CONNECT (§3.1.4).
    (_C.IDLE, "connect"): _C.AWAIT_CONNACK,
    **{
        (state, call): state
        for state in (_C.AWAIT_CONNACK, _C.CONNECTED)
        for call in ("publish", "subscribe", "unsubscribe", "puback", "ping")
    },
    (_C.AWAIT_CONNACK, "disconnect"): _C.CLOSED,
    (_C.CONNECTED, "disconnect"): _C.CLOSED,
}

_SERVER_ONLY = (Connack, Suback, Unsuback, Pingresp)


def _unexpected_from_client(state: ServerState, packet: Packet) -> ProtocolError:
    name = type(packet).__name__.upper()
    if state is ServerState.AWAIT_CONNECT:
        return ProtocolError(f"first packet must be CONNECT, got {name} (§3.1.0-1)")
    if isinstance(packet, Connect):
        return ProtocolError("second CONNECT on one connection (§3.1.0-2)")
    if isinstance(packet, _SERVER_ONLY):
        return ProtocolError(f"client sent {name}, which only a server sends")
    if isinstance(packet, Pubrec | Pubcomp):
        return ProtocolError(f"client sent {name}, but this server never publishes with QoS 2")
    return ProtocolError(f"unexpected {name} in state {state.value}")


def _unexpected_from_server(state: ClientState, packet: Packet) -> ProtocolError:
    name = type(packet).__name__.upper()
    if state is ClientState.AWAIT_CONNACK:
        return ProtocolError(f"first packet must be CONNACK, got {name} (§3.2.0-1)")
    if isinstance(packet, Connack):
        return ProtocolError("second CONNACK on one connection")
    if isinstance(packet, Pubrec | Pubcomp):
        return ProtocolError(f"server sent {name}, but this client never publishes with QoS 2")
    return ProtocolError(f"server sent {name}, which only a client sends")


# --- Shared machinery ---------------------------------------------------------------------------


class _Connection:
    """Decoder, outgoing buffer, packet ids and incoming QoS 2 bookkeeping for either side."""

    __slots__ = (
        "_decoder",
        "_inflight",
        "_next_packet_id",
        "_outgoing",
        "_qos2_awaiting_pubrel",
        "_qos2_unanswered",
    )

    def __init__(self, max_packet_bytes: int) -> None:
        self._decoder = Decoder(max_packet_bytes=max_packet_bytes)
        self._outgoing: list[bytes] = []
        self._next_packet_id = 1
        # Sent QoS 1 publishes awaiting PUBACK, by packet id, in send order.
        self._inflight: dict[int, Publish] = {}
        # Incoming QoS 2 publishes: reported but not yet answered / PUBREC sent (§4.3.3).
        self._qos2_unanswered: set[int] = set()
        self._qos2_awaiting_pubrel: set[int] = set()

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer (b"" when there is none), in order."""
        out = self._outgoing
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def inflight(self) -> tuple[Publish, ...]:
        """QoS 1 publishes sent but not acknowledged, oldest first, with their packet ids."""
        return tuple(self._inflight.values())

    def _send(self, packet: Packet) -> None:
        self._outgoing.append(encode(packet))

    def _is_packet_id_used(self, packet_id: int) -> bool:
        return packet_id in self._inflight

    def _allocate_packet_id(self) -> int:
        # §2.3.1: a new packet must use an id not in use; ids wrap from 65535 back to 1.
        packet_id = self._next_packet_id
        for _ in range(_MAX_PACKET_ID):
            if not self._is_packet_id_used(packet_id):
                self._next_packet_id = packet_id % _MAX_PACKET_ID + 1
                return packet_id
            packet_id = packet_id % _MAX_PACKET_ID + 1
        raise ValueError("all 65535 packet ids are in use")

    def _send_publish(self, publish: Publish) -> Publish:
        """Send a QoS 0 publish as is, or give a QoS 1 publish an id and track it."""
        if publish.qos:
            packet_id = self._allocate_packet_id()
            publish = Publish(publish.topic, publish.payload, 1, publish.retain, False, packet_id)
            self._outgoing.append(encode(publish))
            self._inflight[packet_id] = publish
        else:
            self._outgoing.append(encode(publish))
        return publish

    def _incoming_publish(self, publish: Publish) -> PublishReceived | None:
        """Report an incoming publish once; None for a QoS 2 duplicate (§4.3.3)."""
        packet_id = publish.packet_id
        if publish.qos == 2 and packet_id is not None:
            if packet_id in self._qos2_unanswered:
                return None
            if packet_id in self._qos2_awaiting_pubrel:
                self._send(Pubrec(packet_id))
                return None
            self._qos2_unanswered.add(packet_id)
        return PublishReceived(publish)

    def _answer_publish(self, packet_id: int) -> None:
        if packet_id in self._qos2_unanswered:
            self._qos2_unanswered.discard(packet_id)
            self._qos2_awaiting_pubrel.add(packet_id)
            self._send(Pubrec(packet_id))
        else:
            self._send(Puback(packet_id))

    def _incoming_pubrel(self, pubrel: Pubrel) -> ProtocolError | None:
        packet_id = pubrel.packet_id
        if packet_id in self._qos2_unanswered:
            return ProtocolError(f"PUBREL for packet id {packet_id} before our PUBREC (§4.3.3)")
        # §4.3.3: answer PUBCOMP even for an id we do not know (state lost across connections).
        self._qos2_awaiting_pubrel.discard(packet_id)
        self._send(Pubcomp(packet_id))
        return None


# --- Server side --------------------------------------------------------------------------------


class ServerSession(_Connection):
    """The server's view of one client connection.

    Args:
        max_inflight: Outgoing QoS 1 publishes awaiting PUBACK before publish() queues.
        max_packet_bytes: Largest packet accepted from the client.
    """

    __slots__ = (
        "_connect",
        "_last_receive",
        "_max_inflight",
        "_pending_subscribes",
        "_pending_unsubscribes",
        "_queue",
        "_state",
    )

    def __init__(
        self, *, max_inflight: int = MAX_INFLIGHT, max_packet_bytes: int = MAX_PACKET_BYTES
    ) -> None:
        if not 1 <= max_inflight < _MAX_PACKET_ID:
            raise ValueError(f"max_inflight {max_inflight} is not in 1..65534")
        super().__init__(max_packet_bytes)
        self._state = ServerState.AWAIT_CONNECT
        self._connect: Connect | None = None
        self._last_receive: float | None = None
        self._max_inflight = max_inflight
        self._queue: deque[Publish] = deque()
        self._pending_subscribes: dict[int, int] = {}  # packet id -> number of filters
        self._pending_unsubscribes: set[int] = set()

    # -- inspection --

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The client's CONNECT once received (client id, credentials, keep-alive, will)."""
        return self._connect

    @property
    def keepalive_deadline(self) -> float | None:
        """When the connection expires without more bytes: last receive + 1.5 x keep-alive.

        None before CONNECT, once CLOSED, or when the keep-alive is 0 (§3.1.2.10: disabled).
        """
        connect = self._connect
        if (
            connect is None
            or not connect.keepalive_s
            or self._last_receive is None
            or self._state is ServerState.CLOSED
        ):
            return None
        return self._last_receive + KEEPALIVE_GRACE_FACTOR * connect.keepalive_s

    def is_expired(self, now: float) -> bool:
        """Whether the client has been silent past its keep-alive deadline (§3.1.2-24)."""
        deadline = self.keepalive_deadline
        return deadline is not None and now > deadline

    def queued(self) -> tuple[Publish, ...]:
        """QoS 1 publishes waiting for an in-flight slot, never sent (no packet id yet)."""
        return tuple(self._queue)

    # -- bytes in, events out --

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Buffer bytes from the client; `now` restarts the keep-alive clock."""
        if self._state is ServerState.CLOSED:
            return
        self._decoder.feed(data)
        self._last_receive = now

    def next_event(self) -> ServerEvent | None:
        """Decode and return the next event, or None (need bytes, or await accept/reject)."""
        while True:
            state = self._state
            if state is ServerState.CLOSED or state is ServerState.AWAIT_ACCEPT:
                return None
            try:
                packet = self._decoder.next_packet()
            except ProtocolError as exc:
                return self._violation(exc)
            if packet is None:
                return None
            new_state = _SERVER_TRANSITIONS.get((state, type(packet)))
            if new_state is None:
                return self._violation(_unexpected_from_client(state, packet))
            self._state = new_state
            event = self._handle(packet)
            if event is not None:
                return event

    def _handle(self, packet: Packet) -> ServerEvent | None:
        match packet:
            case Publish():
                return self._incoming_publish(packet)
            case Puback(packet_id=packet_id):
                publish = self._inflight.pop(packet_id, None)
                if publish is None:
                    return None  # not ours (e.g. acked twice): tolerated, nothing to report
                self._release_queued()
                return PubackReceived(packet_id, publish)
            case Pingreq():
                self._send(Pingresp())
                return PingReceived()
            case Pubrel():
                error = self._incoming_pubrel(packet)
                return None if error is None else self._violation(error)
            case Subscribe(packet_id=packet_id, filters=filters):
                self._pending_subscribes[packet_id] = len(filters)
                return SubscribeRequested(packet)
            case Unsubscribe(packet_id=packet_id):
                self._pending_unsubscribes.add(packet_id)
                return UnsubscribeRequested(packet)
            case Connect():
                self._connect = packet
                return ConnectRequested(packet)
            case Disconnect():
                return DisconnectRequested()
        raise AssertionError(f"no handler for {packet!r}")  # the table admits nothing else

    def _violation(self, error: ProtocolError) -> ProtocolViolation:
        # Only the first packet can be answered with a CONNACK (§3.2.0-1, §3.1.2-2, §3.1.3-9).
        if self._state is ServerState.AWAIT_CONNECT and error.connack_code is not None:
            self._send(Connack(False, error.connack_code))
        self._state = ServerState.CLOSED
        return ProtocolViolation(error)

    # -- local calls --

    def _transition(self, call: str) -> None:
        new_state = _SERVER_TRANSITIONS.get((self._state, call))
        if new_state is None:
            raise ValueError(f"{call}() is not allowed in state {self._state.value}")
        self._state = new_state

    def accept(self, session_present: bool = False) -> None:
        """Answer the CONNECT with CONNACK 0 and start processing the client's packets.

        Args:
            session_present: Whether stored session state for this client id is being resumed.
                Must be False for a clean-session CONNECT (§3.2.2-1).
        """
        connect = self._connect
        if session_present and connect is not None and connect.clean_session:
            raise ValueError("session_present with a clean-session CONNECT (§3.2.2-1)")
        self._transition("accept")
        self._send(Connack(session_present, ConnackCode.ACCEPTED))

    def reject(self, return_code: int) -> None:
        """Answer the CONNECT with a non-zero CONNACK code (1-5); the session is CLOSED."""
        if (
            not ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION
            <= return_code
            <= ConnackCode.NOT_AUTHORIZED
        ):
            raise ValueError(f"CONNACK refusal code {return_code} is not in 1..5 (§3.2.2.3)")
        self._transition("reject")
        self._send(Connack(False, return_code))  # session present 0 on refusal (§3.2.2-4)

    def publish(self, topic: str, payload: bytes, qos: int = 0, *, retain: bool = False) -> None:
        """Send a message to the client, or queue it while MAX_INFLIGHT publishes await PUBACK.

        Raises:
            ValueError: Bad topic or QoS (only 0 and 1 are sent), or not CONNECTED.
        """
        self._transition("publish")
        if qos == 1:
            publish = Publish(topic, payload, 1, retain)
            if self._queue or len(self._inflight) >= self._max_inflight:
                encode(replace(publish, packet_id=1))  # validate now, not when released
                self._queue.append(publish)
            else:
                self._send_publish(publish)
        elif qos == 0:
            self._send_publish(Publish(topic, payload, 0, retain))
        else:
            raise ValueError(f"publish QoS {qos!r}: this server sends QoS 0 or 1 only")

    def redeliver(self, publishes: Iterable[Publish]) -> None:
        """Deliver what the client's previous connection left unacknowledged (§4.4).

        Pass `old.inflight() + old.queued()`, right after accept() and before any publish(), to
        keep the original order (§4.6). Publishes that were sent (they have a packet id) are
        re-sent at once with DUP set and their ids unchanged (§3.3.1-1), even beyond the
        in-flight window; those never sent (no packet id) go through publish() as new ones.
        """
        self._transition("redeliver")
        for publish in publishes:
            packet_id = publish.packet_id
            if publish.qos != 1:
                raise ValueError(f"only QoS 1 publishes are redelivered: {publish!r}")
            if packet_id is None:
                self.publish(publish.topic, publish.payload, 1, retain=publish.retain)
                continue
            if packet_id in self._inflight:
                raise ValueError(f"packet id {packet_id} is already in flight")
            if len(self._inflight) >= _MAX_PACKET_ID - 1:
                raise ValueError("too many publishes to redeliver")
            publish = replace(publish, dup=True)
            self._send(publish)
            self._inflight[packet_id] = publish
            self._next_packet_id = packet_id % _MAX_PACKET_ID + 1  # fresh ids continue after

    def _release_queued(self) -> None:
        queue = self._queue
        while queue and len(self._inflight) < self._max_inflight:
            self._send_publish(queue.popleft())

    def puback(self, packet_id: int) -> None:
        """Acknowledge the client's QoS 1 publish (PUBACK), or QoS 2 publish (PUBREC)."""
        self._transition("puback")
        self._answer_publish(packet_id)

    def suback(self, packet_id: int, return_codes: Iterable[int]) -> None:
        """Answer a SUBSCRIBE: per filter, in order, the granted QoS or SUBACK_FAILURE (0x80)."""
        self._transition("suback")
        codes = tuple(return_codes)
        expected = self._pending_subscribes.get(packet_id)
        if expected is None:
            raise ValueError(f"no SUBSCRIBE with packet id {packet_id} awaits a SUBACK")
        if len(codes) != expected:
            raise ValueError(f"SUBACK needs {expected} return codes, got {len(codes)} (§3.8.4-5)")
        for code in codes:
            if code not in (0, 1, 2, SUBACK_FAILURE):
                raise ValueError(f"SUBACK return code {code!r} (§3.9.3-2)")
        del self._pending_subscribes[packet_id]
        self._send(Suback(packet_id, codes))

    def unsuback(self, packet_id: int) -> None:
        """Answer an UNSUBSCRIBE (§3.10.4-4)."""
        self._transition("unsuback")
        if packet_id not in self._pending_unsubscribes:
            raise ValueError(f"no UNSUBSCRIBE with packet id {packet_id} awaits an UNSUBACK")
        self._pending_unsubscribes.discard(packet_id)
        self._send(Unsuback(packet_id))

    def close(self) -> None:
        """Mark the connection closed (socket gone, keep-alive expired, taken over)."""
        self._state = ServerState.CLOSED


# --- Client side --------------------------------------------------------------------------------


class ClientSession(_Connection):
    """A client's view of its connection, for the simulator and load generator.

    Args:
        auto_ack: Answer incoming QoS 1/2 publishes at once (PUBACK/PUBREC) instead of
            waiting for puback().
        max_packet_bytes: Largest packet accepted from the server.
    """

    __slots__ = ("_auto_ack", "_pending_subscribes", "_pending_unsubscribes", "_state")

    def __init__(self, *, auto_ack: bool = True, max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        super().__init__(max_packet_bytes)
        self._state = ClientState.IDLE
        self._auto_ack = auto_ack
        self._pending_subscribes: dict[int, int] = {}  # packet id -> number of filters
        self._pending_unsubscribes: set[int] = set()

    @property
    def state(self) -> ClientState:
        return self._state

    def _is_packet_id_used(self, packet_id: int) -> bool:
        # PUBLISH, SUBSCRIBE and UNSUBSCRIBE share one id space (§2.3.1-2).
        return (
            packet_id in self._inflight
            or packet_id in self._pending_subscribes
            or packet_id in self._pending_unsubscribes
        )

    def _transition(self, call: str) -> None:
        new_state = _CLIENT_TRANSITIONS.get((self._state, call))
        if new_state is None:
            raise ValueError(f"{call}() is not allowed in state {self._state.value}")
        self._state = new_state

    # -- local calls --

    def connect(
        self,
        client_id: str,
        username: str | None = None,
        password: bytes | None = None,
        keepalive_s: int = 60,
        clean_session: bool = True,
        will: Will | None = None,
    ) -> None:
        """Queue the CONNECT."""
        packet = Connect(client_id, username, password, keepalive_s, clean_session, will)
        encoded = encode(packet)  # validate before changing state
        self._transition("connect")
        self._outgoing.append(encoded)

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, *, retain: bool = False
    ) -> int | None:
        """Queue a PUBLISH; return its packet id (None for QoS 0)."""
        if qos not in (0, 1):
            raise ValueError(f"publish QoS {qos!r}: this client sends QoS 0 or 1 only")
        self._transition("publish")
        return self._send_publish(Publish(topic, payload, qos, retain)).packet_id

    def subscribe(self, filters: Iterable[tuple[str, int]]) -> int:
        """Queue a SUBSCRIBE for (topic filter, QoS) pairs; return its packet id."""
        self._transition("subscribe")
        pairs = tuple(filters)
        packet_id = self._allocate_packet_id()
        self._send(Subscribe(packet_id, pairs))
        self._pending_subscribes[packet_id] = len(pairs)
        return packet_id

    def unsubscribe(self, filters: Iterable[str]) -> int:
        """Queue an UNSUBSCRIBE; return its packet id."""
        self._transition("unsubscribe")
        packet_id = self._allocate_packet_id()
        self._send(Unsubscribe(packet_id, tuple(filters)))
        self._pending_unsubscribes.add(packet_id)
        return packet_id

    def puback(self, packet_id: int) -> None:
        """Acknowledge an incoming publish by hand (with auto_ack=False)."""
        self._transition("puback")
        self._answer_publish(packet_id)

    def ping(self) -> None:
        """Queue a PINGREQ (§3.12)."""
        self._transition("ping")
        self._send(Pingreq())

    def disconnect(self) -> None:
        """Queue a DISCONNECT; the session is CLOSED (§3.14)."""
        self._transition("disconnect")
        self._send(Disconnect())

    def close(self) -> None:
        """Mark the connection closed."""
        self._state = ClientState.CLOSED

    # -- bytes in, events out --

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the server."""
        if self._state is not ClientState.CLOSED:
            self._decoder.feed(data)

    def next_event(self) -> ClientEvent | None:
        """Decode and return the next event, or None when more bytes are needed."""
        while True:
            state = self._state
            if state is ClientState.CLOSED or state is ClientState.IDLE:
                return None
            try:
                packet = self._decoder.next_packet()
            except ProtocolError as exc:
                return self._violation(exc)
            if packet is None:
                return None
            trigger: _Trigger = type(packet)
            if isinstance(packet, Connack) and packet.return_code:
                trigger = _REFUSED
            new_state = _CLIENT_TRANSITIONS.get((state, trigger))
            if new_state is None:
                return self._violation(_unexpected_from_server(state, packet))
            self._state = new_state
            event = self._handle(packet)
            if event is not None:
                return event

    def _handle(self, packet: Packet) -> ClientEvent | None:
        match packet:
            case Publish(packet_id=packet_id):
                event = self._incoming_publish(packet)
                if event is not None and packet_id is not None and self._auto_ack:
                    self._answer_publish(packet_id)
                return event
            case Puback(packet_id=packet_id):
                publish = self._inflight.pop(packet_id, None)
                return None if publish is None else PubackReceived(packet_id, publish)
            case Suback(packet_id=packet_id, return_codes=codes):
                expected = self._pending_subscribes.pop(packet_id, None)
                if expected is None:
                    return self._violation(ProtocolError(f"SUBACK for unknown id {packet_id}"))
                if expected != len(codes):
                    return self._violation(
                        ProtocolError(f"SUBACK has {len(codes)} codes for {expected} filters")
                    )
                return SubackReceived(packet_id, codes)
            case Unsuback(packet_id=packet_id):
                if packet_id not in self._pending_unsubscribes:
                    return self._violation(ProtocolError(f"UNSUBACK for unknown id {packet_id}"))
                self._pending_unsubscribes.discard(packet_id)
                return UnsubackReceived(packet_id)
            case Pubrel():
                error = self._incoming_pubrel(packet)
                return None if error is None else self._violation(error)
            case Pingresp():
                return PingResponse()
            case Connack(session_present=session_present, return_code=return_code):
                return Connacked(session_present, return_code)
        raise AssertionError(f"no handler for {packet!r}")  # the table admits nothing else

    def _violation(self, error: ProtocolError) -> ProtocolViolation:
        self._state = ClientState.CLOSED
        return ProtocolViolation(error)
