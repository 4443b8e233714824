"""The IoT Hub device REST API over HTTPS (docs/faces/device-http.md), as the device SDKs'
HTTPS transports call it: batches of events, and cloud-to-device messages by polling."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import client, create_device, device_sas, sas_token
from tests.e2e.server import ServerProcess

API = {"api-version": "2020-09-30"}
BATCH = "application/vnd.microsoft.iothub.json"


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with client(server) as api:
        yield api


@pytest.fixture
def device(admin: httpx.Client, unique: Callable[[str], str]) -> dict[str, Any]:
    return create_device(admin, "https device", unique("p"), "d")


@pytest.fixture
def hub(server: ServerProcess, device: dict[str, Any]) -> Iterator[httpx.Client]:
    """The device's HTTPS client: its SAS token on every request."""
    headers = {"Authorization": device_sas(device)}
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=30) as http:
        yield http


def _bodies(admin: httpx.Client, device_id: str) -> list[Any]:
    listed = admin.get("/v1/telemetries", params={"deviceID": device_id, "limit": 100}).json()
    return [t["body"] for t in reversed(listed)]  # oldest first


def _hub_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"Message", "ExceptionMessage"}, body
    assert body["Message"].startswith(f"ErrorCode:{code};"), body
    assert response.headers["iothub-errorcode"] == code  # as IoT Hub sends it


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_error_names_its_code_in_the_iothub_errorcode_header(
    server: ServerProcess, device: dict[str, Any]
) -> None:
    """IoT Hub puts the error's code name in `iothub-errorcode` too (the .NET SDK reads it
    before the body); it was only in the body."""
    path = f"{server.http_url}/devices/{device['id']}/messages/events"
    _hub_error(httpx.post(path, params=API, content=b"{}"), 401, "IotHubUnauthorizedAccess")
    big = {"Authorization": device_sas(device)}
    _hub_error(
        httpx.post(path, params=API, content=b"x" * 300_000, headers=big), 413, "MessageTooLarge"
    )


def test_a_batch_is_stored_as_its_messages(
    hub: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """A batch (`application/vnd.microsoft.iothub.json`, as the C, Java, .NET and Node
    SDKs' HTTPS `sendEventBatch` send it) is one message per element, its body base64 unless
    `base64Encoded` is false (was stored as one message whose body was the array)."""
    batch = [
        {
            "body": _b64(b'{"temperature": 20}'),
            "base64Encoded": True,
            "properties": {"iothub-app-unit": "celsius", "iothub-messageid": "b-1"},
        },
        {"body": _b64(b'{"temperature": 21}')},  # base64 is the default (.NET leaves it out)
        {"body": "plain text", "base64Encoded": False, "properties": {"iothub-messageid": "b-3"}},
    ]
    path = f"/devices/{device['id']}/messages/events"
    sent = hub.post(path, params=API, content=json.dumps(batch), headers={"Content-Type": BATCH})
    assert sent.status_code == 204, sent.text
    expected = [{"temperature": 20}, {"temperature": 21}, "plain text"]
    assert _bodies(admin, device["id"]) == expected
    # The message ids were read: sending the two with ids again stores nothing new.
    again = [batch[0], batch[2]]
    sent = hub.post(path, params=API, content=json.dumps(again), headers={"Content-Type": BATCH})
    assert sent.status_code == 204, sent.text
    assert _bodies(admin, device["id"]) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b"[]",
        b"[1]",
        b'[{"properties": {}}]',
        b'[{"body": "%%%", "base64Encoded": true}]',
        b'[{"body": 1, "base64Encoded": true}]',
        b'[{"body": "not base64!"}]',
        b'[{"body": "", "base64Encoded": "yes"}]',
        b'[{"body": "", "properties": {"iothub-app-n": 1}}]',
        b'[{"body": "", "properties": []}]',
        b'[{"body": ' + b"[" * 300 + b"]" * 300 + b"}]",  # past the JSON depth limit: was a 500
    ],
)
def test_a_malformed_batch_is_400_and_stores_nothing(
    hub: httpx.Client, admin: httpx.Client, device: dict[str, Any], body: bytes
) -> None:
    """A batch that is not an array of `{body, base64Encoded?, properties?}` is IoT Hub's 400,
    and none of its messages is stored (even those before the bad one)."""
    path = f"/devices/{device['id']}/messages/events"
    good = json.dumps({"body": _b64(b"1"), "base64Encoded": True}).encode()
    contents = [body]
    if body.startswith(b"[") and body != b"[]":
        contents.append(b"[" + good + b"," + body[1:])
    for content in contents:
        response = hub.post(path, params=API, content=content, headers={"Content-Type": BATCH})
        _hub_error(response, 400, "ArgumentInvalid")
    assert _bodies(admin, device["id"]) == []


