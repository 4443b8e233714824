"""Session state machines: a ClientSession and a ServerSession talking through bytes only."""

from __future__ import annotations

import pytest

from thinghub.mqtt import (
    MAX_INFLIGHT,
    ClientEvent,
    ClientSession,
    ClientState,
    Connack,
    Connacked,
    Connect,
    ConnectRequested,
    DisconnectRequested,
    Packet,
    PingReceived,
    Pingreq,
    PingResponse,
    ProtocolViolation,
    Puback,
    PubackReceived,
    Pubcomp,
    Publish,
    PublishReceived,
    Pubrec,
    Pubrel,
    ServerEvent,
    ServerSession,
    ServerState,
    Suback,
    SubackReceived,
    Subscribe,
    SubscribeRequested,
    UnsubackReceived,
    Unsubscribe,
    UnsubscribeRequested,
    decode,
    encode,
)

DEVICE = "thermo-1"
C2D = f"devices/{DEVICE}/messages/devicebound/#"
TELEMETRY = f"devices/{DEVICE}/messages/events/"


def server_events(server: ServerSession) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    while (event := server.next_event()) is not None:
        events.append(event)
    return events


def client_events(client: ClientSession) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


def to_server(client: ClientSession, server: ServerSession, now: float = 0.0) -> list[ServerEvent]:
    """Carry the client's pending bytes to the server and collect what happened."""
    server.receive_data(client.data_to_send(), now)
    return server_events(server)


def to_client(server: ServerSession, client: ClientSession) -> list[ClientEvent]:
    client.receive_data(server.data_to_send())
    return client_events(client)


def packets(data: bytes) -> list[Packet]:
    out: list[Packet] = []
    while data:
        result = decode(data)
        assert result is not None
        packet, size = result
        out.append(packet)
        data = data[size:]
    return out


def connected_pair(
    *, keepalive_s: int = 60, max_inflight: int = MAX_INFLIGHT, auto_ack: bool = True
) -> tuple[ClientSession, ServerSession]:
    client = ClientSession(auto_ack=auto_ack)
    server = ServerSession(max_inflight=max_inflight)
    client.connect(DEVICE, "host/thermo-1/?api-version=2020-09-30", b"sas", keepalive_s, False)
    [event] = to_server(client, server)
    assert isinstance(event, ConnectRequested)
    server.accept()
    assert to_client(server, client) == [Connacked(False, 0)]
    return client, server


# --- CONNECT ------------------------------------------------------------------------------------


def test_connect_and_accept() -> None:
    client = ClientSession()
    server = ServerSession()
    assert (client.state, server.state) == (ClientState.IDLE, ServerState.AWAIT_CONNECT)
    client.connect(DEVICE, "user", b"pw", 60, False)
    assert to_server(client, server) == [
        ConnectRequested(Connect(DEVICE, "user", b"pw", 60, False))
    ]
    assert (client.state, server.state) == (ClientState.AWAIT_CONNACK, ServerState.AWAIT_ACCEPT)
    assert server.connect == Connect(DEVICE, "user", b"pw", 60, False)
    assert server.data_to_send() == b""  # nothing is answered until the adapter decides
    server.accept(session_present=True)
    assert to_client(server, client) == [Connacked(True, 0)]
    assert (client.state, server.state) == (ClientState.CONNECTED, ServerState.CONNECTED)


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_reject_closes_both_sides(code: int) -> None:
    client = ClientSession()
    server = ServerSession()
    client.connect(DEVICE)
    to_server(client, server)
    server.reject(code)
    assert server.state is ServerState.CLOSED
    assert to_client(server, client) == [Connacked(False, code)]
    assert client.state is ClientState.CLOSED


def test_packets_pipelined_behind_connect_wait_for_accept() -> None:
    client = ClientSession()
    server = ServerSession()
    client.connect(DEVICE, clean_session=False)
    client.publish(TELEMETRY, b"early", 1)  # §3.1.4: allowed before CONNACK
    [event] = to_server(client, server)
    assert isinstance(event, ConnectRequested)
    assert server.next_event() is None  # paused until accept/reject
    server.accept()
    [published] = server_events(server)
    assert isinstance(published, PublishReceived)
    assert published.publish.payload == b"early"


