"""Request schemas (faces/ux4iot/schemas.py): every route's body, errors naming the field."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from thinghub.domain.errors import Invalid
from thinghub.faces.ux4iot.grants import Grant, GrantType, Subscription, SubscriptionType
from thinghub.faces.ux4iot.grants import WireProtocol as P
from thinghub.faces.ux4iot.schemas import (
    MAX_BULK_REQUESTS,
    DesiredPropertiesPatchRequest,
    DirectMethodRequest,
    GrantRequest,
    SubscriptionRequest,
    parse_bulk_subscriptions,
    parse_log_level,
)

TEL = SubscriptionType.TELEMETRY


def grant(body: dict[str, Any]) -> tuple[str, Grant, P]:
    return GrantRequest.model_validate(body).to_domain()


# -- grants ------------------------------------------------------------------------------------


def test_v4_grants() -> None:
    assert grant({"sessionId": "s", "deviceId": "d", "type": "telemetry", "telemetryKey": "t"}) == (
        "s",
        Grant("d", GrantType.TELEMETRY, "t"),
        P.V4,
    )
    # null and missing both mean all keys / all methods
    assert grant({"sessionId": "s", "deviceId": "d", "type": "telemetry", "telemetryKey": None})[
        1
    ] == Grant("d", GrantType.TELEMETRY)
    assert grant({"sessionId": "s", "deviceId": "d", "type": "directMethod"})[1] == Grant(
        "d", GrantType.DIRECT_METHOD
    )
    assert grant(
        {"sessionId": "s", "deviceId": "d", "type": "directMethod", "directMethodName": "m"}
    )[1] == Grant("d", GrantType.DIRECT_METHOD, method_name="m")


def test_fields_of_other_types_are_ignored() -> None:
    body = {
        "sessionId": "s",
        "deviceId": "d",
        "type": "deviceTwin",
        "telemetryKey": "t",
        "directMethodName": "m",
        "extra": 1,
    }
    assert grant(body)[1] == Grant("d", GrantType.DEVICE_TWIN)


def test_v2_grants_from_ux4iot_react_2_0_2() -> None:
    # lib/grants.js createTelemetryGrant / createDirectMethodGrant, verbatim
    assert grant(
        {
            "grantType": "subscribeToTelemetry",
            "deviceId": "d",
            "sessionId": "s",
            "telemetryKey": "t",
        }
    ) == ("s", Grant("d", GrantType.TELEMETRY, "t"), P.V2)
    assert grant(
        {
            "grantType": "invokeDirectMethod",
            "deviceId": "d",
            "sessionId": "s",
            "directMethodName": "reboot",
        }
    ) == ("s", Grant("d", GrantType.DIRECT_METHOD, method_name="reboot"), P.V2)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"type": "telemetryy"}, "type", "unknown grant type 'telemetryy'"),
        ({"grantType": "subscribeToEverything"}, "grantType", "unknown grant type"),
        ({}, "type", "type is required"),
        ({"type": "telemetry", "grantType": "subscribeToTelemetry"}, "grantType", "not both"),
        ({"type": "telemetry", "deviceId": "a/b"}, "deviceId", "deviceId must be"),
    ],
)
def test_grant_errors_name_the_field(body: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(Invalid, match=message) as caught:
        grant({"sessionId": "s", "deviceId": "d", **body})
    assert caught.value.field == field


def test_structural_errors_are_pydantic_errors_with_a_location() -> None:
    for body, loc in (
        ({"deviceId": "d", "type": "telemetry"}, ("sessionId",)),
        ({"sessionId": 5, "deviceId": "d", "type": "telemetry"}, ("sessionId",)),
        (
            {"sessionId": "s", "deviceId": "d", "type": "telemetry", "telemetryKey": ""},
            ("telemetryKey",),
        ),
        ({"sessionId": "x" * 129, "deviceId": "d", "type": "telemetry"}, ("sessionId",)),
    ):
        with pytest.raises(ValidationError) as caught:
            GrantRequest.model_validate(body)
        assert caught.value.errors()[0]["loc"] == loc


# -- subscriptions -----------------------------------------------------------------------------


def test_single_subscription() -> None:
    request = SubscriptionRequest.model_validate(
        {"sessionId": "s", "deviceId": "d", "type": "telemetry", "telemetryKey": "t"}
    )
    assert request.to_domain() == ("s", Subscription("d", TEL, "t"))
    request = SubscriptionRequest.model_validate(
        {"sessionId": "s", "deviceId": "d", "type": "connectionState", "telemetryKey": "t"}
    )
    assert request.to_domain() == ("s", Subscription("d", SubscriptionType.CONNECTION_STATE))
    bad = SubscriptionRequest.model_validate(
        {"sessionId": "s", "deviceId": "d", "type": "directMethod"}
    )
    with pytest.raises(Invalid, match="unknown subscription type 'directMethod'") as caught:
        bad.to_domain()
    assert caught.value.field == "type"
    nobody = SubscriptionRequest.model_validate({"deviceId": "d", "type": "telemetry"})
    with pytest.raises(Invalid, match="sessionId is required"):
        nobody.to_domain()


def test_bulk_react_form_is_a_bare_array_with_session_ids_inside() -> None:
    body = [
        {"sessionId": "s", "deviceId": "d", "telemetryKey": "a", "type": "telemetry"},
        {"sessionId": "s", "deviceId": "d", "telemetryKey": "b", "type": "telemetry"},
    ]
    assert parse_bulk_subscriptions(body, None) == [
        ("s", Subscription("d", TEL, "a")),
        ("s", Subscription("d", TEL, "b")),
    ]


def test_bulk_admin_form_is_an_envelope_with_the_header_session() -> None:
    body = {"subscriptionRequests": [{"deviceId": "d", "type": "deviceTwin"}]}
    assert parse_bulk_subscriptions(body, "hdr") == [
        ("hdr", Subscription("d", SubscriptionType.DEVICE_TWIN))
    ]
    # An element's own sessionId wins over the header (admin-node sends both).
    body = {"subscriptionRequests": [{"sessionId": "own", "deviceId": "d", "type": "deviceTwin"}]}
    assert parse_bulk_subscriptions(body, "hdr")[0][0] == "own"
    # admin-node unsubscribeAll: a bare array plus the header
    assert parse_bulk_subscriptions([{"deviceId": "d", "type": "d2cMessages"}], "hdr") == [
        ("hdr", Subscription("d", SubscriptionType.D2C_MESSAGES))
    ]


def test_bulk_empty_lists_are_fine() -> None:
    assert parse_bulk_subscriptions([], None) == []
    assert parse_bulk_subscriptions({"subscriptionRequests": []}, None) == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            [
                {"sessionId": "s", "deviceId": "d", "type": "telemetry"},
                {"sessionId": "s", "type": "x"},
            ],
            "[1].deviceId",
            "required",
        ),
        (
            [{"sessionId": "s", "deviceId": "d", "type": "x"}],
            "[0].type",
            "unknown subscription type",
        ),
        (
            {"subscriptionRequests": [{"deviceId": "d", "type": "telemetry"}]},
            "subscriptionRequests[0].sessionId",
            "required",
        ),
        ({"subscriptionRequests": [5]}, "subscriptionRequests[0]", "must be a JSON object"),
        ({"subscriptionRequests": {"a": 1}}, "subscriptionRequests", "must be an array"),
        (
            [{"sessionId": "s", "deviceId": "d", "type": "telemetry", "telemetryKey": 3}],
            "[0].telemetryKey",
            "string",
        ),
        ({"other": []}, "body", "array of subscription requests"),
        ("text", "body", "array of subscription requests"),
        (
            [{"sessionId": "s", "deviceId": "d", "type": "telemetry"}] * (MAX_BULK_REQUESTS + 1),
            "body",
            f"at most {MAX_BULK_REQUESTS}",
        ),
    ],
)
def test_one_malformed_element_fails_the_whole_bulk_call(
    body: Any, field: str, message: str
) -> None:
    with pytest.raises(Invalid, match=message) as caught:
        parse_bulk_subscriptions(body, None)
    assert caught.value.field == field


# -- direct methods, desired properties, log level ---------------------------------------------


def test_direct_method_request() -> None:
    body = {
        "deviceId": "d",
        "methodParams": {
            "methodName": "reboot",
            "payload": {"delay": 1},
            "responseTimeoutInSeconds": 30,
            "connectTimeoutInSeconds": 0,
        },
    }
    request = DirectMethodRequest.model_validate(body)
    assert request.to_domain() == ("d", Grant("d", GrantType.DIRECT_METHOD, method_name="reboot"))
    assert request.methodParams.payload == {"delay": 1}
    minimal = DirectMethodRequest.model_validate(
        {"deviceId": "d", "methodParams": {"methodName": "m"}}
    )
    assert minimal.methodParams.payload is None
    assert minimal.methodParams.responseTimeoutInSeconds is None


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({}, ("methodParams", "methodName")),
        ({"methodName": ""}, ("methodParams", "methodName")),
        (
            {"methodName": "m", "responseTimeoutInSeconds": 4},
            ("methodParams", "responseTimeoutInSeconds"),
        ),
        (
            {"methodName": "m", "responseTimeoutInSeconds": 301},
            ("methodParams", "responseTimeoutInSeconds"),
        ),
        (
            {"methodName": "m", "responseTimeoutInSeconds": "30"},
            ("methodParams", "responseTimeoutInSeconds"),
        ),
        (
            {"methodName": "m", "connectTimeoutInSeconds": -1},
            ("methodParams", "connectTimeoutInSeconds"),
        ),
    ],
)
def test_direct_method_errors_have_a_location(params: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        DirectMethodRequest.model_validate({"deviceId": "d", "methodParams": params})
    assert caught.value.errors()[0]["loc"] == loc


def test_desired_properties_patch() -> None:
    request = DesiredPropertiesPatchRequest.model_validate(
        {"deviceId": "d", "desiredPropertyPatch": {"fan": {"speed": 3}, "$version": 4}}
    )
    assert request.to_domain() == (
        "d",
        {"fan": {"speed": 3}},
        Grant("d", GrantType.DESIRED_PROPERTIES),
    )
    bad = DesiredPropertiesPatchRequest.model_validate(
        {"deviceId": "d", "desiredPropertyPatch": {"$metadata": 1}}
    )
    with pytest.raises(Invalid) as caught:
        bad.to_domain()
    assert caught.value.field == "desiredPropertyPatch.$metadata"
    with pytest.raises(ValidationError) as structural:
        DesiredPropertiesPatchRequest.model_validate({"deviceId": "d", "desiredPropertyPatch": [1]})
    assert structural.value.errors()[0]["loc"] == ("desiredPropertyPatch",)


def test_log_levels() -> None:
    assert parse_log_level("warn") == logging.WARNING
    assert parse_log_level("verbose") == logging.DEBUG
    with pytest.raises(Invalid, match="unknown log level 'trace'") as caught:
        parse_log_level("trace")
    assert caught.value.field == "level"
