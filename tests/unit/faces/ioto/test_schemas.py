"""Tests for thinghub.faces.ioto.schemas: bodies as the agent and apps send them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from thinghub.domain import errors
from thinghub.domain.device_files import FileAction
from thinghub.faces.ioto import schemas as s

DEV = "JT08FFQXWQ"


def test_routes_with_and_without_tok() -> None:
    assert s.route_of("/device/provision") == "provision"
    assert s.route_of("/tok/device/provision") == "provision"
    assert s.route_of("/tok/device/provision/") == "provision"
    assert s.route_of("/tok/file/getSignedUrl") == "getSignedUrl"
    assert s.route_of("/device/getSignedUrl") == "getSignedUrl"
    assert s.route_of("/tok/provision/update") == "update"
    assert s.route_of("/tok/device/register") == "register"
    assert s.route_of("/tok/tok/device/get") is None
    assert s.route_of("/device/unknown") is None
    assert {route for _, route in s.ROUTES} == set(s.Route.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("bearer abc.def", "abc.def"),
        ("Bearer abc", "abc"),
        ("BEARER\tabc ", "abc"),
        ("bearer  abc", "abc"),
        ("bearer", None),
        ("bearer a b", None),
        ("Basic abc", None),
        ("abc", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert s.parse_bearer(header) == token


def test_register_body_is_device_json5_plus_created() -> None:
    body = {
        "id": DEV,
        "product": "01G8YJKKRNTHW213TRZYX3YH0M",
        "name": "Thermostat",
        "description": "Lab unit",
        "model": "T-1",
        "test": True,
        "created": "2025-10-09T08:53:20.000Z",
        "account": "acc-1",
        "cloud": "cloud-1",
        "serial": "X1",
    }
    request = s.RegisterRequest.model_validate(body)
    assert (request.id, request.test, request.account, request.cloud) == (
        DEV,
        True,
        "acc-1",
        "cloud-1",
    )
    assert request.extra_fields() == {"serial": "X1"}
    with pytest.raises(ValidationError):
        s.RegisterRequest.model_validate({"product": "p"})
    with pytest.raises(ValidationError):
        s.RegisterRequest.model_validate({"id": DEV, "test": "yes"})
    with pytest.raises(errors.Invalid) as info:
        s.RegisterRequest.model_validate({"id": DEV, "note": "x" * 5000}).extra_fields()
    assert info.value.field == "note"
    with pytest.raises(ValidationError):
        s.RegisterRequest.model_validate({"id": DEV, "name": "x" * 5000})
    crowded = s.RegisterRequest.model_validate({"id": DEV, **{f"f{i}": i for i in range(100)}})
    with pytest.raises(errors.Invalid):
        crowded.extra_fields()


def test_register_answers_two_fields_or_the_claim() -> None:
    unclaimed = s.register_unclaimed(DEV)
    assert len(unclaimed) == 2 and "api" not in unclaimed and "token" not in unclaimed
    claimed = s.RegisterClaimed(
        api="https://hub.example/ioto/api",
        token="thio1.x.y",
        id=DEV,
        accountId="acc-1",
        cloudName="thinghub",
        cloudRegion="thinghub-1",
    ).model_dump()
    assert len(claimed) >= 3 and claimed["api"] and claimed["token"]
    assert claimed["cloudType"] == "dedicated" and claimed["registered"] is True
    # Everything the agent keeps in provision.json5 from register (the rest comes from provision).
    assert set(claimed) == {
        "api",
        "token",
        "registered",
        "cloudType",
        "cloudName",
        "cloudRegion",
        "id",
        "accountId",
    }


def test_user_bodies() -> None:
    assert s.ClaimRequest.model_validate({"id": DEV}).test is False
    assert s.ClaimRequest.model_validate({"id": DEV, "test": True}).test is True
    assert s.GetRequest.model_validate({"id": DEV, "accountId": "a"}).accountId == "a"
    for model, body in (
        (s.ClaimRequest, {}),
        (s.ClaimRequest, {"id": 5}),
        (s.ClaimRequest, {"id": ""}),
        (s.ReleaseRequest, {"id": None}),
        (s.GetRequest, {"accountId": "a"}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_find_options_from_body_or_query_text() -> None:
    default = s.FindRequest.model_validate({})
    assert (default.limit, default.next, default.index) == (s.DEFAULT_FIND_LIMIT, None, None)
    assert s.FindRequest.model_validate({"limit": "25"}).limit == 25
    full = s.FindRequest.model_validate(
        {"id": DEV, "productId": "p", "limit": 5, "next": "cursor", "index": "gs1"}
    )
    assert (full.limit, full.next, full.index) == (5, "cursor", "gs1")
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"limit": 2.5},
        {"limit": True},
        {"next": {"pk": "x"}},
        {"index": "gs2"},
        {"limit": "ten"},
    ):
        with pytest.raises(ValidationError) as info:
            s.FindRequest.model_validate(bad)
        assert info.value.errors()[0]["loc"][0] == next(iter(bad))


def test_device_record_and_find_answer_wire() -> None:
    record = s.DeviceRecord(
        id=DEV,
        accountId="acc-1",
        created="2025-10-09T08:53:20.000Z",
        product="Thermo",
        productId="p-1",
    )
    assert record.wire() == {
        "id": DEV,
        "accountId": "acc-1",
        "created": "2025-10-09T08:53:20.000Z",
        "product": "Thermo",
        "productId": "p-1",
        "test": False,
    }
    page = s.FindAnswer(data=[record], next="n1").wire()
    assert page == {"data": [record.wire()], "next": "n1"}


def test_provision_answers() -> None:
    answer = s.ProvisionAnswer(
        certificate="-----BEGIN CERTIFICATE-----",
        key="-----BEGIN PRIVATE KEY-----",
        endpoint="localhost",
        port=8883,
        accountId="acc-1",
        cloudName="thinghub",
        cloudRegion="thinghub-1",
        id=DEV,
        thing=DEV,
    ).model_dump()
    assert set(answer) == {
        "certificate",
        "key",
        "endpoint",
        "port",
        "accountId",
        "cloudType",
        "cloudName",
        "cloudRegion",
        "id",
        "thing",
    }
    assert s.ProvisionBlocked(error="blocked", delay=5).model_dump() == {
        "error": "blocked",
        "delay": 5,
    }
    with pytest.raises(ValidationError):
        s.ProvisionBlocked(error="x", delay=0)


def test_signed_url_requests_as_the_agent_and_the_seed_send_them() -> None:
    # cloud.c ioUpload: size as a string
    agent = s.SignedUrlRequest.model_validate(
        {
            "id": DEV,
            "command": "put",
            "filename": "snap.jpg",
            "mimeType": "image/jpeg",
            "size": "1234",
        }
    )
    spec = s.signed_url_spec(agent, device_id=DEV, max_bytes=10_000)
    assert spec == s.SignedUrlSpec(FileAction.PUT, "snap.jpg", "image/jpeg", 1234)
    seed = s.SignedUrlRequest.model_validate(
        {"id": DEV, "command": "put", "filename": "a/b.txt", "mimeType": "text/plain", "size": 12}
    )
    assert s.signed_url_spec(seed, device_id=DEV, max_bytes=100).size == 12
    get = s.SignedUrlRequest.model_validate({"command": "get", "filename": "a/b.txt"})
    assert s.signed_url_spec(get, device_id=DEV, max_bytes=1) == s.SignedUrlSpec(
        FileAction.GET, "a/b.txt", None, None
    )


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        ({"id": "OTHER", "command": "get", "filename": "x"}, errors.Forbidden, "id"),
        ({"command": "put", "filename": "x"}, errors.Invalid, "size"),
        ({"command": "put", "filename": "x", "size": "12.5"}, errors.Invalid, "size"),
        ({"command": "put", "filename": "x", "size": 101}, errors.TooLarge, "size"),
        ({"command": "put", "filename": "../x", "size": 1}, errors.Invalid, "filename"),
        (
            {"command": "put", "filename": "x", "size": 1, "mimeType": "jpeg"},
            errors.Invalid,
            "mimeType",
        ),
    ],
)
def test_bad_signed_url_requests(
    body: dict[str, object], error: type[errors.Error], field: str
) -> None:
    request = s.SignedUrlRequest.model_validate(body)
    with pytest.raises(error) as info:
        s.signed_url_spec(request, device_id=DEV, max_bytes=100)
    assert info.value.field == field


def test_signed_url_schema_refusals() -> None:
    for body in (
        {"command": "post", "filename": "x"},
        {"command": "get"},
        {"command": "get", "filename": "x", "size": [1]},
        {"command": "get", "filename": "x", "size": 1.5},
    ):
        with pytest.raises(ValidationError):
            s.SignedUrlRequest.model_validate(body)


def test_signed_url_body_is_a_json_string() -> None:
    url = 'http://h/ioto/s3/b/dev/a%20b?X-Amz-Signature=abc&x="y"'
    body = s.signed_url_body(url)
    assert json.loads(body) == url
    assert body.startswith(b'"') and body.endswith(b'"')


def test_creds_answer() -> None:
    answer = s.CredsAnswer(
        accessKeyId="ASIA",
        secretAccessKey="s",
        sessionToken="t",
        expires="2025-10-09T09:53:20.000Z",
        region="thinghub-1",
    ).model_dump()
    assert list(answer) == ["accessKeyId", "secretAccessKey", "sessionToken", "expires", "region"]


def test_errors_are_plain_text_with_the_agents_two_texts() -> None:
    assert s.status_of(errors.Unauthorized("bad token")) == 401
    assert s.status_of(errors.NotFound("x")) == 404
    assert s.status_of(errors.Forbidden("x")) == 403
    assert s.status_of(errors.Conflict("x")) == 409
    assert s.status_of(errors.TooLarge("x")) == 413
    assert s.status_of(errors.RateLimited("x")) == 429
    assert s.status_of(errors.Invalid("x")) == 400
    assert (
        s.error_text(errors.Unauthorized("bad token"), device_call=True) == "Authentication failed"
    )
    assert s.error_text(errors.NotFound("no device x"), device_call=True) == "Cannot find device"
    assert s.error_text(errors.NotFound("no device x")) == "no device x"
    assert (
        s.error_text(errors.Invalid("id is required", field="id"), device_call=True)
        == "id is required"
    )