def test_packets_pipelined_behind_a_rejected_connect_are_never_processed() -> None:
    client = ClientSession()
    server = ServerSession()
    client.connect(DEVICE)
    client.subscribe([(C2D, 1)])
    to_server(client, server)
    server.reject(5)
    assert server_events(server) == []  # §3.1.4-5
    assert packets(server.data_to_send()) == [Connack(False, 5)]


def test_accept_rules() -> None:
    client = ClientSession()
    server = ServerSession()
    with pytest.raises(ValueError, match="accept"):
        server.accept()  # no CONNECT yet
    client.connect(DEVICE, clean_session=True)
    to_server(client, server)
    with pytest.raises(ValueError, match="§3.2.2-1"):
        server.accept(session_present=True)
    with pytest.raises(ValueError, match="1..5"):
        server.reject(0)
    server.accept()
    with pytest.raises(ValueError, match="accept"):
        server.accept()
    with pytest.raises(ValueError, match="reject"):
        server.reject(4)


# --- Subscribing --------------------------------------------------------------------------------


def test_subscribe_and_unsubscribe() -> None:
    client, server = connected_pair()
    packet_id = client.subscribe([(C2D, 1), ("$iothub/methods/POST/#", 0)])
    [event] = to_server(client, server)
    assert event == SubscribeRequested(
        Subscribe(packet_id, ((C2D, 1), ("$iothub/methods/POST/#", 0)))
    )
    with pytest.raises(ValueError, match="needs 2 return codes"):
        server.suback(packet_id, [1])
    with pytest.raises(ValueError, match="awaits a SUBACK"):
        server.suback(packet_id + 1, [1, 0])
    server.suback(packet_id, [1, 0x80])
    assert to_client(server, client) == [SubackReceived(packet_id, (1, 0x80))]

    unsub_id = client.unsubscribe([C2D])
    assert unsub_id != packet_id
    assert to_server(client, server) == [UnsubscribeRequested(Unsubscribe(unsub_id, (C2D,)))]
    server.unsuback(unsub_id)
    with pytest.raises(ValueError, match="awaits an UNSUBACK"):
        server.unsuback(unsub_id)
    assert to_client(server, client) == [UnsubackReceived(unsub_id)]


# --- Publishing ---------------------------------------------------------------------------------


def test_client_publishes_qos0() -> None:
    client, server = connected_pair()
    assert client.publish(TELEMETRY, b"{}") is None
    assert to_server(client, server) == [PublishReceived(Publish(TELEMETRY, b"{}"))]
    assert server.data_to_send() == b""


def test_client_publishes_qos1_and_server_acks() -> None:
    client, server = connected_pair()
    packet_id = client.publish(TELEMETRY, b'{"t": 1}', 1)
    assert packet_id is not None
    assert len(client.inflight()) == 1
    [event] = to_server(client, server)
    assert event == PublishReceived(Publish(TELEMETRY, b'{"t": 1}', 1, False, False, packet_id))
    assert server.data_to_send() == b""  # the adapter acks once the message is stored
    server.puback(packet_id)
    [acked] = to_client(server, client)
    assert acked == PubackReceived(
        packet_id, Publish(TELEMETRY, b'{"t": 1}', 1, packet_id=packet_id)
    )
    assert client.inflight() == ()


def test_server_publishes_qos0_and_qos1() -> None:
    client, server = connected_pair()
    server.publish("devices/thermo-1/messages/devicebound/%24.mid=1", b"hello", 1)
    server.publish("devices/thermo-1/messages/devicebound/", b"fire-and-forget", 0)
    [sent] = server.inflight()
    assert sent.packet_id == 1
    events = to_client(server, client)
    assert events == [
        PublishReceived(sent),
        PublishReceived(Publish("devices/thermo-1/messages/devicebound/", b"fire-and-forget")),
    ]
    # The client auto-acks; the server reports the publish that was acknowledged.
    assert to_server(client, server) == [PubackReceived(1, sent)]
    assert server.inflight() == ()


