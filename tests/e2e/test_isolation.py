"""Tenant isolation on every face: another account's things behave as if they did not exist.

Two accounts, A (the server's default account) and B (made with `thinghub account create`),
each with devices, a gateway and its module, enrollment groups, a device template, IoT Central
API tokens, queued commands, cloud-to-device messages, telemetry and events; A also has a
`/v1` token limited to one of its projects (P1) and things outside it (P2, and devices made on
the Central face, which belong to no project).

The sweep takes every route of the OpenAPI documents of `/v1` and `/central/api` (the Central
face twice: also under `/central/api/v1`) and sends it, aimed at A's things, with each
principal that must not reach them: B's admin token, B's IoT Central API token (raw, as
Central clients send it), an access token (JWT) minted from a B token, A's project-limited
token and a JWT minted from that. The answer must be the face's 404 (403 where the docs say
so, 409 where they document global ids), in the face's error shape, never a success and never
a 500; and no response may carry anything of A that the request did not name itself (ids,
keys, names, telemetry, property values, ...). `test_every_openapi_route_is_covered` fails
when a route appears that the table below does not know.

The device side: B's device, with its own valid SAS token or certificate, may not use A's
topics, connect as A's device or module, register through DPS into A's id scope or enrollment
groups, or send HTTPS telemetry as A's device; and an id freed by A and taken by B carries
nothing of A over.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.azure import RawClient, Target, derive_device_key, sign_sas
from tests.e2e.helpers_st import (
    anonymous,
    assert_error,
    assert_hub_unauthorized,
    client,
    create_device,
    device_sas,
    post_telemetry,
    sas_token,
)
from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import API, VERSION, template_body
from tests.e2e.test_central_api import assert_error as assert_central_error
from thinghub.mqtt import ClientSession, Will

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
DPS_USERNAME = "{scope}/registrations/{reg}/api-version=2019-03-31"
WAIT_S = 10.0
NO_BODY: Any = object()  # a probe that sends no JSON body
EVENT_TYPES = (
    "connection_state_event",
    "change_event",
    "device_lifecycle_event",
    "telemetry_rejected_event",
)


# -- the two tenants ------------------------------------------------------------------------


@dataclass
class World:
    """Everything the tests aim at, and the markers that must never cross a boundary."""

    server: ServerProcess
    h: str  # this run's unique suffix
    a: httpx.Client
    b: httpx.Client
    target: Target  # A's id scope (the default account's)
    a_account: dict[str, Any]
    b_account: dict[str, Any]
    p1: str  # A's project the scoped token is limited to
    p2: str  # A's other project; B has a project of the same name
    a_dep1: str
    a_dep2: str
    b_dep: str
    a_own: dict[str, Any]  # A, in P1 (the scoped token's)
    a_dev: dict[str, Any]  # A, in P2
    a_gw: dict[str, Any]  # A, gateway in P2
    a_mod: dict[str, Any]  # its module
    a_disabled: dict[str, Any]  # A, disabled, in P2
    a_central: str  # A, made on the Central face (no project), templated
    a_template: str
    a_template_doc: dict[str, Any]
    a_group: str  # A's enrollment group; B has one with the same id
    a_group2: str  # A's enrollment group that only A has
    a_group_keys: dict[str, str]
    a_viewer: dict[str, Any]  # a /v1 viewer token of A (no project)
    a_ux_key: dict[str, Any]  # A's ux4iot Shared-Access-Key
    a_product: dict[str, Any]  # A's Ioto product (its project is outside P1)
    a_ioto: str  # A's claimed Ioto device, of that product
    a_file: str  # a file A's Ioto device uploaded
    a_scoped: dict[str, Any]  # A's admin token limited to P1
    a_ctoken: str  # A's Central API token id
    a_ctoken_secret: str
    a_user: str
    a_user_id: str  # a_user's id
    a_cuser: str  # a user made on the Central face (its id; email a_cuser@example.com)
    a_cmd_central: str  # queued command on a_central
    a_cmd_dev: str  # queued command on a_dev
    a_c2d: str
    a_cursor: str  # a continuation token from A's telemetry
    a_telemetry_counts: dict[str, int]
    b_dev: dict[str, Any]
    b_gw: dict[str, Any]
    b_mod: dict[str, Any]
    b_group_key: str  # B's group (same id as a_group)
    b_central: str
    b_cmd: str
    b_ctoken_secret: str
    b_cert: tuple[Path, Path]
    a_dgroup: str = ""  # A's IoT Central device group (a_central only)
    a_sched: str = ""  # A's IoT Central scheduled job (over a_dgroup, due in 2090)
    a_job: str = ""  # A's job over it (a cloud property)
    headers: dict[str, str] = field(default_factory=dict)  # principal -> Authorization
    markers_b: frozenset[str] = frozenset()  # what B's principals must never see
    markers_s: frozenset[str] = frozenset()  # what A's P1-limited principals must never see

    def api(self, principal: str, face: str = "v1") -> httpx.Client:
        """A client for one principal; /v1 only takes `Bearer`, Central also the raw token."""
        header = self.headers[principal]
        if face == "v1" and not header.startswith("Bearer "):
            header = f"Bearer {header}"
        return anonymous(self.server, {"Authorization": header})

    def markers(self, principal: str) -> frozenset[str]:
        return self.markers_b if principal.startswith("b-") else self.markers_s

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def _keys(thing: dict[str, Any]) -> list[str]:
    keys = thing["credentials"]["symmetricKey"]
    return [keys["primaryKey"], keys["secondaryKey"]]


def _ioto_device_with_file(
    server: ServerProcess, admin: httpx.Client, product_token: str, device_id: str, name: str
) -> None:
    """An Ioto device registered, claimed by `admin`'s account, with one uploaded file."""
    url = f"{server.http_url}/ioto/api"
    auth = {"Authorization": f"bearer {product_token}"}
    _json(httpx.post(f"{url}/device/register", json={"id": device_id}, headers=auth, timeout=30))
    _json(admin.post(f"{url}/device/claim", json={"id": device_id}))
    token = _json(
        httpx.post(f"{url}/device/register", json={"id": device_id}, headers=auth, timeout=30)
    )["token"]
    signed = httpx.post(
        f"{url}/tok/file/getSignedUrl",
        json={"command": "put", "filename": name, "size": 5},
        headers={"Authorization": f"bearer {token}"},
        timeout=30,
    )
    uploaded = httpx.put(_json(signed), content=b"a-123", timeout=30)
    assert uploaded.status_code == 200, uploaded.text


def _client_credentials(server: ServerProcess, token_id: str, secret: str) -> str:
    response = httpx.post(
        f"{server.http_url}/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": token_id, "client_secret": secret},
        timeout=30,
    )
    return str(_json(response)["access_token"])


def _raw_connect(
    target: Target,
    client_id: str,
    username: str,
    password: str | None,
    *,
    cert: tuple[Path, Path] | None = None,
    clean: bool = True,
    auto_ack: bool = True,
) -> tuple[RawClient, int, bool]:
    raw = RawClient(target, cert=cert)
    if not auto_ack:
        raw.session = ClientSession(auto_ack=False)
    connack = raw.connect(client_id, username, password, clean=clean)
    return raw, connack.return_code, connack.session_present


def _hub_password(target: Target, device_id: str, key: str, module_id: str | None = None) -> str:
    return target.hub_sas(device_id, key, int(time.time()) + 3600, module_id)


