"""The transition tables (mqtt/states.py), driven through a client and a server session."""

from __future__ import annotations

from collections.abc import Callable

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
    ClientSession,
    ClientState,
    Connack,
    Connacked,
    Connect,
    ConnectRequested,
    DisconnectRequested,
    LocalProtocolError,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    PublishReceived,
    Pubrec,
    RemoteProtocolError,
    ServerSession,
    ServerState,
    Suback,
    Subscribe,
    encode,
)
from thinghub.mqtt.states import (
    CLIENT_TRANSITIONS,
    REFUSED,
    SERVER_TRANSITIONS,
    after_local_call,
)


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
    with pytest.raises(LocalProtocolError, match="accept"):
        server.accept()  # no CONNECT yet
    client.connect(DEVICE, clean_session=True)
    to_server(client, server)
    with pytest.raises(LocalProtocolError, match="§3.2.2-1"):
        server.accept(session_present=True)
    with pytest.raises(LocalProtocolError, match="1..5"):
        server.reject(0)
    server.accept()
    with pytest.raises(LocalProtocolError, match="accept"):
        server.accept()
    with pytest.raises(LocalProtocolError, match="reject"):
        server.reject(4)


def test_disconnect() -> None:
    client, server = connected_pair()
    client.disconnect()
    assert client.state is ClientState.CLOSED
    assert to_server(client, server) == [DisconnectRequested()]
    assert server.state is ServerState.CLOSED
    server.receive_data(encode(Publish("late", b"")), 1.0)  # ignored once closed
    assert server.next_event() is None
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        client.ping()


@pytest.mark.parametrize(
    "first",
    [Publish("a", b""), Subscribe(1, (("a", 0),)), Puback(1), encode(Connack(False, 0))],
    ids=["PUBLISH", "SUBSCRIBE", "PUBACK", "CONNACK"],
)
def test_first_packet_must_be_connect(first: Packet | bytes) -> None:
    server = ServerSession()
    server.receive_data(first if isinstance(first, bytes) else encode(first), 0.0)
    violation = only_violation(server_events(server))
    assert "§3.1.0-1" in violation.error.reason
    assert server.state is ServerState.CLOSED
    assert server.data_to_send() == b""  # no CONNACK for a non-CONNECT


def test_second_connect_is_aonly_violation() -> None:
    _, server = connected_pair()
    server.receive_data(encode(Connect(DEVICE)), 0.0)
    assert "§3.1.0-2" in only_violation(server_events(server)).error.reason
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
    assert reason in only_violation(server_events(server)).error.reason


def test_packet_after_disconnect_in_the_same_chunk_is_ignored() -> None:
    client, server = connected_pair()
    client.disconnect()
    server.receive_data(client.data_to_send() + b"garbage", 0.0)
    assert server_events(server) == [DisconnectRequested()]


# --- The tables as data -------------------------------------------------------------------------


def _server_in(state: ServerState) -> ServerSession:
    """A server session brought to `state` through real bytes and calls; once CONNECTED, a
    SUBSCRIBE (id 1) and an UNSUBSCRIBE (id 2) await their answers."""
    if state is ServerState.CONNECTED:
        client, server = connected_pair()
        assert client.subscribe([(C2D, 1)]) == 1
        assert client.unsubscribe([C2D]) == 2
        to_server(client, server)
        return server
    server = ServerSession()
    if state is ServerState.AWAIT_CONNECT:
        return server
    client = ClientSession()
    client.connect(DEVICE)
    to_server(client, server)
    if state is ServerState.CLOSED:
        server.reject(5)
    assert server.state is state
    return server


def _client_in(state: ClientState) -> ClientSession:
    if state is ClientState.IDLE:
        return ClientSession()
    if state is ClientState.CONNECTED:
        return connected_pair()[0]
    client = ClientSession()
    client.connect(DEVICE)
    if state is ClientState.CLOSED:
        client.close()
    assert client.state is state
    return client


_SERVER_CALLS: dict[str, Callable[[ServerSession], object]] = {
    "accept": lambda s: s.accept(),
    "reject": lambda s: s.reject(5),
    "publish": lambda s: s.publish(TELEMETRY, b"x", 1),
    "redeliver": lambda s: s.redeliver([]),
    "puback": lambda s: s.puback(1),
    "suback": lambda s: s.suback(1, [0]),
    "unsuback": lambda s: s.unsuback(2),
}
_CLIENT_CALLS: dict[str, Callable[[ClientSession], object]] = {
    "connect": lambda c: c.connect(DEVICE),
    "publish": lambda c: c.publish(TELEMETRY, b"x", 1),
    "subscribe": lambda c: c.subscribe([(C2D, 1)]),
    "unsubscribe": lambda c: c.unsubscribe([C2D]),
    "puback": lambda c: c.puback(1),
    "ping": lambda c: c.ping(),
    "disconnect": lambda c: c.disconnect(),
}


def test_every_server_call_the_table_lacks_is_local_misuse() -> None:
    """A local call with no entry raises LocalProtocolError and changes nothing; one with an
    entry lands where the table says."""
    for state in ServerState:
        for call, make in _SERVER_CALLS.items():
            server = _server_in(state)
            target = SERVER_TRANSITIONS.get((state, call))
            if target is None:
                with pytest.raises(LocalProtocolError, match=rf"{call}\(\) is not allowed"):
                    make(server)
                assert server.state is state, (state, call)
            else:
                make(server)
                assert server.state is target, (state, call)


def test_every_client_call_the_table_lacks_is_local_misuse() -> None:
    for state in ClientState:
        for call, make in _CLIENT_CALLS.items():
            client = _client_in(state)
            target = CLIENT_TRANSITIONS.get((state, call))
            if target is None:
                with pytest.raises(LocalProtocolError, match=rf"{call}\(\) is not allowed"):
                    make(client)
                assert client.state is state, (state, call)
            else:
                make(client)
                assert client.state is target, (state, call)


def test_closed_is_terminal_in_both_tables() -> None:
    assert not [key for key in SERVER_TRANSITIONS if key[0] is ServerState.CLOSED]
    assert not [key for key in CLIENT_TRANSITIONS if key[0] is ClientState.CLOSED]
    # Every trigger is a packet class or a local call (a method of the session).
    for (_, trigger), _ in SERVER_TRANSITIONS.items():
        assert isinstance(trigger, type) or callable(getattr(ServerSession, trigger))
    for (_, trigger), _ in CLIENT_TRANSITIONS.items():
        assert (
            isinstance(trigger, type)
            or trigger == REFUSED
            or callable(getattr(ClientSession, trigger))
        )


def test_after_local_call_reads_the_table() -> None:
    assert (
        after_local_call(SERVER_TRANSITIONS, ServerState.AWAIT_ACCEPT, "accept")
        is ServerState.CONNECTED
    )
    assert after_local_call(CLIENT_TRANSITIONS, ClientState.IDLE, "connect") is (
        ClientState.AWAIT_CONNACK
    )
    with pytest.raises(LocalProtocolError, match="publish\\(\\) is not allowed in state CLOSED"):
        after_local_call(SERVER_TRANSITIONS, ServerState.CLOSED, "publish")


def test_publishing_on_a_closed_session_is_misuse_not_a_peer_error() -> None:
    """The adapter must see that its connection closed before it publishes (a normal
    condition it reports itself); the session only says the call was wrong."""
    _, server = connected_pair()
    server.close()
    with pytest.raises(LocalProtocolError) as info:
        server.publish(TELEMETRY, b"late", 1)
    assert not isinstance(info.value, RemoteProtocolError)
    assert server.data_to_send() == b""
