"""The IoT Hub device REST API over HTTPS (docs/faces/device-http.md), as the device SDKs'
HTTPS transports call it: batches of events, and cloud-to-device messages by polling."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import client, create_device, device_sas
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_batch_is_stored_as_its_messages(
    hub: httpx.Client, admin: httpx.Client, device: dict[str, Any]
) -> None:
    """A batch (`application/vnd.microsoft.iothub.json`, as the C, Java, .NET and Node
    SDKs' HTTPS `sendEventBatch` send it) is one message per element, its body base64 when
    `base64Encoded` (was stored as one message whose body was the array)."""
    batch = [
        {
            "body": _b64(b'{"temperature": 20}'),
            "base64Encoded": True,
            "properties": {"iothub-app-unit": "celsius", "iothub-messageid": "b-1"},
        },
        {"body": _b64(b'{"temperature": 21}'), "base64Encoded": True},
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
        b'[{"body": "", "base64Encoded": "yes"}]',
        b'[{"body": "", "properties": {"iothub-app-n": 1}}]',
        b'[{"body": "", "properties": []}]',
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
