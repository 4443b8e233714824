"""IoT Central's user management (the real API, 2022-07-31): PUT/GET/PATCH/DELETE /users/{id},
GET /users paged, email users and service principals, their roles the account's core roles
(what each may do is what thinghub enforces), only an administrator managing them, user ids
per application. The isolation sweep (tests/e2e/test_isolation.py) sends every route at
another account's users as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import API, VERSION, assert_error, central, template_body

pytestmark = pytest.mark.e2e

__all__ = ["central"]  # a fixture, shared with test_central_api.py

ADMIN_ID = "ca310b8d-2f4a-44e0-a36e-957c202cd8d4"
BUILDER_ID = "344138e9-8de4-4497-8c54-5237e96d6aaf"
OPERATOR_ID = "ae2c9854-393b-4f97-8c42-479d70ce626e"


def _as(server: ServerProcess, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": secret},
        timeout=30,
    )


@pytest.fixture
def token_of(
    central: httpx.Client, unique: Callable[[str], str], server: ServerProcess
) -> Iterator[Callable[[str], httpx.Client]]:
    """A client holding a fresh IoT Central API token of the given role."""
    clients: list[httpx.Client] = []

    def make(role: str) -> httpx.Client:
        made = central.put(f"/apiTokens/{unique('tok')}", json={"roles": [{"role": role}]})
        assert made.status_code == 200, made.text
        clients.append(_as(server, made.json()["token"]))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_published_user_examples(
    central: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    """The real API's Users_Create examples: an email user (2022-10-31-preview) and a service
    principal (2022-07-31). Both publish a second role in an organization, which this server
    has not: a 400 naming it. With the App Administrator role alone the answers are the
    published ones (with the id, which the email example's answer leaves out)."""
    email_id, sp_id = unique("u"), unique("sp")
    email = f"bob-{uuid.uuid4().hex[:8]}@contoso.com"
    email_body: dict[str, Any] = {
        "type": "email",
        "roles": [{"role": ADMIN_ID}, {"role": "c495eb57-eb18-489e-9802-62c474e5645c",
                                       "organization": "seattle"}],
        "email": email,
    }  # fmt: skip
    assert_error(central.put(f"/users/{email_id}", json=email_body), 400, "roles")
    email_body["roles"] = [{"role": ADMIN_ID, "organization": "seattle"}]
    assert_error(central.put(f"/users/{email_id}", json=email_body), 400, "organization")
    email_body["roles"] = [{"role": ADMIN_ID}]
    made = central.put(f"/users/{email_id}", json=email_body)
    assert made.status_code == 200, made.text
    assert made.json() == {"id": email_id, **email_body}

    tenant, obj = str(uuid.uuid4()), str(uuid.uuid4())
    sp_body = {
        "type": "servicePrincipal",
        "tenantId": tenant,
        "objectId": obj,
        "roles": [{"role": OPERATOR_ID}],
    }
    made = central.put(f"/users/{sp_id}", json=sp_body)
    assert made.status_code == 200, made.text
    assert made.json() == {"id": sp_id, **sp_body}
    assert central.get(f"/users/{sp_id}").json() == {"id": sp_id, **sp_body}
    # A user made here cannot sign in with a password (no password was ever given).
    with httpx.Client(base_url=server.http_url, timeout=30) as anon:
        grant = anon.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": email, "password": "any-password-at-all"},
        )
        assert grant.status_code == 400, grant.text
        assert grant.json()["error"] == "invalid_grant"
        assert "access_token" not in grant.text


