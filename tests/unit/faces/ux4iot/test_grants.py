"""Grants and subscriptions (faces/ux4iot/grants.py): names of both wire generations, coverage."""

from __future__ import annotations

import pytest

from thinghub.domain.errors import Invalid
from thinghub.faces.ux4iot.grants import (
    V2_GRANT_TYPES,
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    parse_grant_type,
    parse_subscription_type,
    v2_subscription_of,
)

T = GrantType.TELEMETRY
M = GrantType.DIRECT_METHOD


def test_v4_grant_types_are_the_seeds_six() -> None:
    names = ["telemetry", "deviceTwin", "connectionState", "desiredProperties", "directMethod"]
    for name in [*names, "d2cMessages"]:
        assert parse_grant_type(name).value == name


def test_v2_grant_type_names_map_to_the_v4_types() -> None:
    assert {name: parse_grant_type(name, "grantType") for name in V2_GRANT_TYPES} == {
        "subscribeToTelemetry": GrantType.TELEMETRY,
        "subscribeToDeviceTwin": GrantType.DEVICE_TWIN,
        "subscribeToConnectionState": GrantType.CONNECTION_STATE,
        "subscribeToD2CMessages": GrantType.D2C_MESSAGES,
        "modifyDesiredProperties": GrantType.DESIRED_PROPERTIES,
        "invokeDirectMethod": GrantType.DIRECT_METHOD,
    }


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("telemetryy", "type"),
        ("subscribeToTelemetry", "type"),
        ("telemetry", "grantType"),
        (None, "type"),
        (3, "type"),
    ],
)
def test_unknown_grant_types_are_named(value: object, field: str) -> None:
    with pytest.raises(Invalid, match=f"unknown grant type {value!r}") as caught:
        parse_grant_type(value, field)
    assert caught.value.field == field


def test_subscription_types_exclude_the_action_grants() -> None:
    assert parse_subscription_type("d2cMessages") is SubscriptionType.D2C_MESSAGES
    for bad in ("directMethod", "desiredProperties", "Telemetry"):
        with pytest.raises(Invalid, match=f"unknown subscription type '{bad}'"):
            parse_subscription_type(bad, "[0].type")


def test_a_null_key_grant_covers_every_key_and_a_key_grant_only_its_key() -> None:
    everything = Grant("d", T)
    temp = Grant("d", T, telemetry_key="temp")
    assert everything.covers(Grant("d", T, telemetry_key="temp"))
    assert everything.covers(Grant("d", T))
    assert temp.covers(Grant("d", T, telemetry_key="temp"))
    assert not temp.covers(Grant("d", T, telemetry_key="hum"))
    assert not temp.covers(Grant("d", T))  # a key grant does not open all keys
    assert not everything.covers(Grant("other", T, telemetry_key="temp"))
    assert not everything.covers(Grant("d", GrantType.DEVICE_TWIN))


def test_method_grants_narrow_by_name() -> None:
    assert Grant("d", M).covers(Grant("d", M, method_name="reboot"))
    assert Grant("d", M, method_name="reboot").covers(Grant("d", M, method_name="reboot"))
    assert not Grant("d", M, method_name="reboot").covers(Grant("d", M, method_name="wipe"))


def test_fields_of_other_types_are_programmer_errors() -> None:
    with pytest.raises(ValueError, match="telemetry grants only"):
        Grant("d", GrantType.DEVICE_TWIN, telemetry_key="x")
    with pytest.raises(ValueError, match="directMethod grants only"):
        Grant("d", T, method_name="x")
    with pytest.raises(ValueError, match="telemetry subscriptions only"):
        Subscription("d", SubscriptionType.CONNECTION_STATE, "x")


def test_a_subscription_needs_the_grant_of_its_kind() -> None:
    assert Subscription("d", SubscriptionType.TELEMETRY, "k").need() == Grant("d", T, "k")
    assert Subscription("d", SubscriptionType.D2C_MESSAGES).need() == Grant(
        "d", GrantType.D2C_MESSAGES
    )


def test_v2_subscribe_grants_imply_their_subscription() -> None:
    assert v2_subscription_of(Grant("d", T, "k")) == Subscription(
        "d", SubscriptionType.TELEMETRY, "k"
    )
    assert v2_subscription_of(Grant("d", GrantType.CONNECTION_STATE)) == Subscription(
        "d", SubscriptionType.CONNECTION_STATE
    )
    assert v2_subscription_of(Grant("d", M, method_name="m")) is None
    assert v2_subscription_of(Grant("d", GrantType.DESIRED_PROPERTIES)) is None
