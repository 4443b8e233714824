"""/v1 authentication and authorization: API tokens, roles, OAuth2 grants, account isolation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    ANY_FIELD,
    ID_SCOPE_RE,
    TS_RE,
    anonymous,
    assert_error,
    client,
    create_device,
    device_sas,
    is_uuid,
    post_telemetry,
)
from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    """conftest's admin api, made once per module (see helpers_st.api)."""
    with client(server) as api:
        yield api


def _bearer(server: ServerProcess, token: str) -> httpx.Client:
    return client(server, token)


def _assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, code="Unauthorized", field="Authorization")
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def _oauth(
    server: ServerProcess, data: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/v1/auth/token", data=data, timeout=30, verify=False, **kwargs
    )


def _assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str)


def _assert_access_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    token: str = body["access_token"]
    assert token.count(".") == 2  # a JWT
    assert response.headers.get("cache-control") == "no-store"
    return token


@pytest.fixture(scope="module")
def viewer_token(server: ServerProcess) -> str:
    return server.cli("token", "create", "--quiet", "--role", "viewer", "--label", "e2e viewer")


@pytest.fixture
def viewer(server: ServerProcess, viewer_token: str) -> Iterator[httpx.Client]:
    with _bearer(server, viewer_token) as api:
        yield api


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token thk_whatever"},
        {"Authorization": "Bearer thk_not-a-real-token"},
        {"Authorization": "Bearer not-a-token-at-all"},
        {"Authorization": "Bearer aaa.bbb.ccc"},
    ],
)
def test_requests_without_a_valid_bearer_are_401(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    with anonymous(server, headers) as api:
        _assert_unauthorized(api.get("/v1/devices"))
        _assert_unauthorized(api.get("/v1/telemetries"))
        _assert_unauthorized(
            api.post("/v1/devices", json={"name": "n", "project": "p", "deployment": "d"})
        )
        _assert_unauthorized(api.delete("/v1/devices/whatever"))
        _assert_unauthorized(api.post("/v1/tokens", json={"role": "admin"}))
        # Authentication comes before the body is judged, even a body that is not JSON.
        for method, path in (
            ("POST", "/v1/devices"),
            ("PUT", "/v1/devices/whatever"),
            ("POST", "/v1/devices/whatever/method"),
            ("POST", "/v1/tokens"),
        ):
            _assert_unauthorized(api.request(method, path, content=b'{"name": "x",'))
            _assert_unauthorized(api.request(method, path, content=b"x" * (5 << 20)))


def test_the_admin_token_also_works_with_a_lowercase_scheme(server: ServerProcess) -> None:
    headers = {"Authorization": f"bearer {server.admin_token}"}
    with anonymous(server, headers) as api:
        assert api.get("/v1/devices").status_code == 200


# -- roles --------------------------------------------------------------------------------


def test_viewer_reads_but_never_writes(
    server: ServerProcess,
    admin: httpx.Client,
    viewer: httpx.Client,
    unique: Callable[[str], str],
) -> None:
    project, deployment = unique("p"), unique("d")
    device = create_device(admin, "seen", project, deployment)
    gateway = create_device(admin, "gw", project, deployment, gateway=True)
    did, gw = device["id"], gateway["id"]
    admin.post(f"/v1/devices/{gw}/modules", json={"moduleId": "m"}).raise_for_status()
    admin.put(f"/v1/devices/{did}", json={"properties": {"a": 1}}).raise_for_status()
    assert post_telemetry(server.http_url, did, {"t": 1}, device_sas(device)).status_code == 204
    token = admin.post("/v1/tokens", json={"role": "viewer"}).json()

    reads = [
        "/v1/devices",
        f"/v1/devices/{did}",
        f"/v1/devices/{did}/twin",
        f"/v1/devices/{gw}/modules",
        f"/v1/devices/{gw}/modules/m",
        f"/v1/devices/{gw}/modules/m/twin",
        "/v1/projects",
        f"/v1/projects/{project}/deployments",
        f"/v1/telemetries?projectID={project}",
        f"/v1/events?projectID={project}",
    ]
    for path in reads:
        response = viewer.get(path)
        assert response.status_code == 200, (path, response.text)
    shown = viewer.get(f"/v1/devices/{did}").json()
    assert shown["properties"] == {"desired": {"a": 1}}
    assert shown["credentials"]["type"] == "symmetricKey"
    # Viewers see that a device has keys, not the keys.
    assert shown["credentials"]["symmetricKey"] is None
    assert viewer.get(f"/v1/devices/{gw}/modules/m").json()["credentials"]["symmetricKey"] is None
    assert [
        t["body"] for t in viewer.get("/v1/telemetries", params={"projectID": project}).json()
    ] == [{"t": 1}]

    writes: list[tuple[str, str, Any]] = [
        ("POST", "/v1/devices", {"name": "n", "project": project, "deployment": deployment}),
        (
            "POST",
            "/v1/devices",
            {"name": "gw", "project": project, "deployment": deployment, "isIoTEdgeCapable": True},
        ),
        ("PUT", f"/v1/devices/{did}", {"properties": {"a": 2}}),
        ("PUT", f"/v1/devices/{did}", {"provisioningStatus": "disabled"}),
        ("DELETE", f"/v1/devices/{did}", None),
        ("POST", f"/v1/devices/{did}/method", {"name": "getMaxMinReport"}),
        ("POST", f"/v1/devices/{did}/messages", {"body": {"x": 1}}),
        ("POST", f"/v1/devices/{gw}/modules", {"moduleId": "other"}),
        ("PUT", f"/v1/devices/{gw}/modules/m", {"properties": {"b": 1}}),
        ("DELETE", f"/v1/devices/{gw}/modules/m", None),
        ("POST", f"/v1/devices/{gw}/modules/m/method", {"name": "x"}),
        ("POST", "/v1/tokens", {"role": "viewer"}),
        ("POST", "/v1/tokens", {"role": "admin"}),
        ("DELETE", f"/v1/tokens/{token['id']}", None),
        ("POST", "/v1/users", {"username": unique("u"), "password": "password1", "role": "admin"}),
        ("GET", "/v1/tokens", None),
        ("POST", f"/v1/devices/{did}/certificates", None),
        (
            "POST",
            "/v1/enrollmentGroups",
            {"enrollmentGroupId": unique("g"), "project": project, "deployment": deployment},
        ),
    ]
    for method, path, body in writes:
        response = viewer.request(method, path, json=body)
        assert_error(response, 403, code="Forbidden", field="role")

    # Nothing changed.
    after = admin.get(f"/v1/devices/{did}").json()
    assert after["properties"] == {"desired": {"a": 1}}
    assert after["provisioningStatus"] == "enabled"
    assert [m["moduleId"] for m in admin.get(f"/v1/devices/{gw}/modules").json()] == ["m"]
    assert len(admin.get("/v1/devices", params={"projectID": project}).json()) == 2
    assert token["id"] in {t["id"] for t in admin.get("/v1/tokens").json()}


def test_operator_writes_devices_but_not_tokens(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    issued = admin.post("/v1/tokens", json={"role": "operator", "label": "ops"})
    assert issued.status_code == 201, issued.text
    with _bearer(server, issued.json()["token"]) as operator:
        device = create_device(operator, "by operator", unique("p"), unique("d"))
        assert device["credentials"]["symmetricKey"]["primaryKey"]
        assert device["tags"]["user"] == issued.json()["id"]
        put = operator.put(f"/v1/devices/{device['id']}", json={"properties": {"x": 1}})
        assert put.status_code == 200, put.text
        assert_error(operator.post("/v1/tokens", json={"role": "viewer"}), 403, field="role")
        assert_error(operator.get("/v1/tokens"), 403)
        assert_error(operator.delete(f"/v1/tokens/{issued.json()['id']}"), 403)
        assert_error(
            operator.post(
                "/v1/users",
                json={"username": unique("u"), "password": "password1", "role": "viewer"},
            ),
            403,
        )
        assert operator.delete(f"/v1/devices/{device['id']}").status_code == 204


# -- API tokens ---------------------------------------------------------------------------


def test_created_token_is_shown_once_works_and_revocation_is_immediate(
    server: ServerProcess, admin: httpx.Client
) -> None:
    created = admin.post("/v1/tokens", json={"role": "admin", "label": "ci"})
    assert created.status_code == 201, created.text
    token = created.json()
    assert {"id", "role", "label", "token", "createdAt"} <= set(token)
    assert is_uuid(token["id"])
    assert token["role"] == "admin"
    assert token["label"] == "ci"
    assert TS_RE.fullmatch(token["createdAt"])
    secret = token["token"]

    listed = admin.get("/v1/tokens")
    assert listed.status_code == 200, listed.text
    mine = [t for t in listed.json() if t["id"] == token["id"]]
    assert len(mine) == 1
    assert mine[0]["project"] is None  # not limited to a project
    assert "token" not in mine[0]
    assert {k: mine[0][k] for k in ("id", "role", "label", "createdAt")} == {
        k: token[k] for k in ("id", "role", "label", "createdAt")
    }
    assert secret not in listed.text

    with _bearer(server, secret) as api:
        # Use it twice, so its lookup is cached, then revoke it through the API.
        assert api.get("/v1/devices").status_code == 200
        assert api.get("/v1/projects").status_code == 200
        revoked = admin.delete(f"/v1/tokens/{token['id']}")
        assert revoked.status_code == 204, revoked.text
        _assert_unauthorized(api.get("/v1/devices"))
    assert token["id"] not in {t["id"] for t in admin.get("/v1/tokens").json()}
    assert_error(admin.delete(f"/v1/tokens/{token['id']}"), 404, field=ANY_FIELD)


def test_revoking_a_token_refuses_its_next_device_read_at_once(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    """GET /v1/devices/{id} is answered by the fast path (thinghub.fast_path) from cached
    credentials and devices: a revoked token, a disabled and a deleted device show on the
    very next read."""
    device = create_device(admin, unique("fast"), unique("p"), "d")
    token = admin.post("/v1/tokens", json={"role": "admin", "label": "fast"}).json()
    with _bearer(server, token["token"]) as api:
        for _ in range(3):  # its lookup and the device are cached now
            read = api.get(f"/v1/devices/{device['id']}")
            assert read.status_code == 200, read.text
            assert read.json()["provisioningStatus"] == "enabled"
        disabled = admin.put(f"/v1/devices/{device['id']}", json={"provisioningStatus": "disabled"})
        assert disabled.status_code == 200, disabled.text
        assert api.get(f"/v1/devices/{device['id']}").json()["provisioningStatus"] == "disabled"
        assert admin.delete(f"/v1/tokens/{token['id']}").status_code == 204
        _assert_unauthorized(api.get(f"/v1/devices/{device['id']}"))
    assert admin.delete(f"/v1/devices/{device['id']}").status_code == 204
    assert_error(admin.get(f"/v1/devices/{device['id']}"), 404, field="deviceId")


# -- OAuth2 -------------------------------------------------------------------------------


def test_client_credentials_grant(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    issued = admin.post("/v1/tokens", json={"role": "viewer"}).json()
    grant = {
        "grant_type": "client_credentials",
        "client_id": issued["id"],
        "client_secret": issued["token"],
    }
    access = _assert_access_token(_oauth(server, grant))
    with _bearer(server, access) as api:
        assert api.get("/v1/devices").status_code == 200
        # The access token carries the api's role.
        response = api.post(
            "/v1/devices", json={"name": "n", "project": unique("p"), "deployment": "d"}
        )
        assert_error(response, 403, field="role")

    basic = _oauth(
        server, {"grant_type": "client_credentials"}, auth=(issued["id"], issued["token"])
    )
    _assert_access_token(basic)
    as_json = httpx.post(f"{server.http_url}/v1/auth/token", json=grant, timeout=30, verify=False)
    _assert_access_token(as_json)

    _assert_oauth_error(
        _oauth(server, {**grant, "client_secret": "thk_wrong"}), 401, "invalid_client"
    )
    _assert_oauth_error(
        _oauth(server, {**grant, "client_id": "someone-else"}), 401, "invalid_client"
    )
    _assert_oauth_error(_oauth(server, {"grant_type": "client_credentials"}), 401, "invalid_client")
    # A body over max_request_bytes is refused in the OAuth2 shape too.
    huge = {**grant, "padding": "x" * (5 << 20)}
    _assert_oauth_error(_oauth(server, huge), 413, "invalid_request")

    # Revoking the API token also ends the access tokens minted from it.
    with _bearer(server, access) as api:
        assert api.get("/v1/devices").status_code == 200
        assert admin.delete(f"/v1/tokens/{issued['id']}").status_code == 204
        _assert_unauthorized(api.get("/v1/devices"))


def test_password_grant(
    server: ServerProcess, admin: httpx.Client, unique: Callable[[str], str]
) -> None:
    api_user, op_user = unique("viewer-user"), unique("operator-user")
    created = admin.post(
        "/v1/users", json={"username": api_user, "password": "s3cret-pass", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["username"] == api_user
    assert created.json()["role"] == "viewer"
    assert is_uuid(created.json()["id"])
    assert_error(
        admin.post(
            "/v1/users", json={"username": api_user, "password": "s3cret-pass", "role": "viewer"}
        ),
        409,
        field="username",
    )
    # (`thinghub user create NAME --password P --role operator` makes the same user; the API
    # is used here because each CLI run costs seconds.)
    operator_user = admin.post(
        "/v1/users", json={"username": op_user, "password": "op-pass-123", "role": "operator"}
    )
    assert operator_user.status_code == 201, operator_user.text
    user_id = operator_user.json()["id"]

    viewer_jwt = _assert_access_token(
        _oauth(server, {"grant_type": "password", "username": api_user, "password": "s3cret-pass"})
    )
    with _bearer(server, viewer_jwt) as api:
        assert api.get("/v1/devices").status_code == 200
        assert_error(
            api.post("/v1/devices", json={"name": "n", "project": unique("p"), "deployment": "d"}),
            403,
        )

    operator_jwt = _assert_access_token(
        _oauth(server, {"grant_type": "password", "username": op_user, "password": "op-pass-123"})
    )
    with _bearer(server, operator_jwt) as api:
        device = create_device(api, "by user", unique("p"), "d")
        assert device["tags"]["user"] == user_id
        assert_error(api.post("/v1/tokens", json={"role": "viewer"}), 403)
    with _bearer(server, operator_jwt[:-4] + "AAAA") as tampered:
        _assert_unauthorized(tampered.get("/v1/devices"))

    _assert_oauth_error(
        _oauth(
            server, {"grant_type": "password", "username": op_user, "password": "wrong-password"}
        ),
        400,
        "invalid_grant",
    )
    _assert_oauth_error(
        _oauth(
            server,
            {"grant_type": "password", "username": unique("nobody"), "password": "whatever1"},
        ),
        400,
        "invalid_grant",
    )
    _assert_oauth_error(
        _oauth(server, {"grant_type": "password", "username": op_user}), 400, "invalid_request"
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": {"grant_type": "authorization_code", "code": "x"}}, "unsupported_grant_type"),
        ({"data": {"grant_type": "refresh_token"}}, "unsupported_grant_type"),
        ({"data": {"username": "a", "password": "b"}}, "invalid_request"),
        ({"content": b"\xff\xfe\x00garbage"}, "invalid_request"),
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            "invalid_request",
        ),
        (
            {"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}},
            "invalid_request",
        ),
        ({"content": b"garbage"}, "invalid_request"),
        ({}, "invalid_request"),
    ],
)
def test_token_endpoint_rejects_bad_requests(
    server: ServerProcess, kwargs: dict[str, Any], error: str
) -> None:
    _assert_oauth_error(_oauth(server, **kwargs), 400, error)


# -- isolation between accounts -----------------------------------------------------------


@pytest.fixture(scope="module")
def other_account(server: ServerProcess) -> dict[str, str]:
    name = "other-" + uuid.uuid4().hex[:10]
    account = json.loads(server.cli("account", "create", name, "--json"))
    assert account["name"] == name
    assert ID_SCOPE_RE.fullmatch(account["idScope"])
    token = server.cli("token", "create", "--quiet", "--account", name, "--role", "admin")
    return {**account, "token": token}


def test_accounts_cannot_see_each_other(
    server: ServerProcess,
    admin: httpx.Client,
    other_account: dict[str, str],
    unique: Callable[[str], str],
) -> None:
    project, deployment = unique("shared-name"), unique("d")
    mine = create_device(admin, "mine", project, deployment, gateway=True)
    admin.post(f"/v1/devices/{mine['id']}/modules", json={"moduleId": "m"}).raise_for_status()
    admin.put(f"/v1/devices/{mine['id']}", json={"properties": {"a": 1}}).raise_for_status()
    assert (
        post_telemetry(server.http_url, mine["id"], {"from": "A"}, device_sas(mine)).status_code
        == 204
    )
    a_token = admin.post("/v1/tokens", json={"role": "viewer"}).json()

    with _bearer(server, other_account["token"]) as other:
        assert other.get("/v1/devices").status_code == 200
        _assert_invisible(other, mine["id"], project, deployment)
        assert_error(other.delete(f"/v1/tokens/{a_token['id']}"), 404)
        assert a_token["id"] not in {t["id"] for t in other.get("/v1/tokens").json()}

        # The same project name in B is B's own, and A cannot see B's device.
        theirs = create_device(other, "theirs", project, deployment)
        assert theirs["idScope"] == other_account["idScope"] != mine["idScope"]
        other.put(f"/v1/devices/{theirs['id']}", json={"properties": {"b": 2}}).raise_for_status()
        assert (
            post_telemetry(
                server.http_url, theirs["id"], {"from": "B"}, device_sas(theirs)
            ).status_code
            == 204
        )
        scope = {"projectID": project, "deploymentID": deployment}
        assert [d["id"] for d in other.get("/v1/devices", params=scope).json()] == [theirs["id"]]
        assert [t["body"] for t in other.get("/v1/telemetries", params=scope).json()] == [
            {"from": "B"}
        ]
        assert {e["deviceID"] for e in other.get("/v1/events", params=scope).json()} == {
            theirs["id"]
        }
    _assert_invisible(admin, theirs["id"], None, None)
    scope = {"projectID": project, "deploymentID": deployment}
    assert [d["id"] for d in admin.get("/v1/devices", params=scope).json()] == [mine["id"]]
    assert [t["body"] for t in admin.get("/v1/telemetries", params=scope).json()] == [{"from": "A"}]
    assert {e["deviceID"] for e in admin.get("/v1/events", params=scope).json()} == {mine["id"]}
    # A's device is untouched by B's attempts.
    after = admin.get(f"/v1/devices/{mine['id']}").json()
    assert after["properties"] == {"desired": {"a": 1}}
    assert [m["moduleId"] for m in after["modules"]] == ["m"]


def _assert_invisible(
    api: httpx.Client, did: str, project: str | None, deployment: str | None
) -> None:
    """Another account's device looks absent: 404 everywhere, never 403, and empty lists."""
    for method, path, body in [
        ("GET", f"/v1/devices/{did}", None),
        ("GET", f"/v1/devices/{did}/twin", None),
        ("PUT", f"/v1/devices/{did}", {"properties": {"hijack": True}}),
        ("DELETE", f"/v1/devices/{did}", None),
        ("POST", f"/v1/devices/{did}/method", {"name": "getMaxMinReport"}),
        ("POST", f"/v1/devices/{did}/messages", {"body": 1}),
        ("GET", f"/v1/devices/{did}/modules", None),
        ("POST", f"/v1/devices/{did}/modules", {"moduleId": "intruder"}),
        ("GET", f"/v1/devices/{did}/modules/m", None),
        ("PUT", f"/v1/devices/{did}/modules/m", {"properties": {"x": 1}}),
        ("DELETE", f"/v1/devices/{did}/modules/m", None),
        ("POST", f"/v1/devices/{did}/modules/m/method", {"name": "x"}),
    ]:
        response = api.request(method, path, json=body)
        assert_error(response, 404, code="NotFound")
    assert did not in {d["id"] for d in api.get("/v1/devices").json()}
    assert api.get("/v1/telemetries", params={"deviceID": did}).json() == []
    assert api.get("/v1/events", params={"deviceID": did}).json() == []
    if project is not None:
        assert project not in {p["name"] for p in api.get("/v1/projects").json()}
        assert_error(api.get(f"/v1/projects/{project}/deployments"), 404)
        scope = {"projectID": project, "deploymentID": deployment}
        assert api.get("/v1/devices", params=scope).json() == []
        assert api.get("/v1/telemetries", params=scope).json() == []
        assert api.get("/v1/events", params=scope).json() == []
