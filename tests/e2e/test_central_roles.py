"""IoT Central API tokens and the role matrix: every role against every route.

Roles: the server's admin token (an App Administrator), tokens made here for App Administrator,
App Builder and App Operator (sent as `Bearer <token>` and as the raw token, as IoT Central
clients send `SharedAccessSignature sr=...`), and a /v1 viewer token (read only).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import API, VERSION, assert_error, template_body

pytestmark = pytest.mark.e2e

ADMIN_ID = "ca310b8d-2f4a-44e0-a36e-957c202cd8d4"
BUILDER_ID = "344138e9-8de4-4497-8c54-5237e96d6aaf"
OPERATOR_ID = "ae2c9854-393b-4f97-8c42-479d70ce626e"

ROLES = ("server-admin", "administrator", "builder", "operator", "viewer")
ALL = frozenset(ROLES)
WRITERS = ALL - {"viewer"}
BUILDERS = frozenset({"server-admin", "administrator", "builder"})
ADMINS = frozenset({"server-admin", "administrator"})


@dataclass
class World:
    """Credentials per role, and an admin client that prepares what each request needs."""

    server: ServerProcess
    admin: httpx.Client
    headers: dict[str, str]
    template_id: str
    device_id: str
    command_id: str
    token_id: str

    def fresh(self, kind: str) -> str:
        return f"{kind}-{uuid.uuid4().hex[:10]}"

    def new_device(self) -> str:
        device_id = self.fresh("dev")
        assert self.admin.put(f"/devices/{device_id}", json={}).status_code == 200
        return device_id

    def new_template(self) -> str:
        tid = f"dtmi:thinghub:roles:{self.fresh('t').replace('-', '_')};1"
        response = self.admin.put(f"/deviceTemplates/{tid}", json=template_body(tid))
        assert response.status_code == 200, response.text
        return tid

    def template_request(self) -> tuple[str, dict[str, Any]]:
        tid = f"dtmi:thinghub:roles:{self.fresh('t').replace('-', '_')};1"
        return f"/deviceTemplates/{tid}", template_body(tid)

    def new_token(self) -> str:
        token_id = self.fresh("tok")
        response = self.admin.put(
            f"/apiTokens/{token_id}", json={"roles": [{"role": "App Operator"}]}
        )
        assert response.status_code == 200, response.text
        return token_id


def create_token(admin: httpx.Client, token_id: str, role: str, **extra: Any) -> httpx.Response:
    return admin.put(f"/apiTokens/{token_id}", json={"roles": [{"role": role}], **extra})


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    with httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    ) as admin:
        secrets = {}
        for name, role in (
            ("administrator", ADMIN_ID),
            ("builder", "App Builder"),
            ("operator", "operator"),
        ):
            response = create_token(admin, f"matrix-{name}-{uuid.uuid4().hex[:6]}", role)
            assert response.status_code == 200, response.text
            secrets[name] = response.json()["token"]
        with server.client() as v1:
            viewer = v1.post("/v1/tokens", json={"role": "viewer"})
            assert viewer.status_code == 201, viewer.text
        headers = {
            "server-admin": f"Bearer {server.admin_token}",
            "administrator": secrets["administrator"],  # raw, as IoT Central clients send it
            "builder": f"Bearer {secrets['builder']}",
            "operator": secrets["operator"],
            "viewer": f"Bearer {viewer.json()['token']}",
        }
        placeholder = World(server, admin, headers, "", "", "", "")
        template_id = placeholder.new_template()
        device_id = placeholder.fresh("dev")
        assert admin.put(f"/devices/{device_id}", json={"template": template_id}).status_code == 200
        command = admin.post(f"/devices/{device_id}/commands/ping", json={})
        assert command.status_code == 200, command.text
        yield World(
            server,
            admin,
            headers,
            template_id,
            device_id,
            command.json()["commandId"],
            placeholder.new_token(),
        )


Prepare = Callable[[World], tuple[str, str, Any]]


# (name, prepare(world) -> (method, path, json body), roles allowed)
ROUTES: list[tuple[str, Prepare, frozenset[str]]] = [
    ("get app", lambda w: ("GET", "/apps/app", None), ALL),
    (
        "create token",
        lambda w: ("PUT", f"/apiTokens/{w.fresh('tok')}", {"roles": [{"role": OPERATOR_ID}]}),
        ADMINS,
    ),
    ("list tokens", lambda w: ("GET", "/apiTokens", None), ADMINS),
    ("get token", lambda w: ("GET", f"/apiTokens/{w.token_id}", None), ADMINS),
    ("delete token", lambda w: ("DELETE", f"/apiTokens/{w.new_token()}", None), ADMINS),
    ("list devices", lambda w: ("GET", "/devices", None), ALL),
    (
        "create device",
        lambda w: ("PUT", f"/devices/{w.fresh('dev')}", {"template": w.template_id}),
        WRITERS,
    ),
    ("get device", lambda w: ("GET", f"/devices/{w.device_id}", None), ALL),
    (
        "update device",
        lambda w: ("PATCH", f"/devices/{w.device_id}", {"displayName": "renamed"}),
        WRITERS,
    ),
    ("delete device", lambda w: ("DELETE", f"/devices/{w.new_device()}", None), WRITERS),
    ("get credentials", lambda w: ("GET", f"/devices/{w.device_id}/credentials", None), WRITERS),
    ("get attestation", lambda w: ("GET", f"/devices/{w.device_id}/attestation", None), WRITERS),
    (
        "send telemetry",
        lambda w: ("POST", f"/devices/{w.device_id}/telemetry", {"temperature": 1.5}),
        WRITERS,
    ),
    (
        "run command",
        lambda w: ("POST", f"/devices/{w.device_id}/commands/reboot", {"rebootInterval": 1}),
        WRITERS,
    ),
    (
        "run component command",
        lambda w: (
            "POST",
            f"/devices/{w.device_id}/components/thermostat1/commands/getMaxMinReport",
            "2023-10-26T00:00:00Z",
        ),
        WRITERS,
    ),
    (
        "command status",
        lambda w: ("GET", f"/devices/{w.device_id}/commands/{w.command_id}/status", None),
        ALL,
    ),
    (
        "get property",
        lambda w: ("GET", f"/devices/{w.device_id}/properties/targetTemperature", None),
        ALL,
    ),
    (
        "set property",
        lambda w: ("PATCH", f"/devices/{w.device_id}/properties/targetTemperature", {"value": 20}),
        WRITERS,
    ),
    ("create template", lambda w: ("PUT", *w.template_request()), BUILDERS),
    ("list templates", lambda w: ("GET", "/deviceTemplates", None), ALL),
    ("get template", lambda w: ("GET", f"/deviceTemplates/{w.template_id}", None), ALL),
    (
        "update template",
        lambda w: ("PATCH", f"/deviceTemplates/{w.template_id}", {"description": "x"}),
        BUILDERS,
    ),
    (
        "delete template",
        lambda w: ("DELETE", f"/deviceTemplates/{w.new_template()}", None),
        BUILDERS,
    ),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("route", "prepare", "allowed"), ROUTES, ids=[r[0] for r in ROUTES])
def test_role_matrix(
    world: World, route: str, prepare: Prepare, allowed: frozenset[str], role: str
) -> None:
    method, path, body = prepare(world)
    response = world.admin.request(
        method, path, json=body, headers={"Authorization": world.headers[role]}
    )
    if role in allowed:
        assert response.status_code not in (401, 403), (route, role, response.text)
        assert response.status_code < 500, (route, role, response.text)
        # The routes prepared above all succeed, except a property never reported (404).
        expected = 404 if route == "get property" else None
        if expected is not None:
            assert_error(response, expected)
        else:
            assert response.status_code in (200, 204), (route, role, response.text)
    else:
        assert_error(response, 403)


@pytest.mark.parametrize(("route", "prepare", "allowed"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_needs_credentials_and_a_known_api_version(
    world: World, route: str, prepare: Prepare, allowed: frozenset[str]
) -> None:
    method, path, body = prepare(world)
    url = world.server.http_url + API + path
    with httpx.Client(timeout=30) as anonymous:
        assert_error(
            anonymous.request(method, url, json=body, params={"api-version": VERSION}), 401
        )
        assert_error(
            anonymous.request(
                method,
                url,
                json=body,
                params={"api-version": "2019-01-01"},
                headers={"Authorization": world.headers["operator"]},
            ),
            400,
            "api-version",
        )


def test_builders_and_operators_cannot_mint_tokens_on_v1(world: World) -> None:
    for role in ("builder", "operator"):
        header = world.headers[role]
        if not header.startswith("Bearer "):
            header = f"Bearer {header}"
        with httpx.Client(
            base_url=world.server.http_url, timeout=30, headers={"Authorization": header}
        ) as v1:
            assert v1.post("/v1/tokens", json={"role": "admin"}).status_code == 403, role
            assert v1.get("/v1/devices").status_code == 200, role


# -- API tokens ---------------------------------------------------------------------------------


def test_token_lifecycle(world: World) -> None:
    admin = world.admin
    token_id = world.fresh("tok")
    created = create_token(admin, token_id, "App Builder")
    assert created.status_code == 200, created.text
    token = created.json()
    assert set(token) == {"id", "roles", "expiry", "token"}
    assert token["id"] == token_id
    assert token["roles"] == [{"role": BUILDER_ID}]
    assert token["token"].startswith("SharedAccessSignature sr=")
    assert f"skn={token_id}" in token["token"]
    # About a year by default.
    expiry = time.mktime(time.strptime(token["expiry"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 360 * 86400 < expiry - time.time() < 370 * 86400

    shown = admin.get(f"/apiTokens/{token_id}").json()
    assert shown == {k: v for k, v in token.items() if k != "token"}
    listed = admin.get("/apiTokens").json()
    assert set(listed) == {"value"}
    assert shown in listed["value"]
    assert all("token" not in t for t in listed["value"])

    for header in (token["token"], f"Bearer {token['token']}"):
        response = admin.get("/devices", headers={"Authorization": header})
        assert response.status_code == 200, response.text

    assert_error(create_token(admin, token_id, "App Operator"), 409, token_id)
    deleted = admin.delete(f"/apiTokens/{token_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(admin.get("/devices", headers={"Authorization": token["token"]}), 401)
    assert_error(admin.get(f"/apiTokens/{token_id}"), 404)
    assert_error(admin.delete(f"/apiTokens/{token_id}"), 404)


def test_role_names_ids_and_bad_bodies(world: World) -> None:
    admin = world.admin
    for role, role_id in (
        ("App Administrator", ADMIN_ID),
        ("app builder", BUILDER_ID),
        (OPERATOR_ID, OPERATOR_ID),
        ("admin", ADMIN_ID),
        ("builder", BUILDER_ID),
    ):
        response = create_token(admin, world.fresh("tok"), role)
        assert response.status_code == 200, response.text
        assert response.json()["roles"] == [{"role": role_id}]
    for body, needle in [
        ({"roles": [{"role": "Superuser"}]}, "unknown role"),
        ({"roles": []}, "roles"),
        ({"roles": [{"role": ADMIN_ID}, {"role": BUILDER_ID}]}, "roles"),
        ({"roles": [{}]}, "role"),
        ({}, "roles"),
        ({"roles": [{"role": ADMIN_ID}], "expiry": "2001-01-01T00:00:00Z"}, "future"),
        ({"roles": [{"role": ADMIN_ID}], "expiry": "soon"}, "expiry"),
        ({"roles": [{"role": ADMIN_ID}], "expiry": 5}, "expiry"),
    ]:
        assert_error(admin.put(f"/apiTokens/{world.fresh('tok')}", json=body), 400, needle)
    assert_error(
        admin.put("/apiTokens/bad%20id", json={"roles": [{"role": ADMIN_ID}]}), 400, "tokenId"
    )


def test_tokens_expire(world: World) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    response = create_token(world.admin, world.fresh("tok"), ADMIN_ID, expiry=stamp)
    assert response.status_code == 200, response.text
    secret = response.json()["token"]
    assert response.json()["expiry"] == stamp
    deadline = time.monotonic() + 15
    while world.admin.get("/apps/app", headers={"Authorization": secret}).status_code == 200:
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(0.3)
    assert_error(world.admin.get("/apps/app", headers={"Authorization": secret}), 401, "expired")


def test_v1_tokens_are_not_central_tokens(world: World) -> None:
    """GET/DELETE /apiTokens only see tokens made here: the server's own stay untouchable."""
    with world.server.client() as v1:
        made = v1.post("/v1/tokens", json={"role": "operator"}).json()
    assert_error(world.admin.get(f"/apiTokens/{made['id']}"), 404)
    assert_error(world.admin.delete(f"/apiTokens/{made['id']}"), 404)
    assert all(t["id"] != made["id"] for t in world.admin.get("/apiTokens").json()["value"])