def test_user_lifecycle_and_roles(central: httpx.Client, unique: Callable[[str], str]) -> None:
    user_id = unique("user")
    email = f"{user_id}@example.com"
    body = {"type": "email", "email": email, "roles": [{"role": "App Builder"}]}
    made = central.put(f"/users/{user_id}", json=body)
    assert made.status_code == 200, made.text
    assert made.json()["roles"] == [{"role": BUILDER_ID}]

    # PUT again with the same identity: "add or update" gives it the new role.
    again = central.put(f"/users/{user_id}", json={**body, "roles": [{"role": OPERATOR_ID}]})
    assert again.status_code == 200, again.text
    assert central.get(f"/users/{user_id}").json()["roles"] == [{"role": OPERATOR_ID}]
    # Another identity under the taken id is a 400 naming the field; nothing changed.
    other = {**body, "email": f"x-{email}"}
    assert_error(central.put(f"/users/{user_id}", json=other), 400, "email")
    assert central.get(f"/users/{user_id}").json()["email"] == email
    # The same email under another id: a 409 naming it (sign-in names are global).
    assert_error(central.put(f"/users/{unique('dup')}", json=body), 409, "email")

    # PATCH: the role; GET's answer may come back whole; read-only fields are 400s naming them.
    shown = central.get(f"/users/{user_id}").json()
    patched = central.patch(f"/users/{user_id}", json={**shown, "roles": [{"role": ADMIN_ID}]})
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**shown, "roles": [{"role": ADMIN_ID}]}
    assert central.get(f"/users/{user_id}").json()["roles"] == [{"role": ADMIN_ID}]
    assert_error(central.patch(f"/users/{user_id}", json={"email": "a@b.c"}), 400, "email")
    assert_error(central.patch(f"/users/{user_id}", json={"type": "servicePrincipal"}), 400, "type")
    assert_error(central.patch(f"/users/{user_id}", json={"colour": "red"}), 400, "colour")
    assert_error(central.patch(f"/users/{user_id}", json={"roles": []}), 400, "roles")
    assert_error(
        central.patch(f"/users/{user_id}", json={"roles": [{"role": "Superuser"}]}),
        400,
        "unknown role",
    )
    missing = unique("none")
    assert_error(central.patch(f"/users/{missing}", json={"roles": [{"role": ADMIN_ID}]}), 404)

    # DELETE: 204, then gone everywhere.
    gone = central.delete(f"/users/{user_id}")
    assert gone.status_code == 204, gone.text
    assert_error(central.get(f"/users/{user_id}"), 404, user_id)
    assert_error(central.delete(f"/users/{user_id}"), 404, user_id)
    assert user_id not in [u["id"] for u in central.get("/users").json()["value"]]
    # Its email is free again.
    assert central.put(f"/users/{unique('re')}", json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "email", "roles": [{"role": ADMIN_ID}]}, "email"),
        ({"type": "email", "email": "no-at-sign", "roles": [{"role": ADMIN_ID}]}, "email"),
        ({"type": "email", "email": "a@b.c", "roles": []}, "roles"),
        ({"type": "email", "email": "a@b.c"}, "roles"),
        ({"type": "email", "email": "a@b.c", "roles": [{"role": "Superuser"}]}, "unknown role"),
        ({"type": "email", "email": "a@b.c", "roles": [{"role": ADMIN_ID}], "x": 1}, "x"),
        (
            {"type": "email", "email": "a@b.c", "tenantId": str(uuid.uuid4()),
             "roles": [{"role": ADMIN_ID}]},
            "tenantId",
        ),
        ({"type": "group", "roles": [{"role": ADMIN_ID}]}, "type"),
        ({"type": "servicePrincipal", "objectId": str(uuid.uuid4()),
          "roles": [{"role": ADMIN_ID}]}, "tenantId"),
        ({"type": "servicePrincipal", "tenantId": "t", "objectId": str(uuid.uuid4()),
          "roles": [{"role": ADMIN_ID}]}, "tenantId"),
        ({"type": "servicePrincipal", "tenantId": str(uuid.uuid4()),
          "objectId": str(uuid.uuid4()), "email": "a@b.c", "roles": [{"role": ADMIN_ID}]},
         "email"),
        ({"type": "email", "email": "a@b.c", "roles": [{"role": ADMIN_ID}], "id": "other"},
         "id"),
        ([], "body"),
    ],
)  # fmt: skip
def test_bad_user_bodies_are_400_naming_the_field(
    central: httpx.Client, unique: Callable[[str], str], body: Any, field: str
) -> None:
    user_id = unique("bad")
    assert_error(central.put(f"/users/{user_id}", json=body), 400, field)
    assert_error(central.get(f"/users/{user_id}"), 404)


def test_bad_user_ids(central: httpx.Client) -> None:
    body = {"type": "email", "email": "ids@example.com", "roles": [{"role": ADMIN_ID}]}
    assert_error(central.put("/users/bad%20id", json=body), 400, "userId")
    assert_error(central.put(f"/users/{'x' * 121}", json=body), 400, "userId")


