"""A ClientSession and a ServerSession talking through bytes only: helpers for the session tests."""

from __future__ import annotations

from thinghub.mqtt import (
    MAX_INFLIGHT,
    ClientEvent,
    ClientSession,
    Connacked,
    ConnectRequested,
    Packet,
    ProtocolViolation,
    ServerEvent,
    ServerSession,
    decode,
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


def only_violation(events: list[ServerEvent]) -> ProtocolViolation:
    """The one event of `events`, which must be a ProtocolViolation."""
    assert len(events) == 1
    [event] = events
    assert isinstance(event, ProtocolViolation)
    return event