def test_server_refuses_bad_publishes() -> None:
    _, server = connected_pair()
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        server.publish("a", b"", 2)
    with pytest.raises(ValueError, match="topic"):
        server.publish("a/#", b"", 0)
    with pytest.raises(ValueError, match="topic"):
        server.publish("a/#", b"", 1)
    server.close()
    with pytest.raises(ValueError, match="CLOSED"):
        server.publish("a", b"", 0)


def test_inflight_limit_queues_and_releases_in_order() -> None:
    client, server = connected_pair(max_inflight=2, auto_ack=False)
    for i in range(5):
        server.publish("c2d", str(i).encode(), 1)
    assert [p.payload for p in server.inflight()] == [b"0", b"1"]
    assert [p.payload for p in server.queued()] == [b"2", b"3", b"4"]
    assert all(p.packet_id is None for p in server.queued())
    received = to_client(server, client)
    assert [e.publish.payload for e in received if isinstance(e, PublishReceived)] == [b"0", b"1"]

    client.puback(1)
    [acked] = to_server(client, server)
    assert isinstance(acked, PubackReceived)
    assert acked.publish.payload == b"0"
    # The freed slot went to the oldest queued publish, with a fresh packet id.
    [released] = packets(server.data_to_send())
    assert released == Publish("c2d", b"2", 1, packet_id=3)
    assert [p.payload for p in server.queued()] == [b"3", b"4"]

    client.puback(2)
    client.puback(3)
    to_server(client, server)
    assert [p.payload for p in server.inflight()] == [b"3", b"4"]
    assert server.queued() == ()


def test_default_inflight_limit() -> None:
    client, server = connected_pair(auto_ack=False)
    for i in range(MAX_INFLIGHT + 3):
        server.publish("c2d", b"%d" % i, 1)
    assert len(server.inflight()) == MAX_INFLIGHT
    assert len(server.queued()) == 3
    assert len(to_client(server, client)) == MAX_INFLIGHT


def test_packet_ids_wrap_and_skip_those_in_flight() -> None:
    client, server = connected_pair(auto_ack=False)
    server.publish("c2d", b"held", 1)  # id 1 stays in flight throughout
    to_client(server, client)
    for first in range(2, 65536, 50):
        batch = range(first, min(first + 50, 65536))
        for _ in batch:
            server.publish("c2d", b"", 1)
        assert [p.packet_id for p in server.inflight()] == [1, *batch]
        server.receive_data(b"".join(encode(Puback(packet_id)) for packet_id in batch), 0.0)
        assert len(server_events(server)) == len(batch)
    server.data_to_send()
    server.publish("c2d", b"wrapped", 1)
    assert [p.packet_id for p in server.inflight()] == [1, 2]  # 65535 wraps to 1, 1 is taken


def test_duplicate_or_unknown_puback_is_ignored() -> None:
    client, server = connected_pair()
    server.receive_data(encode(Puback(77)), 0.0)
    assert server_events(server) == []
    assert server.state is ServerState.CONNECTED


def test_redeliver_inflight_on_the_next_connection() -> None:
    client, server = connected_pair(auto_ack=False)
    server.publish("c2d/1", b"one", 1)
    server.publish("c2d/2", b"two", 1)
    to_client(server, client)
    server.close()  # the connection dropped before the PUBACKs
    unacked = server.inflight()
    assert [p.packet_id for p in unacked] == [1, 2]

    client2, server2 = connected_pair(auto_ack=False)
    server2.redeliver(unacked)
    server2.publish("c2d/3", b"three", 1)
    received = to_client(server2, client2)
    assert [e.publish for e in received if isinstance(e, PublishReceived)] == [
        Publish("c2d/1", b"one", 1, dup=True, packet_id=1),  # §4.4: DUP, same id
        Publish("c2d/2", b"two", 1, dup=True, packet_id=2),
        Publish("c2d/3", b"three", 1, packet_id=3),  # a fresh id skips the redelivered ones
    ]
    client2.puback(2)
    [acked] = to_server(client2, server2)
    assert acked == PubackReceived(2, Publish("c2d/2", b"two", 1, dup=True, packet_id=2))

    with pytest.raises(ValueError, match="already in flight"):
        server2.redeliver([unacked[0]])
    with pytest.raises(ValueError, match="QoS 1"):
        server2.redeliver([Publish("x", b"")])


