"""Several `thinghub serve` nodes as one device cloud, on one PostgreSQL and one NATS (issue 14).

Three real nodes (subprocesses on ephemeral ports) share a real PostgreSQL database and a real
`nats-server` (with JetStream) started by the fixture; they share one CA (node 1 creates it,
the others start with a copy of its certs folder), as nodes behind one load balancer must. An
Azure SDK device connects to node 1; an app on node 2 calls its method, patches its desired
properties, sends C2D and disables it; a ux4iot session on node 3 receives its telemetry live.
Then node 1 is killed with SIGKILL: the device shows Disconnected on the other nodes once node
1's lease (--node-lease) lapses, with a connection_state_event, and reconnects through node 2.
Finally a raw NATS subscriber of one account's subjects receives nothing of another account.
A console sign-in on node 1 works on node 2 (a page and the live channel) and a sign-out on
node 3 ends it on every node; a ux4iot call that needs the shared session store answers 504
while NATS is away and works again once it is back.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from azure.iot.device import Message, MethodResponse
from websocket import ABNF, WebSocket, WebSocketBadStatusException, create_connection

from tests.e2e.azure import (  # noqa: F401 -- collect_sdk_garbage is a fixture
    SERVER_ARGS,
    Inbox,
    Target,
    closing_client,
    collect_sdk_garbage,
    connected,
    connection_states,
    paho_socket_leaks,
    telemetries,
    wait_connection_state,
    wait_for,
)
from tests.e2e.helpers_st import create_device, device_sas, post_telemetry
from tests.e2e.itwin import Ws, bentley_id, register, send_telemetry, sensor_id, ws_url
from tests.e2e.server import ServerProcess
from tests.e2e.ux4iot import (
    Ux,
    create_key,
    live_socket,
    new_device,
    other_account,
    send_https,
    telemetry_of,
)
from tests.nats_server import NatsServer
from tests.pg import create_database, drop_database
from thinghub.bus.nats import settled

pytestmark = [
    pytest.mark.backend_agnostic,  # it starts its own PostgreSQL and NATS in either pass
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.postgres,
    paho_socket_leaks,
    pytest.mark.usefixtures("collect_sdk_garbage"),
]

LEASE_S = 3.0  # --node-lease of every node: short, so a dead node's devices lapse quickly
# How long after node 1 dies its device must show Disconnected: the lease, plus the reapers'
# period (half a lease), plus polling.
LAPSE_WITHIN_S = LEASE_S * 1.5 + 3.0
LIVE = "thinghub.live."


@dataclass
class Cluster:
    nats: NatsServer
    database: str
    nodes: list[ServerProcess]
    admin_token: str

    def api(self, index: int) -> httpx.Client:
        return self.nodes[index].client(self.admin_token)


def _bus_round_trips(api: httpx.Client) -> float:
    """thinghub_bus_round_trips_total from a node's /metrics (an admin token may read it)."""
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        if line.startswith("thinghub_bus_round_trips_total "):
            return float(line.split()[1])
    raise AssertionError(f"no thinghub_bus_round_trips_total in:\n{response.text[:2000]}")