@pytest.fixture(scope="module")
def world(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    h = uuid.uuid4().hex[:8]
    b_name = f"iso-b-{h}"
    b_account = json.loads(server.cli("account", "create", b_name, "--json"))
    b_token = server.cli("token", "create", "--quiet", "--account", b_name, "--role", "admin")
    central = {"api-version": VERSION}
    with client(server) as a, client(server, b_token) as b:
        a_app = _json(a.get(f"{API}/apps/app", params=central))
        p1, p2 = f"iso-p1-{h}", f"iso-shared-{h}"
        a_dep1, a_dep2, b_dep = f"iso-adep1-{h}", f"iso-adep2-{h}", f"iso-bdep-{h}"

        # -- A ------------------------------------------------------------------------------
        a_own = create_device(a, f"a-own-name-{h}", p1, a_dep1)
        a_dev = create_device(a, f"a-dev-name-{h}", p2, a_dep2)
        a_gw = create_device(a, f"a-gw-name-{h}", p2, a_dep2, gateway=True)
        a_mod = _json(a.post(f"/v1/devices/{a_gw['id']}/modules", json={"moduleId": f"amod-{h}"}))
        a_disabled = create_device(a, f"a-off-name-{h}", p2, a_dep2)
        _json(a.put(f"/v1/devices/{a_disabled['id']}", json={"provisioningStatus": "disabled"}))
        _json(a.put(f"/v1/devices/{a_dev['id']}", json={"properties": {"s": f"a-desired-{h}"}}))
        _json(
            a.put(
                f"/v1/devices/{a_gw['id']}/modules/{a_mod['moduleId']}",
                json={"properties": {"s": f"a-mdesired-{h}"}},
            )
        )
        for thing, module_of, marker in (
            (a_dev, None, f"a-tel-{h}"),
            (a_mod, a_gw["id"], f"a-tel-{h}"),
            (a_own, None, f"a-tel-p1-{h}"),
        ):
            did = module_of or thing["id"]
            sas = device_sas(thing, module_of=module_of)
            mid = thing.get("moduleId") if module_of else None
            sent = post_telemetry(server.http_url, did, {"m": marker}, sas, module_id=mid)
            assert sent.status_code == 204, sent.text
        a_template = f"dtmi:iso:a{h};1"
        doc = template_body(a_template)
        doc["displayName"] = f"a-template-name-{h}"
        a_template_doc = _json(
            a.put(f"{API}/deviceTemplates/{a_template}", params=central, json=doc)
        )
        a_central = f"a-central-{h}"
        _json(
            a.put(
                f"{API}/devices/{a_central}",
                params=central,
                json={"displayName": f"a-cdisplay-{h}", "template": a_template},
            )
        )
        sent = a.post(
            f"{API}/devices/{a_central}/telemetry", params=central, json={"temperature": 21.5}
        )
        assert sent.status_code == 204, sent.text
        _json(
            a.patch(
                f"{API}/devices/{a_central}/properties/targetTemperature",
                params=central,
                json={"value": 23.5},
            )
        )
        a_cmd_central = _json(
            a.post(
                f"{API}/devices/{a_central}/commands/reboot",
                params=central,
                json={"rebootInterval": 7},
            )
        )["commandId"]
        a_cmd_dev = _json(
            a.post(
                f"{API}/devices/{a_dev['id']}/commands/iso{h}",
                params=central,
                json={"m": f"a-cmdarg-{h}"},
            )
        )["commandId"]
        a_c2d = _json(
            a.post(f"/v1/devices/{a_dev['id']}/messages", json={"body": f"a-c2d-{h}"}), 202
        )["messageId"]
        a_dgroup, a_job = f"a-dgroup-{h}", f"a-job-{h}"
        _json(
            a.put(
                f"{API}/deviceGroups/{a_dgroup}",
                params=central,
                json={"displayName": f"a-dgdisplay-{h}", "filter": f"id eq '{a_central}'"},
            )
        )
        _json(
            a.put(
                f"{API}/jobs/{a_job}",
                params=central,
                json={
                    "displayName": f"a-jobdisplay-{h}",
                    "group": a_dgroup,
                    "data": [{"type": "cloudProperty", "path": "site", "value": f"a-site-{h}"}],
                },
            )
        )
        a_sched = f"a-sched-{h}"
        _json(
            a.put(
                f"{API}/scheduledJobs/{a_sched}",
                params=central,
                json={
                    "displayName": f"a-scheddisplay-{h}",
                    "group": a_dgroup,
                    "data": [{"type": "cloudProperty", "path": "site", "value": f"a-site-{h}"}],
                    "schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "daily"},
                },
            )
        )
        a_group, a_group2 = f"iso-group-{h}", f"iso-agroup-{h}"
        group_keys = {}
        for gid in (a_group, a_group2):
            group = _json(
                a.post(
                    "/v1/enrollmentGroups",
                    json={"enrollmentGroupId": gid, "project": p2, "deployment": a_dep2},
                ),
                201,
            )
            group_keys[gid] = group["attestation"]["symmetricKey"]["primaryKey"]
            group_keys[gid + "/2"] = group["attestation"]["symmetricKey"]["secondaryKey"]
        a_viewer = _json(a.post("/v1/tokens", json={"role": "viewer", "label": f"a-l-{h}"}), 201)
        a_scoped = _json(a.post("/v1/tokens", json={"role": "admin", "project": p1}), 201)
        a_ux_key = _json(a.post("/v1/ux4iot/keys", json={"label": f"a-ux-{h}"}), 201)
        a_product = _json(a.post("/v1/ioto/products", json={"name": f"a-prod-{h}"}), 201)
        a_ioto, a_file = f"a-ioto-{h}", f"a-file-{h}.txt"
        _ioto_device_with_file(server, a, a_product["token"], a_ioto, a_file)
        a_ctoken = f"a-ctoken-{h}"
        a_ctoken_secret = _json(
            a.put(
                f"{API}/apiTokens/{a_ctoken}", params=central, json={"roles": [{"role": "admin"}]}
            )
        )["token"]
        a_user = f"a-user-{h}"
        a_user_id = _json(
            a.post("/v1/users", json={"username": a_user, "password": PASSWORD, "role": "viewer"}),
            201,
        )["id"]
        a_cuser = f"a-cuser-{h}"
        _json(
            a.put(
                f"{API}/users/{a_cuser}",
                params=central,
                json={
                    "type": "email",
                    "email": f"{a_cuser}@example.com",
                    "roles": [{"role": "App Operator"}],
                },
            )
        )
        target = Target.of(server.addresses)
        assert target.id_scope == a_dev["idScope"]
        # A's device connects once: connection events and a reported property.
        raw, code, _ = _raw_connect(
            target,
            a_dev["id"],
            target.hub_username(a_dev["id"]),
            _hub_password(target, a_dev["id"], _keys(a_dev)[0]),
        )
        with raw:
            assert code == 0
            raw.subscribe("$iothub/twin/res/#")
            raw.wait_suback()
            raw.publish(
                "$iothub/twin/PATCH/properties/reported/?$rid=1",
                json.dumps({"r": f"a-reported-{h}"}).encode(),
            )
            assert "/204/" in raw.wait_publish().publish.topic
            raw.disconnect()
        paged = a.get("/v1/telemetries", params={"limit": 1})
        a_cursor = paged.headers["x-continuation-token"]
        counts = {
            did: len(_json(a.get("/v1/telemetries", params={"deviceID": did, "limit": 1000})))
            for did in (a_dev["id"], a_own["id"], a_gw["id"], a_central)
        }

        # -- B ------------------------------------------------------------------------------
        b_dev = create_device(b, f"b-dev-name-{h}", p2, b_dep)
        b_gw = create_device(b, f"b-gw-name-{h}", p2, b_dep, gateway=True)
        b_mod = _json(b.post(f"/v1/devices/{b_gw['id']}/modules", json={"moduleId": f"bmod-{h}"}))
        sent = post_telemetry(server.http_url, b_dev["id"], {"m": f"b-tel-{h}"}, device_sas(b_dev))
        assert sent.status_code == 204, sent.text
        # Enrollment group ids are per account: B may use the id A uses.
        b_group = _json(
            b.post(
                "/v1/enrollmentGroups",
                json={"enrollmentGroupId": a_group, "project": p2, "deployment": b_dep},
            ),
            201,
        )
        b_central = f"b-central-{h}"
        _json(b.put(f"{API}/devices/{b_central}", params=central, json={}))
        b_cmd = _json(b.post(f"{API}/devices/{b_central}/commands/ping", params=central, json={}))[
            "commandId"
        ]
        b_ctoken_secret = _json(
            b.put(
                f"{API}/apiTokens/b-ctoken-{h}",
                params=central,
                json={"roles": [{"role": "App Administrator"}]},
            )
        )["token"]
        b_admin2 = _json(b.post("/v1/tokens", json={"role": "admin"}), 201)
        cert = _json(b.post(f"/v1/devices/{b_dev['id']}/certificates"), 201)
        certs = tmp_path_factory.mktemp("iso-certs")
        (certs / "b.pem").write_text(cert["certificate"])
        (certs / "b.key").write_text(cert["privateKey"])

        world = World(
            server=server,
            h=h,
            a=a,
            b=b,
            target=target,
            a_account={
                "id": a_app["id"],
                "idScope": a_dev["idScope"],
                "name": a_app["displayName"],
            },
            b_account=b_account,
            p1=p1,
            p2=p2,
            a_dep1=a_dep1,
            a_dep2=a_dep2,
            b_dep=b_dep,
            a_own=a_own,
            a_dev=a_dev,
            a_gw=a_gw,
            a_mod=a_mod,
            a_disabled=a_disabled,
            a_central=a_central,
            a_template=a_template,
            a_template_doc=a_template_doc,
            a_group=a_group,
            a_group2=a_group2,
            a_group_keys=group_keys,
            a_viewer=a_viewer,
            a_ux_key=a_ux_key,
            a_product=a_product,
            a_ioto=a_ioto,
            a_file=a_file,
            a_scoped=a_scoped,
            a_ctoken=a_ctoken,
            a_ctoken_secret=a_ctoken_secret,
            a_user=a_user,
            a_user_id=a_user_id,
            a_cuser=a_cuser,
            a_cmd_central=a_cmd_central,
            a_cmd_dev=a_cmd_dev,
            a_c2d=a_c2d,
            a_cursor=a_cursor,
            a_telemetry_counts=counts,
            b_dev=b_dev,
            b_gw=b_gw,
            b_mod=b_mod,
            b_group_key=b_group["attestation"]["symmetricKey"]["primaryKey"],
            b_central=b_central,
            b_cmd=b_cmd,
            b_ctoken_secret=b_ctoken_secret,
            b_cert=(certs / "b.pem", certs / "b.key"),
            a_dgroup=a_dgroup,
            a_job=a_job,
            a_sched=a_sched,
        )
        world.headers = {
            "b-admin": f"Bearer {b_token}",
            "b-central": b_ctoken_secret,  # raw, as IoT Central clients send it
            "b-jwt": "Bearer " + _client_credentials(server, b_admin2["id"], b_admin2["token"]),
            "a-scoped": f"Bearer {a_scoped['token']}",
            "a-scoped-jwt": "Bearer "
            + _client_credentials(server, a_scoped["id"], a_scoped["token"]),
        }
        outside_p1 = {
            a_dev["id"],
            a_gw["id"],
            a_mod["moduleId"],
            a_disabled["id"],
            a_central,
            *_keys(a_dev),
            *_keys(a_gw),
            *_keys(a_mod),
            *_keys(a_disabled),
            f"a-dev-name-{h}",
            f"a-gw-name-{h}",
            f"a-off-name-{h}",
            f"a-cdisplay-{h}",
            a_dep2,
            a_group2,
            *group_keys.values(),
            a_viewer["id"],
            a_viewer["token"],
            f"a-l-{h}",
            a_ux_key["id"],
            a_ux_key["key"],
            f"a-ux-{h}",
            a_product["id"],
            a_product["token"],
            f"a-prod-{h}",
            a_ioto,
            a_file,
            a_ctoken,
            a_ctoken_secret,
            a_user,
            a_user_id,
            a_cuser,
            a_cmd_central,
            a_cmd_dev,
            f"a-cmdarg-{h}",
            a_c2d,
            f"a-c2d-{h}",
            f"a-tel-{h}",
            f"a-desired-{h}",
            f"a-mdesired-{h}",
            f"a-reported-{h}",
            a_dgroup,
            f"a-dgdisplay-{h}",
            a_job,
            f"a-jobdisplay-{h}",
            a_sched,
            f"a-scheddisplay-{h}",
            f"a-site-{h}",
        }
        b_things = {
            b_account["id"],
            b_account["idScope"],
            b_dev["id"],
            b_gw["id"],
            b_central,
            *_keys(b_dev),
            *_keys(b_mod),
            f"b-tel-{h}",
            b_cmd,
        }
        world.markers_b = frozenset(
            outside_p1
            | {
                a_app["id"],
                a_dev["idScope"],
                p1,
                a_dep1,
                a_own["id"],
                f"a-own-name-{h}",
                f"a-tel-p1-{h}",
                *_keys(a_own),
                a_template,
                f"a-template-name-{h}",
                a_scoped["id"],
                a_scoped["token"],
            }
        )
        world.markers_s = frozenset(outside_p1 | {p2} | b_things)
        yield world


# -- probes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request and what must come back.

    expect: "404", "403", "403|404" (refused either way), "409" (an id that is global by
    the docs), "2xx" (the caller's own thing: allowed, but nothing of A may show), or
    "oauth:<status>:<error>" for the token endpoint.
    """

    method: str
    path: str  # from the server root
    expect: str
    body: Any = NO_BODY
    form: dict[str, str] | None = None
    then: Callable[[httpx.Response], None] | None = None


Case = Callable[[World, str], list[Probe]]
ROUTES: dict[tuple[str, str, str], Case] = {}


def route(face: str, method: str, path: str) -> Callable[[Case], Case]:
    def register(case: Case) -> Case:
        ROUTES[(face, method, path)] = case
        return case

    return register


def _is_b(principal: str) -> bool:
    return principal.startswith("b-")


def _a_devices(w: World, principal: str) -> list[str]:
    """A's devices the principal must not reach (B: all of them; scoped: those outside P1)."""
    found = [w.a_dev["id"], w.a_gw["id"], w.a_disabled["id"], w.a_central]
    return [w.a_own["id"], *found] if _is_b(principal) else found


def _v1(method: str, path: str, expect: str = "404", body: Any = NO_BODY, **kw: Any) -> Probe:
    return Probe(method, "/v1" + path, expect, body, **kw)


# -- /v1 ------------------------------------------------------------------------------------


@route("v1", "POST", "/auth/token")
def _(w: World, p: str) -> list[Probe]:
    secret = w.headers[p].removeprefix("Bearer ")
    # The principal's own secret with the id of one of A's tokens; A's user, a wrong password.
    return [
        _v1(
            "POST",
            "/auth/token",
            "oauth:401:invalid_client",
            form={"grant_type": "client_credentials", "client_id": tid, "client_secret": secret},
        )
        for tid in (w.a_viewer["id"], w.a_ctoken)
    ] + [
        _v1(
            "POST",
            "/auth/token",
            "oauth:400:invalid_grant",
            form={"grant_type": "password", "username": w.a_user, "password": secret[:40]},
        )
    ]


@route("v1", "GET", "/tokens")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/tokens", "2xx")]


@route("v1", "POST", "/tokens")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        # A project-limited admin mints tokens for its own project only (faces/st.md).
        def inherits(response: httpx.Response) -> None:
            assert response.json()["project"] == w.p1, response.text

        return [
            _v1("POST", "/tokens", "403", {"role": "admin", "project": w.p2}),
            _v1("POST", "/tokens", "2xx", {"role": "viewer"}, then=inherits),
        ]

    def sees_nothing_of_a(response: httpx.Response) -> None:
        made = response.json()
        with client(w.server, made["token"]) as api:
            assert_error(api.get(f"/v1/devices/{w.a_own['id']}"), 404, code="NotFound")
            assert _json(api.get("/v1/devices")) == []
            assert _json(api.get("/v1/telemetries")) == []
        with w.api(p) as api:  # it names A's project: gone, so B's lists stay free of it
            assert api.delete(f"/v1/tokens/{made['id']}").status_code == 204

    # B names A's project: a token for a project of B's own of that name, which B lacks.
    return [
        _v1("POST", "/tokens", "2xx", {"role": "viewer", "project": w.p1}, then=sees_nothing_of_a)
    ]


@route("v1", "DELETE", "/tokens/{token_id}")
def _(w: World, p: str) -> list[Probe]:
    ids = [w.a_viewer["id"], w.a_ctoken] + ([w.a_scoped["id"]] if _is_b(p) else [])
    return [_v1("DELETE", f"/tokens/{tid}") for tid in ids]


# ux4iot keys are account-wide: a project-limited admin gets 403 (faces/st.md)


def _ux_key_expect(p: str, b_expect: str) -> str:
    return b_expect if _is_b(p) else "403"


@route("v1", "GET", "/ux4iot/keys")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/ux4iot/keys", _ux_key_expect(p, "2xx"))]


@route("v1", "POST", "/ux4iot/keys")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        return [_v1("POST", "/ux4iot/keys", "403", {"label": "x"})]

    def revoke_it(response: httpx.Response) -> None:  # B's own key; B's lists stay clean
        with w.api(p) as api:
            assert api.delete(f"/v1/ux4iot/keys/{response.json()['id']}").status_code == 204

    return [_v1("POST", "/ux4iot/keys", "2xx", {"label": "x"}, then=revoke_it)]


@route("v1", "POST", "/ux4iot/keys/{key_id}/rotate")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("POST", f"/ux4iot/keys/{w.a_ux_key['id']}/rotate", _ux_key_expect(p, "404"))]


@route("v1", "DELETE", "/ux4iot/keys/{key_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/ux4iot/keys/{w.a_ux_key['id']}", _ux_key_expect(p, "404"))]


