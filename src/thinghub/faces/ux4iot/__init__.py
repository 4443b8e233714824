"""The ux4iot face: sessions, grants and subscriptions, REST at /ux4iot and live data over
Socket.IO. This package holds the parts that need no core service: the session model and
its store port, the wire payloads and request schemas, the connection string and the
Socket.IO channel. See docs/faces/ux4iot-internals.md."""

from thinghub.faces.ux4iot.connection_string import (
    ConnectionString,
    build_connection_string,
    parse_connection_string,
    socket_namespace,
)
from thinghub.faces.ux4iot.fanout import (
    ConnectionChanged,
    Emit,
    LiveEvent,
    MessageArrived,
    TwinChanged,
    plan,
)
from thinghub.faces.ux4iot.grants import (
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    WireProtocol,
)
from thinghub.faces.ux4iot.sessions import Audience, SessionInfo, SessionTable
from thinghub.faces.ux4iot.store import MemorySessionStore, SessionStore

__all__ = [
    "Audience",
    "ConnectionChanged",
    "ConnectionString",
    "Emit",
    "Grant",
    "GrantType",
    "LiveEvent",
    "MemorySessionStore",
    "MessageArrived",
    "SessionInfo",
    "SessionStore",
    "SessionTable",
    "Subscription",
    "SubscriptionType",
    "TwinChanged",
    "WireProtocol",
    "build_connection_string",
    "parse_connection_string",
    "plan",
    "socket_namespace",
]