def _node(root: Path, name: str, database: str, bus: str, token: str) -> ServerProcess:
    return ServerProcess(
        root / name,
        *SERVER_ARGS,
        "--database", database,
        "--bus", bus,
        "--node-id", name,
        "--node-lease", str(LEASE_S),
        admin_token=token,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    database = create_database(postgres_dsn, "thinghub_e2e_cluster")
    token = "adm_" + secrets.token_urlsafe(24)
    nodes: list[ServerProcess] = []
    with NatsServer(root / "nats") as server:
        try:
            first = _node(root, "node-1", database, server.url, token).start()
            nodes.append(first)
            for name in ("node-2", "node-3"):  # one CA for the cluster: node 1's
                shutil.copytree(first.data_dir / "certs", root / name / "certs")
                nodes.append(_node(root, name, database, server.url, token).start())
            yield Cluster(server, database, nodes, token)
        finally:
            for node in nodes:
                node.stop()
            for node in nodes:
                assert "Traceback" not in node.log(), node.log()
            drop_database(database)


def _new_device(api: httpx.Client, name: str = "cluster") -> dict[str, Any]:
    return create_device(api, f"{name}-{secrets.token_hex(3)}", "plant", "line")


def _connection_state(api: httpx.Client, device_id: str) -> str:
    response = api.get(f"/v1/devices/{device_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["connectionState"])


def test_every_node_is_ready_with_store_and_bus(cluster: Cluster) -> None:
    for index, node in enumerate(cluster.nodes):
        assert node.addresses["bus"] == "nats"
        assert node.addresses["node"] == f"node-{index + 1}"
        assert node.addresses["database"] == "postgresql"
        ready = httpx.get(node.http_url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "store": "ok", "bus": "ok"}


async def test_device_on_node_1_reached_from_node_2_and_live_on_node_3(cluster: Cluster) -> None:
    one, two, three = cluster.nodes
    with cluster.api(1) as app:
        device = _new_device(app)
        device_id = device["id"]
        patches, messages, states = Inbox(), Inbox(), Inbox()
        client = Target.of(one.addresses).device_client(device)
        client.on_connection_state_change = lambda: states(client.connected)

        def on_method(request: Any) -> None:
            client.send_method_response(
                MethodResponse.create_from_method_request(
                    request, 200, {"name": request.name, "got": request.payload}
                )
            )

        with connected(client):
            client.on_twin_desired_properties_patch_received = patches
            client.on_method_request_received = on_method
            client.on_message_received = messages
            # The app's node sees the device connected to node 1.
            wait_for(lambda: _connection_state(app, device_id) == "Connected", what="Connected")

            # A direct method, answered by the device on node 1, through node 2.
            started = time.perf_counter()
            response = app.post(
                f"/v1/devices/{device_id}/method",
                json={"name": "echo", "payload": {"n": 1, "s": "x"}},
            )
            round_trip_ms = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.text
            assert response.headers["x-method-status"] == "200"
            assert response.json() == {"name": "echo", "got": {"n": 1, "s": "x"}}
            print(f"method round trip across nodes: {round_trip_ms:.1f} ms")

            # A desired patch and a C2D message, made on node 2, pushed by node 1.
            put = app.put(f"/v1/devices/{device_id}", json={"properties": {"setpoint": 21.5}})
            assert put.status_code == 200, put.text
            patch = patches.wait(lambda p: "setpoint" in p, what="the desired patch")
            assert patch["setpoint"] == 21.5
            sent = app.post(
                f"/v1/devices/{device_id}/messages",
                json={"body": {"cmd": "on"}, "properties": {"k": "v"}},
            )
            assert sent.status_code == 202, sent.text
            got = messages.wait(what="the C2D message")
            assert json.loads(got.data) == {"cmd": "on"}
            assert got.message_id == sent.json()["messageId"]
            assert got.custom_properties == {"k": "v"}
            # Node 2 counts what it routed over the bus (at least the method and the C2D
            # message); node 1, which holds the device, routed nothing.
            assert _bus_round_trips(app) >= 2
            with cluster.api(0) as owner:
                assert _bus_round_trips(owner) == 0

            # Telemetry from the device on node 1, live on a ux4iot socket on node 3.
            key = create_key(three, cluster.admin_token)["key"]
            with Ux(three.http_url, key) as ux:
                session = ux.session()
                async with live_socket(three.http_url, session) as live:
                    assert ux.grant(session, device_id, "telemetry").status_code == 204
                    assert ux.subscribe(session, device_id, "telemetry").status_code == 204
                    await asyncio.to_thread(
                        client.send_message,
                        Message(
                            '{"temp": 19.5}',
                            content_type="application/json",
                            content_encoding="utf-8",
                        ),
                    )
                    data = await live.wait(telemetry_of(device_id, temp=19.5))
                    assert data["deviceId"] == device_id

            # Disabled on node 2: node 1 closes the connection, every node says Disconnected.
            disabled = app.put(f"/v1/devices/{device_id}", json={"provisioningStatus": "disabled"})
            assert disabled.status_code == 200, disabled.text
            states.wait(lambda s: s is False, what="the SDK to see its connection closed")
            for index in range(3):
                with cluster.api(index) as api:
                    wait_for(
                        lambda api=api: _connection_state(api, device_id) == "Disconnected",
                        what=f"Disconnected on node {index + 1}",
                    )
        assert connection_states(app, device_id)[-2:] == ["deviceConnected", "deviceDisconnected"]


async def test_ux4iot_session_spans_nodes(cluster: Cluster) -> None:
    """Behind a load balancer one browser's calls land anywhere: a session opened on node 1,
    granted and subscribed on node 2, with its socket on node 3, receives the telemetry of a
    device connected to node 1; deleting it on node 2 disconnects the socket on node 3.
    Another account sees none of it, on any node."""
    one, two, three = cluster.nodes
    key = create_key(one, cluster.admin_token)["key"]
    token_b = other_account(two, "cluster-ux-b")
    key_b = create_key(two, token_b)["key"]
    with cluster.api(0) as api:
        device = _new_device(api, "ux")
    device_b = new_device(one, token_b, f"ux-b-{secrets.token_hex(3)}")
    device_id = device["id"]
    client = Target.of(one.addresses).device_client(device)
    with (
        Ux(one.http_url, key) as ux1,
        Ux(two.http_url, key) as ux2,
        Ux(three.http_url, key) as ux3,
        Ux(three.http_url, key_b) as ux3_b,
        Ux(one.http_url, key_b) as ux1_b,
        connected(client),
    ):
        session = ux1.session()
        assert ux2.grant(session, device_id, "telemetry").status_code == 204
        assert ux2.subscribe(session, device_id, "telemetry").status_code == 204
        # The session is one on every node: node 3 sees its grant.
        keys = ux3.as_session("GET", f"/lastValue/{device_id}", session)
        assert keys.status_code == 200, keys.text
        # Another account's key finds no such session, on any node.
        for ux_b in (ux3_b, ux1_b):
            refused = ux_b.grant(session, device_b["id"], "telemetry")
            assert refused.status_code == 404, refused.text
        # B's own session, socket on node 1, watching its own device.
        session_b = ux3_b.session()
        assert ux1_b.grant(session_b, device_b["id"], "telemetry").status_code == 204
        assert ux3_b.subscribe(session_b, device_b["id"], "telemetry").status_code == 204
        async with (
            live_socket(three.http_url, session) as live,
            live_socket(one.http_url, session_b) as live_b,
        ):
            await asyncio.to_thread(
                client.send_message,
                Message(
                    '{"temp": 21.5}', content_type="application/json", content_encoding="utf-8"
                ),
            )
            data = await live.wait(telemetry_of(device_id, temp=21.5))
            assert data["deviceId"] == device_id
            # B's socket gets B's sentinel, sent after A's telemetry, and nothing of A's.
            send_https(two, device_b, {"sentinel": 1})
            await live_b.wait(telemetry_of(device_b["id"], sentinel=1))
            assert all(p.get("deviceId") == device_b["id"] for p in live_b.payloads), live_b
            assert all(p.get("deviceId") == device_id for p in live.payloads), live.payloads

            deleted = ux2.http.delete(f"/sessions/{session}")
            assert deleted.status_code == 204, deleted.text
            await live.wait_disconnect()
            gone = ux3.as_session("GET", f"/lastValue/{device_id}", session)
            assert gone.status_code in (401, 404), gone.text
            assert not live_b.disconnects  # B's session lives on
        assert ux1_b.http.delete(f"/sessions/{session_b}").status_code == 204


def test_itwin_subscription_on_node_3_gets_data_sent_to_node_1(cluster: Cluster) -> None:
    """subscribeData on node 3's JSON-RPC WebSocket; the device's telemetry arrives at node 1
    (HTTPS ingest): the push comes, converted to °F.

    Live events cross nodes asynchronously: node 1 answers 204 once the reading is stored and
    handed to NATS, and node 3 may take a moment longer to receive it. So the first reading
    (sent before subscribing, to create the sensor) may still reach node 3 after the
    subscription is acknowledged, and be pushed too (50 °F): "acknowledged" promises that
    nothing sent after it is missed, not that nothing sent before it arrives. The test reads
    pushes until the reading sent after the acknowledgement (68 °F) and allows only that
    earlier one before it."""
    one, _, three = cluster.nodes
    project = f"p{secrets.token_hex(4)}"
    with cluster.api(1) as api:
        device = register(api, project)
    send_telemetry(one, device, {"T": 10.0})  # its sensor and metric exist from now on
    ws = Ws(ws_url(three), cluster.admin_token)
    try:
        request_id = bentley_id()
        ws.send(
            "subscribeData",
            {"sensors": [sensor_id(device["id"])], "metric": "T", "unit": "F",
             "projectIds": [project]},
            request_id,
        )  # fmt: skip
        answer = ws.recv()
        assert answer.get("result") == {"requestStatus": "acknowledged"}, answer
        send_telemetry(one, device, {"T": 20.0})
        pushed: list[float] = []
        while 68.0 not in pushed:  # each recv is bounded (RECV_TIMEOUT_S)
            push = ws.recv()
            assert push["id"] == request_id, push
            pushed += list(push["result"]["data"].values())
        assert pushed in ([68.0], [50.0, 68.0]), pushed
    finally:
        ws.close()


async def test_subjects_keep_accounts_apart(cluster: Cluster) -> None:
    """A NATS subscriber of account A's subjects gets A's events and none of B's."""
    node = cluster.nodes[1]
    node.cli("account", "create", "cluster-b", "--json")
    token_b = node.cli("token", "create", "--quiet", "--role", "admin", "--account", "cluster-b")
    with cluster.api(1) as api_a, node.client(token_b) as api_b:
        device_a, device_b = _new_device(api_a, "a"), _new_device(api_b, "b")
    nc = await nats.connect(cluster.nats.url)
    try:
        seen: list[tuple[str, dict[str, Any]]] = []
        everything = await nc.subscribe(LIVE + "telemetry.>")
        await settled(nc)  # the server has the subscription before anything is sent

        def send(device: dict[str, Any], body: Any) -> None:
            response = post_telemetry(node.http_url, device["id"], body, device_sas(device))
            assert response.status_code == 204, response.text

        async def next_of(sub: Any, device_id: str) -> tuple[str, dict[str, Any]]:
            async with asyncio.timeout(15):
                while True:
                    msg = await sub.next_msg(timeout=15)
                    body = json.loads(msg.data)
                    seen.append((msg.subject, body))
                    if body["device_id"] == device_id:
                        return msg.subject, body

        send(device_a, {"n": 0})
        subject_a, body_a = await next_of(everything, device_a["id"])
        send(device_b, {"n": 0})
        subject_b, body_b = await next_of(everything, device_b["id"])
        account_a, account_b = subject_a.split(".")[3], subject_b.split(".")[3]
        assert account_a != account_b
        assert body_a["account_id"] != body_b["account_id"]
        await everything.unsubscribe()

        only_a = await nc.subscribe(f"{LIVE}*.{account_a}.>")
        await settled(nc)
        seen.clear()
        send(device_b, {"n": 1})  # B's first: it would arrive before A's sentinel
        send(device_a, {"sentinel": True})
        await next_of(only_a, device_a["id"])
        assert seen, "the sentinel arrived"
        assert all(subject.split(".")[3] == account_a for subject, _ in seen), seen
        assert all(body["account_id"] == body_a["account_id"] for _, body in seen), seen
        assert not any(body["device_id"] == device_b["id"] for _, body in seen), seen
    finally:
        await nc.close()


def _ready(node: ServerProcess) -> httpx.Response:
    return httpx.get(node.http_url + "/readyz", timeout=10)


def _json_message(body: Any) -> Message:
    return Message(json.dumps(body), content_type="application/json", content_encoding="utf-8")


def test_nats_restart_loses_nothing_acknowledged(cluster: Cluster) -> None:
    """NATS goes away and comes back (same port, same JetStream storage): /readyz says so
    meanwhile, the device on node 1 goes on publishing QoS 1, every acknowledged message is
    stored once, and a method from node 2 reaches the device again afterwards."""
    one, two, _ = cluster.nodes
    with cluster.api(1) as app:
        device = _new_device(app, "outage")
        device_id = device["id"]
        client = Target.of(one.addresses).device_client(device)

        def on_method(request: Any) -> None:
            client.send_method_response(
                MethodResponse.create_from_method_request(request, 200, {"pong": request.payload})
            )

        with connected(client):
            client.on_method_request_received = on_method
            wait_for(lambda: _connection_state(app, device_id) == "Connected", what="Connected")
            cluster.nats.stop()
            try:
                down = wait_for(
                    lambda: (r := _ready(two)).status_code == 503 and r, what="/readyz 503"
                )
                assert down.json()["store"] == "ok"
                assert down.json()["bus"].startswith("unavailable")
                for n in range(5):  # send_message returns once the PUBACK came
                    client.send_message(_json_message({"n": n}))
            finally:
                cluster.nats.start()
            for node in cluster.nodes:
                wait_for(lambda node=node: _ready(node).status_code == 200, what="/readyz 200")
            wait_for(
                lambda: len(telemetries(app, device_id)) >= 5, what="the 5 acknowledged messages"
            )
            assert sorted(t["body"]["n"] for t in telemetries(app, device_id)) == [0, 1, 2, 3, 4]
            response = wait_for(
                lambda: (
                    (
                        r := app.post(
                            f"/v1/devices/{device_id}/method", json={"name": "ping", "payload": 7}
                        )
                    ).status_code
                    == 200
                    and r
                ),
                what="a method through node 2 after NATS came back",
            )
            assert response.json() == {"pong": 7}
            assert _connection_state(app, device_id) == "Connected"
        wait_for(
            lambda: connection_states(app, device_id) == ["deviceConnected", "deviceDisconnected"],
            what="one Connected and one Disconnected, nothing from the outage",
        )


# -- the console across nodes ---------------------------------------------------------------
# Runs while all three nodes are up (the next test kills node 1): tests run in file order.

CONSOLE_COOKIE = "thinghub_console"
# A live channel closes within the console's session check (1 s) once its session has ended;
# the rest is slack for a loaded machine.
CHANNEL_ENDS_WITHIN_S = 1.0 + 4.0


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


def _console_page(node: ServerProcess, cookie: str, path: str) -> httpx.Response:
    return httpx.get(
        node.http_url + path,
        cookies={CONSOLE_COOKIE: cookie},
        follow_redirects=False,
        timeout=30,
    )


def _live(node: ServerProcess, cookie: str, device_id: str) -> WebSocket:
    host = node.http_url.removeprefix("http://")
    return create_connection(
        f"ws://{host}/console/live?device={device_id}",
        cookie=f"{CONSOLE_COOKIE}={cookie}",
        origin=node.http_url,
        timeout=CHANNEL_ENDS_WITHIN_S,
    )


def _close_code(socket: WebSocket, within_s: float) -> int:
    """Read frames until the server closes the channel; its close code."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        opcode, data = socket.recv_data(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")
    raise AssertionError(f"the channel stayed open for {within_s} s")


def test_a_console_session_is_one_on_every_node(cluster: Cluster) -> None:
    """Behind a load balancer without sticky sessions: signed in on node 1, the cookie opens
    a page and the live channel on node 2; signed out on node 3, the cookie is refused on
    nodes 1 and 2 and node 2's open channel closes as the session ended (4401)."""
    one, two, three = cluster.nodes
    username, password = f"op-{secrets.token_hex(3)}", "console-password-1"
    with cluster.api(0) as api:
        made = api.post(
            "/v1/users", json={"username": username, "password": password, "role": "operator"}
        )
        assert made.status_code == 201, made.text
        device_id = _new_device(api, "console")["id"]
    with httpx.Client(base_url=one.http_url, timeout=30, follow_redirects=False) as http:
        form = http.get("/console/login")
        signed_in = http.post(
            "/console/login",
            data={"username": username, "password": password, "csrf": _csrf(form.text)},
        )
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.cookies[CONSOLE_COOKIE]
    page = _console_page(two, cookie, f"/console/devices/{device_id}")
    assert page.status_code == 200, page.text[:500]
    assert device_id in page.text and username in page.text
    live = _live(two, cookie, device_id)
    try:
        # The channel starts with the present state: 4 frames, the connection's among them.
        frames = {
            (f["type"], f.get("section")): f for f in (json.loads(live.recv()) for _ in range(4))
        }
        assert frames[("connection", None)]["connected"] is False
        assert frames[("connection", None)]["snapshot"] is True
        # Sign out on node 3, with the CSRF token of a page node 3 rendered.
        on_three = _console_page(three, cookie, "/console/devices")
        assert on_three.status_code == 200, on_three.text[:500]
        out = httpx.post(
            three.http_url + "/console/logout",
            data={"csrf": _csrf(on_three.text)},
            cookies={CONSOLE_COOKIE: cookie},
            follow_redirects=False,
            timeout=30,
        )
        assert out.status_code == 303 and out.headers["location"].endswith("/console/login")
        for node in (one, two):  # at once: nothing is cached on a node
            refused = _console_page(node, cookie, "/console/devices")
            assert refused.status_code == 303, refused.text[:500]
            assert "/console/login" in refused.headers["location"]
        assert _close_code(live, CHANNEL_ENDS_WITHIN_S) == 4401
    finally:
        live.close()
    with pytest.raises(WebSocketBadStatusException) as anonymous:
        _live(one, cookie, device_id)
    assert anonymous.value.status_code == 403


# -- ux4iot while NATS is away ----------------------------------------------------------------

# A ux4iot call that needs the session bucket answers within this while NATS is away: the
# JetStream request's own timeout (5 s) plus slack for a loaded machine.
UX4IOT_OUTAGE_ANSWER_S = 15.0


def test_ux4iot_answers_504_while_nats_is_away_and_works_again_after(cluster: Cluster) -> None:
    """Sessions live in a NATS bucket: with NATS stopped, a call that reads and writes a
    session (PUT /grants) answers 504 GatewayTimeout in ux4iot's error shape, in bounded time,
    never 500 and never hanging, on a node other than the session's; with NATS back, the same
    call succeeds and the grant is there."""
    one, two, _ = cluster.nodes
    key = create_key(one, cluster.admin_token)["key"]
    with cluster.api(0) as api:
        device_id = _new_device(api, "ux-outage")["id"]
    with Ux(one.http_url, key) as ux1, Ux(two.http_url, key) as ux2:
        session = ux1.session()
        assert ux2.grant(session, device_id, "telemetry").status_code == 204
        no_twin = ux1.as_session("GET", f"/deviceTwin/{device_id}", session)
        assert no_twin.status_code == 403, no_twin.text  # granted only telemetry so far
        cluster.nats.stop()
        try:
            wait_for(lambda: _ready(two).status_code == 503, what="node 2 sees NATS gone")
            started = time.monotonic()
            answer = ux2.grant(session, device_id, "deviceTwin")
            took = time.monotonic() - started
            assert answer.status_code == 504, answer.text
            error = answer.json()["error"]
            assert error["code"] == "GatewayTimeout", error
            assert "session store" in error["message"], error
            assert took < UX4IOT_OUTAGE_ANSWER_S, took
            started = time.monotonic()
            created = ux1.http.post("/session")  # a new session needs the bucket too
            assert created.status_code == 504, created.text
            assert created.json()["error"]["code"] == "GatewayTimeout"
            assert time.monotonic() - started < UX4IOT_OUTAGE_ANSWER_S
        finally:
            cluster.nats.start()

        def every_node_ready() -> bool:
            return all(_ready(node).status_code == 200 for node in cluster.nodes)

        wait_for(every_node_ready, what="every node sees NATS back")

        def granted() -> httpx.Response | None:
            answer = ux2.grant(session, device_id, "deviceTwin")
            return None if answer.status_code == 504 else answer

        again = wait_for(granted, what="PUT /grants once NATS is back")
        assert again.status_code == 204, again.text
        twin = ux1.as_session("GET", f"/deviceTwin/{device_id}", session)
        assert twin.status_code == 200, twin.text  # the grant made after the outage holds
        assert twin.json()["deviceId"] == device_id
        assert ux1.http.delete(f"/sessions/{session}").status_code == 204


async def test_killed_node_loses_its_device_within_the_lease(cluster: Cluster) -> None:
    """`kill -9` of node 1 while its device publishes QoS 1: every acknowledged message is
    stored once, the device shows Disconnected within the lease, comes back through node 2,
    and a ux4iot socket on node 3 goes on receiving its telemetry."""
    one, two, three = cluster.nodes
    with cluster.api(1) as app:
        device = _new_device(app, "killed")
        device_id = device["id"]
        client = Target.of(one.addresses).device_client(device)
        acked: list[int] = []
        stop = threading.Event()

        def publish() -> None:  # QoS 1: send_message returns once the PUBACK came
            n = 0
            while not stop.is_set():
                try:
                    client.send_message(_json_message({"n": n}))
                except Exception:  # the connection died with node 1
                    return
                acked.append(n)
                n += 1

        key = create_key(three, cluster.admin_token)["key"]
        with Ux(three.http_url, key) as ux, closing_client(client):
            client.connect()
            session = ux.session()
            async with live_socket(three.http_url, session) as live:
                assert ux.grant(session, device_id, "telemetry").status_code == 204
                assert ux.subscribe(session, device_id, "telemetry").status_code == 204
                wait_for(lambda: _connection_state(app, device_id) == "Connected", what="Connected")
                wait_connection_state(app, device_id, "deviceConnected")  # node 1 recorded it
                publisher = threading.Thread(target=publish, name="publisher")
                publisher.start()
                try:
                    wait_for(lambda: len(acked) >= 5, what="messages acknowledged by node 1")
                    await live.wait(lambda p: p.get("deviceId") == device_id, what="live data")
                    killed_at = time.monotonic()
                    one.kill()  # SIGKILL: no goodbye, no disconnect recorded by node 1
                    wait_for(
                        lambda: _connection_state(app, device_id) == "Disconnected",
                        LAPSE_WITHIN_S,
                        interval=0.2,
                        what="Disconnected after node 1 died",
                    )
                    lapsed_s = time.monotonic() - killed_at
                    print(f"Disconnected on node 2 {lapsed_s:.1f} s after node 1 was killed")
                finally:
                    stop.set()
                    client.shutdown()  # ends a send still waiting for its PUBACK
                    publisher.join(30)
                assert not publisher.is_alive()
                wait_connection_state(app, device_id, "deviceDisconnected", timeout=LAPSE_WITHIN_S)
                assert connection_states(app, device_id) == [
                    "deviceConnected",
                    "deviceDisconnected",
                ]

                # Every acknowledged message is stored, once.
                stored = [t["body"]["n"] for t in telemetries(app, device_id)]
                assert len(stored) == len(set(stored)), "a message was stored twice"
                assert set(acked) <= set(stored), sorted(set(acked) - set(stored))
                print(f"{len(acked)} messages acknowledged by node 1, {len(stored)} stored")

                # The device comes back through node 2; node 3's socket goes on receiving.
                with connected(Target.of(two.addresses).device_client(device)) as again:
                    wait_for(
                        lambda: _connection_state(app, device_id) == "Connected", what="Connected"
                    )
                    with three.client(cluster.admin_token) as api3:
                        assert _connection_state(api3, device_id) == "Connected"
                    await asyncio.to_thread(again.send_message, _json_message({"back": 1}))
                    await live.wait(telemetry_of(device_id, back=1), what="telemetry via node 2")
        wait_for(lambda: _connection_state(app, device_id) == "Disconnected", what="Disconnected")


def _serve_fails(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "thinghub", "serve", "--data-dir", str(tmp_path),
         "--http-port", "0", "--mqtt-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "thinghub ready" not in done.stdout
    return done.stderr


def test_nats_with_sqlite_is_refused(tmp_path: Path) -> None:
    err = _serve_fails(tmp_path, "--bus", "nats://127.0.0.1:4222")
    assert "needs database = postgresql" in err and "SQLite" in err, err


def test_an_unreachable_nats_is_named(tmp_path: Path, cluster: Cluster) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{sock.getsockname()[1]}"
        err = _serve_fails(tmp_path, "--database", cluster.database, "--bus", url)
    assert f"cannot connect to NATS at {url}" in err, err
