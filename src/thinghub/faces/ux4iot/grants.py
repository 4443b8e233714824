"""Grants and subscriptions of a ux4iot session: what it may see or do, and what it watches.

A grant is forwarded by the customer's security backend (`PUT /grants` with the key); a
subscription is asked for by the browser (`PUT /subscription` with its session id) and needs a
grant that covers it. Two wire generations name grants differently: v3+/4.x sends `type`
(telemetry, deviceTwin, ...), the legacy v2 client (`ux4iot-react@2.0.2`) sends `grantType`
(subscribeToTelemetry, ...), and in v2 a subscribeTo* grant is also the subscription.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from thinghub.domain.errors import Invalid

__all__ = [
    "GRANT_OF_SUBSCRIPTION",
    "V2_GRANT_TYPES",
    "Grant",
    "GrantType",
    "Subscription",
    "SubscriptionType",
    "WireProtocol",
    "parse_grant_type",
    "parse_subscription_type",
    "v2_subscription_of",
]


class WireProtocol(StrEnum):
    """Which client generation a session speaks; decides the connectionState payload shape."""

    V2 = "v2"  # ux4iot-react <= 2.x: grantType, grant = subscription, {connected: bool}
    V4 = "v4"  # ux4iot-react 3.x/4.x: type, /subscription, bare boolean


class GrantType(StrEnum):
    TELEMETRY = "telemetry"
    DEVICE_TWIN = "deviceTwin"
    CONNECTION_STATE = "connectionState"
    DESIRED_PROPERTIES = "desiredProperties"
    DIRECT_METHOD = "directMethod"
    D2C_MESSAGES = "d2cMessages"


class SubscriptionType(StrEnum):
    """The kinds of live data; each has its own `data` payload shape."""

    TELEMETRY = "telemetry"
    DEVICE_TWIN = "deviceTwin"
    CONNECTION_STATE = "connectionState"
    D2C_MESSAGES = "d2cMessages"


# The grant type that authorizes each kind of subscription.
GRANT_OF_SUBSCRIPTION: Mapping[SubscriptionType, GrantType] = MappingProxyType(
    {
        SubscriptionType.TELEMETRY: GrantType.TELEMETRY,
        SubscriptionType.DEVICE_TWIN: GrantType.DEVICE_TWIN,
        SubscriptionType.CONNECTION_STATE: GrantType.CONNECTION_STATE,
        SubscriptionType.D2C_MESSAGES: GrantType.D2C_MESSAGES,
    }
)

# ux4iot-react 2.0.2, lib/grants.js: the `grantType` names of the v2 protocol.
V2_GRANT_TYPES: Mapping[str, GrantType] = MappingProxyType(
    {
        "subscribeToTelemetry": GrantType.TELEMETRY,
        "subscribeToDeviceTwin": GrantType.DEVICE_TWIN,
        "subscribeToConnectionState": GrantType.CONNECTION_STATE,
        "subscribeToD2CMessages": GrantType.D2C_MESSAGES,
        "modifyDesiredProperties": GrantType.DESIRED_PROPERTIES,
        "invokeDirectMethod": GrantType.DIRECT_METHOD,
    }
)

_GRANT_TYPES = {kind.value: kind for kind in GrantType}
_SUBSCRIPTION_TYPES = {kind.value: kind for kind in SubscriptionType}
_SUBSCRIPTION_OF_GRANT = {grant: sub for sub, grant in GRANT_OF_SUBSCRIPTION.items()}


def parse_grant_type(value: object, field: str = "type") -> GrantType:
    """A v3+ `type`, or a v2 `grantType` when `field` is "grantType".

    Raises:
        Invalid: "unknown grant type X", naming the field.
    """
    table: Mapping[str, GrantType] = V2_GRANT_TYPES if field == "grantType" else _GRANT_TYPES
    kind = table.get(value) if isinstance(value, str) else None
    if kind is None:
        raise Invalid(
            f"unknown grant type {value!r}; expected one of {', '.join(table)}", field=field
        )
    return kind


def parse_subscription_type(value: object, field: str = "type") -> SubscriptionType:
    """Raises: Invalid: "unknown subscription type X", naming the field."""
    kind = _SUBSCRIPTION_TYPES.get(value) if isinstance(value, str) else None
    if kind is None:
        expected = ", ".join(_SUBSCRIPTION_TYPES)
        raise Invalid(
            f"unknown subscription type {value!r}; expected one of {expected}", field=field
        )
    return kind


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission of a session on one device.

    `telemetry_key` (telemetry only) and `method_name` (directMethod only) narrow it; None
    means every key or every method, as `null` does on the wire. The other types carry neither.
    A Grant is also used as the *need* of an operation: `held.covers(need)`.
    """

    device_id: str
    type: GrantType
    telemetry_key: str | None = None
    method_name: str | None = None

    def __post_init__(self) -> None:
        if self.telemetry_key is not None and self.type is not GrantType.TELEMETRY:
            raise ValueError("telemetry_key belongs to telemetry grants only")
        if self.method_name is not None and self.type is not GrantType.DIRECT_METHOD:
            raise ValueError("method_name belongs to directMethod grants only")

    def covers(self, need: Grant) -> bool:
        """True when holding this grant permits `need` (same device and type, same or wider)."""
        if need.device_id != self.device_id or need.type is not self.type:
            return False
        if self.type is GrantType.TELEMETRY:
            return self.telemetry_key is None or self.telemetry_key == need.telemetry_key
        if self.type is GrantType.DIRECT_METHOD:
            return self.method_name is None or self.method_name == need.method_name
        return True


@dataclass(frozen=True, slots=True)
class Subscription:
    """One live feed of a session: a kind of data of one device (telemetry: one key or all)."""

    device_id: str
    type: SubscriptionType
    telemetry_key: str | None = None

    def __post_init__(self) -> None:
        if self.telemetry_key is not None and self.type is not SubscriptionType.TELEMETRY:
            raise ValueError("telemetry_key belongs to telemetry subscriptions only")

    def need(self) -> Grant:
        """The grant this subscription needs: a key subscription is covered by that key's grant
        or the all-keys grant; an all-keys subscription only by the all-keys grant."""
        return Grant(self.device_id, GRANT_OF_SUBSCRIPTION[self.type], self.telemetry_key)


def v2_subscription_of(grant: Grant) -> Subscription | None:
    """The subscription a v2 subscribeTo* grant implies (None for modify/invoke grants)."""
    kind = _SUBSCRIPTION_OF_GRANT.get(grant.type)
    if kind is None:
        return None
    return Subscription(grant.device_id, kind, grant.telemetry_key)
