"""ServerSession (mqtt/server.py): answering a client, in-flight window, redelivery, keep-alive."""

from __future__ import annotations

import pytest

from tests.unit.mqtt._pair import (
    C2D,
    DEVICE,
    TELEMETRY,
    connected_pair,
    only_violation,
    packets,
    server_events,
    to_client,
    to_server,
)
from thinghub.mqtt import (
    MAX_INFLIGHT,
    ClientSession,
    Connack,
    Connect,
    ConnectRequested,
    LocalProtocolError,
    PingReceived,
    PingResponse,
    ProtocolViolation,
    Puback,
    PubackReceived,
    Pubcomp,
    Publish,
    PublishReceived,
    Pubrec,
    Pubrel,
    ServerSession,
    ServerState,
    SubackReceived,
    Subscribe,
    SubscribeRequested,
    UnsubackReceived,
    Unsubscribe,
    UnsubscribeRequested,
    encode,
)


def test_subscribe_and_unsubscribe() -> None:
    client, server = connected_pair()
    packet_id = client.subscribe([(C2D, 1), ("$iothub/methods/POST/#", 0)])
    [event] = to_server(client, server)
    assert event == SubscribeRequested(
        Subscribe(packet_id, ((C2D, 1), ("$iothub/methods/POST/#", 0)))
    )
    with pytest.raises(LocalProtocolError, match="needs 2 return codes"):
        server.suback(packet_id, [1])
    with pytest.raises(LocalProtocolError, match="awaits a SUBACK"):
        server.suback(packet_id + 1, [1, 0])
    server.suback(packet_id, [1, 0x80])
    assert to_client(server, client) == [SubackReceived(packet_id, (1, 0x80))]

    unsub_id = client.unsubscribe([C2D])
    assert unsub_id != packet_id
    assert to_server(client, server) == [UnsubscribeRequested(Unsubscribe(unsub_id, (C2D,)))]
    server.unsuback(unsub_id)
    with pytest.raises(LocalProtocolError, match="awaits an UNSUBACK"):
        server.unsuback(unsub_id)
    assert to_client(server, client) == [UnsubackReceived(unsub_id)]


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
    with pytest.raises(LocalProtocolError, match="QoS 0 or 1"):
        server.publish("a", b"", 2)
    with pytest.raises(LocalProtocolError, match="topic"):
        server.publish("a/#", b"", 0)
    with pytest.raises(LocalProtocolError, match="topic"):
        server.publish("a/#", b"", 1)
    server.close()
    with pytest.raises(LocalProtocolError, match="CLOSED"):
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

    with pytest.raises(LocalProtocolError, match="already in flight"):
        server2.redeliver([unacked[0]])
    with pytest.raises(LocalProtocolError, match="QoS 1"):
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


def test_pubacks_answers_a_batch_in_order_as_puback_would() -> None:
    _, server = connected_pair()
    qos2 = Publish("a", b"x", 2, packet_id=9)
    for packet_id in (1, 65535):
        server.receive_data(encode(Publish("a", b"x", 1, packet_id=packet_id)), 0.0)
    server.receive_data(encode(qos2), 0.0)
    assert len(server_events(server)) == 3
    server.pubacks([1, 9, 65535])
    sent = server.data_to_send()
    assert packets(sent) == [Puback(1), Pubrec(9), Puback(65535)]
    server.puback(1)
    server.puback(65535)
    assert server.data_to_send() == encode(Puback(1)) + encode(Puback(65535))
    with pytest.raises(LocalProtocolError, match="not in 1..65535"):
        server.pubacks([0])
    with pytest.raises(LocalProtocolError, match="not in 1..65535"):
        server.pubacks([65536])


def test_pubrel_before_pubrec_is_aonly_violation() -> None:
    _, server = connected_pair()
    server.receive_data(encode(Publish("a", b"x", 2, packet_id=9)) + encode(Pubrel(9)), 0.0)
    [published, violation] = server_events(server)
    assert isinstance(violation, ProtocolViolation)
    assert "§4.3.3" in violation.error.reason


def test_ping() -> None:
    client, server = connected_pair()
    client.ping()
    assert to_server(client, server) == [PingReceived()]
    assert to_client(server, client) == [PingResponse()]


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
    violation = only_violation(server_events(server))
    assert violation.error.connack_code == code
    assert packets(server.data_to_send()) == [Connack(False, code)]
    assert server.state is ServerState.CLOSED


def test_malformed_connect_is_closed_without_connack() -> None:
    server = ServerSession()
    server.receive_data(b"\x10\x03\x00\x01M", 0.0)
    assert only_violation(server_events(server)).error.connack_code is None
    assert server.data_to_send() == b""


def test_connect_with_the_reserved_flag_is_refused_before_any_event() -> None:
    """§3.1.2-3: the server must validate the reserved flag and disconnect (no CONNACK)."""
    data = bytearray(encode(Connect("dev", "hub/dev/?api-version=1", b"sas", 60, False)))
    data[9] |= 0x01  # fixed header (2) + protocol name (6) + level (1): the connect flags
    server = ServerSession()
    server.receive_data(bytes(data), 0.0)
    events = server_events(server)
    assert not any(isinstance(e, ConnectRequested) for e in events)
    assert "§3.1.2-3" in only_violation(events).error.reason
    assert server.data_to_send() == b""
    assert server.state is ServerState.CLOSED


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
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        server.puback(1)