def _send_c2d(admin: httpx.Client, device_id: str, body: Any, **properties: str) -> str:
    sent = admin.post(
        f"/v1/devices/{device_id}/messages", json={"body": body, "properties": properties}
    )
    assert sent.status_code == 202, sent.text
    return str(sent.json()["messageId"])


def test_cloud_to_device_messages_are_polled_and_settled(
    hub: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """C2D over HTTPS as the SDKs' HTTPS transports poll it: GET deviceBound gives the next
    message with its lock token as a quoted ETag (204 when none waits); DELETE .../{etag}
    completes it, POST .../abandon lets it come again, DELETE ...?reject rejects it (all
    were a 404)."""
    bound = f"/devices/{device['id']}/messages/deviceBound"
    assert hub.get(bound, params=API).status_code == 204
    # A property no header can carry as it is (CR LF, not ASCII) stays out of the headers.
    first = _send_c2d(
        admin, device["id"], {"led": "on"}, color="red", evil="a\r\nx-injected: 1", word="caf\u00e9"
    )
    second = _send_c2d(admin, device["id"], "reboot")

    got = hub.get(bound, params=API)
    assert got.status_code == 200, got.text
    assert got.json() == {"led": "on"}
    assert got.headers["iothub-messageid"] == first
    assert got.headers["iothub-app-color"] == "red"
    assert "x-injected" not in got.headers and "iothub-app-evil" not in got.headers
    assert "iothub-app-word" not in got.headers
    assert got.headers["iothub-deliverycount"] == "1"
    etag = got.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    lock = etag.strip('"')

    # Locked: the next receive gives the second message, and abandoning that puts it back.
    other = hub.get(bound, params=API)
    assert other.status_code == 200 and other.content == b"reboot"
    other_lock = other.headers["etag"].strip('"')
    abandoned = hub.post(f"{bound}/{other_lock}/abandon", params=API)
    assert abandoned.status_code == 204, abandoned.text

    # Complete (as the Node SDK writes the path: lower-case, If-Match given).
    done = hub.delete(
        f"/devices/{device['id']}/messages/devicebound/{lock}",
        params=API,
        headers={"If-Match": etag},
    )
    assert done.status_code == 204, done.text
    # A settled lock is gone: IoT Hub's 412 DeviceMessageLockLost.
    _hub_error(hub.delete(f"{bound}/{lock}", params=API), 412, "DeviceMessageLockLost")

    again = hub.get(bound, params=API)
    assert again.status_code == 200 and again.content == b"reboot"
    assert again.headers["iothub-messageid"] == second
    assert again.headers["iothub-deliverycount"] == "2"
    rejected = hub.delete(
        f"{bound}/{again.headers['etag'].strip(chr(34))}?api-version=2020-09-30&reject"
    )
    assert rejected.status_code == 204, rejected.text
    assert hub.get(bound, params=API).status_code == 204


def test_cloud_to_device_polling_needs_the_devices_own_token(
    server: ServerProcess, admin: httpx.Client, device: dict[str, Any], unique: Callable[[str], str]
) -> None:
    """Another device's token, or none, is IoT Hub's 401, and takes nothing off the queue;
    an unknown lock token is 412."""
    other = create_device(admin, "other", unique("p"), "d")
    _send_c2d(admin, device["id"], "for the device")
    bound = f"{server.http_url}/devices/{device['id']}/messages/deviceBound"
    for headers in ({}, {"Authorization": device_sas(other)}):
        _hub_error(httpx.get(bound, params=API, headers=headers), 401, "IotHubUnauthorizedAccess")
        response = httpx.delete(f"{bound}/x", params=API, headers=headers)
        _hub_error(response, 401, "IotHubUnauthorizedAccess")
    mine = {"Authorization": device_sas(device)}
    _hub_error(
        httpx.delete(f"{bound}/nope", params=API, headers=mine), 412, "DeviceMessageLockLost"
    )
    _hub_error(
        httpx.post(f"{bound}/nope/abandon", params=API, headers=mine), 412, "DeviceMessageLockLost"
    )
    got = httpx.get(bound, params=API, headers=mine)
    assert got.status_code == 200 and got.content == b"for the device"


def _dps_sas(device: dict[str, Any], scope: str) -> str:
    """The SAS token a provisioning client's HTTP transport sends (key name `registration`)."""
    resource = f"{scope}/registrations/{device['id']}"
    return sas_token(device["credentials"]["symmetricKey"]["primaryKey"], resource) + (
        "&skn=registration"
    )


def _dps_error(response: httpx.Response, status: int, error_code: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errorCode", "trackingId", "message", "timestampUtc"}, body
    assert body["errorCode"] == error_code, body


def test_dps_over_https_registers_and_the_operation_is_polled(
    server: ServerProcess, device: dict[str, Any], unique: Callable[[str], str]
) -> None:
    """DPS over HTTPS, as the provisioning clients' HTTP transports call it: PUT
    .../register answers 202 assigning with an operation id, GET .../operations/{id} the
    assigned registration (both were a 404)."""
    scope = device["idScope"]
    base = f"{server.http_url}/{scope}/registrations/{device['id']}"
    auth = {"Authorization": _dps_sas(device, scope)}
    body = {"registrationId": device["id"], "payload": {"modelId": "dtmi:com:example:T;1"}}
    registered = httpx.put(
        f"{base}/register", params={"api-version": "2019-03-31"}, json=body, headers=auth
    )
    assert registered.status_code == 202, registered.text
    accepted = registered.json()
    assert accepted["status"] == "assigning" and accepted["operationId"]
    polled = httpx.get(
        f"{base}/operations/{accepted['operationId']}",
        params={"api-version": "2019-03-31"},
        headers=auth,
    )
    assert polled.status_code == 200, polled.text
    status = polled.json()
    assert status["operationId"] == accepted["operationId"]
    assert status["status"] == "assigned"
    state = status["registrationState"]
    assert state["deviceId"] == device["id"] and state["registrationId"] == device["id"]
    assert state["status"] == "assigned" and state["assignedHub"]

    # Errors in DPS's shape: a bad token 401, an unknown operation 404, another id 400.
    bad = {"Authorization": _dps_sas(device, scope).replace("sig=", "sig=x")}
    _dps_error(httpx.put(f"{base}/register", json=body, headers=bad), 401, 401002)
    _dps_error(httpx.put(f"{base}/register", json=body), 401, 401002)
    _dps_error(httpx.get(f"{base}/operations/nope", headers=auth), 404, 404202)
    other = {"registrationId": unique("someone-else")}
    _dps_error(httpx.put(f"{base}/register", json=other, headers=auth), 400, 400208)
    _dps_error(httpx.put(f"{base}/register", content=b"[1]", headers=auth), 400, 400004)


def test_file_upload_as_the_sdks_upload_to_blob(
    server: ServerProcess, hub: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """IoT Hub file upload: POST /files gives the blob's SAS URI parts, a Put Blob to
    `{hostName}/{containerName}/{blobName}{sasToken}` stores it (201, Content-MD5), and the
    notification is 204; the file is the device's, listed and read at /v1 (all were a 404)."""
    content = b"line 1\nline 2\n" * 100
    created = hub.post(
        f"/devices/{device['id']}/files", params=API, json={"blobName": "logs/a.txt"}
    )
    assert created.status_code == 200, created.text
    info = created.json()
    assert set(info) == {"correlationId", "hostName", "containerName", "blobName", "sasToken"}
    assert info["blobName"] == f"{device['id']}/logs/a.txt"
    assert info["sasToken"].startswith("?")
    # The SDKs use https://; this server is plain HTTP.
    url = f"http://{info['hostName']}/{info['containerName']}/{info['blobName']}{info['sasToken']}"
    put = httpx.put(url, content=content, headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    assert base64.b64decode(put.headers["content-md5"]) == hashlib.md5(content).digest()
    assert put.headers["etag"] and put.headers["last-modified"]
    notified = hub.post(
        f"/devices/{device['id']}/files/notifications",
        params=API,
        json={
            "correlationId": info["correlationId"],
            "isSuccess": True,
            "statusCode": 200,
            "statusDescription": "ok",
        },
    )
    assert notified.status_code == 204, notified.text
    listed = admin.get(f"/v1/devices/{device['id']}/files").json()
    assert [f["name"] for f in listed] == ["logs/a.txt"], listed
    assert admin.get(f"/v1/devices/{device['id']}/files/logs/a.txt").content == content

    # The SAS token is for that one blob, and a forged one opens nothing (Blob Storage's XML).
    other = url.replace("logs/a.txt", "logs/b.txt")
    refused = httpx.put(other, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
    assert refused.status_code == 403 and b"<Code>" in refused.content
    forged = url.replace("sig=", "sig=x")
    refused = httpx.put(forged, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
    assert refused.status_code == 403 and b"<Code>AuthenticationFailed</Code>" in refused.content
    # IoT Hub's errors on the hub calls.
    bad = hub.post(f"/devices/{device['id']}/files", params=API, json={"blobName": "../x"})
    _hub_error(bad, 400, "ArgumentInvalid")
    unknown = {"correlationId": "nope", "isSuccess": True}
    _hub_error(
        hub.post(f"/devices/{device['id']}/files/notifications", params=API, json=unknown),
        400,
        "ArgumentInvalid",
    )
    anonymous = httpx.post(
        f"{server.http_url}/devices/{device['id']}/files", params=API, json={"blobName": "a"}
    )
    _hub_error(anonymous, 401, "IotHubUnauthorizedAccess")
