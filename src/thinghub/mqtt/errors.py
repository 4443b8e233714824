"""MQTT protocol errors: the peer breaking the protocol kept apart from our own misuse.

As in h11, the two have one base but mean opposite things, so callers catch the one they mean:

- RemoteProtocolError: the bytes the peer sent break MQTT 3.1.1 or one of our limits. It is
  the peer's fault and ends only that connection (after a CONNACK with `connack_code` when the
  bad packet was the CONNECT). The decoder raises it; a session turns it into a
  ProtocolViolation event, never into an exception out of next_event().
- LocalProtocolError: our own code asked for something the protocol does not allow: a packet
  that cannot be encoded (a wildcard in a PUBLISH topic, a bad packet id), or a session call
  its state does not allow (publishing before CONNACK or on a CLOSED session, a SUBACK nobody
  asked for). It is a bug in the caller, never a condition of the device, so an adapter must
  not translate it into "device offline": a closed connection is a normal condition that the
  adapter checks for (and reports with its own exception) before it calls the session.
  It is a ValueError, as programmer misuse is everywhere else.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base of RemoteProtocolError and LocalProtocolError; catch one of those instead."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break MQTT 3.1.1 or one of our limits.

    Attributes:
        reason: What is wrong, citing the spec section where there is one.
        connack_code: When the bad packet is the CONNECT, the CONNACK return code to answer with
            before closing (1 unacceptable protocol version, 2 identifier rejected). None means
            close the connection without answering (§4.8: malformed packets close the link).
    """

    def __init__(self, reason: str, connack_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connack_code = connack_code

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.reason!r}, connack_code={self.connack_code!r})"


class LocalProtocolError(ProtocolError, ValueError):
    """Our own misuse of the codec or of a session: a bug in the caller, not the peer's doing.

    Attributes:
        reason: What was asked for and why it is not allowed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
