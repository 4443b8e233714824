"""ClientSession (mqtt/client.py): publishing, answering the server, misuse and violations."""

from __future__ import annotations

import pytest

from tests.unit.mqtt._pair import (
    TELEMETRY,
    client_events,
    connected_pair,
    packets,
    to_client,
    to_server,
)
from thinghub.mqtt import (
    ClientSession,
    ClientState,
    Connect,
    LocalProtocolError,
    Pingreq,
    ProtocolViolation,
    PubackReceived,
    Pubcomp,
    Publish,
    PublishReceived,
    Pubrec,
    Pubrel,
    Suback,
    encode,
)


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


def test_client_answers_qos2_from_the_server() -> None:
    client, _ = connected_pair()
    client.receive_data(encode(Publish("a", b"x", 2, packet_id=4)))
    assert client_events(client) == [PublishReceived(Publish("a", b"x", 2, packet_id=4))]
    assert packets(client.data_to_send()) == [Pubrec(4)]
    client.receive_data(encode(Pubrel(4)))
    assert client_events(client) == []
    assert packets(client.data_to_send()) == [Pubcomp(4)]


def test_client_misuse() -> None:
    client = ClientSession()
    with pytest.raises(LocalProtocolError, match="IDLE"):
        client.publish("a", b"")
    with pytest.raises(LocalProtocolError, match="QoS 0 or 1"):
        client.publish("a", b"", 2)
    with pytest.raises(LocalProtocolError, match="clean_session"):
        client.connect("", clean_session=False)
    assert client.state is ClientState.IDLE  # a refused connect() changes nothing
    client.connect("c")
    with pytest.raises(LocalProtocolError, match="connect"):
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
