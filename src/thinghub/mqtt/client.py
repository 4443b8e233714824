"""The client's side of one MQTT 3.1.1 connection (sans-IO): ClientSession.

Used by the simulator, the load generator and the tests; the devices themselves run the
Azure SDK. How a session is driven and how its transitions work is in states.py; what the
caller is told is in events.py. Publish, subscribe and unsubscribe share one packet id space
(§2.3.1-2), and may be pipelined behind the CONNECT before the CONNACK arrives (§3.1.4).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._connection import Connection
from .codec import MAX_PACKET_BYTES, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    ClientEvent,
    Connacked,
    PingResponse,
    ProtocolViolation,
    PubackReceived,
    SubackReceived,
    UnsubackReceived,
)
from .packets import (
    Connack,
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
    Will,
)
from .states import (
    CLIENT_TRANSITIONS,
    REFUSED,
    ClientState,
    Trigger,
    after_local_call,
    unexpected_from_server,
)

__all__ = ["ClientSession"]


class ClientSession(Connection):
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
        self._state = after_local_call(CLIENT_TRANSITIONS, self._state, call)

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
            raise LocalProtocolError(f"publish QoS {qos!r}: this client sends QoS 0 or 1 only")
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
            except RemoteProtocolError as exc:
                return self._violation(exc)
            if packet is None:
                return None
            trigger: Trigger = type(packet)
            if isinstance(packet, Connack) and packet.return_code:
                trigger = REFUSED
            new_state = CLIENT_TRANSITIONS.get((state, trigger))
            if new_state is None:
                return self._violation(unexpected_from_server(state, packet))
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
                    return self._violation(
                        RemoteProtocolError(f"SUBACK for unknown id {packet_id}")
                    )
                if expected != len(codes):
                    return self._violation(
                        RemoteProtocolError(f"SUBACK has {len(codes)} codes for {expected} filters")
                    )
                return SubackReceived(packet_id, codes)
            case Unsuback(packet_id=packet_id):
                if packet_id not in self._pending_unsubscribes:
                    return self._violation(
                        RemoteProtocolError(f"UNSUBACK for unknown id {packet_id}")
                    )
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

    def _violation(self, error: RemoteProtocolError) -> ProtocolViolation:
        self._state = ClientState.CLOSED
        return ProtocolViolation(error)