def test_redeliver_takes_inflight_and_queued_together() -> None:
    client, server = connected_pair(max_inflight=2, auto_ack=False)
    for i in range(4):
        server.publish("c2d", b"%d" % i, 1)
    to_client(server, client)
    server.close()
    leftovers = server.inflight() + server.queued()
    assert [(p.payload, p.packet_id) for p in leftovers] == [
        (b"0", 1),
        (b"1", 2),
        (b"2", None),
        (b"3", None),
    ]

    client2, server2 = connected_pair(max_inflight=2, auto_ack=False)
    server2.redeliver(leftovers)
    assert [p.payload for p in server2.inflight()] == [b"0", b"1"]
    assert [p.payload for p in server2.queued()] == [b"2", b"3"]
    received = [e.publish for e in to_client(server2, client2) if isinstance(e, PublishReceived)]
    assert [(p.payload, p.dup, p.packet_id) for p in received] == [(b"0", True, 1), (b"1", True, 2)]
    client2.puback(1)
    to_server(client2, server2)
    [released] = packets(server2.data_to_send())
    assert released == Publish("c2d", b"2", 1, packet_id=3)


# --- Incoming QoS 2 -----------------------------------------------------------------------------


def test_incoming_qos2_is_reported_once() -> None:
    _, server = connected_pair()
    qos2 = Publish("a", b"x", 2, packet_id=9)
    server.receive_data(encode(qos2), 0.0)
    assert server_events(server) == [PublishReceived(qos2)]
    server.receive_data(encode(Publish("a", b"x", 2, dup=True, packet_id=9)), 0.0)
    assert server_events(server) == []  # a duplicate before our answer
    server.puback(9)
    assert packets(server.data_to_send()) == [Pubrec(9)]
    server.receive_data(encode(Publish("a", b"x", 2, dup=True, packet_id=9)), 0.0)
    assert server_events(server) == []
    assert packets(server.data_to_send()) == [Pubrec(9)]  # answered again, not re-reported
    server.receive_data(encode(Pubrel(9)), 0.0)
    assert server_events(server) == []
    assert packets(server.data_to_send()) == [Pubcomp(9)]
    server.receive_data(encode(qos2), 0.0)
    assert server_events(server) == [PublishReceived(qos2)]  # id 9 is free again


def test_pubrel_before_pubrec_is_a_violation() -> None:
    _, server = connected_pair()
    server.receive_data(encode(Publish("a", b"x", 2, packet_id=9)) + encode(Pubrel(9)), 0.0)
    [published, violation] = server_events(server)
    assert isinstance(violation, ProtocolViolation)
    assert "§4.3.3" in violation.error.reason


def test_client_answers_qos2_from_the_server() -> None:
    client, _ = connected_pair()
    client.receive_data(encode(Publish("a", b"x", 2, packet_id=4)))
    assert client_events(client) == [PublishReceived(Publish("a", b"x", 2, packet_id=4))]
    assert packets(client.data_to_send()) == [Pubrec(4)]
    client.receive_data(encode(Pubrel(4)))
    assert client_events(client) == []
    assert packets(client.data_to_send()) == [Pubcomp(4)]


# --- Ping, disconnect, keep-alive ---------------------------------------------------------------


def test_ping() -> None:
    client, server = connected_pair()
    client.ping()
    assert to_server(client, server) == [PingReceived()]
    assert to_client(server, client) == [PingResponse()]


