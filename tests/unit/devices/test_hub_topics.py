"""hub_topics: the IoT Hub dialect's usernames, topics and property bags (no I/O)."""

from __future__ import annotations

import pytest

from thinghub.devices.hub_topics import (
    encode_bag,
    parse_bag,
    parse_dps_username,
    parse_hub_username,
    parse_telemetry_topic,
    request_id,
)

UA = "azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%3Bx86_64%29"


def test_hub_username_as_the_pnp_sample_sends_it() -> None:
    identity = parse_hub_username(
        f"localhost/thermo-1/?api-version=2020-09-30&DeviceClientType={UA}"
        "&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"
    )
    assert identity is not None
    assert (identity.host, identity.device_id, identity.module_id) == (
        "localhost",
        "thermo-1",
        None,
    )
    assert identity.model_id == "dtmi:com:example:Thermostat;1"
    assert identity.params["DeviceClientType"].startswith("azure-iot-device-iothub-py/2.14.0(")


@pytest.mark.parametrize(
    ("username", "device", "module"),
    [
        ("hub/dev/?api-version=2019-10-01", "dev", None),
        ("hub/dev/mod/?api-version=2019-10-01", "dev", "mod"),
        ("hub/dev/", "dev", None),  # the query is informational: it may be left out
        ("hub/dev", "dev", None),
        ("hub/dev/mod", "dev", "mod"),
    ],
)
def test_hub_username_shapes(username: str, device: str, module: str | None) -> None:
    identity = parse_hub_username(username)
    assert identity is not None
    assert (identity.host, identity.device_id, identity.module_id) == ("hub", device, module)
    assert identity.model_id is None


@pytest.mark.parametrize("username", ["", "hub", "hub//?a=b", "/dev/?a=b", "a/b/c/d/?x=y"])
def test_not_a_hub_username(username: str) -> None:
    assert parse_hub_username(username) is None


def test_dps_username_has_no_question_mark() -> None:
    identity = parse_dps_username(
        "0ne00000001/registrations/thermo-1/api-version=2019-03-31&ClientVersion=x%2F1"
    )
    assert identity is not None
    assert (identity.id_scope, identity.registration_id) == ("0ne00000001", "thermo-1")
    assert identity.params == {"api-version": "2019-03-31", "ClientVersion": "x/1"}
    assert parse_dps_username("hub/dev/?api-version=2019-10-01") is None


@pytest.mark.parametrize(
    ("topic", "rid"),
    [
        ("$iothub/twin/GET/?$rid=6f1c", "6f1c"),
        ("$iothub/twin/PATCH/properties/reported/?$rid=a%26b%3Dc&$version=3", "a%26b%3Dc"),
        ("$iothub/methods/res/200/?%24rid=7", "7"),
        ("$iothub/twin/GET/", ""),
        ("$dps/registrations/GET/iotdps-get-operationstatus/?operationId=x&$rid=9", "9"),
    ],
)
def test_request_id_is_taken_as_sent(topic: str, rid: str) -> None:
    assert request_id(topic) == rid


def test_telemetry_topic_bag_as_the_sdk_encodes_it() -> None:
    parsed = parse_telemetry_topic(
        "devices/thermo-1/messages/events/%24.mid=mid-1&%24.cid=corr-1"
        "&%24.ct=application%2Fjson&%24.ce=utf-8&a%26b=x%3Dy&alert=high%20temp"
    )
    assert parsed is not None
    assert (parsed.device_id, parsed.module_id) == ("thermo-1", None)
    assert parsed.system == {
        "message_id": "mid-1",
        "correlation_id": "corr-1",
        "content_type": "application/json",
        "content_encoding": "utf-8",
    }
    assert parsed.properties == {"a&b": "x=y", "alert": "high temp"}


@pytest.mark.parametrize(
    ("topic", "device", "module"),
    [
        ("devices/d/messages/events/", "d", None),
        ("devices/d/messages/events", "d", None),
        ("devices/d/modules/m/messages/events/%24.on=out1", "d", "m"),
    ],
)
def test_telemetry_topics(topic: str, device: str, module: str | None) -> None:
    parsed = parse_telemetry_topic(topic)
    assert parsed is not None
    assert (parsed.device_id, parsed.module_id) == (device, module)


@pytest.mark.parametrize(
    "topic", ["devices/d/messages/devicebound/", "devices/d/events/", "x/d/messages/events/"]
)
def test_not_telemetry(topic: str) -> None:
    assert parse_telemetry_topic(topic) is None


def test_c2d_bag_survives_the_sdk_split() -> None:
    """The SDK splits the bag on & and = and unquotes each piece."""
    properties = {"$.mid": "m1", "path": "a/b&c=d", "sp ace": "x y"}
    bag = encode_bag(properties)
    assert bag.startswith("%24.mid=m1&")  # as IoT Hub sends it (azure-sdk-for-c needs it)
    assert "/" not in bag
    assert parse_bag(bag) == properties
