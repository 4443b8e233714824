"""Protocol errors (mqtt/errors.py): the peer's (remote) never confused with our own (local)."""

from __future__ import annotations

import pytest

from tests.unit.mqtt._pair import TELEMETRY, connected_pair, server_events
from thinghub.mqtt import (
    ClientSession,
    LocalProtocolError,
    ProtocolError,
    ProtocolViolation,
    Publish,
    RemoteProtocolError,
    ServerSession,
    decode,
    encode,
)


def test_the_two_kinds_are_apart() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    # Our misuse is programmer misuse, as everywhere (a ValueError); the peer's error is not,
    # so an `except ValueError` around our own calls never swallows what the peer did.
    assert issubclass(LocalProtocolError, ValueError)
    assert not issubclass(RemoteProtocolError, ValueError)
    error = LocalProtocolError("publish() is not allowed in state CLOSED")
    assert (error.reason, str(error)) == ("publish() is not allowed in state CLOSED",) * 2


def test_bytes_from_the_peer_raise_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"\x36\x05\x00\x01a\x00\x01")  # a QoS 3 PUBLISH
    assert info.value.connack_code is None
    with pytest.raises(RemoteProtocolError) as connect:
        decode(b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x02id")  # MQTT 5
    assert connect.value.connack_code == 1


def test_packets_we_cannot_send_raise_local_errors() -> None:
    for bad in (Publish("a/#", b""), Publish("\ud800", b""), Publish("a", b"", 1)):
        with pytest.raises(LocalProtocolError):
            encode(bad)


def test_session_misuse_raises_local_errors_and_peer_errors_become_events() -> None:
    server = ServerSession()
    with pytest.raises(LocalProtocolError, match="AWAIT_CONNECT"):
        server.publish(TELEMETRY, b"before CONNACK", 1)
    client = ClientSession()
    with pytest.raises(LocalProtocolError, match="IDLE"):
        client.publish(TELEMETRY, b"before connect()")
    _, connected = connected_pair()
    with pytest.raises(LocalProtocolError, match="QoS 0 or 1"):
        connected.publish(TELEMETRY, b"", 2)
    connected.receive_data(encode(Publish(TELEMETRY, b"", 2, packet_id=1))[:1] + b"\xff" * 5, 0)
    [event] = server_events(connected)  # never raised out of next_event()
    assert isinstance(event, ProtocolViolation)
    assert isinstance(event.error, RemoteProtocolError)