def test_users_are_paged(
    central: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    prefix = unique("pg")
    made = [f"{prefix}-{i}" for i in range(5)]
    for user_id in reversed(made):
        body = {"type": "email", "email": f"{user_id}@example.com", "roles": [{"role": ADMIN_ID}]}
        assert central.put(f"/users/{user_id}", json=body).status_code == 200
    seen: list[str] = []
    response = central.get("/users", params={"$maxpagesize": 2})
    pages = 0
    with httpx.Client(base_url=server.http_url, headers=central.headers, timeout=30) as bare:
        while True:
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["value"]) <= 2
            pages += 1
            seen += [u["id"] for u in page["value"]]
            if "nextLink" not in page:
                break
            link = urlsplit(page["nextLink"])
            assert link.path == f"{API}/users"
            assert parse_qs(link.query)["$maxpagesize"] == ["2"]
            response = bare.get(page["nextLink"])
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert [u for u in seen if u.startswith(prefix)] == made
    assert pages >= 3
    assert_error(central.get("/users", params={"$maxpagesize": 0}), 400, "$maxpagesize")


def test_only_an_administrator_manages_users(
    central: httpx.Client, token_of: Callable[[str], httpx.Client], unique: Callable[[str], str]
) -> None:
    user_id = unique("guarded")
    body = {"type": "email", "email": f"{user_id}@example.com", "roles": [{"role": ADMIN_ID}]}
    assert central.put(f"/users/{user_id}", json=body).status_code == 200
    for role, name in ((BUILDER_ID, "App Builder"), (OPERATOR_ID, "App Operator")):
        client = token_of(role)
        other = unique("nope")
        refused = [
            client.put(f"/users/{other}", json={**body, "email": f"{other}@example.com"}),
            client.get("/users"),
            client.get(f"/users/{user_id}"),
            client.patch(f"/users/{user_id}", json={"roles": [{"role": OPERATOR_ID}]}),
            client.delete(f"/users/{user_id}"),
        ]
        for response in refused:
            assert_error(response, 403, name)
        # Reading roles is anyone's.
        assert client.get("/roles").status_code == 200
        assert client.get(f"/roles/{ADMIN_ID}").json()["displayName"] == "App Administrator"
    assert_error(central.get(f"/users/{unique('nope')}"), 404)
    # Nothing the refused calls tried happened.
    assert central.get(f"/users/{user_id}").json()["roles"] == [{"role": ADMIN_ID}]
    # An App Administrator token manages users.
    admin = token_of(ADMIN_ID)
    patched = admin.patch(f"/users/{user_id}", json={"roles": [{"role": BUILDER_ID}]})
    assert patched.status_code == 200, patched.text
    assert admin.delete(f"/users/{user_id}").status_code == 204


def test_roles_mean_what_thinghub_enforces(
    central: httpx.Client, token_of: Callable[[str], httpx.Client], unique: Callable[[str], str]
) -> None:
    """GET /roles lists the roles a token or user may hold; each does what its core role
    grants: an App Operator acts on devices but writes no templates, an App Builder writes
    templates too, only an App Administrator manages tokens and users."""
    roles = {r["id"]: r["displayName"] for r in central.get("/roles").json()["value"]}
    assert roles == {
        ADMIN_ID: "App Administrator",
        BUILDER_ID: "App Builder",
        OPERATOR_ID: "App Operator",
    }
    allowed: dict[str, tuple[bool, bool, bool]] = {}
    for role_id in roles:
        client = token_of(role_id)
        device = client.put(f"/devices/{unique('dev')}", json={"displayName": "d"})
        tid = f"dtmi:thinghub:users:{unique('t').replace('-', '_')};1"
        tmpl = client.put(f"/deviceTemplates/{tid}", json=template_body(tid))
        tokens = client.get("/apiTokens")
        allowed[roles[role_id]] = (
            device.status_code == 200,
            tmpl.status_code == 200,
            tokens.status_code == 200,
        )
        for response in (device, tmpl, tokens):
            assert response.status_code in (200, 400, 403), response.text
    assert allowed == {
        "App Administrator": (True, True, True),
        "App Builder": (True, True, False),
        "App Operator": (True, False, False),
    }