# Ioto products are account-wide: a project-limited admin gets 403 (faces/ioto.md)


@route("v1", "GET", "/ioto/products")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/ioto/products", _ux_key_expect(p, "2xx"))]


@route("v1", "POST", "/ioto/products")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        return [_v1("POST", "/ioto/products", "403", {"name": "x"})]

    def revoke_it(response: httpx.Response) -> None:  # B's own product
        with w.api(p) as api:
            assert api.delete(f"/v1/ioto/products/{response.json()['id']}").status_code == 204

    return [_v1("POST", "/ioto/products", "2xx", {"name": w.fresh("b-prod")}, then=revoke_it)]


@route("v1", "DELETE", "/ioto/products/{product_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/ioto/products/{w.a_product['id']}", _ux_key_expect(p, "404"))]


@route("v1", "GET", "/devices/{device_id}/files")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", f"/devices/{d}/files") for d in (w.a_ioto, *_a_devices(w, p))]


@route("v1", "GET", "/devices/{device_id}/files/{name}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", f"/devices/{w.a_ioto}/files/{w.a_file}")]


@route("v1", "DELETE", "/devices/{device_id}/files/{name}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/devices/{w.a_ioto}/files/{w.a_file}")]


@route("v1", "POST", "/users")
def _(w: World, p: str) -> list[Probe]:
    if _is_b(p):
        # Usernames are global, as documented (the password grant takes a bare name): A's
        # name is a 409 for B, which reveals no more than that the name is taken.
        if p == "b-admin":
            body = {"username": w.a_user, "password": PASSWORD, "role": "viewer"}
            return [_v1("POST", "/users", "409", body)]
        body = {"username": w.fresh("b-user"), "password": PASSWORD, "role": "viewer"}
        return [_v1("POST", "/users", "2xx", body)]

    username = w.fresh("scoped-user")

    def stays_in_p1(response: httpx.Response) -> None:
        # Users have no project: a user minted by a P1-limited admin must not outgrow P1.
        grant = httpx.post(
            f"{w.server.http_url}/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": PASSWORD},
            timeout=30,
        )
        token = _json(grant)["access_token"]
        with client(w.server, token) as api:
            response = api.get(f"/v1/devices/{w.a_dev['id']}")
            assert response.status_code == 404, (
                f"POST /v1/users by a token limited to {w.p1!r} made an admin user that "
                f"reads a device of {w.p2!r}: {response.status_code}"
            )

    body = {"username": username, "password": PASSWORD, "role": "admin"}
    return [_v1("POST", "/users", "403|2xx", body, then=stays_in_p1)]


@route("v1", "GET", "/projects")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/projects", "2xx")]


@route("v1", "GET", "/projects/{project}/deployments")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        return [_v1("GET", f"/projects/{w.p2}/deployments")]

    def only_bs(response: httpx.Response) -> None:
        assert [d["name"] for d in response.json()] == [w.b_dep], response.text

    # P2 is also B's own project: B sees its own deployments of it, none of A's.
    return [
        _v1("GET", f"/projects/{w.p1}/deployments"),
        _v1("GET", f"/projects/{w.p2}/deployments", "2xx", then=only_bs),
    ]


@route("v1", "POST", "/devices")
def _(w: World, p: str) -> list[Probe]:
    body = {"name": "probe", "project": w.p2, "deployment": w.b_dep}
    if not _is_b(p):
        return [_v1("POST", "/devices", "403|404", body)]

    def in_b(response: httpx.Response) -> None:
        device = response.json()
        assert device["idScope"] == w.b_account["idScope"], device
        with w.api(p) as api:
            assert api.delete(f"/v1/devices/{device['id']}").status_code == 204

    return [_v1("POST", "/devices", "2xx", body, then=in_b)]


def _empty(response: httpx.Response) -> None:
    assert response.json() == [], response.text


@route("v1", "GET", "/devices")
def _(w: World, p: str) -> list[Probe]:
    probes = [
        _v1("GET", "/devices", "2xx"),
        _v1("GET", f"/devices?projectID={w.p2}&deploymentID={w.a_dep2}", "2xx", then=_empty),
    ]
    if _is_b(p):
        probes.append(_v1("GET", f"/devices?projectID={w.p1}", "2xx", then=_empty))
    return probes


@route("v1", "GET", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", f"/devices/{d}") for d in _a_devices(w, p)] + [
        _v1("GET", f"/devices/%20{w.a_dev['id']}%20")  # the seed's padded path id
    ]


@route("v1", "PUT", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"properties": {"hijack": 1}, "name": "hijacked", "provisioningStatus": "disabled"}
    return [_v1("PUT", f"/devices/{d}", body=body) for d in _a_devices(w, p)]


@route("v1", "DELETE", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/devices/{d}") for d in _a_devices(w, p)]


@route("v1", "DELETE", "/devices/{device_id}/telemetries")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/devices/{d}/telemetries") for d in _a_devices(w, p)]


@route("v1", "DELETE", "/devices/{device_id}/events")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("DELETE", f"/devices/{d}/events") for d in _a_devices(w, p)]


@route("v1", "GET", "/account/retention")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/account/retention", "2xx")]  # the caller's own account's


@route("v1", "PUT", "/account/retention")
def _(w: World, p: str) -> list[Probe]:
    # B sets its own account's (to what it is); a project-limited admin may not (account-wide).
    return [_v1("PUT", "/account/retention", "2xx" if _is_b(p) else "403", {})]


@route("v1", "GET", "/devices/{device_id}/twin")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", f"/devices/{d}/twin") for d in _a_devices(w, p)]


@route("v1", "GET", "/devices/{device_id}/stream")
def _(w: World, p: str) -> list[Probe]:
    # Refused before the stream starts (a 200 would never end: httpx reads the whole body).
    return [_v1("GET", f"/devices/{d}/stream") for d in _a_devices(w, p)]


@route("v1", "POST", "/devices/{device_id}/method")
def _(w: World, p: str) -> list[Probe]:
    body = {"name": "reboot", "payload": {}, "responseTimeoutInSeconds": 5}
    return [_v1("POST", f"/devices/{d}/method", body=body) for d in _a_devices(w, p)]


@route("v1", "POST", "/devices/{device_id}/messages")
def _(w: World, p: str) -> list[Probe]:
    return [
        _v1("POST", f"/devices/{d}/messages", body={"body": "hijack"}) for d in _a_devices(w, p)
    ]


@route("v1", "POST", "/devices/{device_id}/certificates")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("POST", f"/devices/{d}/certificates") for d in _a_devices(w, p)]


@route("v1", "GET", "/enrollmentGroups")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", "/enrollmentGroups", "2xx")]


