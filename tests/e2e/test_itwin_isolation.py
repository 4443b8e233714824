"""Isolation on the iTwin face: another account, and a token limited to one project, find
nothing of what they may not see, over the socket API and REST alike.

Account A (the server's default) has devices in projects P1 and P2 with telemetry, and an
entity created through iTwin in P2; account B (`thinghub account create`) has its own
device. Probes aim at A's P2 things with B's token, a JWT from B's token, A's P1-limited
token and a JWT from that: every answer is not found or empty (never another account's or
project's data), and none of the probe answers carries a P2 id it did not name itself.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.itwin import (
    Ws,
    api_token,
    bentley_id,
    decodeOneJsonFrame,
    node_id,
    register,
    rpc,
    send_telemetry,
    sensor_id,
    tcp_address,
    ws_url,
)
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class World:
    p1: str
    p2: str
    a1: dict[str, Any]  # A's device in P1
    a2: dict[str, Any]  # A's device in P2
    created: str  # an iTwin sensor A created in P2
    credentials: dict[str, str]  # who probes: name -> credential

    @property
    def hidden(self) -> list[str]:
        """Ids of A's P2 things no probe may find."""
        return [node_id(self.a2["id"]), sensor_id(self.a2["id"]), self.created, self.a2["id"]]


def _jwt(server: ServerProcess, token_id: str, secret: str) -> str:
    response = httpx.post(
        f"{server.http_url}/connect/token",
        data={"client_id": token_id, "client_secret": secret, "grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> World:
    h = uuid.uuid4().hex[:8]
    p1, p2 = f"iso1-{h}", f"iso2-{h}"
    with server.client() as api:
        a1, a2 = register(api, p1), register(api, p2)
    send_telemetry(server, a1, {"T": 1.0})
    send_telemetry(server, a2, {"T": 2.0})
    created = f"/iso/{h}/node/d/{h}/device/s/sensor"
    ws = Ws(ws_url(server), server.admin_token)
    try:
        answer = ws.call("createSensor", {"sensor": created, "type": "X", "props": {},
                                          "projectIds": [p2]}, 1)  # fmt: skip
        assert "result" in answer, answer
    finally:
        ws.close()
    b_name = f"itwin-b-{h}"
    server.cli("account", "create", b_name, "--json")
    b_token = server.cli("token", "create", "--quiet", "--account", b_name, "--role", "admin")
    limited = api_token(server, role="admin", project=p1)
    b_second = httpx.post(
        f"{server.http_url}/v1/tokens",
        headers={"Authorization": f"Bearer {b_token}"},
        json={"role": "admin", "label": "client"},
    ).json()
    return World(
        p1,
        p2,
        a1,
        a2,
        created,
        {
            "b-token": b_token,
            "b-jwt": _jwt(server, b_second["id"], b_second["token"]),
            "a-p1-token": limited["token"],
            "a-p1-jwt": _jwt(server, limited["id"], limited["token"]),
        },
    )


PROBE_NAMES = ["b-token", "b-jwt", "a-p1-token", "a-p1-jwt"]


@pytest.mark.parametrize("who", PROBE_NAMES)
def test_socket_api_finds_nothing_outside_the_callers_reach(
    server: ServerProcess, world: World, who: str
) -> None:
    ws = Ws(ws_url(server), world.credentials[who])
    answers: list[dict[str, Any]] = []
    try:
        a2_sensor = sensor_id(world.a2["id"])

        def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
            answer = ws.call(method, params, bentley_id())
            answers.append(answer)
            return answer

        for params in ({}, {"projectIds": [world.p2]}):
            for method in ("getNodes", "getDevices", "getSensors"):
                answer = call(method, params)
                if "projectIds" in params and who.startswith("a-p1"):
                    assert answer["error"]["code"] == -32004  # another project: not found
                else:
                    ids = {e["id"] for e in answer["result"]}
                    assert not ids & set(world.hidden), (who, method, ids)
        assert call("getSensors", {"sensors": [a2_sensor, world.created]})["result"] == []
        assert call("getMetrics", {"sensors": [a2_sensor]})["result"] == {}
        for method, params in (
            ("getData", {"sensor": a2_sensor, "metric": "T", "unit": "C"}),
            ("getObservations", {"sensor": world.created}),
            ("subscribeData", {"sensors": [a2_sensor], "metric": "T", "unit": "C"}),
            ("subscribeSensors", {"sensors": [world.created]}),
            ("updateSensor", {"sensor": world.created, "props": {"NAME": "mine"}}),
        ):
            assert call(method, params)["error"]["code"] == -32004, (who, method)
        upload = call("uploadData", {"data": [{"sensorId": a2_sensor,
                      "timestamp": "2024-01-01T00:00:00Z", "values": {"T": 99.0}}]})  # fmt: skip
        assert upload["result"]["successfullyProcessedObs"] == 0
    finally:
        ws.close()
    # Error messages name what the request named; nothing else of A's P2 is in any answer.
    assert world.a2["tags"]["name"] not in json.dumps(answers)
    # Nothing of A's P2 leaked into B's or the P1 token's view.
    with server.client() as api:
        stored = api.get("/v1/telemetries", params={"deviceID": world.a2["id"]}).json()
    assert "99.0" not in json.dumps(stored)


@pytest.mark.parametrize("who", PROBE_NAMES)
def test_rest_finds_nothing_outside_the_callers_reach(
    server: ServerProcess, world: World, who: str
) -> None:
    headers = {"Authorization": f"Bearer {world.credentials[who]}"}
    with httpx.Client(base_url=f"{server.http_url}/itwin/api", headers=headers) as api:
        for path in ("/nodes/all", "/devices/all", "/sensors/all"):
            listed = api.get(path)
            assert listed.status_code == 200
            assert not {e["id"] for e in listed.json()} & set(world.hidden)
            other = api.get(path, params={"projectIds": world.p2})
            if who.startswith("a-p1"):
                assert other.status_code == 404 and "errors" in other.json()
            else:
                assert other.json() == []
        response = api.post("/sensors/metrics", json={"ids": [sensor_id(world.a2["id"])]})
        assert response.status_code == 404
        assert api.get(f"/projects/{world.p2}").status_code == 404
        assert api.get(f"/projects/{world.p2}/dataUsage").status_code == 404
        response = api.post(
            "/data/upload",
            json={"observations": [{"sensorId": world.created, "timestamp": "2024-01-01T00:00:00Z",
                                    "values": {"T": 1.0}}]},
        )  # fmt: skip
        assert response.status_code == 404
        node = world.created.split("/d/")[0]
        assert api.post(f"/integrations/{node}").status_code == 404
        for response in (listed, other):
            assert world.a2["tags"]["name"] not in response.text


def test_tcp_authenticate_with_another_accounts_token_sees_only_its_own(
    server: ServerProcess, world: World
) -> None:
    s = socket.create_connection(tcp_address(server), timeout=20)
    try:
        s.sendall(
            rpc("authenticate", {"code": world.credentials["b-token"]}, 0).encode()
            + rpc("getNodes", {}, 1).encode()
        )
        assert json.loads(decodeOneJsonFrame(s))["result"] == {"nextId": 1}
        nodes = json.loads(decodeOneJsonFrame(s))["result"]
        assert world.a1["id"] not in json.dumps(nodes) and world.a2["id"] not in json.dumps(nodes)
    finally:
        s.close()


def test_ids_belong_to_their_account(server: ServerProcess, world: World) -> None:
    """Creating an entity under an id A uses makes B's own entity and never touches A's; a
    token of A limited to P1 cannot take the id P2's entity has (ids are per account)."""
    for who, expected in (("a-p1-token", "error"), ("b-token", "result")):
        ws = Ws(ws_url(server), world.credentials[who])
        try:
            made = ws.call("createSensor", {"sensor": world.created, "type": "X", "props": {}})
        finally:
            ws.close()
        assert expected in made, (who, made)
        if expected == "error":
            assert made["error"]["code"] == -32005
    ws = Ws(ws_url(server), server.admin_token)
    try:
        [mine] = ws.call("getSensors", {"sensors": [world.created]})["result"]
    finally:
        ws.close()
    assert mine["props"]["PROJECT_ID"] == world.p2  # A's is still A's, in P2
