"""The app-facing Ioto device API at /ioto/api: products (/v1 and the CLI), register with
product tokens, claim/release/get/find with thinghub roles (API tokens and access tokens),
paging, the provisioning window, and the documented errors for bad callers and bodies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.ioto import Agent, bearer, claimed_agent, create_product, new_id
from tests.e2e.server import ServerProcess
from thinghub.faces.ioto.api import JSON5_MAX_BYTES

pytestmark = pytest.mark.e2e

API = "/ioto/api"


@pytest.fixture
def product(admin: httpx.Client) -> dict[str, Any]:
    return create_product(admin, f"line-{uuid.uuid4().hex[:8]}")


def role_token(admin: httpx.Client, role: str) -> str:
    response = admin.post("/v1/tokens", json={"role": role, "label": f"ioto {role}"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture
def as_role(server: ServerProcess, admin: httpx.Client) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(role: str) -> httpx.Client:
        client = server.client(role_token(admin, role))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def registered(server: ServerProcess, product: dict[str, Any]) -> Agent:
    agent = Agent(server, product["token"])
    assert agent.register().status_code == 200
    return agent


# -- products ----------------------------------------------------------------------------------


def test_products_are_created_listed_and_revoked_on_v1(
    server: ServerProcess, admin: httpx.Client, as_role: Any
) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    created = create_product(admin, name)
    assert set(created) == {"id", "name", "createdAt", "revokedAt", "token"}
    assert created["name"] == name and created["revokedAt"] is None
    listed = admin.get("/v1/ioto/products").json()
    mine = [p for p in listed if p["id"] == created["id"]]
    assert mine and "token" not in mine[0]  # the token is shown only once
    # only admins manage products
    operator = as_role("operator")
    assert operator.post("/v1/ioto/products", json={"name": "nope"}).status_code == 403
    assert admin.post("/v1/ioto/products", json={"name": ""}).status_code == 400

    agent = Agent(server, created["token"])
    assert agent.register().status_code == 200
    assert admin.delete(f"/v1/ioto/products/{created['id']}").status_code == 204
    revoked = agent.register()
    assert revoked.status_code == 401 and revoked.headers["content-type"].startswith("text/plain")
    listed = {p["id"]: p for p in admin.get("/v1/ioto/products").json()}
    assert listed[created["id"]]["revokedAt"] is not None
    assert admin.delete(f"/v1/ioto/products/{uuid.uuid4()}").status_code == 404


def test_the_cli_creates_lists_and_revokes_products(server: ServerProcess) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    token = server.cli("ioto", "product", "create", name)
    assert token.startswith("thpt_") and "\n" not in token
    agent = Agent(server, token)
    assert agent.register().json() == {"id": agent.device_id, "registered": True}
    products = json.loads(server.cli("ioto", "product", "list", "--json"))
    product = next(p for p in products if p["name"] == name)
    server.cli("ioto", "product", "revoke", product["id"])
    assert agent.register().status_code == 401


# -- register ----------------------------------------------------------------------------------


def test_register_with_a_bad_or_missing_product_token_is_401(
    server: ServerProcess, product: dict[str, Any]
) -> None:
    url = f"{server.http_url}{API}/device/register"
    for headers in (bearer("thpt_wrong"), {}, {"Authorization": "Basic abc"}):
        response = httpx.post(url, json={"id": new_id()}, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"].startswith("text/plain")
    # also under /tok/, where the agent calls its cloud
    assert httpx.post(f"{server.http_url}{API}/tok/device/register", json={"id": "X"},
                      headers=bearer("nope")).status_code == 401  # fmt: skip


def test_register_bad_bodies_are_400_with_the_field_named(
    server: ServerProcess, product: dict[str, Any]
) -> None:
    url = f"{server.http_url}{API}/device/register"
    headers = bearer(product["token"])
    for body in (b"{not json", b"[1]", b"{}", b'{"id": 5}', b'{"id": "a/b"}', b'{"id": ""}'):
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400, (body, response.text)
        assert response.text and "Traceback" not in response.text
    assert "id" in httpx.post(url, content=b"{}", headers=headers).text


def test_register_naming_the_products_account_claims_at_once(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any]
) -> None:
    account_id = admin.post(f"{API}/device/find", json={}).json()  # warm; not the account
    assert "data" in account_id
    first = Agent(server, product["token"])
    first.register()
    claimed = admin.post(f"{API}/device/claim", json={"id": first.device_id}).json()
    auto = Agent(server, product["token"])
    answer = auto.register(account=claimed["accountId"]).json()
    assert "token" in answer and answer["accountId"] == claimed["accountId"]


# -- claim, release, get, find with roles ------------------------------------------------------


def test_roles_viewer_reads_operator_claims_and_releases(
    server: ServerProcess, admin: httpx.Client, as_role: Any, product: dict[str, Any]
) -> None:
    viewer, operator = as_role("viewer"), as_role("operator")
    agent = registered(server, product)
    did = agent.device_id
    refused = viewer.post(f"{API}/device/claim", json={"id": did})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("text/plain")
    claimed = operator.post(f"{API}/device/claim", json={"id": did})
    assert claimed.status_code == 200, claimed.text
    # claiming it again from the same account changes nothing (an answer lost on the way)
    again = operator.post(f"{API}/device/claim", json={"id": did})
    assert again.status_code == 200 and again.json()["created"] == claimed.json()["created"]
    got = viewer.post(f"{API}/device/get", json={"id": did})
    assert got.status_code == 200 and got.json()["id"] == did
    assert set(got.json()) >= {"accessed", "accountId", "created", "id", "product", "productId",
                               "test"}  # fmt: skip
    found = viewer.post(f"{API}/device/find", json={"id": did}).json()
    assert [d["id"] for d in found["data"]] == [did]
    assert viewer.post(f"{API}/device/release", json={"id": did}).status_code == 403
    released = operator.post(f"{API}/device/release", json={"id": did})
    assert released.status_code == 200, released.text
    assert released.json()["id"] == did
    # back to unclaimed: two fields, and gone from get and /v1
    assert agent.register().json() == {"id": did, "registered": True}
    assert viewer.post(f"{API}/device/get", json={"id": did}).status_code == 404
    assert admin.get(f"/v1/devices/{did}").status_code == 404
    assert operator.post(f"{API}/device/release", json={"id": did}).status_code == 404
    # and it can be claimed again
    assert operator.post(f"{API}/device/claim", json={"id": did}).status_code == 200


def test_a_device_that_never_registered_cannot_be_claimed(admin: httpx.Client) -> None:
    claim_id = new_id()
    response = admin.post(f"{API}/device/claim", json={"id": claim_id})
    assert response.status_code == 404, response.text
    assert claim_id in response.text  # the message names the id asked for
    released = admin.post(f"{API}/device/release", json={"id": claim_id})
    assert released.status_code == 404 and claim_id in released.text, released.text


def test_an_access_token_from_client_credentials_works_as_a_cloud_user(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any]
) -> None:
    created = admin.post("/v1/tokens", json={"role": "operator"}).json()
    issued = httpx.post(
        f"{server.http_url}/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": created["id"],
              "client_secret": created["token"]},
    )  # fmt: skip
    assert issued.status_code == 200, issued.text
    jwt = issued.json()["access_token"]
    agent = registered(server, product)
    claimed = httpx.post(
        f"{server.http_url}{API}/device/claim",
        json={"id": agent.device_id, "test": True},
        headers={"Authorization": f"Bearer {jwt}"},
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["test"] is True


def test_user_calls_without_a_valid_token_are_401(
    server: ServerProcess, product: dict[str, Any]
) -> None:
    for route in ("claim", "release", "get", "find"):
        for headers in ({}, {"Authorization": "Bearer nope"}, bearer(product["token"])):
            response = httpx.post(f"{server.http_url}{API}/device/{route}", json={"id": "X"},
                                  headers=headers)  # fmt: skip
            assert response.status_code == 401, (route, headers, response.text)


def test_find_pages_with_limit_next_and_prev_and_filters_by_product(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any]
) -> None:
    ids = []
    for _ in range(5):
        agent = registered(server, product)
        assert admin.post(f"{API}/device/claim", json={"id": agent.device_id}).status_code == 200
        ids.append(agent.device_id)
    other = create_product(admin, f"other-{uuid.uuid4().hex[:6]}")
    stray = registered(server, other)
    admin.post(f"{API}/device/claim", json={"id": stray.device_id})

    query = {"productId": product["id"]}
    seen: list[str] = []
    page = admin.post(f"{API}/device/find", json={**query, "limit": 2}).json()
    pages = [page]
    while page.get("next"):
        page = admin.post(f"{API}/device/find", json={**query, "limit": 2, "next": page["next"]})
        assert page.status_code == 200, page.text
        page = page.json()
        pages.append(page)
    for p in pages:
        assert len(p["data"]) <= 2
        seen += [d["id"] for d in p["data"]]
    assert sorted(seen) == sorted(ids) and len(pages) == 3
    # prev from the last page leads back to the page before it
    back = admin.post(f"{API}/device/find", json={**query, "limit": 2, "prev": pages[-1]["prev"]})
    assert back.status_code == 200, back.text
    assert [d["id"] for d in back.json()["data"]] == [d["id"] for d in pages[1]["data"]]
    # query-string options work the same
    by_query = admin.post(f"{API}/device/find", params={"limit": "1"}, json=query)
    assert len(by_query.json()["data"]) == 1
    for bad in ({"limit": 0}, {"limit": "many"}, {"next": "%%%"}, {"index": "gs9"}):
        response = admin.post(f"{API}/device/find", json={**query, **bad})
        assert response.status_code == 400, (bad, response.text)


def test_account_id_needs_the_owner_role_for_another_account(
    admin: httpx.Client, as_role: Any, server: ServerProcess, product: dict[str, Any]
) -> None:
    agent = registered(server, product)
    claimed = admin.post(f"{API}/device/claim", json={"id": agent.device_id}).json()
    own = claimed["accountId"]
    operator = as_role("operator")
    # one's own account is always fine
    got = operator.post(f"{API}/device/get", json={"id": agent.device_id, "accountId": own})
    assert got.status_code == 200
    other = str(uuid.uuid4())
    refused = operator.post(f"{API}/device/get", json={"id": agent.device_id, "accountId": other})
    assert refused.status_code == 403, refused.text
    assert operator.post(f"{API}/device/find", json={"accountId": other}).status_code == 403
    # the owner (admin) may name it, and still finds nothing of another account
    assert admin.post(f"{API}/device/find", json={"accountId": other}).status_code == 404
    assert admin.post(f"{API}/device/find", json={"accountId": own}).status_code == 200


# -- device calls ------------------------------------------------------------------------------


def test_provisioning_too_often_answers_error_and_delay(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)  # the first provision
    second = agent.call("/device/provision", {"id": agent.device_id})
    assert second.status_code == 200 and "certificate" in second.json()  # a retry is fine
    third = agent.call("/device/provision", {"id": agent.device_id})
    assert third.status_code == 200, third.text
    blocked = third.json()
    assert set(blocked) == {"error", "delay"}
    assert isinstance(blocked["delay"], int | float) and 0 < blocked["delay"] <= 60


def test_device_calls_with_bad_tokens_or_ids_get_the_agents_texts(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    for path in ("/device/provision", "/device/getCreds", "/file/getSignedUrl",
                 "/provision/update"):  # fmt: skip
        for token in ("nope", product["token"], role_token(admin, "admin")):
            response = agent.call(path, {"id": agent.device_id}, token=token)
            assert response.status_code == 401, (path, response.text)
            assert response.text == "Authentication failed"
    # provisioning another device id with one's own token
    other = agent.call("/device/provision", {"id": "SOMEONE-ELSE"})
    assert other.status_code == 403, other.text
    assert agent.call("/device/provision", b"{").status_code == 400
    # the update check: no firmware to offer
    update = agent.call("/provision/update", {"id": agent.device_id, "version": "1.0"})
    assert update.status_code == 200 and update.json() == {}


def test_the_update_check_records_the_firmware_version_and_when_it_checked(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    before = admin.post(f"{API}/device/get", json={"id": agent.device_id}).json()
    assert "checked" not in before and "version" not in before
    # what the agent sends: device.json5 + version + iotoVersion
    body = {"id": agent.device_id, "product": product["token"], "model": "sim",
            "version": "1.4.2", "iotoVersion": "2.6.0"}  # fmt: skip
    assert agent.call("/provision/update", body).json() == {}
    got = admin.post(f"{API}/device/get", json={"id": agent.device_id}).json()
    assert got["version"] == "1.4.2"
    assert isinstance(got["checked"], str) and got["checked"] >= got["created"]
    found = admin.post(f"{API}/device/find", json={"id": agent.device_id}).json()["data"][0]
    assert found["version"] == "1.4.2" and found["checked"] == got["checked"]
    # a check without a usable version keeps the one known
    assert agent.call("/provision/update", {"id": agent.device_id, "version": 7}).json() == {}
    assert admin.post(f"{API}/device/get", json={"id": agent.device_id}).json()["version"] == (
        "1.4.2"
    )


def test_the_agents_action_invoke_is_kept_as_telemetry_of_the_device(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    # ioAutomation(name, context): {api}/tok/action/invoke, any object without `error` is success
    invoked = agent.call("/action/invoke", {"name": "alarm", "context": {"temp": 99.5}})
    assert invoked.status_code == 200, invoked.text
    assert isinstance(invoked.json(), dict) and "error" not in invoked.json()
    kept = admin.get("/v1/telemetries", params={"deviceID": agent.device_id}).json()
    assert [t["body"] for t in kept] == [{"action": "alarm", "context": {"temp": 99.5}}]
    # the documented errors: no name, a bad token
    missing = agent.call("/action/invoke", {"context": {}})
    assert missing.status_code == 400 and "name" in missing.text
    refused = agent.call("/action/invoke", {"name": "alarm"}, token="nope")
    assert refused.status_code == 401 and refused.text == "Authentication failed"


def test_the_agents_json5_action_invoke_body_is_read(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    # ioAutomation() posts jsonString(data, 0), which is JSON_HUMAN: JSON5 with single-quoted
    # strings, bare keys (quoted when not letters, digits, _), raw control characters, lines
    body = (
        "{\n"
        "    name: 'alarm',\n"
        "    context: { temp: 99.5, 'door-1': 'it\\'s \"open\"\nnow', on: true, n: null }\n"
        "}\n"
    )
    invoked = agent.call("/action/invoke", body.encode())
    assert invoked.status_code == 200, invoked.text
    assert invoked.json() == {}
    kept = admin.get("/v1/telemetries", params={"deviceID": agent.device_id}).json()
    context = {"temp": 99.5, "door-1": 'it\'s "open"\nnow', "on": True, "n": None}
    assert [t["body"] for t in kept] == [{"action": "alarm", "context": context}]
    # what is neither JSON nor JSON5 is still the documented 400
    for bad in (b"{name: 'alarm'", b"{name: NaN}", b"{name 'alarm'}"):
        refused = agent.call("/action/invoke", bad)
        assert refused.status_code == 400 and "JSON" in refused.text, (bad, refused.text)
    # JSON5 is read up to JSON5_MAX_BYTES only: a large body that is not JSON is refused
    # unread (the Python reader would hold the event loop for seconds on a few MiB)
    values = ",".join(f"k{i}: {i}" for i in range(JSON5_MAX_BYTES // 8))
    large = f"{{name: 'alarm', context: {{{values}}}}}".encode()
    assert len(large) > JSON5_MAX_BYTES
    refused = agent.call("/action/invoke", large)
    assert refused.status_code == 400 and "JSON" in refused.text, refused.text
    small = f"{{name: 'alarm', context: {{{values[: JSON5_MAX_BYTES // 2].rpartition(',')[0]}}}}}"
    assert agent.call("/action/invoke", small.encode()).status_code == 200


def test_browser_apps_call_the_device_api_from_another_origin(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any]
) -> None:
    agent = registered(server, product)
    origin = {"Origin": "https://manager.example"}
    preflight = httpx.options(
        f"{server.http_url}{API}/device/claim",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    claimed = admin.post(f"{API}/device/claim", json={"id": agent.device_id}, headers=origin)
    assert claimed.status_code == 200, claimed.text
    assert claimed.headers["access-control-allow-origin"] == "*"
    refused = httpx.post(f"{server.http_url}{API}/device/get", json={"id": "X"}, headers=origin)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"


def test_the_openapi_document_lists_the_routes(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.http_url}{API}/openapi.json")
    assert doc.status_code == 200, doc.text
    paths = set(doc.json()["paths"])
    for route in ("register", "claim", "release", "get", "find", "provision", "getCreds",
                  "getSignedUrl"):  # fmt: skip
        assert f"/device/{route}" in paths, route


def test_another_account_cannot_claim_see_or_revoke_products_of_this_one(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any]
) -> None:
    agent = registered(server, product)  # registered, not yet claimed
    name = f"iso-{uuid.uuid4().hex[:8]}"
    server.cli("account", "create", name)
    token = server.cli("token", "create", "--quiet", "--role", "admin", "--account", name)
    with server.client(token) as other:
        refused = other.post(f"{API}/device/claim", json={"id": agent.device_id})
        assert refused.status_code == 404, refused.text
        assert all(p["id"] != product["id"] for p in other.get("/v1/ioto/products").json())
        assert other.delete(f"/v1/ioto/products/{product['id']}").status_code == 404
        # its own product's token does not register into this account's product either
        own = create_product(other, "own-line")
        twin = Agent(server, own["token"], agent.device_id)
        response = twin.register()
        # device ids are global: the claim id is taken by the first product
        assert response.status_code == 409, response.text
    # still unclaimed and claimable here
    assert admin.post(f"{API}/device/claim", json={"id": agent.device_id}).status_code == 200


@pytest.mark.parametrize("who", ["b-admin", "b-jwt", "a-scoped"])
def test_every_user_route_refuses_principals_that_must_not_reach_the_device(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], who: str
) -> None:
    """B's admin token, a JWT minted from a B token, and A's admin token limited to another
    project: A's device is 404 to each on every user route, and nothing of it shows."""
    agent = registered(server, product)
    did = agent.device_id
    claimed = admin.post(f"{API}/device/claim", json={"id": did}).json()
    if who == "a-scoped":
        admin.post("/v1/devices", json={"name": "p1dev", "project": "p1-only", "deployment": "d"})
        made = admin.post("/v1/tokens", json={"role": "admin", "project": "p1-only"}).json()
        token = made["token"]
    else:
        name = f"iso-{uuid.uuid4().hex[:8]}"
        server.cli("account", "create", name)
        token = server.cli("token", "create", "--quiet", "--role", "admin", "--account", name)
        if who == "b-jwt":
            with server.client(token) as b:
                made = b.post("/v1/tokens", json={"role": "admin"}).json()
            issued = httpx.post(
                f"{server.http_url}/v1/auth/token",
                data={"grant_type": "client_credentials", "client_id": made["id"],
                      "client_secret": made["token"]},
            )  # fmt: skip
            token = issued.json()["access_token"]
    with server.client(token) as other:
        for route in ("get", "release", "claim"):
            response = other.post(f"{API}/device/{route}", json={"id": did})
            assert response.status_code == 404, (route, response.text)
            # the same answer as for an id that never registered: nothing tells them apart
            ghost = new_id()
            unknown = other.post(f"{API}/device/{route}", json={"id": ghost})
            assert unknown.status_code == 404
            assert response.text.replace(did, "?") == unknown.text.replace(ghost, "?")
        for body in ({}, {"id": did}, {"productId": product["id"]}):
            found = other.post(f"{API}/device/find", json=body)
            assert found.status_code == 200, found.text
            assert did not in found.text and claimed["accountId"] not in found.text
    # A's device is as A left it
    assert (
        admin.post(f"{API}/device/get", json={"id": did}).json()["accountId"]
        == (claimed["accountId"])
    )