@route("v1", "POST", "/enrollmentGroups")
def _(w: World, p: str) -> list[Probe]:
    gid = w.fresh("iso-probe-group")
    body = {"enrollmentGroupId": gid, "project": w.p2, "deployment": w.b_dep}
    if not _is_b(p):
        return [_v1("POST", "/enrollmentGroups", "403|404", body)]

    def in_b(response: httpx.Response) -> None:
        assert response.json()["idScope"] == w.b_account["idScope"], response.text
        with w.api(p) as api:
            assert api.delete(f"/v1/enrollmentGroups/{gid}").status_code == 204

    return [_v1("POST", "/enrollmentGroups", "2xx", body, then=in_b)]


@route("v1", "GET", "/enrollmentGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        return [_v1("GET", f"/enrollmentGroups/{g}") for g in (w.a_group, w.a_group2)]

    def bs_own(response: httpx.Response) -> None:
        group = response.json()
        assert group["deployment"] == w.b_dep, group
        assert group["attestation"]["symmetricKey"]["primaryKey"] == w.b_group_key, group

    # B has a group with the id of a_group: it sees its own, never A's.
    return [
        _v1("GET", f"/enrollmentGroups/{w.a_group2}"),
        _v1("GET", f"/enrollmentGroups/{w.a_group}", "2xx", then=bs_own),
    ]


@route("v1", "DELETE", "/enrollmentGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    groups = [w.a_group2] if _is_b(p) else [w.a_group, w.a_group2]
    return [_v1("DELETE", f"/enrollmentGroups/{g}") for g in groups]


def _module_paths(w: World) -> tuple[str, str]:
    return w.a_gw["id"], w.a_mod["moduleId"]


@route("v1", "GET", "/devices/{device_id}/modules")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("GET", f"/devices/{w.a_gw['id']}/modules")]


@route("v1", "POST", "/devices/{device_id}/modules")
def _(w: World, p: str) -> list[Probe]:
    return [_v1("POST", f"/devices/{w.a_gw['id']}/modules", body={"moduleId": "intruder"})]


@route("v1", "GET", "/devices/{device_id}/modules/{module_id}")
def _(w: World, p: str) -> list[Probe]:
    gw, mod = _module_paths(w)
    return [_v1("GET", f"/devices/{gw}/modules/{mod}")]


@route("v1", "PUT", "/devices/{device_id}/modules/{module_id}")
def _(w: World, p: str) -> list[Probe]:
    gw, mod = _module_paths(w)
    return [_v1("PUT", f"/devices/{gw}/modules/{mod}", body={"properties": {"hijack": 1}})]


@route("v1", "DELETE", "/devices/{device_id}/modules/{module_id}")
def _(w: World, p: str) -> list[Probe]:
    gw, mod = _module_paths(w)
    return [_v1("DELETE", f"/devices/{gw}/modules/{mod}")]


@route("v1", "GET", "/devices/{device_id}/modules/{module_id}/twin")
def _(w: World, p: str) -> list[Probe]:
    gw, mod = _module_paths(w)
    return [_v1("GET", f"/devices/{gw}/modules/{mod}/twin")]


@route("v1", "POST", "/devices/{device_id}/modules/{module_id}/method")
def _(w: World, p: str) -> list[Probe]:
    gw, mod = _module_paths(w)
    body = {"name": "reboot", "responseTimeoutInSeconds": 5}
    return [_v1("POST", f"/devices/{gw}/modules/{mod}/method", body=body)]


def _list_queries(w: World, p: str, path: str) -> list[Probe]:
    """Telemetry and event lists: everything, then aimed at A's devices, projects, cursor."""
    everything: list[dict[str, str]] = [{}, {"limit": "1000"}]
    none_of_a: list[dict[str, str]] = [
        {"deviceID": w.a_dev["id"]},
        {"deviceID": w.a_gw["id"], "moduleID": w.a_mod["moduleId"]},
        {"deviceID": w.a_central},
        {"projectID": w.p2, "deploymentID": w.a_dep2},
        {"continuationToken": w.a_cursor},  # A's cursor pages the caller's own items
    ]
    if _is_b(p):
        none_of_a += [{"deviceID": w.a_own["id"]}, {"projectID": w.p1}]
    probes = [_v1("GET", f"{path}?{httpx.QueryParams(q)}", "2xx") for q in everything]
    probes += [
        _v1("GET", f"{path}?{httpx.QueryParams(q)}", "2xx", then=_no_a(w, p)) for q in none_of_a
    ]
    if _is_b(p):  # B's own project of A's project's name: B's own items only
        probes.append(_v1("GET", f"{path}?projectID={w.p2}", "2xx", then=_only_b(w)))
    return probes


def _no_a(w: World, p: str) -> Callable[[httpx.Response], None]:
    a_ids = set(_a_devices(w, p))

    def check(response: httpx.Response) -> None:
        ids = {item["deviceID"] for item in response.json()}
        assert not ids & a_ids, ids

    return check


def _only_b(w: World) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        ids = {item["deviceID"] for item in response.json()}
        assert ids <= {w.b_dev["id"], w.b_gw["id"]}, ids

    return check


@route("v1", "GET", "/telemetries")
def _(w: World, p: str) -> list[Probe]:
    return _list_queries(w, p, "/telemetries")


@route("v1", "GET", "/events")
def _(w: World, p: str) -> list[Probe]:
    probes = _list_queries(w, p, "/events")
    for kind in EVENT_TYPES:
        probes.append(_v1("GET", f"/events?eventType={kind}&limit=1000", "2xx"))
        probes.append(
            _v1("GET", f"/events?eventType={kind}&deviceID={w.a_dev['id']}", "2xx", then=_empty)
        )
    return probes


# -- /central/api ---------------------------------------------------------------------------


def _c(method: str, path: str, expect: str = "404", body: Any = NO_BODY, **kw: Any) -> Probe:
    return Probe(method, API + path, expect, body, **kw)


def _central_denied(w: World, p: str, expect_b: str, method: str, path: str, body: Any) -> Probe:
    """Account-wide things (tokens, templates): 403 for a project-limited token (docs)."""
    return _c(method, path, expect_b if _is_b(p) else "403", body)


@route("central", "GET", "/apps/app")
def _(w: World, p: str) -> list[Probe]:
    def own_app(response: httpx.Response) -> None:
        app = response.json()
        if _is_b(p):
            assert (app["id"], app["displayName"]) == (w.b_account["id"], w.b_account["name"])
        else:
            assert app["id"] == w.a_account["id"], app

    return [_c("GET", "/apps/app", "2xx", then=own_app)]


@route("central", "PUT", "/apiTokens/{token_id}")
def _(w: World, p: str) -> list[Probe]:
    # Token ids are per account (central.md): B makes a token of its own under A's id (a 409
    # told B that the id exists in another account); a scoped token gets 403.
    body = {"roles": [{"role": "App Administrator"}]}
    central = {"api-version": VERSION}

    def b_own_token(response: httpx.Response) -> None:
        assert response.json()["id"] == w.a_ctoken, response.text
        assert w.b.delete(f"{API}/apiTokens/{w.a_ctoken}", params=central).status_code == 204
        # A's token of that id is still A's, and still works.
        mine = _json(w.a.get(f"{API}/apiTokens/{w.a_ctoken}", params=central))
        assert mine["id"] == w.a_ctoken
        with anonymous(w.server, {"Authorization": w.a_ctoken_secret}) as a_central:
            assert (
                _json(a_central.get(f"{API}/apps/app", params=central))["id"] == (w.a_account["id"])
            )

    if _is_b(p):
        return [_c("PUT", f"/apiTokens/{w.a_ctoken}", "2xx", body, then=b_own_token)]
    return [_c("PUT", f"/apiTokens/{w.a_ctoken}", "403", body)]


@route("central", "GET", "/apiTokens/{token_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/apiTokens/{w.a_ctoken}", NO_BODY)]


@route("central", "DELETE", "/apiTokens/{token_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "DELETE", f"/apiTokens/{w.a_ctoken}", NO_BODY)]


@route("central", "GET", "/apiTokens")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "2xx", "GET", "/apiTokens", NO_BODY)]


def _no_devices(response: httpx.Response) -> None:
    assert response.json()["devices"] == [], response.text


@route("central", "GET", "/devices")
def _(w: World, p: str) -> list[Probe]:
    targets = _a_devices(w, p)
    filters = [f"id eq '{d}'" for d in targets] + [
        f"startswith(id,'a-central-{w.h}')",
        f"contains(id,'{w.a_dev['id'][:13]}')",
        f"displayName eq 'a-cdisplay-{w.h}'",
        f"template eq '{w.a_template}'",
        f"id eq '{w.a_dev['id']}' or id eq '{w.a_central}'",
        f"not (id ne '{w.a_central}')",
    ]
    probes = [_c("GET", "/devices", "2xx"), _c("GET", "/devices?$top=1", "2xx")]
    probes += [
        _c(
            "GET",
            "/devices?" + httpx.QueryParams({"$filter": f}).__str__(),
            "2xx",
            then=_no_devices,
        )
        for f in filters
    ]
    # Paging past A's ids from just before them: only the caller's devices follow.
    probes.append(_c("GET", f"/devices?$skiptoken=a-central-{w.h[:-1]}", "2xx"))
    return probes


@route("central", "PUT", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    # Device ids are global (central.md): an id A uses is a 409 for B; a scoped token may not
    # create devices here at all (they would have no project).
    expect = "409" if _is_b(p) else "403"
    return [_c("PUT", f"/devices/{d}", expect, {"displayName": "x"}) for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}") for d in _a_devices(w, p)]


@route("central", "PATCH", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"displayName": "hijacked", "enabled": False, "template": None}
    return [_c("PATCH", f"/devices/{d}", body=body) for d in _a_devices(w, p)]


@route("central", "DELETE", "/devices/{device_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("DELETE", f"/devices/{d}") for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/credentials")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/credentials") for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/attestation")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/attestation") for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/components")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/components") for d in _a_devices(w, p)]


@route("central", "POST", "/devices/{device_id}/telemetry")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("POST", f"/devices/{d}/telemetry", body={"temperature": 99.5}) for d in _a_devices(w, p)
    ]


@route("central", "POST", "/devices/{device_id}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("POST", f"/devices/{d}/commands/reboot", body={"rebootInterval": 1})
        for d in _a_devices(w, p)
    ]


@route("central", "POST", "/devices/{device_id}/components/{component}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("POST", f"/devices/{d}/components/thermostat1/commands/getMaxMinReport", body={})
        for d in _a_devices(w, p)
    ]