def test_disconnect() -> None:
    client, server = connected_pair()
    client.disconnect()
    assert client.state is ClientState.CLOSED
    assert to_server(client, server) == [DisconnectRequested()]
    assert server.state is ServerState.CLOSED
    server.receive_data(encode(Publish("late", b"")), 1.0)  # ignored once closed
    assert server.next_event() is None
    with pytest.raises(ValueError, match="CLOSED"):
        client.ping()


def test_keepalive_deadline() -> None:
    client = ClientSession()
    server = ServerSession()
    assert server.keepalive_deadline is None
    client.connect(DEVICE, keepalive_s=10)
    to_server(client, server, now=100.0)
    server.accept()
    assert server.keepalive_deadline == 115.0  # 1.5 x keep-alive (§3.1.2-24)
    assert not server.is_expired(115.0)
    assert server.is_expired(115.5)
    client.ping()
    to_server(client, server, now=110.0)
    assert server.keepalive_deadline == 125.0
    assert not server.is_expired(120.0)
    server.close()
    assert server.keepalive_deadline is None
    assert not server.is_expired(1e9)


def test_keepalive_zero_never_expires() -> None:
    _, server = connected_pair(keepalive_s=0)
    assert server.keepalive_deadline is None
    assert not server.is_expired(1e12)


# --- Violations ---------------------------------------------------------------------------------


def _violation(events: list[ServerEvent]) -> ProtocolViolation:
    assert len(events) == 1
    [event] = events
    assert isinstance(event, ProtocolViolation)
    return event


@pytest.mark.parametrize(
    "first",
    [Publish("a", b""), Subscribe(1, (("a", 0),)), Puback(1), encode(Connack(False, 0))],
    ids=["PUBLISH", "SUBSCRIBE", "PUBACK", "CONNACK"],
)
def test_first_packet_must_be_connect(first: Packet | bytes) -> None:
    server = ServerSession()
    server.receive_data(first if isinstance(first, bytes) else encode(first), 0.0)
    violation = _violation(server_events(server))
    assert "§3.1.0-1" in violation.error.reason
    assert server.state is ServerState.CLOSED
    assert server.data_to_send() == b""  # no CONNACK for a non-CONNECT


def test_second_connect_is_a_violation() -> None:
    _, server = connected_pair()
    server.receive_data(encode(Connect(DEVICE)), 0.0)
    assert "§3.1.0-2" in _violation(server_events(server)).error.reason
    assert server.state is ServerState.CLOSED


@pytest.mark.parametrize(
    ("connect", "code"),
    [
        (b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x02id", 1),  # MQTT 5 (§3.1.2-2)
        (encode(Connect("", clean_session=True)).replace(b"\x02\x00\x3c", b"\x00\x00\x3c"), 2),
        (encode(Connect("x" * 300)), 2),  # over MAX_CLIENT_ID_BYTES
    ],
    ids=["protocol level", "empty id, persistent", "id too long"],
)
def test_bad_connect_is_answered_with_its_connack_code(connect: bytes, code: int) -> None:
    server = ServerSession()
    server.receive_data(connect, 0.0)
    violation = _violation(server_events(server))
    assert violation.error.connack_code == code
    assert packets(server.data_to_send()) == [Connack(False, code)]
    assert server.state is ServerState.CLOSED


def test_malformed_connect_is_closed_without_connack() -> None:
    server = ServerSession()
    server.receive_data(b"\x10\x03\x00\x01M", 0.0)
    assert _violation(server_events(server)).error.connack_code is None
    assert server.data_to_send() == b""


def test_connect_with_the_reserved_flag_is_refused_before_any_event() -> None:
    """§3.1.2-3: the server must validate the reserved flag and disconnect (no CONNACK)."""
    data = bytearray(encode(Connect("dev", "hub/dev/?api-version=1", b"sas", 60, False)))
    data[9] |= 0x01  # fixed header (2) + protocol name (6) + level (1): the connect flags
    server = ServerSession()
    server.receive_data(bytes(data), 0.0)
    events = server_events(server)
    assert not any(isinstance(e, ConnectRequested) for e in events)
    assert "§3.1.2-3" in _violation(events).error.reason
    assert server.data_to_send() == b""
    assert server.state is ServerState.CLOSED


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (Suback(1, (0,)), "only a server sends"),
        (Connack(False, 0), "only a server sends"),
        (Pubrec(1), "never publishes with QoS 2"),
        (Pubcomp(1), "never publishes with QoS 2"),
    ],
    ids=["SUBACK", "CONNACK", "PUBREC", "PUBCOMP"],
)
def test_server_bound_packets_in_the_wrong_direction(packet: Packet, reason: str) -> None:
    _, server = connected_pair()
    server.receive_data(encode(packet), 0.0)
    assert reason in _violation(server_events(server)).error.reason


