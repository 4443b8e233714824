"""MQTT 3.1.1 control packets as plain, immutable values (one dataclass per packet type)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias


class PacketType(enum.IntEnum):
    """Control packet type: the upper nibble of the first fixed-header byte (§2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(enum.IntEnum):
    """CONNACK return codes (MQTT 3.1.1 §3.2.2.3, table 3.1); 6-255 are reserved."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


#: SUBACK return code for a refused subscription (MQTT 3.1.1 §3.9.3).
SUBACK_FAILURE = 0x80

#: Protocol level 4 is MQTT 3.1.1 with protocol name "MQTT" (§3.1.2.2); level 3 is the older
#: MQTT 3.1 with protocol name "MQIsdp", still accepted because its wire format is the same.
PROTOCOL_LEVEL_311 = 4
PROTOCOL_LEVEL_31 = 3


@dataclass(frozen=True, slots=True)
class Will:
    """The last-will message carried in CONNECT (§3.1.2.5 - §3.1.2.7, §3.1.3.2 - §3.1.3.3)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (§3.1). `username`/`password` are None when their flag is clear."""

    client_id: str
    username: str | None = None
    password: bytes | None = None
    keepalive_s: int = 60
    clean_session: bool = True
    will: Will | None = None
    protocol_level: int = PROTOCOL_LEVEL_311


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK (§3.2)."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (§3.3). `packet_id` is None exactly when qos is 0 (§2.3.1)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class Puback:
    """PUBACK (§3.4): acknowledges a QoS 1 PUBLISH."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrec:
    """PUBREC (§3.5): QoS 2 delivery, part 1."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubrel:
    """PUBREL (§3.6): QoS 2 delivery, part 2."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pubcomp:
    """PUBCOMP (§3.7): QoS 2 delivery, part 3."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (§3.8): (topic filter, requested QoS) pairs, at least one."""

    packet_id: int
    filters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK (§3.9): one return code (0, 1, 2 or 0x80) per requested filter, in order."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (§3.10): topic filters, at least one."""

    packet_id: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK (§3.11)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    """PINGREQ (§3.12)."""


@dataclass(frozen=True, slots=True)
class Pingresp:
    """PINGRESP (§3.13)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (§3.14): the client's clean goodbye (the will is discarded)."""


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
)
