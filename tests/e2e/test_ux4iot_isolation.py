"""ux4iot isolation: every route tried with another account's key and with another session's
id. A key reaches only its own account's devices and sessions (404 for the rest, exactly as
for things that do not exist); a session reaches only what its grants allow (403), and its
socket never carries another account's data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.ux4iot import (
    SESSION,
    Ux,
    create_key,
    live_socket,
    new_device,
    other_account,
    send_https,
    telemetry_of,
)


@dataclass
class Tenant:
    token: str | None  # admin token (None: the server's admin, default account)
    key: dict[str, Any]
    device: dict[str, Any]
    ux: Ux
    session: str  # bound to the tenant, granted everything on its device


GRANTS = (
    ("telemetry", {"telemetryKey": None}),
    ("deviceTwin", {}),
    ("connectionState", {}),
    ("d2cMessages", {}),
    ("desiredProperties", {}),
    ("directMethod", {"directMethodName": None}),
)


def tenant(server: ServerProcess, token: str | None) -> Tenant:
    key = create_key(server, token)
    device = new_device(server, token)
    ux = Ux(server.http_url, key["key"])
    session = ux.session()
    for kind, extra in GRANTS:
        assert ux.grant(session, device["id"], kind, **extra).status_code == 204
    send_https(server, device, {"temp": 1})
    return Tenant(token, key, device, ux, session)


@pytest.fixture(scope="module")
def tenants(server: ServerProcess) -> Iterator[tuple[Tenant, Tenant]]:
    a = tenant(server, None)
    b = tenant(server, other_account(server, "ux-isolation"))
    yield a, b
    a.ux.__exit__()
    b.ux.__exit__()


def test_another_accounts_key_sees_nothing_of_it(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    dev = a.device["id"]
    intruder = b.ux.http
    for kind, extra in GRANTS:
        # a's session (bound to a): unknown to b's key
        assert b.ux.grant(a.session, dev, kind, **extra).status_code == 404
        assert b.ux.revoke(a.session, dev, kind, **extra).status_code == 404
    for path in (f"/lastValue/{dev}", f"/lastValue/{dev}/temp", f"/deviceTwin/{dev}",
                 f"/connectionState/{dev}"):  # fmt: skip
        response = intruder.get(path)
        assert response.status_code == 404, (path, response.text)
        assert dev in response.json()["error"]["message"]  # "not found", as for no device
    assert intruder.delete(f"/lastValue/{dev}").status_code == 404
    call = {"deviceId": dev, "methodParams": {"methodName": "reboot"}}
    assert intruder.post("/directMethod", json=call).status_code == 404
    patch = {"deviceId": dev, "desiredPropertyPatch": {"owned": "by b"}}
    assert intruder.patch("/deviceTwinDesiredProperties", json=patch).status_code == 404
    assert intruder.delete(f"/sessions/{a.session}").status_code == 404
    # a's session, grants and data are intact
    twin = a.ux.as_session("GET", f"/deviceTwin/{dev}", a.session)
    assert twin.status_code == 200
    assert "owned" not in twin.json()["data"]["properties"]["desired"]
    assert a.ux.as_session("GET", f"/lastValue/{dev}/temp", a.session).json()["data"] == {"temp": 1}


def test_a_session_opened_at_the_port_root_is_as_apart(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    """`POST /session` at the port's root (admin-node's getSessionIdStatic) opens the same
    unbound session as `/ux4iot/session`: a's first grant binds it, and b's key then gets 404."""
    a, b = tenants
    with httpx.Client(base_url=server.http_url, timeout=30) as root:
        session = root.post("/session").json()["sessionId"]
    assert a.ux.grant(session, a.device["id"], "deviceTwin").status_code == 204
    assert b.ux.grant(session, b.device["id"], "deviceTwin").status_code == 404
    assert b.ux.http.delete(f"/sessions/{session}").status_code == 404
    assert a.ux.as_session("GET", f"/deviceTwin/{b.device['id']}", session).status_code == 403


def test_another_accounts_session_gets_no_grant_on_it(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    dev = a.device["id"]
    b.ux.grant(b.session, b.device["id"], "telemetry")  # b's session is alive and bound
    for kind in ("telemetry", "deviceTwin", "connectionState", "d2cMessages"):
        assert b.ux.subscribe(b.session, dev, kind).status_code == 403
        assert b.ux.subscribe(b.session, dev, kind, method="DELETE").status_code == 403
    bulk = [{"sessionId": b.session, "deviceId": dev, "type": "telemetry", "telemetryKey": "temp"}]
    assert b.ux.bare.put("/subscriptions", json=bulk).json() == []  # skipped: no grant
    assert b.ux.bare.request("DELETE", "/subscriptions", json=bulk).json() == []
    for path in (f"/lastValue/{dev}", f"/lastValue/{dev}/temp", f"/deviceTwin/{dev}",
                 f"/connectionState/{dev}"):  # fmt: skip
        assert b.ux.bare.get(path, headers={SESSION: b.session}).status_code == 403, path
    call = {"deviceId": dev, "methodParams": {"methodName": "reboot"}}
    assert b.ux.as_session("POST", "/directMethod", b.session, json=call).status_code == 403
    patch = {"deviceId": dev, "desiredPropertyPatch": {"owned": "by b"}}
    assert (
        b.ux.as_session("PATCH", "/deviceTwinDesiredProperties", b.session, json=patch).status_code
        == 403
    )
    assert b.ux.as_session("DELETE", f"/lastValue/{dev}", b.session).status_code == 403


async def test_a_grant_naming_another_accounts_device_reaches_nothing(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    """A grant is not checked against the registry (a device may be registered later), so
    b's key may grant b's session a's device id: 204, as for any id, and it reaches nothing
    of a's device, which stays "not found" to b."""
    a, b = tenants
    dev = a.device["id"]
    session = b.ux.session()
    for kind, extra in GRANTS:
        assert b.ux.grant(session, dev, kind, **extra).status_code == 204
    assert b.ux.subscribe(session, dev, "telemetry").status_code == 204
    for path in (f"/lastValue/{dev}", f"/lastValue/{dev}/temp", f"/deviceTwin/{dev}",
                 f"/connectionState/{dev}"):  # fmt: skip
        assert b.ux.as_session("GET", path, session).status_code == 404, path
    assert b.ux.as_session("DELETE", f"/lastValue/{dev}", session).status_code == 404
    call = {"deviceId": dev, "methodParams": {"methodName": "reboot"}}
    assert b.ux.as_session("POST", "/directMethod", session, json=call).status_code == 404
    patch = {"deviceId": dev, "desiredPropertyPatch": {"owned": "by b"}}
    response = b.ux.as_session("PATCH", "/deviceTwinDesiredProperties", session, json=patch)
    assert response.status_code == 404
    async with live_socket(server.http_url, session) as live:
        send_https(server, a.device, {"temp": 99})
        assert b.ux.grant(session, b.device["id"], "d2cMessages").status_code == 204
        assert b.ux.subscribe(session, b.device["id"], "d2cMessages").status_code == 204
        send_https(server, b.device, {"sentinel": 1})
        await live.wait(lambda p: p.get("message") == {"sentinel": 1})
        assert not any(p.get("deviceId") == dev for p in live.payloads), live.payloads
    assert a.ux.as_session("GET", f"/lastValue/{dev}/temp", a.session).json()["data"] == {
        "temp": 99
    }