@route("central", "GET", "/devices/{device_id}/commands/{command_id}/status")
def _(w: World, p: str) -> list[Probe]:
    own = w.b_central if _is_b(p) else w.a_own["id"]
    return [
        _c("GET", f"/devices/{w.a_central}/commands/{w.a_cmd_central}/status"),
        _c("GET", f"/devices/{w.a_dev['id']}/commands/{w.a_cmd_dev}/status"),
        # A command of A's, asked for through a device the caller may see.
        _c("GET", f"/devices/{own}/commands/{w.a_cmd_central}/status"),
        _c("GET", f"/devices/{own}/commands/{w.a_cmd_dev}/status"),
    ]


@route("central", "GET", "/devices/{device_id}/properties/{property_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("GET", f"/devices/{w.a_central}/properties/targetTemperature"),
        _c("GET", f"/devices/{w.a_dev['id']}/properties/s"),
    ]


@route("central", "PATCH", "/devices/{device_id}/properties/{property_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("PATCH", f"/devices/{w.a_central}/properties/targetTemperature", body={"value": 1.5}),
        _c("PATCH", f"/devices/{w.a_dev['id']}/properties/s", body={"value": "hijack"}),
    ]


@route("central", "PUT", "/deviceTemplates/{template_id}")
def _(w: World, p: str) -> list[Probe]:
    if not _is_b(p):
        return [_c("PUT", f"/deviceTemplates/{w.a_template}", "403", template_body(w.a_template))]

    def own_copy(response: httpx.Response) -> None:
        # Template ids are per application: B made its own, which it now removes.
        with w.api(p, "central") as api:
            gone = api.delete(
                f"{API}/deviceTemplates/{w.a_template}", params={"api-version": VERSION}
            )
            assert gone.status_code == 204, gone.text

    return [
        _c(
            "PUT",
            f"/deviceTemplates/{w.a_template}",
            "2xx",
            template_body(w.a_template),
            then=own_copy,
        )
    ]


@route("central", "GET", "/deviceTemplates/{template_id}")
def _(w: World, p: str) -> list[Probe]:
    # Templates belong to the whole application: a scoped token of A may read them.
    return [_c("GET", f"/deviceTemplates/{w.a_template}", "404" if _is_b(p) else "2xx")]


@route("central", "PATCH", "/deviceTemplates/{template_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"displayName": "hijacked"}
    return [_central_denied(w, p, "404", "PATCH", f"/deviceTemplates/{w.a_template}", body)]


@route("central", "DELETE", "/deviceTemplates/{template_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "DELETE", f"/deviceTemplates/{w.a_template}", NO_BODY)]


@route("central", "GET", "/deviceTemplates")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", "/deviceTemplates", "2xx")]


# The real API's routes (central.md, "The real API").


@route("central", "GET", "/devices/{device_id}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/commands/reboot") for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/components/{component}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("GET", f"/devices/{d}/components/thermostat1/commands/getMaxMinReport")
        for d in _a_devices(w, p)
    ]


@route("central", "GET", "/devices/{device_id}/properties")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/properties") for d in _a_devices(w, p)]


@route("central", "PATCH", "/devices/{device_id}/properties")
def _(w: World, p: str) -> list[Probe]:
    body = {"targetTemperature": 1.5}
    return [_c("PATCH", f"/devices/{d}/properties", body=body) for d in _a_devices(w, p)]


@route("central", "PUT", "/devices/{device_id}/properties")
def _(w: World, p: str) -> list[Probe]:
    body = {"targetTemperature": 1.5}
    return [_c("PUT", f"/devices/{d}/properties", body=body) for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/components/{component}/properties")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/components/thermostat1/properties") for d in _a_devices(w, p)]


@route("central", "PATCH", "/devices/{device_id}/components/{component}/properties")
def _(w: World, p: str) -> list[Probe]:
    body = {"targetTemperature": 1.5}
    return [
        _c("PATCH", f"/devices/{d}/components/thermostat1/properties", body=body)
        for d in _a_devices(w, p)
    ]


@route("central", "PUT", "/devices/{device_id}/components/{component}/properties")
def _(w: World, p: str) -> list[Probe]:
    body = {"targetTemperature": 1.5}
    return [
        _c("PUT", f"/devices/{d}/components/thermostat1/properties", body=body)
        for d in _a_devices(w, p)
    ]


@route("central", "GET", "/devices/{device_id}/telemetry/{telemetry_name}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{d}/telemetry/temperature") for d in _a_devices(w, p)]


@route("central", "GET", "/devices/{device_id}/components/{component}/telemetry/{telemetry_name}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _c("GET", f"/devices/{d}/components/thermostat1/telemetry/temperature")
        for d in _a_devices(w, p)
    ]


@route("central", "GET", "/devices/{device_id}/modules")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"/devices/{w.a_gw['id']}/modules")]


def _module_path(w: World) -> str:
    return f"/devices/{w.a_gw['id']}/modules/{w.a_mod['moduleId']}"


@route("central", "GET", "/devices/{device_id}/modules/{module_name}/components")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"{_module_path(w)}/components")]


@route("central", "GET", "/devices/{device_id}/modules/{module_name}/properties")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"{_module_path(w)}/properties")]


@route("central", "PATCH", "/devices/{device_id}/modules/{module_name}/properties")
def _(w: World, p: str) -> list[Probe]:
    return [_c("PATCH", f"{_module_path(w)}/properties", body={"fps": 1})]


@route("central", "PUT", "/devices/{device_id}/modules/{module_name}/properties")
def _(w: World, p: str) -> list[Probe]:
    return [_c("PUT", f"{_module_path(w)}/properties", body={"fps": 1})]


@route("central", "POST", "/devices/{device_id}/modules/{module_name}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("POST", f"{_module_path(w)}/commands/reboot", body={"delay": 1})]


@route("central", "GET", "/devices/{device_id}/modules/{module_name}/commands/{command_name}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"{_module_path(w)}/commands/reboot")]


@route("central", "GET", "/devices/{device_id}/modules/{module_name}/telemetry/{telemetry_name}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", f"{_module_path(w)}/telemetry/temperature")]


# Device groups and jobs belong to the whole application: 403 for a project-limited token.


@route("central", "GET", "/deviceGroups")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "2xx", "GET", "/deviceGroups", NO_BODY)]


@route("central", "GET", "/deviceGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/deviceGroups/{w.a_dgroup}", NO_BODY)]


@route("central", "GET", "/deviceGroups/{group_id}/devices")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/deviceGroups/{w.a_dgroup}/devices", NO_BODY)]


@route("central", "PATCH", "/deviceGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"filter": "enabled"}
    return [_central_denied(w, p, "404", "PATCH", f"/deviceGroups/{w.a_dgroup}", body)]


@route("central", "DELETE", "/deviceGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "DELETE", f"/deviceGroups/{w.a_dgroup}", NO_BODY)]


@route("central", "PUT", "/deviceGroups/{group_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"displayName": "x", "filter": "enabled"}
    if not _is_b(p):
        return [_c("PUT", f"/deviceGroups/{w.a_dgroup}", "403", body)]

    def own_group(response: httpx.Response) -> None:
        # Group ids are per application: B made its own, which it now removes; A's is A's.
        with w.api(p, "central") as api:
            gone = api.delete(f"{API}/deviceGroups/{w.a_dgroup}", params={"api-version": VERSION})
            assert gone.status_code == 204, gone.text
        mine = _json(w.a.get(f"{API}/deviceGroups/{w.a_dgroup}", params={"api-version": VERSION}))
        assert mine["filter"] == f"id eq '{w.a_central}'"

    return [_c("PUT", f"/deviceGroups/{w.a_dgroup}", "2xx", body, then=own_group)]


@route("central", "GET", "/jobs")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "2xx", "GET", "/jobs", NO_BODY)]


@route("central", "GET", "/jobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/jobs/{w.a_job}", NO_BODY)]


@route("central", "GET", "/jobs/{job_id}/devices")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/jobs/{w.a_job}/devices", NO_BODY)]


@route("central", "PUT", "/jobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    # B has no group of A's id: 404; the job id stays A's.
    body = {
        "displayName": "x",
        "group": w.a_dgroup,
        "data": [{"type": "cloudProperty", "path": "site", "value": "hijacked"}],
    }
    return [_central_denied(w, p, "404", "PUT", f"/jobs/{w.a_job}", body)]


@route("central", "GET", "/scheduledJobs")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "2xx", "GET", "/scheduledJobs", NO_BODY)]


@route("central", "GET", "/scheduledJobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/scheduledJobs/{w.a_sched}", NO_BODY)]


@route("central", "GET", "/scheduledJobs/{job_id}/jobs")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "GET", f"/scheduledJobs/{w.a_sched}/jobs", NO_BODY)]


@route("central", "PATCH", "/scheduledJobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"enabled": False, "schedule": {"start": "2089-01-01T00:00:00Z"}}
    return [_central_denied(w, p, "404", "PATCH", f"/scheduledJobs/{w.a_sched}", body)]


@route("central", "DELETE", "/scheduledJobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "DELETE", f"/scheduledJobs/{w.a_sched}", NO_BODY)]


@route("central", "PUT", "/scheduledJobs/{job_id}")
def _(w: World, p: str) -> list[Probe]:
    # B has no group of A's id: 404; the scheduled job stays A's (checked by its GET probes).
    body = {
        "displayName": "x",
        "group": w.a_dgroup,
        "data": [{"type": "cloudProperty", "path": "site", "value": "hijacked"}],
        "schedule": {"start": "2089-01-01T00:00:00Z"},
    }
    return [_central_denied(w, p, "404", "PUT", f"/scheduledJobs/{w.a_sched}", body)]


@route("central", "POST", "/jobs/{job_id}/stop")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "POST", f"/jobs/{w.a_job}/stop", NO_BODY)]


@route("central", "POST", "/jobs/{job_id}/resume")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "POST", f"/jobs/{w.a_job}/resume", NO_BODY)]


