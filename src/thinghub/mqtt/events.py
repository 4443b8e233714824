"""What a session reports: one frozen dataclass per thing that happened on the connection.

Events are plain data (h11: "events are data, don't subclass these"). next_event() returns
them one at a time; the adapter matches on the class. ServerEvent and ClientEvent are the
closed sets each side can return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from .errors import RemoteProtocolError
from .packets import Connect, Publish, Subscribe, Unsubscribe

__all__ = [
    "ClientEvent",
    "Connacked",
    "ConnectRequested",
    "DisconnectRequested",
    "PingReceived",
    "PingResponse",
    "ProtocolViolation",
    "PubackReceived",
    "PublishReceived",
    "ServerEvent",
    "SubackReceived",
    "SubscribeRequested",
    "UnsubackReceived",
    "UnsubscribeRequested",
]


# --- Either side --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishReceived:
    """The peer published. For QoS 1/2 the server acknowledges with puback(packet_id)."""

    publish: Publish


@dataclass(frozen=True, slots=True)
class PubackReceived:
    """The peer acknowledged our QoS 1 publish `publish` (as it was sent)."""

    packet_id: int
    publish: Publish


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The peer broke the protocol; the session is CLOSED.

    Send data_to_send() (it may hold a CONNACK with `error.connack_code`), then close.
    """

    error: RemoteProtocolError


# --- Server side: what the client did -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The client sent its CONNECT; answer with accept() or reject()."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class SubscribeRequested:
    """The client asked to subscribe; answer with suback(packet_id, return_codes)."""

    subscribe: Subscribe


@dataclass(frozen=True, slots=True)
class UnsubscribeRequested:
    """The client asked to unsubscribe; answer with unsuback(packet_id)."""

    unsubscribe: Unsubscribe


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The client sent PINGREQ; the session has already queued the PINGRESP (§3.12.4)."""


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The client sent DISCONNECT: discard its will and close the connection (§3.14.4)."""


# --- Client side: what the server did ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connacked:
    """The server answered our CONNECT; a non-zero `return_code` leaves the session CLOSED."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class SubackReceived:
    """The server answered our SUBSCRIBE, one return code per filter (0x80 = refused)."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnsubackReceived:
    """The server answered our UNSUBSCRIBE."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PingResponse:
    """The server answered our PINGREQ."""


ServerEvent: TypeAlias = (
    ConnectRequested
    | PublishReceived
    | SubscribeRequested
    | UnsubscribeRequested
    | PubackReceived
    | PingReceived
    | DisconnectRequested
    | ProtocolViolation
)

ClientEvent: TypeAlias = (
    Connacked
    | PublishReceived
    | PubackReceived
    | SubackReceived
    | UnsubackReceived
    | PingResponse
    | ProtocolViolation
)
