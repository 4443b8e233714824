"""The connection state machines of MQTT 3.1.1, server side and client side, as data.

Theory of operation
-------------------
A session (server.ServerSession, client.ClientSession) holds the protocol state of one
network connection and nothing else: no socket, no clock, no logging, no tasks. The adapter
that owns the socket drives it in three moves:

  1. Bytes in. receive_data(data[, now]) only buffers what the socket produced (a
     codec.Decoder); on the server `now` feeds the keep-alive clock (§3.1.2.10).
  2. Events out. next_event() until it returns None. Each call decodes at most one packet,
     looks its class up in this module's table for the current state and returns what
     happened (events.PublishReceived, events.SubscribeRequested, ...). None means "need more
     bytes", or on the server side "waiting for accept() or reject()": decoding is lazy so that
     packets pipelined behind the CONNECT (§3.1.4: clients may send before CONNACK arrives)
     are only looked at after the adapter has authenticated, and never at all if it rejects
     (§3.1.4-5).
  3. Bytes out. Every byte the session wants sent goes into one outgoing buffer that
     data_to_send() drains. Write it to the socket after every receive_data/next_event round
     and after every local call; it returns b"" when there is nothing to send.

Transitions live in one table per side, below, keyed by (state, trigger). A trigger is either
the class of a packet received from the peer or the name of a local call (a method of the
session). The two kinds of failure are kept apart (errors.py):

- a received packet with no entry is the peer's fault: a RemoteProtocolError, reported as an
  events.ProtocolViolation; the state becomes CLOSED, and the adapter flushes data_to_send()
  and closes the socket (§4.8);
- a local call with no entry is our own bug: LocalProtocolError, raised at the caller, the
  state unchanged.

close() and violations lead to CLOSED from every state and are not repeated in the tables;
CLOSED has no entries at all, so nothing is received or sent on a closed session.

Server: AWAIT_CONNECT --CONNECT--> AWAIT_ACCEPT --accept()--> CONNECTED --DISCONNECT--> CLOSED
                                               \\--reject()--> CLOSED
Client: IDLE --connect()--> AWAIT_CONNACK --CONNACK 0--> CONNECTED --disconnect()--> CLOSED
                                         \\--CONNACK 1..5--> CLOSED
"""

from __future__ import annotations

import enum
from typing import TypeAlias, TypeVar

from .errors import LocalProtocolError, RemoteProtocolError
from .packets import (
    Connack,
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
)

__all__ = [
    "CLIENT_TRANSITIONS",
    "REFUSED",
    "SERVER_TRANSITIONS",
    "ClientState",
    "ServerState",
    "Trigger",
    "after_local_call",
    "unexpected_from_client",
    "unexpected_from_server",
]


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


#: A packet class received from the peer, or the name of a local call.
Trigger: TypeAlias = type[object] | str

#: The trigger of a CONNACK with a non-zero return code (a refusal, §3.2.2.3).
REFUSED = "CONNACK refused"

_S = ServerState
SERVER_TRANSITIONS: dict[tuple[ServerState, Trigger], ServerState] = {
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
CLIENT_TRANSITIONS: dict[tuple[ClientState, Trigger], ClientState] = {
    # Received from the server. The first packet must be CONNACK (§3.2.0-1).
    (_C.AWAIT_CONNACK, Connack): _C.CONNECTED,
    (_C.AWAIT_CONNACK, REFUSED): _C.CLOSED,  # the server closes after refusing (§3.2.2-5)
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

_State = TypeVar("_State", ServerState, ClientState)


def after_local_call(
    table: dict[tuple[_State, Trigger], _State], state: _State, call: str
) -> _State:
    """The state after the local call `call` in `state`.

    Raises:
        LocalProtocolError: The table has no such transition: the caller's bug.
    """
    new_state = table.get((state, call))
    if new_state is None:
        raise LocalProtocolError(f"{call}() is not allowed in state {state.value}")
    return new_state


_SERVER_ONLY = (Connack, Suback, Unsuback, Pingresp)


def unexpected_from_client(state: ServerState, packet: Packet) -> RemoteProtocolError:
    """Why a packet from the client that the server table does not admit is a violation."""
    name = type(packet).__name__.upper()
    if state is ServerState.AWAIT_CONNECT:
        return RemoteProtocolError(f"first packet must be CONNECT, got {name} (§3.1.0-1)")
    if isinstance(packet, Connect):
        return RemoteProtocolError("second CONNECT on one connection (§3.1.0-2)")
    if isinstance(packet, _SERVER_ONLY):
        return RemoteProtocolError(f"client sent {name}, which only a server sends")
    if isinstance(packet, Pubrec | Pubcomp):
        return RemoteProtocolError(
            f"client sent {name}, but this server never publishes with QoS 2"
        )
    return RemoteProtocolError(f"unexpected {name} in state {state.value}")


def unexpected_from_server(state: ClientState, packet: Packet) -> RemoteProtocolError:
    """Why a packet from the server that the client table does not admit is a violation."""
    name = type(packet).__name__.upper()
    if state is ClientState.AWAIT_CONNACK:
        return RemoteProtocolError(f"first packet must be CONNACK, got {name} (§3.2.0-1)")
    if isinstance(packet, Connack):
        return RemoteProtocolError("second CONNACK on one connection")
    if isinstance(packet, Pubrec | Pubcomp):
        return RemoteProtocolError(
            f"server sent {name}, but this client never publishes with QoS 2"
        )
    return RemoteProtocolError(f"server sent {name}, which only a client sends")