def test_project_limited_tokens_stay_in_their_project(world: World) -> None:
    """A /v1 token limited to one project sees that project's devices, and nothing that
    belongs to the whole application (API tokens, templates) is within its reach."""
    project = world.fresh("proj")
    with world.server.client() as v1:
        made = v1.post("/v1/tokens", json={"role": "admin", "project": project})
        assert made.status_code == 201, made.text
        listed_tokens = {t["id"]: t for t in v1.get("/v1/tokens").json()}
        assert listed_tokens[made.json()["id"]]["project"] == project
        mine = v1.post("/v1/devices", json={"name": "in", "project": project, "deployment": "d"})
        assert mine.status_code == 200, mine.text
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    listed = world.admin.get("/devices", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [d["id"] for d in listed.json()["devices"]] == [mine.json()["id"]]
    assert_error(world.admin.get(f"/devices/{world.device_id}", headers=headers), 404)
    path, body = world.template_request()
    for method, url, json in [
        ("PUT", f"/apiTokens/{world.fresh('tok')}", {"roles": [{"role": ADMIN_ID}]}),
        ("GET", "/apiTokens", None),
        ("PUT", path, body),
        ("DELETE", f"/deviceTemplates/{world.template_id}", None),
        ("PUT", f"/devices/{world.fresh('dev')}", {}),
    ]:
        assert_error(world.admin.request(method, url, json=json, headers=headers), 403)


def test_access_tokens_die_with_their_api_token_even_if_its_id_comes_back(world: World) -> None:
    """IoT Central lets the caller choose token ids: a new token under a revoked one's id must
    not revive the access tokens (JWTs) minted from the old one, nor their role."""
    token_id = world.fresh("tok")
    first = create_token(world.admin, token_id, ADMIN_ID)
    assert first.status_code == 200, first.text
    grant = httpx.post(
        f"{world.server.http_url}/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": token_id,
            "client_secret": first.json()["token"],
        },
        timeout=30,
    )
    assert grant.status_code == 200, grant.text
    bearer = {"Authorization": f"Bearer {grant.json()['access_token']}"}
    with httpx.Client(base_url=world.server.http_url, headers=bearer, timeout=30) as v1:
        assert v1.get("/v1/tokens").status_code == 200  # an admin's
        assert world.admin.delete(f"/apiTokens/{token_id}").status_code == 204
        assert v1.get("/v1/tokens").status_code == 401
        again = create_token(world.admin, token_id, OPERATOR_ID)
        assert again.status_code == 200, again.text
        assert v1.get("/v1/tokens").status_code == 401
        assert v1.get("/v1/devices").status_code == 401
