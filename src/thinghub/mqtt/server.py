"""The server's side of one MQTT 3.1.1 connection (sans-IO): ServerSession.

How a session is driven and how its transitions work is in states.py; what the adapter is
told is in events.py. The server adds three things of its own:

- accept() / reject() answer the CONNECT the adapter was shown (ConnectRequested), after it
  authenticated; nothing behind the CONNECT is decoded before (§3.1.4-5).
- At most `max_inflight` outgoing QoS 1 publishes await their PUBACK; the rest wait in a FIFO
  queue (not yet encoded, no packet id) and go out as PUBACKs arrive. After the connection
  ends, inflight() (sent, unacknowledged, with their ids) and queued() (never sent) hold what
  the adapter must deliver on the client's next connection: redeliver() takes both, re-sending
  the former with DUP set and their ids unchanged (§4.4, §3.3.1-1) and publishing the latter
  afresh.
- The keep-alive clock: `now` is an argument of receive_data(), and keepalive_deadline /
  is_expired(now) say when the client has been silent too long (§3.1.2-24).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from ._connection import MAX_PACKET_ID, Connection
from .codec import MAX_PACKET_BYTES, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    ConnectRequested,
    DisconnectRequested,
    PingReceived,
    ProtocolViolation,
    PubackReceived,
    ServerEvent,
    SubscribeRequested,
    UnsubscribeRequested,
)
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
    Publish,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from .states import SERVER_TRANSITIONS, ServerState, after_local_call, unexpected_from_client

# A PUBACK's fixed header: type 4, remaining length 2 (§3.4); the packet id follows.
_PUBACK_HEAD = b"\x40\x02"

__all__ = ["KEEPALIVE_GRACE_FACTOR", "MAX_INFLIGHT", "ServerSession"]

#: Outgoing QoS 1 publishes awaiting PUBACK per connection, in messages. Bounds what one slow
#: device pins in memory and what must be redelivered after a drop; paho (under the Azure SDK)
#: itself keeps at most 20 in flight, so 64 never throttles a well-behaved device.
MAX_INFLIGHT = 64

#: The server closes a connection silent for this many keep-alive periods (§3.1.2-24).
KEEPALIVE_GRACE_FACTOR = 1.5


class ServerSession(Connection):
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
        if not 1 <= max_inflight < MAX_PACKET_ID:
            raise ValueError(f"max_inflight {max_inflight} is not in 1..65534")
        super().__init__(max_packet_bytes)
        self._state = ServerState.AWAIT_CONNECT
        self._connect: Connect | None = None
        self._last_receive: float | None = None
        self._max_inflight = max_inflight
        self._queue: deque[Publish] | None = None  # made when first needed (most never do)
        self._pending_subscribes: dict[int, int] = {}  # packet id -> number of filters
        self._pending_unsubscribes: dict[int, None] = {}  # packet ids (a dict is smaller)

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
        return () if self._queue is None else tuple(self._queue)

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
            except RemoteProtocolError as exc:
                return self._violation(exc)
            if packet is None:
                return None
            new_state = SERVER_TRANSITIONS.get((state, type(packet)))
            if new_state is None:
                return self._violation(unexpected_from_client(state, packet))
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
                self._pending_unsubscribes[packet_id] = None
                return UnsubscribeRequested(packet)
            case Connect():
                self._connect = packet
                return ConnectRequested(packet)
            case Disconnect():
                return DisconnectRequested()
        raise AssertionError(f"no handler for {packet!r}")  # the table admits nothing else

    def _violation(self, error: RemoteProtocolError) -> ProtocolViolation:
        # Only the first packet can be answered with a CONNACK (§3.2.0-1, §3.1.2-2, §3.1.3-9).
        if self._state is ServerState.AWAIT_CONNECT and error.connack_code is not None:
            self._send(Connack(False, error.connack_code))
        self._state = ServerState.CLOSED
        return ProtocolViolation(error)

    # -- local calls --

    def _transition(self, call: str) -> None:
        self._state = after_local_call(SERVER_TRANSITIONS, self._state, call)

    def accept(self, session_present: bool = False) -> None:
        """Answer the CONNECT with CONNACK 0 and start processing the client's packets.

        Args:
            session_present: Whether stored session state for this client id is being resumed.
                Must be False for a clean-session CONNECT (§3.2.2-1).
        """
        connect = self._connect
        if session_present and connect is not None and connect.clean_session:
            raise LocalProtocolError("session_present with a clean-session CONNECT (§3.2.2-1)")
        self._transition("accept")
        self._send(Connack(session_present, ConnackCode.ACCEPTED))
        if connect is not None and connect.password is not None:
            # The credentials were checked: they need not live as long as the connection.
            self._connect = replace(connect, password=None)

    def reject(self, return_code: int) -> None:
        """Answer the CONNECT with a non-zero CONNACK code (1-5); the session is CLOSED."""
        if (
            not ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION
            <= return_code
            <= ConnackCode.NOT_AUTHORIZED
        ):
            raise LocalProtocolError(
                f"CONNACK refusal code {return_code} is not in 1..5 (§3.2.2.3)"
            )
        self._transition("reject")
        self._send(Connack(False, return_code))  # session present 0 on refusal (§3.2.2-4)

    def publish(self, topic: str, payload: bytes, qos: int = 0, *, retain: bool = False) -> None:
        """Send a message to the client, or queue it while MAX_INFLIGHT publishes await PUBACK.

        Raises:
            LocalProtocolError: Bad topic or QoS (only 0 and 1 are sent), or not CONNECTED
                (before accept(), or once CLOSED): a bug in the caller. An adapter checks
                that its connection is open before publishing.
        """
        self._transition("publish")
        if qos == 1:
            publish = Publish(topic, payload, 1, retain)
            if self._queue or len(self._inflight) >= self._max_inflight:
                encode(replace(publish, packet_id=1))  # validate now, not when released
                if self._queue is None:
                    self._queue = deque()
                self._queue.append(publish)
            else:
                self._send_publish(publish)
        elif qos == 0:
            self._send_publish(Publish(topic, payload, 0, retain))
        else:
            raise LocalProtocolError(f"publish QoS {qos!r}: this server sends QoS 0 or 1 only")

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
                raise LocalProtocolError(f"only QoS 1 publishes are redelivered: {publish!r}")
            if packet_id is None:
                self.publish(publish.topic, publish.payload, 1, retain=publish.retain)
                continue
            if packet_id in self._inflight:
                raise LocalProtocolError(f"packet id {packet_id} is already in flight")
            if len(self._inflight) >= MAX_PACKET_ID - 1:
                raise LocalProtocolError("too many publishes to redeliver")
            publish = replace(publish, dup=True)
            self._send(publish)
            self._inflight[packet_id] = publish
            self._next_packet_id = packet_id % MAX_PACKET_ID + 1  # fresh ids continue after

    def _release_queued(self) -> None:
        queue = self._queue
        while queue and len(self._inflight) < self._max_inflight:
            self._send_publish(queue.popleft())

    def puback(self, packet_id: int) -> None:
        """Acknowledge the client's QoS 1 publish (PUBACK), or QoS 2 publish (PUBREC)."""
        self._transition("puback")
        self._answer_publish(packet_id)

    def pubacks(self, packet_ids: Iterable[int]) -> None:
        """puback() of each id, in order: one state check for all, and each PUBACK's bytes
        made without a packet object (a listener acknowledges a batch of them at once)."""
        self._transition("puback")
        qos2 = self._qos2
        out = self._outgoing
        for packet_id in packet_ids:
            if 0 < packet_id <= MAX_PACKET_ID and not (qos2 and qos2.get(packet_id) is False):
                out.append(_PUBACK_HEAD + packet_id.to_bytes(2, "big"))
            else:  # a QoS 2 publish (PUBREC), or a bad id (LocalProtocolError)
                self._answer_publish(packet_id)

    def suback(self, packet_id: int, return_codes: Iterable[int]) -> None:
        """Answer a SUBSCRIBE: per filter, in order, the granted QoS or SUBACK_FAILURE (0x80)."""
        self._transition("suback")
        codes = tuple(return_codes)
        expected = self._pending_subscribes.get(packet_id)
        if expected is None:
            raise LocalProtocolError(f"no SUBSCRIBE with packet id {packet_id} awaits a SUBACK")
        if len(codes) != expected:
            raise LocalProtocolError(
                f"SUBACK needs {expected} return codes, got {len(codes)} (§3.8.4-5)"
            )
        for code in codes:
            if code not in (0, 1, 2, SUBACK_FAILURE):
                raise LocalProtocolError(f"SUBACK return code {code!r} (§3.9.3-2)")
        del self._pending_subscribes[packet_id]
        self._send(Suback(packet_id, codes))

    def unsuback(self, packet_id: int) -> None:
        """Answer an UNSUBSCRIBE (§3.10.4-4)."""
        self._transition("unsuback")
        if packet_id not in self._pending_unsubscribes:
            raise LocalProtocolError(
                f"no UNSUBSCRIBE with packet id {packet_id} awaits an UNSUBACK"
            )
        del self._pending_unsubscribes[packet_id]
        self._send(Unsuback(packet_id))

    def close(self) -> None:
        """Mark the connection closed (socket gone, keep-alive expired, taken over)."""
        self._state = ServerState.CLOSED
