"""An operator's first hour: a busy port at start-up, API docs without internet, /metrics,
the request log and JSON logs. Each test starts a real server (or tries to) on ephemeral
ports."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers_st import client, create_device, device_sas, post_telemetry
from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess, running

# Ports, docs, metrics and logs: nothing here depends on the store (the PostgreSQL pass of
# `make test` leaves it out; `make e2e-postgres` runs it).
pytestmark = pytest.mark.backend_agnostic

EXIT_PORT_UNAVAILABLE = 3


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 that something else listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thinghub", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize(
    ("flag", "other", "listener", "setting"),
    [
        ("--http-port", "--mqtt-port", "HTTP port", "THINGHUB_HTTP_PORT"),
        ("--mqtt-port", "--http-port", "MQTT over TLS port", "THINGHUB_MQTT_PORT"),
    ],
)
def test_a_busy_port_names_its_listener_and_flag_before_anything_is_created(
    tmp_path: Path, busy_port: int, flag: str, other: str, listener: str, setting: str
) -> None:
    data = tmp_path / "data"
    out = _serve("--data-dir", str(data), flag, str(busy_port), other, "0", cwd=tmp_path)
    assert out.returncode == EXIT_PORT_UNAVAILABLE, out
    assert f"{listener} 127.0.0.1:{busy_port} is in use" in out.stderr, out.stderr
    assert flag in out.stderr and setting in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""  # no ready line
    assert not data.exists()  # no data directory, CA or account was made
    assert list(tmp_path.iterdir()) == []


def test_a_busy_port_of_a_faces_own_listener_is_found_before_anything_is_created(
    tmp_path: Path, busy_port: int
) -> None:
    out = _serve(
        "--data-dir", str(tmp_path / "d"), "--http-port", "0", "--mqtt-port", "0",
        "--itwin-ws-port", "0", "--itwin-tcp-port", str(busy_port),
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == EXIT_PORT_UNAVAILABLE, out
    assert f"127.0.0.1:{busy_port}" in out.stderr and "itwin" in out.stderr, out.stderr
    assert "--itwin-tcp-port" in out.stderr and "THINGHUB_ITWIN_TCP_PORT" in out.stderr
    assert not (tmp_path / "d").exists()


def test_a_busy_face_port_names_face_listen(tmp_path: Path, busy_port: int) -> None:
    out = _serve(
        "--data-dir", str(tmp_path / "d"), "--http-port", "0", "--mqtt-port", "0",
        "--face-listen", f"st=127.0.0.1:{busy_port}",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == EXIT_PORT_UNAVAILABLE, out
    assert f"127.0.0.1:{busy_port}" in out.stderr and "--face-listen" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()


# -- API documentation, offline --------------------------------------------------------------


class _Assets(HTMLParser):
    """Every URL a page loads (scripts, style sheets, icons, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for key in ("src", "href"):
            value = found.get(key)
            if value and (tag in ("script", "img") or (tag == "link" and key == "href")):
                self.urls.append(value)


def _loaded(page: str) -> list[str]:
    parser = _Assets()
    parser.feed(page)
    # URLs handed to the scripts in the page (SwaggerUIBundle({url: ...}), <redoc spec-url>)
    parser.urls += re.findall(r"url: '([^']+)'", page)
    parser.urls += re.findall(r'spec-url="([^"]+)"', page)
    return parser.urls


FACE_DOCS = [
    ("/v1", "ST"),
    ("/central/api", "Central"),
    ("/ux4iot", "ux4iot"),
    ("/itwin/api", "iTwin"),
]


@pytest.mark.parametrize(("prefix", "name"), FACE_DOCS)
def test_api_docs_load_everything_from_thinghub_itself(
    server: ServerProcess, prefix: str, name: str
) -> None:
    with client(server) as http:
        for page_path in (f"{prefix}/docs", f"{prefix}/redoc"):
            page = http.get(page_path)
            assert page.status_code == 200, (page_path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            urls = _loaded(page.text)
            assert any(u.endswith(".js") for u in urls), (page_path, urls)
            assert f"{prefix}/openapi.json" in urls, urls
            # No CDN and no font service: nothing outside this server, on a network without
            # internet the page works as online.
            assert "//" not in page.text.replace("http://www.w3.org", ""), page.text
            for url in urls:
                assert url.startswith(prefix + "/"), (page_path, url)
                asset = http.get(url)
                assert asset.status_code == 200, (url, asset.status_code)
                assert len(asset.content) > 200, url
        bundle = http.get(f"{prefix}/docs/assets/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in bundle.content


def test_try_it_out_calls_the_face_prefix(server: ServerProcess) -> None:
    with client(server) as http:
        for prefix, _ in FACE_DOCS:
            document = http.get(f"{prefix}/openapi.json").json()
            assert document["servers"] == [{"url": prefix}], document.get("servers")
        # What Swagger UI's "Try it out" calls: the server URL + a documented path.
        document = http.get("/v1/openapi.json").json()
        assert "/devices" in document["paths"]
        tried = http.get(document["servers"][0]["url"] + "/devices")
        assert tried.status_code == 200, tried.text


def test_the_docs_index_lists_every_face_and_the_socketio_reference(
    server: ServerProcess,
) -> None:
    with client(server) as http:
        index = http.get("/").json()
        assert index["docs_index"] == "/docs"
        assert index["reference"]["ux4iot"]["Socket.IO reference"] == "/ux4iot/socketio"
        assert index["reference"]["itwin"]["JSON-RPC reference"] == "/itwin/api/jsonrpc"
        page = http.get("/docs")
        assert page.status_code == 200
        for path in (
            "/v1/docs", "/v1/redoc", "/central/api/docs", "/ux4iot/docs", "/ux4iot/socketio",
            "/itwin/api/docs", "/itwin/api/jsonrpc",
        ):  # fmt: skip
            assert f'href="{path}"' in page.text, path
        reference = http.get("/ux4iot/socketio")
        assert reference.status_code == 200
        assert "sessionId" in reference.text and "<code>data</code>" in reference.text
        assert "//" not in reference.text
        rpc = http.get("/itwin/api/jsonrpc")
        assert rpc.status_code == 200
        # Rows come from the method table, what `help` answers over the socket.
        for method in ("authenticate", "help", "getNodes", "subscribeData"):
            assert f"<code>{method}</code>" in rpc.text, method
        assert "//" not in rpc.text


def test_a_face_on_its_own_port_documents_its_own_root(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--face-listen", "st=127.0.0.1:0")
    own = server.addresses["faces"]["st"]
    base = f"http://127.0.0.1:{own['port']}"
    with httpx.Client(base_url=base, timeout=30, verify=False) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert "/openapi.json" in _loaded(page.text)
        for url in _loaded(page.text):
            assert url.startswith("/") and http.get(url).status_code == 200, url
        servers = http.get("/openapi.json").json().get("servers", [{"url": "/"}])
        assert servers[0]["url"] in ("", "/"), servers


# -- /metrics ------------------------------------------------------------------------------


def _scrape(server: ServerProcess, token: str | None = None) -> dict[str, float]:
    """Every sample as {"name{label=value,...}": value} (labels sorted)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.http_url}/metrics", headers=headers, timeout=30, verify=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def _metrics_status(server: ServerProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.http_url}/metrics", headers=headers, timeout=30, verify=False)


def test_metrics_need_a_token_by_default(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(env={"THINGHUB_METRICS_TOKEN": "scrape-secret-1"})
    viewer = server.cli("token", "create", "--quiet", "--role", "viewer")
    server.cli("account", "create", "other-acct", "--json")
    other_admin = server.cli("token", "create", "--quiet", "--account", "other-acct")
    anonymous = _metrics_status(server, None)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert set(anonymous.json()["error"]) >= {"code", "message"}
    for refused in ("wrong", viewer, other_admin):
        assert _metrics_status(server, refused).status_code == 401
    assert _metrics_status(server, "scrape-secret-1").status_code == 200
    assert _metrics_status(server, server.admin_token).status_code == 200


@pytest.mark.parametrize(("mode", "status"), [("off", 404), ("on", 200)])
def test_the_metrics_setting_turns_them_off_or_open(
    start_server: Callable[..., ServerProcess], mode: str, status: int
) -> None:
    server = start_server("--metrics", mode)
    assert _metrics_status(server, None).status_code == status


def _poll(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_metrics_count_http_mqtt_ingest_and_commits(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--metrics", "on")
    before = _scrape(server)
    assert before["thinghub_mqtt_connections{dialect=handshake}"] == 0
    assert before["thinghub_telemetry_commit_seconds_count{}"] == 0
    assert before["thinghub_ingest_queue_limit_bytes{}"] == 64 * 1024 * 1024
    with client(server) as api:
        device = create_device(api, "metered", "ops", "lab")
        for _ in range(3):
            assert api.get("/v1/devices/no-such-device").status_code == 404
        assert api.get("/central/api/devices", params={"api-version": "2022-07-31"}).is_success
    http = post_telemetry(server.http_url, device["id"], {"t": 1}, device_sas(device))
    assert http.status_code == 204, http.text

    async def over_mqtt() -> dict[str, float]:
        raw = RawDevice(server.mqtt_port, server.ca_file)
        username, password = credentials(device)
        assert await raw.connect(device["id"], username, password) == 0
        try:
            ids = [
                raw.publish(f"devices/{device['id']}/messages/events/", b'{"t": 2}', 1)
                for _ in range(5)
            ]
            async with asyncio.timeout(15):
                while not set(ids) <= raw.acked:
                    await asyncio.sleep(0.01)
            return await asyncio.to_thread(_scrape, server)  # while it is connected
        finally:
            await raw.close()

    during = asyncio.run(over_mqtt())
    assert during["thinghub_mqtt_connections{dialect=hub}"] == 1
    assert during["thinghub_mqtt_messages_total{dialect=hub,direction=in}"] == 5
    assert during["thinghub_mqtt_connacks_total{code=0,dialect=hub}"] == 1
    assert during["thinghub_telemetry_messages_total{source=mqtt}"] == 5
    assert during["thinghub_telemetry_messages_total{source=http}"] == 1
    assert during["thinghub_telemetry_commit_seconds_count{}"] >= 2
    assert during["thinghub_telemetry_commit_seconds_sum{}"] > 0
    assert during["thinghub_http_connections{listener=http}"] >= 1
    responses = "thinghub_http_responses_total{face=st,listener=http,status=%s}"
    assert during[responses % "404"] == 3
    assert during["thinghub_http_errors_total{code=NotFound,face=st}"] == 3
    assert during[responses % "200"] >= 1  # the device's creation
    assert during["thinghub_http_responses_total{face=central,listener=http,status=200}"] == 1
    assert during["thinghub_http_responses_total{face=device-http,listener=http,status=204}"] == 1
    _poll(
        lambda: _scrape(server).get("thinghub_mqtt_connections{dialect=hub}", 0) == 0,
        "the closed MQTT connection is still counted",
    )
    # A refused CONNECT is counted by its code.

    async def refused() -> int:
        raw = RawDevice(server.mqtt_port, server.ca_file)
        username, _ = credentials(device)
        try:
            return await raw.connect(
                device["id"], username, "SharedAccessSignature sr=x&sig=y&se=1"
            )
        finally:
            await raw.close()

    code = asyncio.run(refused())
    assert code in (4, 5)
    after = _scrape(server)
    assert after[f"thinghub_mqtt_connacks_total{{code={code},dialect=hub}}"] == 1


def test_metrics_count_socketio_connections_of_the_ux4iot_face(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--metrics", "on")
    assert _scrape(server)["thinghub_face_connections{face=ux4iot,kind=socketio}"] == 0
    with client(server) as api:
        key = api.post("/v1/ux4iot/keys", json={"label": "m"}).json()["key"]
    with httpx.Client(base_url=server.http_url, timeout=30, verify=False) as http:
        session = http.post("/ux4iot/session", headers={"Shared-Access-Key": key})
        assert session.status_code in (200, 201), session.text
        sid = session.json()["sessionId"]
        # An Engine.IO long-polling handshake opens a socket.
        opened = http.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "sessionId": sid}
        )
        assert opened.status_code == 200, opened.text
        assert _scrape(server)["thinghub_face_connections{face=ux4iot,kind=socketio}"] == 1


# -- the request log and JSON logs ---------------------------------------------------------


def _access_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if "thinghub.access" in line]


def test_the_request_log_is_off_by_default(server: ServerProcess) -> None:
    with client(server) as api:
        assert api.get("/v1/devices").status_code == 200
        assert api.get("/healthz").status_code == 200
    assert _access_lines(server) == []


def test_the_request_log_has_one_line_per_request_and_no_secret(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--access-log")
    with client(server) as api:
        assert api.get("/v1/devices", params={"token": "query-secret"}).status_code == 200
        assert api.get("/v1/devices/nope").status_code == 404
    with httpx.Client(base_url=server.http_url, timeout=30) as anonymous:
        assert anonymous.get("/v1/devices").status_code == 401
        assert anonymous.get("/v1/a%0Ab").status_code in (401, 404)
    who = server.cli("token", "list", "--json")
    admin_id = next(t["id"] for t in json.loads(who) if t["role"] == "admin")

    def lines() -> list[str]:
        return [line for line in _access_lines(server) if " /v1/" in line]

    _poll(lambda: len(lines()) >= 4, "four request lines")
    found = lines()
    assert len(found) == 4, found
    assert re.search(r"GET /v1/devices 200 [\d.]+ms face=st principal=" + admin_id, found[0])
    assert re.search(r"GET /v1/devices 200 [\d.]+ms face=st principal=\S+$", found[0])
    assert re.search(
        r"GET /v1/devices/nope 404 [\d.]+ms face=st principal=\S+ error=NotFound$", found[1]
    )
    assert re.search(
        r"GET /v1/devices 401 [\d.]+ms face=st principal=- error=Unauthorized$", found[2]
    )
    assert "GET /v1/a%0Ab " in found[3]  # a control character never splits a line
    log = server.log_path.read_text()
    assert "query-secret" not in log and server.admin_token not in log


def test_json_logs_are_one_object_per_line(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--log-format", "json", "--access-log")
    with client(server) as api:
        assert api.get("/v1/devices").status_code == 200
        assert api.get("/v1/devices/missing").status_code == 404
    server.stop()
    records: list[dict[str, Any]] = []
    for line in server.log_path.read_text().splitlines():
        records.append(json.loads(line))  # every line is JSON, start-up and shutdown too
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    access = [r for r in records if r["logger"] == "thinghub.access"]
    assert [(r["method"], r["path"], r["status"], r["face"], r["error"]) for r in access] == [
        ("GET", "/v1/devices", 200, "st", None),
        ("GET", "/v1/devices/missing", 404, "st", "NotFound"),
    ]
    assert access[0]["duration_ms"] >= 0 and access[0]["listener"] == "http"
    assert any("MQTT/TLS listening" in r["message"] for r in records)


def test_running_keeps_working_with_every_operator_option(tmp_path: Path) -> None:
    """A server with the request log, JSON logs and open metrics still stops cleanly."""
    with running(
        ServerProcess(tmp_path / "d", "--access-log", "--log-format", "json", "--metrics", "on")
    ) as server:
        assert "thinghub_http_responses_total" in httpx.get(f"{server.http_url}/metrics").text
