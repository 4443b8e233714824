"""Session events (mqtt/events.py): plain frozen data, and which side can report which."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from tests.unit.mqtt._pair import C2D, TELEMETRY, client_events, connected_pair, server_events
from thinghub.mqtt import (
    ClientEvent,
    Connacked,
    ConnectRequested,
    DisconnectRequested,
    PingReceived,
    PingResponse,
    ProtocolViolation,
    PubackReceived,
    Publish,
    PublishReceived,
    RemoteProtocolError,
    ServerEvent,
    SubackReceived,
    SubscribeRequested,
    UnsubackReceived,
    UnsubscribeRequested,
)

SERVER_EVENTS = {
    ConnectRequested,
    PublishReceived,
    SubscribeRequested,
    UnsubscribeRequested,
    PubackReceived,
    PingReceived,
    DisconnectRequested,
    ProtocolViolation,
}
CLIENT_EVENTS = {
    Connacked,
    PublishReceived,
    PubackReceived,
    SubackReceived,
    UnsubackReceived,
    PingResponse,
    ProtocolViolation,
}


def test_each_side_has_its_closed_set_of_events() -> None:
    assert set(get_args(ServerEvent)) == SERVER_EVENTS
    assert set(get_args(ClientEvent)) == CLIENT_EVENTS


def test_events_are_frozen_values() -> None:
    event = PublishReceived(Publish(TELEMETRY, b"x"))
    assert event == PublishReceived(Publish(TELEMETRY, b"x"))
    assert hash(event) == hash(PublishReceived(Publish(TELEMETRY, b"x")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.publish = Publish("other", b"")  # type: ignore[misc]
    for kind in SERVER_EVENTS | CLIENT_EVENTS:
        assert dataclasses.is_dataclass(kind)
        assert kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]


def test_a_whole_conversation_reports_only_each_sides_events() -> None:
    client, server = connected_pair()
    seen_by_server: list[ServerEvent] = []
    seen_by_client: list[ClientEvent] = []
    client.subscribe([(C2D, 1)])
    client.publish(TELEMETRY, b"t", 1)
    client.ping()
    server.receive_data(client.data_to_send(), 0.0)
    seen_by_server += server_events(server)
    subscribe = seen_by_server[0]
    assert isinstance(subscribe, SubscribeRequested)
    server.suback(subscribe.subscribe.packet_id, [1])
    telemetry = seen_by_server[1]
    assert isinstance(telemetry, PublishReceived) and telemetry.publish.packet_id is not None
    server.puback(telemetry.publish.packet_id)
    server.publish("devices/thermo-1/messages/devicebound/", b"c2d", 1)
    client.receive_data(server.data_to_send())
    seen_by_client += client_events(client)
    client.unsubscribe([C2D])
    client.disconnect()
    server.receive_data(client.data_to_send(), 1.0)
    seen_by_server += server_events(server)
    assert [type(e) for e in seen_by_server] == [
        SubscribeRequested,
        PublishReceived,
        PingReceived,
        PubackReceived,  # the client auto-acknowledged the C2D message
        UnsubscribeRequested,
        DisconnectRequested,
    ]
    assert [type(e) for e in seen_by_client] == [
        PingResponse,  # the session answered PINGREQ at once; the adapter answered the rest
        SubackReceived,
        PubackReceived,
        PublishReceived,
    ]
    assert all(type(e) in SERVER_EVENTS for e in seen_by_server)
    assert all(type(e) in CLIENT_EVENTS for e in seen_by_client)


def test_a_violation_carries_the_peers_error() -> None:
    _, server = connected_pair()
    server.receive_data(b"\x36\x05\x00\x01a\x00\x01", 0.0)  # a QoS 3 PUBLISH
    [event] = server_events(server)
    assert isinstance(event, ProtocolViolation)
    assert isinstance(event.error, RemoteProtocolError)
    assert "QoS 3" in event.error.reason