def test_the_face_on_its_own_port_answers_at_the_root_and_at_api(start_server: Any) -> None:
    server = start_server("--face-listen", "ioto=127.0.0.1:0")
    with server.client() as admin:
        product = create_product(admin, "own-port")
    own = server.addresses["faces"]["ioto"]["url"]
    for prefix in ("", "/api"):
        device_id = new_id()
        response = httpx.post(
            f"{own}{prefix}/device/register",
            json={"id": device_id},
            headers=bearer(product["token"]),
        )
        assert response.status_code == 200, (prefix, response.text)
        assert response.json() == {"id": device_id, "registered": True}
        missing = httpx.post(f"{own}{prefix}/device/nothing", json={})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/plain")
    server.stop()


def test_deleting_the_device_on_v1_releases_it(
    server: ServerProcess, admin: httpx.Client, product: dict[str, Any], tmp_path: Path
) -> None:
    agent = claimed_agent(server, admin, product["token"], tmp_path)
    did = agent.device_id
    assert admin.delete(f"/v1/devices/{did}").status_code == 204
    assert agent.register().json() == {"id": did, "registered": True}
    assert agent.call("/device/getCreds").status_code == 401
    assert admin.post(f"{API}/device/get", json={"id": did}).status_code == 404


def test_oversized_deep_and_wrong_method_requests_get_plain_text_errors(
    server: ServerProcess, product: dict[str, Any], as_role: Any
) -> None:
    url = f"{server.http_url}{API}/device/register"
    headers = bearer(product["token"])
    big = httpx.post(url, content=b"{" + b" " * 5_000_000 + b"}", headers=headers)
    assert big.status_code == 413, big.text
    deep = httpx.post(url, content=b"[" * 100 + b"]" * 100, headers=headers)
    assert deep.status_code == 400 and "deeper" in deep.text
    wrong = httpx.get(f"{server.http_url}{API}/device/find")
    assert wrong.status_code == 405
    for response in (big, deep, wrong):
        assert response.headers["content-type"].startswith("text/plain")
    # `index` is an owner option, as the vendor documents it
    viewer = as_role("viewer")
    assert viewer.post(f"{API}/device/find", json={"index": "gs1"}).status_code == 403
    assert viewer.post(f"{API}/device/find", json={}).status_code == 200
