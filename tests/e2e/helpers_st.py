"""Helpers for the /v1 (ST AIoT Craft IoT API) e2e tests: SAS tokens, devices, error shapes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from tests.e2e.server import ServerProcess

# The seed's timestamps: seven fraction digits and a Z, e.g. 2025-08-13T13:12:29.6760000Z.
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
ID_SCOPE_RE = re.compile(r"0ne[0-9A-Fa-f]{8}")
API_VERSION = "2020-09-30"
# assert_error(field=ANY_FIELD): some field must be named, whichever (e.g. "id" or "tokenId").
ANY_FIELD = "*"
SAS_HOST = "localhost"


def sas_token(key_b64: str, resource_uri: str, expiry: int | None = None) -> str:
    """A SAS token built the way the azure-iot-device SDK builds it (docs/faces/device-mqtt.md).

    The URL-encoded resource URI, a newline and the expiry are signed with HMAC-SHA256 keyed by
    the base64-decoded device key; the base64 signature is URL-encoded too.
    """
    se = int(time.time()) + 3600 if expiry is None else expiry
    enc_uri = quote(resource_uri, safe="")
    digest = hmac.new(base64.b64decode(key_b64), f"{enc_uri}\n{se}".encode(), hashlib.sha256)
    sig = quote(base64.b64encode(digest.digest()).decode("ascii"), safe="")
    return f"SharedAccessSignature sr={enc_uri}&sig={sig}&se={se}"


def device_resource(device_id: str, module_id: str | None = None) -> str:
    uri = f"{SAS_HOST}/devices/{device_id}"
    return f"{uri}/modules/{module_id}" if module_id else uri


def device_sas(
    device: dict[str, Any],
    *,
    key: str = "primaryKey",
    expiry: int | None = None,
    module_of: str | None = None,
) -> str:
    """SAS for a /v1 device (or, with module_of=gateway id, a module) from its credentials."""
    secret = device["credentials"]["symmetricKey"][key]
    if module_of is not None:
        return sas_token(secret, device_resource(module_of, device["moduleId"]), expiry)
    return sas_token(secret, device_resource(device["id"]), expiry)


def events_path(device_id: str, module_id: str | None = None) -> str:
    base = f"/devices/{device_id}"
    if module_id:
        base += f"/modules/{module_id}"
    return f"{base}/messages/events"


def post_telemetry(
    base_url: str,
    device_id: str,
    body: Any,
    auth: str | None,
    *,
    module_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a device-to-cloud message to the IoT Hub-compatible HTTPS endpoint."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        sent["Authorization"] = auth
    return httpx.post(  # verify=False: plain HTTP, no CA bundle to load (~50 ms a call)
        f"{base_url}{events_path(device_id, module_id)}",
        params={"api-version": API_VERSION},
        content=json.dumps(body).encode(),
        headers=sent,
        timeout=30,
        verify=False,
    )


def client(server: ServerProcess, token: str | None = None, **kwargs: Any) -> httpx.Client:
    """server.client(), without loading a CA bundle the plain-HTTP server never needs.

    httpx builds a verifying SSL context for every client (~50 ms); the suites make hundreds.
    """
    return server.client(token, verify=False, **kwargs)


def anonymous(server: ServerProcess, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, headers=headers, timeout=30, verify=False)


def create_device(
    client: httpx.Client, name: str, project: str, deployment: str, *, gateway: bool = False
) -> dict[str, Any]:
    response = client.post(
        "/v1/devices",
        json={
            "name": name,
            "project": project,
            "deployment": deployment,
            "isIoTEdgeCapable": gateway,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(
    response: httpx.Response, status: int, *, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The /v1 error shape {"error": {"code", "message", "field"}} with the given status."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str), body
    assert error["code"], body
    assert isinstance(error.get("message"), str), body
    assert error["message"], body
    assert set(error) <= {"code", "message", "field"}, body
    if field == ANY_FIELD:
        assert error.get("field"), body
    elif field is not None:
        assert error.get("field") == field, body
    if code is not None:
        assert error["code"] == code, body
    return error


def assert_hub_unauthorized(response: httpx.Response) -> None:
    """IoT Hub's device-side error: 401 {"Message": "ErrorCode:IotHubUnauthorizedAccess;..."}."""
    assert response.status_code == 401, (response.status_code, response.text)
    message = response.json()["Message"]
    assert message.startswith("ErrorCode:IotHubUnauthorizedAccess;"), message


def is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def b64_key_bytes(value: Any) -> int:
    """How many bytes a base64 key decodes to (strictly validated)."""
    assert isinstance(value, str), value
    return len(base64.b64decode(value, validate=True))


class StServer(ServerProcess):
    """The shared ServerProcess (other e2e modules import this name).

    It once also closed the log file and stdout pipe the harness leaked; the harness now does
    that itself, so this only narrows start()'s return type.
    """

    def start(self) -> StServer:
        super().start()
        return self