def test_another_session_of_the_same_account_has_none_of_its_grants(
    tenants: tuple[Tenant, Tenant],
) -> None:
    a, _ = tenants
    dev = a.device["id"]
    other = a.ux.session()
    assert a.ux.grant(other, dev, "connectionState").status_code == 204  # bound, one grant
    assert a.ux.subscribe(other, dev, "telemetry", telemetryKey="temp").status_code == 403
    assert a.ux.as_session("GET", f"/lastValue/{dev}", other).status_code == 403
    assert a.ux.as_session("GET", f"/deviceTwin/{dev}", other).status_code == 403
    assert a.ux.as_session("GET", f"/connectionState/{dev}", other).status_code == 200
    call = {"deviceId": dev, "methodParams": {"methodName": "reboot"}}
    assert a.ux.as_session("POST", "/directMethod", other, json=call).status_code == 403


async def test_a_socket_never_carries_another_accounts_data(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    async with live_socket(server.http_url, b.session) as live:
        assert b.ux.subscribe(b.session, b.device["id"], "telemetry").status_code == 204
        # b's session asks for a's device: refused, so a's data never reaches it
        assert b.ux.subscribe(b.session, a.device["id"], "telemetry").status_code == 403
        send_https(server, a.device, {"secret": 42})
        send_https(server, b.device, {"mine": 1})  # the sentinel, after a's message
        await live.wait(telemetry_of(b.device["id"], mine=1))
        assert all(p["deviceId"] == b.device["id"] for p in live.payloads)


def test_keys_of_another_account_cannot_be_managed(
    server: ServerProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    with server.client(b.token, verify=False) as api:
        ids = {k["id"] for k in api.get("/v1/ux4iot/keys").json()}
        assert a.key["id"] not in ids and b.key["id"] in ids
        assert api.post(f"/v1/ux4iot/keys/{a.key['id']}/rotate").status_code == 404
        assert api.delete(f"/v1/ux4iot/keys/{a.key['id']}").status_code == 404
    assert a.ux.http.delete("/sessions/none-such").status_code == 404  # a's key still works
    # DELETE /sessions with b's key ends b's sessions, none of a's
    assert b.ux.http.delete("/sessions").status_code == 204
    assert b.ux.subscribe(b.session, b.device["id"], "telemetry").status_code == 404
    assert a.ux.subscribe(a.session, a.device["id"], "telemetry").status_code == 204