@route("central", "PUT", "/jobs/{job_id}/rerun/{rerun_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "404", "PUT", f"/jobs/{w.a_job}/rerun/x-{w.h}", NO_BODY)]


@route("central", "POST", "/query")
def _(w: World, p: str) -> list[Probe]:
    # B: no template of that id (404); a scoped token reads templates, but only its devices.
    # Properties too: A's devices carry a set targetTemperature and a cloud property (site).
    queries = [
        f"SELECT $id, $ts, temperature FROM {w.a_template}",
        f"SELECT $id, $ts, targetTemperature, site FROM {w.a_template}",
        f"SELECT $id, temperature, site FROM {w.a_template} WHERE site != 'x'",
    ]
    return [_c("POST", "/query", "404" if _is_b(p) else "2xx", {"query": q}) for q in queries]


@route("central", "GET", "/roles")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", "/roles", "2xx")]


@route("central", "GET", "/roles/{role_id}")
def _(w: World, p: str) -> list[Probe]:
    return [_c("GET", "/roles/ae2c9854-393b-4f97-8c42-479d70ce626e", "2xx")]


@route("central", "GET", "/users")
def _(w: World, p: str) -> list[Probe]:
    return [_central_denied(w, p, "2xx", "GET", "/users", NO_BODY)]


@route("central", "GET", "/users/{user_id}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _central_denied(w, p, "404", "GET", f"/users/{u}", NO_BODY)
        for u in (w.a_cuser, w.a_user_id, w.a_user)
    ]


@route("central", "PATCH", "/users/{user_id}")
def _(w: World, p: str) -> list[Probe]:
    body = {"roles": [{"role": "App Administrator"}]}
    return [
        _central_denied(w, p, "404", "PATCH", f"/users/{u}", body) for u in (w.a_cuser, w.a_user_id)
    ]


@route("central", "DELETE", "/users/{user_id}")
def _(w: World, p: str) -> list[Probe]:
    return [
        _central_denied(w, p, "404", "DELETE", f"/users/{u}", NO_BODY)
        for u in (w.a_cuser, w.a_user_id)
    ]


@route("central", "PUT", "/users/{user_id}")
def _(w: World, p: str) -> list[Probe]:
    # User ids are per application (central.md): B makes a user of its own under A's id, and
    # A's user stays A's; a scoped token gets 403. Sign-in names (emails) are global: A's
    # email under B's own id is a 409.
    central = {"api-version": VERSION}
    body = {
        "type": "email",
        "email": f"b-cuser-{w.h}@example.com",
        "roles": [{"role": "App Administrator"}],
    }

    def b_own_user(response: httpx.Response) -> None:
        assert response.json()["id"] == w.a_cuser, response.text
        with w.api(p, "central") as api:
            gone = api.delete(f"{API}/users/{w.a_cuser}", params=central)
            assert gone.status_code == 204, gone.text
        mine = _json(w.a.get(f"{API}/users/{w.a_cuser}", params=central))
        assert mine["email"] == f"{w.a_cuser}@example.com"
        assert mine["roles"] == [{"role": "ae2c9854-393b-4f97-8c42-479d70ce626e"}]

    if _is_b(p):
        taken = {**body, "email": f"{w.a_cuser}@example.com"}
        return [
            _c("PUT", f"/users/{w.a_cuser}", "2xx", body, then=b_own_user),
            _c("PUT", f"/users/b-{w.h}", "409", taken),
        ]
    return [_c("PUT", f"/users/{w.a_cuser}", "403", body)]


# -- running probes ------------------------------------------------------------------------


def _send(api: httpx.Client, probe: Probe, path: str, face: str) -> httpx.Response:
    if probe.form is not None:  # the token endpoint: no Authorization
        return httpx.post(api.base_url.join(path), data=probe.form, timeout=30)
    url = httpx.URL(path)
    params = dict(url.params)  # httpx replaces a path's query with `params`: merge them
    if face == "central":
        params["api-version"] = VERSION
    if probe.body is NO_BODY:
        return api.request(probe.method, url.raw_path.split(b"?")[0].decode(), params=params)
    return api.request(
        probe.method, url.raw_path.split(b"?")[0].decode(), params=params, json=probe.body
    )


def _check(w: World, principal: str, face: str, probe: Probe, path: str) -> None:
    with w.api(principal, face) as api:
        response = _send(api, probe, path, face)
    where = f"{probe.method} {path} as {principal}"
    assert response.status_code < 500, (where, response.status_code, response.text)
    # Nothing of A (or, for A's scoped principals, of B and of A outside P1) that the
    # request did not name itself: not in the body, not in a header.
    asked = path + json.dumps(probe.body if probe.body is not NO_BODY else None)
    asked += json.dumps(probe.form)
    shown = response.text + json.dumps(dict(response.headers))
    leaked = sorted(m for m in w.markers(principal) if m in shown and m not in asked)
    assert not leaked, (where, response.status_code, leaked, response.text[:2000])
    expect = probe.expect
    if expect.startswith("oauth:"):
        _, status, error = expect.split(":")
        assert response.status_code == int(status), (where, response.text)
        assert response.json()["error"] == error, (where, response.text)
        return
    allowed = {int(s) for s in expect.split("|") if s.isdigit()}
    if "2xx" in expect and 200 <= response.status_code < 300:
        if probe.then is not None:
            probe.then(response)
        return
    assert response.status_code in allowed, (where, f"expected {expect}", response.text)
    if face == "central":
        assert_central_error(response, response.status_code)
    else:
        code = {403: "Forbidden", 404: "NotFound", 409: "Conflict"}[response.status_code]
        assert_error(response, response.status_code, code=code)


PRINCIPALS = ("b-admin", "b-central", "b-jwt", "a-scoped", "a-scoped-jwt")
CASES = [
    (face, method, path, prefix)
    for face, method, path in ROUTES
    for prefix in (("", "/v1") if face == "central" else ("",))
]


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(
    ("face", "method", "path", "prefix"),
    CASES,
    ids=[f"{f}{x} {m} {p}" for f, m, p, x in CASES],
)
def test_route_refuses_other_tenants(
    world: World, principal: str, face: str, method: str, path: str, prefix: str
) -> None:
    probes = ROUTES[(face, method, path)](world, principal)
    assert probes
    for probe in probes:
        full = probe.path
        if prefix:  # the Central face is also served under /central/api/v1 (central.md)
            full = API + prefix + probe.path.removeprefix(API)
        _check(world, principal, face, probe, full)


def test_every_openapi_route_is_covered(world: World) -> None:
    """The table above holds every operation of both OpenAPI documents, and nothing else."""
    found: set[tuple[str, str, str]] = set()
    for face, url in (("v1", "/v1/openapi.json"), ("central", f"{API}/openapi.json")):
        document = _json(world.a.get(url))
        for path, operations in document["paths"].items():
            for method in operations:
                if method in ("get", "put", "post", "patch", "delete"):
                    found.add((face, method.upper(), path))
    assert found == set(ROUTES), (
        f"not covered: {sorted(found - set(ROUTES))}; gone: {sorted(set(ROUTES) - found)}"
    )


def test_the_scoped_token_still_works_in_its_project(world: World) -> None:
    """Controls: the refused principals are otherwise working credentials."""
    for principal in ("a-scoped", "a-scoped-jwt"):
        with world.api(principal) as api:
            assert _json(api.get(f"/v1/devices/{world.a_own['id']}"))["id"] == world.a_own["id"]
            listed = _json(api.get("/v1/devices"))
            assert [d["id"] for d in listed] == [world.a_own["id"]]
            central = _json(api.get(f"{API}/devices", params={"api-version": VERSION}))
            assert [d["id"] for d in central["devices"]] == [world.a_own["id"]]
    for principal in ("b-admin", "b-central", "b-jwt"):
        with world.api(principal) as api:
            assert _json(api.get(f"/v1/devices/{world.b_dev['id']}"))["id"] == world.b_dev["id"]


# -- the device side: MQTT ------------------------------------------------------------------


def _b_connected(w: World) -> RawClient:
    raw, code, _ = _raw_connect(
        w.target,
        w.b_dev["id"],
        w.target.hub_username(w.b_dev["id"]),
        _hub_password(w.target, w.b_dev["id"], _keys(w.b_dev)[0]),
    )
    assert code == 0, "B's own device must connect"
    return raw


def _a_counts(w: World) -> dict[str, int]:
    return {
        did: len(_json(w.a.get("/v1/telemetries", params={"deviceID": did, "limit": 1000})))
        for did in w.a_telemetry_counts
    }


FORBIDDEN_TOPICS: dict[str, tuple[str, Callable[[World], str]]] = {
    "sub A C2D": ("subscribe", lambda w: f"devices/{w.a_dev['id']}/messages/devicebound/#"),
    "sub A module inputs": (
        "subscribe",
        lambda w: f"devices/{w.a_gw['id']}/modules/{w.a_mod['moduleId']}/inputs/#",
    ),
    "sub A everything": ("subscribe", lambda w: f"devices/{w.a_dev['id']}/#"),
    "sub all devices": ("subscribe", lambda w: "devices/#"),
    "sub #": ("subscribe", lambda w: "#"),
    "pub A telemetry": ("publish", lambda w: f"devices/{w.a_dev['id']}/messages/events/"),
    "pub A telemetry with bag": (
        "publish",
        lambda w: f"devices/{w.a_dev['id']}/messages/events/%24.ct=application%2Fjson",
    ),
    "pub A module telemetry": (
        "publish",
        lambda w: f"devices/{w.a_gw['id']}/modules/{w.a_mod['moduleId']}/messages/events/",
    ),
    "pub A C2D": ("publish", lambda w: f"devices/{w.a_dev['id']}/messages/devicebound/"),
}


@pytest.mark.parametrize(
    ("action", "topic"), list(FORBIDDEN_TOPICS.values()), ids=list(FORBIDDEN_TOPICS)
)
def test_b_device_cannot_use_a_topics(
    world: World, action: str, topic: Callable[[World], str]
) -> None:
    before = _a_counts(world)
    with _b_connected(world) as raw:
        if action == "subscribe":
            raw.subscribe(topic(world))
        else:
            raw.publish(topic(world), json.dumps({"m": "from-b"}).encode())
        assert raw.wait_closed(WAIT_S), f"{action} on {topic(world)!r} did not close B's device"
        assert not any(
            e.publish.topic.startswith("devices/") for e in raw.events if hasattr(e, "publish")
        )
    assert _a_counts(world) == before


def test_b_device_sees_only_its_own_twin_and_messages(world: World) -> None:
    """The implicit topics ($iothub/..., the `+` C2D filter) are B's own, never A's."""
    with _b_connected(world) as raw:
        for topic_filter in (
            "$iothub/twin/res/#",
            "$iothub/methods/POST/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "devices/+/messages/devicebound/#",  # azure-sdk-for-c's form: the device's own
        ):
            raw.subscribe(topic_filter)
            raw.wait_suback()
        raw.publish("$iothub/twin/GET/?$rid=7", b"")
        twin = raw.wait_publish()
        assert twin.publish.topic.startswith("$iothub/twin/res/200/"), twin
        text = twin.publish.payload.decode()
        # A's device is written to now: nothing of it may reach B's connection.
        c2d = _json(
            world.a.post(f"/v1/devices/{world.a_dev['id']}/messages", json={"body": "x"}), 202
        )
        _json(world.a.put(f"/v1/devices/{world.a_dev['id']}", json={"properties": {"s2": 1}}))
        command = world.a.post(
            f"{API}/devices/{world.a_dev['id']}/commands/iso2",
            params={"api-version": VERSION},
            json={},
        )
        assert command.status_code == 200, command.text
        arrived = raw.publishes(1.0)
        assert not raw.closed.is_set()
    leaked = [m for m in world.markers_b if m in text]
    assert not leaked, text
    assert arrived == [], arrived
    assert c2d["messageId"] not in text


def test_b_device_will_on_a_topic_is_not_stored(world: World) -> None:
    """A Will names a topic too: one on A's telemetry topic must never become A's telemetry."""
    w, t = world, world.target
    b_id = w.b_dev["id"]
    before = _a_counts(w)
    marker = f"b-own-will-{w.h}"
    for topic, payload in (
        (f"devices/{w.a_dev['id']}/messages/events/", b'{"m": "will-from-b"}'),
        (f"devices/{b_id}/messages/events/", json.dumps({"m": marker}).encode()),
    ):
        raw = RawClient(t)
        with raw:  # closed without DISCONNECT: a kept Will is sent
            ack = raw.connect(
                b_id,
                t.hub_username(b_id),
                _hub_password(t, b_id, _keys(w.b_dev)[0]),
                clean=True,
                will=Will(topic, payload),
            )
            assert ack.return_code == 0
    # B's own Will arrives after the first connection's was dealt with.
    deadline = time.monotonic() + WAIT_S
    while marker not in w.b.get("/v1/telemetries", params={"deviceID": b_id}).text:
        assert time.monotonic() < deadline, "B's own Will never arrived"
        time.sleep(0.05)
    assert _a_counts(w) == before


def test_a_template_id_means_nothing_to_b(world: World) -> None:
    """Template ids are per application: B's device naming A's template id is untemplated
    for B (A's template neither checks B's telemetry and commands nor shows through)."""
    w = world
    central = {"api-version": VERSION}
    did = f"b-templated-{w.h}"
    made = _json(w.b.put(f"{API}/devices/{did}", params=central, json={"template": w.a_template}))
    assert made["template"] == w.a_template
    sent = w.b.post(f"{API}/devices/{did}/telemetry", params=central, json={"free": "x"})
    assert sent.status_code == 204, sent.text  # A's template would refuse the field
    command = w.b.post(f"{API}/devices/{did}/commands/notInATemplate", params=central, json={})
    assert command.status_code == 200, command.text
    # A property A's template lacks reads as on B's untemplated device: no hint of A's.
    messages = []
    for device_id in (did, w.b_central):
        missing = w.b.get(f"{API}/devices/{device_id}/properties/notInIt", params=central)
        assert_central_error(missing, 404)
        messages.append(missing.json()["error"]["message"].replace(device_id, "<id>"))
    assert messages[0] == messages[1], messages
    listed = _json(w.b.get(f"{API}/deviceTemplates", params=central))
    assert listed == {"value": []}, listed
    assert w.b.delete(f"{API}/devices/{did}", params=central).status_code == 204


def _connack(
    w: World,
    client_id: str,
    username: str,
    password: str | None,
    cert: tuple[Path, Path] | None = None,
) -> int:
    raw, code, _ = _raw_connect(w.target, client_id, username, password, cert=cert)
    with raw:
        if code == 0:
            raw.disconnect()
    return code


def test_b_credentials_never_connect_as_a_device_or_module(world: World) -> None:
    w, t = world, world.target
    a_id, b_id = w.a_dev["id"], w.b_dev["id"]
    gw, mod = w.a_gw["id"], w.a_mod["moduleId"]
    b_key, b_mod_key = _keys(w.b_dev)[0], _keys(w.b_mod)[0]
    unknown = f"iso-nobody-{w.h}"
    attempts = {
        "A's id, SAS for A's id signed with B's key": (
            a_id,
            t.hub_username(a_id),
            _hub_password(t, a_id, b_key),
        ),
        "A's id, B's own valid SAS": (a_id, t.hub_username(a_id), _hub_password(t, b_id, b_key)),
        "A's id as client id, B's username and SAS": (
            a_id,
            t.hub_username(b_id),
            _hub_password(t, b_id, b_key),
        ),
        "B's client id, A's username": (b_id, t.hub_username(a_id), _hub_password(t, b_id, b_key)),
        "A's module, signed with B's module key": (
            f"{gw}/{mod}",
            t.hub_username(gw, mod),
            _hub_password(t, gw, b_mod_key, mod),
        ),
        "A's module, B's module's own SAS": (
            f"{gw}/{mod}",
            t.hub_username(gw, mod),
            _hub_password(t, w.b_gw["id"], b_mod_key, w.b_mod["moduleId"]),
        ),
        "A's disabled device, signed with B's key": (
            w.a_disabled["id"],
            t.hub_username(w.a_disabled["id"]),
            _hub_password(t, w.a_disabled["id"], b_key),
        ),
        "A's Central device, signed with B's key": (
            w.a_central,
            t.hub_username(w.a_central),
            _hub_password(t, w.a_central, b_key),
        ),
    }
    codes = {name: _connack(w, *args) for name, args in attempts.items()}
    codes["B's certificate as A's device"] = _connack(
        w, a_id, t.hub_username(a_id), None, cert=w.b_cert
    )
    assert all(code != 0 for code in codes.values()), codes
    # Refusals must not tell A's ids from unknown ones.
    unknown_code = _connack(w, unknown, t.hub_username(unknown), _hub_password(t, unknown, b_key))
    for name, code in codes.items():
        if "client id" not in name:
            assert code == unknown_code, (name, code, unknown_code)
    # Controls: B's device does connect with these very credentials.
    assert _connack(w, b_id, t.hub_username(b_id), _hub_password(t, b_id, b_key)) == 0
    assert _connack(w, b_id, t.hub_username(b_id), None, cert=w.b_cert) == 0


# -- the device side: DPS -------------------------------------------------------------------


def _dps(
    w: World,
    scope: str,
    registration_id: str,
    key: str | None,
    cert: tuple[Path, Path] | None = None,
    *,
    payload: dict[str, Any] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """CONNECT to DPS and, when accepted, register: (CONNACK code, final answer).

    `meanwhile` runs between the accepted CONNECT and the registration request.
    """
    password = None
    if key is not None:
        password = sign_sas(
            key, f"{scope}/registrations/{registration_id}", int(time.time()) + 3600
        )
    raw = RawClient(w.target, cert=cert)
    with raw:
        connack = raw.connect(
            registration_id,
            DPS_USERNAME.format(scope=scope, reg=registration_id),
            password,
            clean=True,
        )
        if connack.return_code != 0:
            return connack.return_code, None
        if meanwhile is not None:
            meanwhile()
        raw.subscribe("$dps/registrations/res/#")
        raw.wait_suback()
        body = json.dumps({"registrationId": registration_id, "payload": payload}).encode()
        raw.publish("$dps/registrations/PUT/iotdps-register/?$rid=1", body)
        answer = raw.wait_publish()
        result: dict[str, Any] = json.loads(answer.publish.payload)
        if "/202/" in answer.publish.topic:
            op = result["operationId"]
            raw.publish(
                f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={op}", b" "
            )
            result = json.loads(raw.wait_publish().publish.payload)
        raw.disconnect()
        return 0, result


def test_dps_stays_in_its_own_id_scope(world: World) -> None:
    w = world
    a_scope, b_scope = w.a_account["idScope"], w.b_account["idScope"]
    b_id, b_key = w.b_dev["id"], _keys(w.b_dev)[0]
    fresh = f"iso-dps-{w.h}"
    group_key = derive_device_key(w.b_group_key, fresh)
    attempts = {
        "B's device, individually, into A's id scope": (a_scope, b_id, b_key, None),
        "B's certificate, into A's id scope": (a_scope, b_id, None, w.b_cert),
        # B's group has the id of an A group: its key must not open A's group.
        "a new id with B's group key, into A's id scope": (a_scope, fresh, group_key, None),
        "A's device id with B's group key, in B's id scope": (
            b_scope,
            w.a_dev["id"],
            derive_device_key(w.b_group_key, w.a_dev["id"]),
            None,
        ),
        "A's device id with B's group key, in A's id scope": (
            a_scope,
            w.a_dev["id"],
            derive_device_key(w.b_group_key, w.a_dev["id"]),
            None,
        ),
        "A's device id with B's device key, in A's id scope": (a_scope, w.a_dev["id"], b_key, None),
    }
    outcomes = {name: _dps(w, *args) for name, args in attempts.items()}
    for name, (code, result) in outcomes.items():
        assert code != 0 or (result is not None and result.get("status") != "assigned"), (
            name,
            result,
        )
    assert_error(w.a.get(f"/v1/devices/{fresh}"), 404)
    # Control: the same group key registers the new id into B, and only B sees it.
    code, result = _dps(w, b_scope, fresh, group_key)
    assert code == 0
    assert result is not None
    assert result["status"] == "assigned", result
    assert _json(w.b.get(f"/v1/devices/{fresh}"))["tags"]["project"] == w.p2
    assert_error(w.a.get(f"/v1/devices/{fresh}"), 404)


def test_dps_never_assigns_a_device_another_account_made_meanwhile(world: World) -> None:
    """A registration authenticated (at CONNECT) for an id nobody had, which A then takes
    before the register request: B's group must not be assigned A's device, nor change it."""
    w = world
    central = {"api-version": VERSION}
    b_scope, reg = w.b_account["idScope"], f"iso-race-{w.h}"

    def a_takes_the_id() -> None:
        _json(w.a.put(f"{API}/devices/{reg}", params=central, json={"displayName": "mine"}))

    code, result = _dps(
        w,
        b_scope,
        reg,
        derive_device_key(w.b_group_key, reg),
        payload={"modelId": "dtmi:iso:intruder;1"},
        meanwhile=a_takes_the_id,
    )
    assert code == 0  # the id was free when B's device connected
    mine = _json(w.a.get(f"/v1/devices/{reg}"))
    shown = _json(w.a.get(f"{API}/devices/{reg}", params=central))
    assert_error(w.b.get(f"/v1/devices/{reg}"), 404)
    assert (mine["modelId"], shown["provisioned"]) == (None, False), (
        f"B's DPS registration changed A's device {reg}: modelId={mine['modelId']!r}, "
        f"provisioned={shown['provisioned']!r}; DPS answered {result}"
    )
    assert result is not None
    assert result.get("status") != "assigned", result


# -- the device side: HTTPS ingest ----------------------------------------------------------


def test_https_ingest_refuses_b_credentials_for_a_devices(world: World) -> None:
    w = world
    url = w.server.http_url
    b_key, b_mod_key = _keys(w.b_dev)[0], _keys(w.b_mod)[0]
    a_id, gw, mod = w.a_dev["id"], w.a_gw["id"], w.a_mod["moduleId"]
    before = _a_counts(w)
    attempts: list[tuple[str, str | None, str]] = [
        (a_id, None, device_sas(w.b_dev)),  # B's own valid token
        (a_id, None, sas_token(b_key, f"localhost/devices/{a_id}")),
        (a_id, None, sas_token(b_key, f"{w.target.hub_host}/devices/{a_id}")),
        (gw, mod, sas_token(b_mod_key, f"localhost/devices/{gw}/modules/{mod}")),
        (gw, mod, device_sas(w.b_mod, module_of=w.b_gw["id"])),
        (gw, None, sas_token(b_key, f"localhost/devices/{gw}")),
        (w.a_central, None, sas_token(b_key, f"localhost/devices/{w.a_central}")),
        (a_id, None, w.headers["b-admin"]),
        (a_id, None, w.b_ctoken_secret),
    ]
    for device_id, module_id, auth in attempts:
        response = post_telemetry(url, device_id, {"m": "from-b"}, auth, module_id=module_id)
        assert_hub_unauthorized(response)
    assert _a_counts(w) == before
    # Control: B's device does send with its own token.
    assert post_telemetry(url, w.b_dev["id"], {"m": "b-ok"}, device_sas(w.b_dev)).status_code == 204


def test_https_ingest_refusals_do_not_tell_a_devices_from_unknown_ids(world: World) -> None:
    """accounts-and-security.md: "an unknown device ... refused as unauthorized, so a device
    id cannot be probed": B's refusal for A's id must read exactly like one for no device."""
    w = world
    b_key = _keys(w.b_dev)[0]
    bodies = {}
    for name, device_id in (
        ("unknown", f"iso-nobody-{w.h}"),
        ("A's device", w.a_dev["id"]),
        ("A's disabled device", w.a_disabled["id"]),
    ):
        for auth_name, auth in (
            ("signed with B's key", sas_token(b_key, f"localhost/devices/{device_id}")),
            ("not a SAS token", "SharedAccessSignature garbage"),
        ):
            response = post_telemetry(w.server.http_url, device_id, {}, auth)
            assert_hub_unauthorized(response)
            bodies[(name, auth_name)] = response.json()["Message"].replace(device_id, "<id>")
    for auth_name in ("signed with B's key", "not a SAS token"):
        told = {
            name: bodies[(name, auth_name)]
            for name in ("unknown", "A's device", "A's disabled device")
        }
        assert len(set(told.values())) == 1, (auth_name, told)


# -- ids freed by A and taken by B ----------------------------------------------------------


def test_an_id_freed_by_a_and_taken_by_b_carries_nothing_over(world: World, tmp_path: Path) -> None:
    """Device ids are global: once A deletes one, B may create it. Nothing of A's device
    (its MQTT session and undelivered messages, its certificate, its data) may reach B's."""
    w, t = world, world.target
    central = {"api-version": VERSION}
    reuse = f"iso-reuse-{w.h}"
    _json(w.a.put(f"{API}/devices/{reuse}", params=central, json={}))
    a_key = _json(w.a.get(f"{API}/devices/{reuse}/credentials", params=central))["symmetricKey"][
        "primaryKey"
    ]
    cert = _json(w.a.post(f"/v1/devices/{reuse}/certificates"), 201)
    (tmp_path / "a.pem").write_text(cert["certificate"])
    (tmp_path / "a.key").write_text(cert["privateKey"])
    secret = f"a-reuse-secret-{w.h}"
    # A's device takes a message and never acknowledges it, then drops off.
    raw, code, _ = _raw_connect(
        t, reuse, t.hub_username(reuse), _hub_password(t, reuse, a_key), clean=False, auto_ack=False
    )
    with raw:
        assert code == 0
        raw.subscribe(f"devices/{reuse}/messages/devicebound/#")
        raw.wait_suback()
        _json(w.a.post(f"/v1/devices/{reuse}/messages", json={"body": secret}), 202)
        assert secret.encode() in raw.wait_publish().publish.payload
        sent = post_telemetry(
            w.server.http_url, reuse, {"m": secret}, sas_token(a_key, f"localhost/devices/{reuse}")
        )
        assert sent.status_code == 204
    deadline = time.monotonic() + WAIT_S
    while _json(w.a.get(f"/v1/devices/{reuse}"))["connectionState"] != "Disconnected":
        assert time.monotonic() < deadline, "A's device never showed as disconnected"
        time.sleep(0.05)
    assert w.a.delete(f"{API}/devices/{reuse}", params=central).status_code == 204

    _json(w.b.put(f"{API}/devices/{reuse}", params=central, json={}))
    b_key = _json(w.b.get(f"{API}/devices/{reuse}/credentials", params=central))["symmetricKey"][
        "primaryKey"
    ]
    problems: list[str] = []
    # Before B's device ever connects, B's lists of it hold B's creation and nothing else.
    if secret in w.b.get("/v1/telemetries", params={"deviceID": reuse}).text:
        problems.append(f"B's /v1/telemetries shows A's telemetry of the old {reuse}")
    for kind in EVENT_TYPES:
        listed = _json(w.b.get("/v1/events", params={"deviceID": reuse, "eventType": kind}))
        bodies = [e["body"] for e in listed]
        if bodies not in ([], [{"operation": "createDevice"}]):
            problems.append(f"B's {kind}s of {reuse} include A's: {bodies}")
    raw, code, session_present = _raw_connect(
        t, reuse, t.hub_username(reuse), _hub_password(t, reuse, b_key), clean=False
    )
    with raw:
        assert code == 0, "B's device must connect with its own key"
        if session_present:
            problems.append("B's new device connected with session_present=1 (A's MQTT session)")
        got = raw.publishes(1.0)
        raw.subscribe(f"devices/{reuse}/messages/devicebound/#")
        got += raw.publishes(1.0)
        for publish in got:
            problems.append(f"B's device received {publish.topic!r}: {publish.payload[:60]!r}")
        raw.disconnect()
    a_cert_code = _connack(
        w, reuse, t.hub_username(reuse), None, cert=(tmp_path / "a.pem", tmp_path / "a.key")
    )
    if a_cert_code == 0:
        problems.append("the certificate A was issued for the old device connects as B's device")
    assert a_key not in json.dumps(_json(w.b.get(f"/v1/devices/{reuse}")))
    assert not problems, problems


# -- nothing of A in B's lists, and A untouched -----------------------------------------------


def _everything(api: httpx.Client, path: str, params: dict[str, str]) -> str:
    """Every page of a /v1 list, as text."""
    pages, query = [], {**params, "limit": "1000"}
    while True:
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        pages.append(response.text)
        cursor = response.headers.get("x-continuation-token")
        if cursor is None:
            return "\n".join(pages)
        query["continuationToken"] = cursor


def test_nothing_of_a_in_b_lists(world: World) -> None:
    """After everything above: B's whole telemetry, every event type, device lists."""
    w = world
    texts = [_everything(w.b, "/v1/telemetries", {})]
    for kind in EVENT_TYPES:
        texts.append(_everything(w.b, "/v1/events", {"eventType": kind}))
    texts.append(w.b.get("/v1/devices").text)
    texts.append(w.b.get(f"{API}/devices", params={"api-version": VERSION}).text)
    texts.append(w.b.get("/v1/projects").text)
    texts.append(w.b.get("/v1/enrollmentGroups").text)
    texts.append(w.b.get("/v1/tokens").text)
    texts.append(w.b.get(f"{API}/apiTokens", params={"api-version": VERSION}).text)
    texts.append(w.b.get(f"{API}/deviceTemplates", params={"api-version": VERSION}).text)
    everything = "\n".join(texts)
    leaked = sorted(m for m in w.markers_b if m in everything)
    assert not leaked, leaked
    assert f"b-tel-{w.h}" in everything  # the lists are B's, and not empty


def test_a_is_untouched(world: World) -> None:
    """After every attempt above, A's things are as A left them."""
    w, a = world, world.a
    central = {"api-version": VERSION}
    device = _json(a.get(f"/v1/devices/{w.a_dev['id']}"))
    assert device["tags"]["name"] == f"a-dev-name-{w.h}"
    assert device["provisioningStatus"] == "enabled"
    assert device["properties"]["desired"]["s"] == f"a-desired-{w.h}"
    assert "hijack" not in device["properties"]["desired"]
    gateway = _json(a.get(f"/v1/devices/{w.a_gw['id']}"))
    assert [m["moduleId"] for m in gateway["modules"]] == [w.a_mod["moduleId"]]
    assert gateway["modules"][0]["properties"]["desired"] == {"s": f"a-mdesired-{w.h}"}
    for did in (w.a_own["id"], w.a_disabled["id"], w.a_ioto):
        assert a.get(f"/v1/devices/{did}").status_code == 200
    assert a.get(f"/v1/devices/{w.a_ioto}/files/{w.a_file}").content == b"a-123"
    products = {p["id"]: p for p in _json(a.get("/v1/ioto/products"))}
    assert products[w.a_product["id"]]["revokedAt"] is None
    made = _json(a.get(f"{API}/devices/{w.a_central}", params=central))
    assert (made["displayName"], made["template"], made["enabled"]) == (
        f"a-cdisplay-{w.h}",
        w.a_template,
        True,
    )
    assert _json(a.get(f"{API}/deviceTemplates/{w.a_template}", params=central)) == w.a_template_doc
    assert (
        _json(a.get(f"{API}/devices/{w.a_central}/properties/targetTemperature", params=central))[
            "value"
        ]
        == 23.5
    )
    for did, cmd in ((w.a_central, w.a_cmd_central), (w.a_dev["id"], w.a_cmd_dev)):
        status = _json(a.get(f"{API}/devices/{did}/commands/{cmd}/status", params=central))
        assert status["status"] == "Pending", status
    for gid in (w.a_group, w.a_group2):
        group = _json(a.get(f"/v1/enrollmentGroups/{gid}"))
        assert group["deployment"] == w.a_dep2
    for token in (
        f"Bearer {w.a_viewer['token']}",
        w.a_ctoken_secret,
        f"Bearer {w.a_scoped['token']}",
    ):
        response = a.get(f"{API}/apps/app", params=central, headers={"Authorization": token})
        assert response.status_code == 200, response.text
    grant = httpx.post(
        f"{w.server.http_url}/v1/auth/token",
        data={"grant_type": "password", "username": w.a_user, "password": PASSWORD},
        timeout=30,
    )
    assert _json(grant)["access_token"]
    # A's ux4iot key still works (nobody rotated or revoked it)
    ux = httpx.delete(
        f"{w.server.http_url}/ux4iot/sessions",
        headers={"Shared-Access-Key": w.a_ux_key["key"]},
        timeout=30,
    )
    assert ux.status_code == 204, ux.text
    counts = _a_counts(w)
    assert counts == w.a_telemetry_counts, counts
    assert {p["name"] for p in _json(a.get("/v1/projects"))} >= {w.p1, w.p2}
    deployments = {d["name"] for d in _json(a.get(f"/v1/projects/{w.p2}/deployments"))}
    assert deployments == {w.a_dep2}, deployments