def test_malformed_bytes_mid_session_close_it() -> None:
    client, server = connected_pair()
    client.publish(TELEMETRY, b"ok", 1)
    data = client.data_to_send() + b"\x36\x05\x00\x01a\x00\x01"  # then a QoS 3 PUBLISH
    server.receive_data(data, 0.0)
    first, second = server_events(server)
    assert isinstance(first, PublishReceived)
    assert isinstance(second, ProtocolViolation)
    assert "QoS 3" in second.error.reason
    assert server.data_to_send() == b""  # no CONNACK after the first packet
    server.receive_data(encode(Publish("a", b"")), 0.0)
    assert server.next_event() is None
    with pytest.raises(ValueError, match="CLOSED"):
        server.puback(1)


def test_packet_after_disconnect_in_the_same_chunk_is_ignored() -> None:
    client, server = connected_pair()
    client.disconnect()
    server.receive_data(client.data_to_send() + b"garbage", 0.0)
    assert server_events(server) == [DisconnectRequested()]


# --- Client side specifics ----------------------------------------------------------------------


def test_client_misuse() -> None:
    client = ClientSession()
    with pytest.raises(ValueError, match="IDLE"):
        client.publish("a", b"")
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        client.publish("a", b"", 2)
    with pytest.raises(ValueError, match="clean_session"):
        client.connect("", clean_session=False)
    assert client.state is ClientState.IDLE  # a refused connect() changes nothing
    client.connect("c")
    with pytest.raises(ValueError, match="connect"):
        client.connect("c")


def test_client_violations() -> None:
    client = ClientSession()
    client.connect("c")
    client.receive_data(encode(Publish("a", b"")))
    [event] = client_events(client)
    assert isinstance(event, ProtocolViolation)
    assert "§3.2.0-1" in event.error.reason
    assert client.state is ClientState.CLOSED

    client, _ = connected_pair()
    client.receive_data(encode(Suback(99, (0,))))
    [event] = client_events(client)
    assert isinstance(event, ProtocolViolation)
    assert "unknown id" in event.error.reason

    client, _ = connected_pair()
    packet_id = client.subscribe([("a", 0), ("b", 1)])
    client.receive_data(encode(Suback(packet_id, (0,))))
    [event] = client_events(client)
    assert isinstance(event, ProtocolViolation)

    client, _ = connected_pair()
    client.receive_data(encode(Connect("x")))
    [event] = client_events(client)
    assert isinstance(event, ProtocolViolation)
    assert "only a client sends" in event.error.reason


def test_client_packet_ids_are_shared_by_publish_and_subscribe() -> None:
    client, _ = connected_pair()
    ids = [
        client.publish("a", b"", 1),
        client.subscribe([("a", 1)]),
        client.unsubscribe(["a"]),
        client.publish("a", b"", 1),
    ]
    assert ids == [1, 2, 3, 4]


def test_data_to_send_keeps_order_and_drains() -> None:
    client, _ = connected_pair()
    client.publish("a", b"1")
    client.ping()
    client.publish("a", b"2", 1)
    assert packets(client.data_to_send()) == [
        Publish("a", b"1"),
        Pingreq(),
        Publish("a", b"2", 1, packet_id=1),
    ]
    assert client.data_to_send() == b""
