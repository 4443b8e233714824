"""Abuse of the HTTP listener by one client: huge or endless heads, slowloris, slow bodies,
oversized ingest, and links or names a client should not control (issue 7, items 5, 6, 8, 13,
14, 15). Each test drives the real server over raw sockets on 127.0.0.1 and checks that the
client gets the documented answer (docs/limits.md, "HTTP limits"), quickly, and that the
server's CPU, memory and open files stay bounded while others are still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import create_device, device_sas, events_path
from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess, running

pytestmark = pytest.mark.backend_agnostic

MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The tight server: small timeouts and cap, so the tests stay short.
TIGHT_ENV = {
    "THINGHUB_HTTP_HEADER_TIMEOUT_S": "1",
    "THINGHUB_HTTP_BODY_TIMEOUT_S": "1",
    "THINGHUB_HTTP_KEEPALIVE_TIMEOUT_S": "0.5",
    "THINGHUB_HTTP_MAX_CONNECTIONS": "40",
}
TIGHT_CAP = 40


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("tight"), env=TIGHT_ENV)
    with running(proc):
        yield proc


# -- what the server process uses -----------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM): a spike shows even once freed."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    # Fields after the command name: utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pid_of(server: ServerProcess) -> int:
    return int(server.addresses["pid"])


# -- raw HTTP ----------------------------------------------------------------------------------


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.addresses["http"]["port"])), 5)
    sock.settimeout(10)
    return sock


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one response; the body by Content-Length."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed without an answer; got {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), head.lower(), body


def closed_within(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes the connection (after any answer) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def healthz_status(server: ServerProcess) -> int:
    return httpx.get(server.http_url + "/healthz", timeout=5).status_code


# -- head size and count (item 5) ----------------------------------------------------------------


def test_a_huge_header_is_refused_with_431_at_once_and_costs_little(server: ServerProcess) -> None:
    pid = pid_of(server)
    peak_before, cpu_before = peak_rss_bytes(pid), cpu_seconds(pid)
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        filler = b"a" * 65536
        with contextlib.suppress(OSError):  # the server stops reading: the pipe breaks
            while sent < 32 * MIB:
                sock.sendall(filler)
                sent += len(filler)
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is already there
        status, head, _ = read_response(sock)
        elapsed = time.monotonic() - started
        assert status == 431
        assert b"connection: close" in head
        assert closed_within(sock, 5)
    assert elapsed < 5, elapsed
    assert sent < 32 * MIB, "the server read the whole endless header"
    assert peak_rss_bytes(pid) - peak_before < 16 * MIB
    assert cpu_seconds(pid) - cpu_before < 1.5
    assert healthz_status(server) == 200


def test_too_many_headers_get_431_and_the_limits_leave_honest_requests_alone(
    server: ServerProcess,
) -> None:
    def head_with(count: int, value: bytes = b"1") -> bytes:
        lines = b"".join(b"X-H%d: %s\r\n" % (i, value) for i in range(count - 1))
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"

    for count, expected in ((100, 200), (101, 431), (1000, 431)):
        with connect(server) as sock:
            sock.sendall(head_with(count))
            status, _, _ = read_response(sock)
            assert status == expected, count
    # A long header (a big JWT, say) well within 64 KiB is served.
    with connect(server) as sock:
        sock.sendall(head_with(2, b"j" * 60_000))
        assert read_response(sock)[0] == 200


# -- slowloris, timeouts and the connection cap (item 6) -------------------------------------


def test_an_unfinished_head_gets_408_after_the_header_timeout_even_when_it_trickles(
    tight: ServerProcess,
) -> None:
    with connect(tight) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        answer = b""
        # One byte every 0.2 s: bytes arriving do not move the deadline.
        with contextlib.suppress(OSError):
            for _ in range(25):
                sock.sendall(b"X")
                readable = select.select([sock], [], [], 0.2)[0]
                if readable:
                    answer = sock.recv(65536)
                    break
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 0.9 < elapsed < 3, elapsed
        assert closed_within(sock, 3)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    tight: ServerProcess,
) -> None:
    with connect(tight) as sock:
        started = time.monotonic()
        assert closed_within(sock, 5)
        assert 0.9 < time.monotonic() - started < 3


def test_an_idle_keep_alive_connection_is_closed(tight: ServerProcess) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        answered = time.monotonic()
        assert closed_within(sock, 3)
        assert 0.4 < time.monotonic() - answered < 2.5


def test_a_body_that_stalls_gets_408_after_the_body_timeout(tight: ServerProcess) -> None:
    with connect(tight) as sock:
        sock.sendall(
            b"POST /v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type"
        )
        started = time.monotonic()
        status, head, _ = read_response(sock, timeout=5)
        assert status == 408
        assert b"connection: close" in head
        assert 0.9 < time.monotonic() - started < 3
        assert closed_within(sock, 3)


def test_slowloris_beyond_the_cap_leaves_http_and_mqtt_working(tight: ServerProcess) -> None:
    with tight.client() as admin:
        device = create_device(admin, "slowloris-witness", "abuse", "d")
    pid = pid_of(tight)
    files_before = open_files(pid)
    attackers: list[socket.socket] = []
    try:
        for _ in range(5 * TIGHT_CAP):
            sock = connect(tight)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            attackers.append(sock)
        # Others are served at once: an honest request ...
        started = time.monotonic()
        assert healthz_status(tight) == 200
        assert time.monotonic() - started < 2
        # ... and a device connecting over MQTT.
        username, password = credentials(device)

        async def mqtt_connect() -> int:
            raw = RawDevice(tight.mqtt_port, tight.ca_file)
            try:
                return await raw.connect(device["id"], username, password)
            finally:
                await raw.close()

        assert asyncio.run(mqtt_connect()) == 0
        # The server holds at most the cap of them (fds of the attackers beyond it are closed).
        assert open_files(pid) - files_before <= TIGHT_CAP + 5, open_files(pid) - files_before
        # And once the header timeout passes, none is left waiting.
        deadline = time.monotonic() + 10
        for sock in attackers:
            assert closed_within(sock, max(0.1, deadline - time.monotonic()))
    finally:
        for sock in attackers:
            sock.close()


# -- HTTPS device ingest (item 8) -------------------------------------------------------------


@pytest.fixture
def device(server: ServerProcess) -> dict[str, Any]:
    with server.client() as admin:
        return create_device(admin, f"ingest-{uuid.uuid4().hex[:8]}", "abuse", "d")


def test_an_oversized_chunked_ingest_body_is_refused_before_it_is_read(
    server: ServerProcess, device: dict[str, Any]
) -> None:
    pid = pid_of(server)
    peak_before = peak_rss_bytes(pid)
    with connect(server) as sock:
        sock.sendall(
            f"POST {events_path(device['id'])}?api-version=2020-09-30 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {device_sas(device)}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"7" * 65536)
        sent = 0
        with contextlib.suppress(OSError):
            while sent < 256 * MIB:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered
                sock.sendall(chunk)
                sent += 65536
        status, _, body = read_response(sock)
    assert status == 413
    assert b"MessageTooLarge" in body
    assert sent < 64 * MIB, f"the server read {sent} bytes before refusing"
    assert peak_rss_bytes(pid) - peak_before < 24 * MIB


def test_application_properties_count_toward_the_message_size(
    server: ServerProcess, device: dict[str, Any]
) -> None:
    url = f"{server.http_url}{events_path(device['id'])}"
    body = b'"' + b"x" * 250_000 + b'"'
    headers = {"Authorization": device_sas(device), "Content-Type": "application/json"}
    params = {"api-version": "2020-09-30"}
    alone = httpx.post(url, content=body, headers=headers, params=params, timeout=30)
    assert alone.status_code == 204, alone.text
    # 20 properties of 1,000 bytes take the message past 256 KiB.
    props = {f"iothub-app-p{i}": "v" * 1000 for i in range(20)}
    over = httpx.post(url, content=body, headers={**headers, **props}, params=params, timeout=30)
    assert over.status_code == 413, over.text
    assert over.json()["Message"].startswith("ErrorCode:MessageTooLarge;")
    # Within the size, properties are kept.
    small = {f"iothub-app-p{i}": "v" for i in range(20)}
    ok = httpx.post(url, content=b"{}", headers={**headers, **small}, params=params, timeout=30)
    assert ok.status_code == 204, ok.text


# -- links, names and check order on the faces (items 13, 14, 15) --------------------------


def central_devices(server: ServerProcess, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with httpx.Client(base_url=server.http_url, timeout=30) as client:
        for i in range(2):
            put = client.put(
                f"/central/api/devices/link-{uuid.uuid4().hex[:8]}-{i}",
                json={},
                headers={"Authorization": server.admin_token},
            )
            assert put.status_code == 200, put.text
        response = client.get(
            "/central/api/devices",
            params={"$top": 1, "api-version": "2022-07-31"},
            headers={"Authorization": server.admin_token, **(headers or {})},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def test_central_next_link_does_not_echo_the_host_header(server: ServerProcess) -> None:
    page = central_devices(server, {"Host": "evil.example:666"})
    link = page["nextLink"]
    assert "evil" not in link
    assert link.startswith("/central/api/devices?"), link
    followed = httpx.get(
        server.http_url + link, headers={"Authorization": server.admin_token}, timeout=30
    )
    assert followed.status_code == 200, followed.text


def test_central_next_link_uses_the_public_url_setting(
    start_server: Callable[..., ServerProcess],
) -> None:
    proc = start_server(env={"THINGHUB_PUBLIC_URL": "https://iot.example.com/"})
    page = central_devices(proc, {"Host": "evil.example:666"})
    assert page["nextLink"].startswith("https://iot.example.com/central/api/devices?")
    assert proc.stop() == 0


@pytest.mark.parametrize("name", ["a?$rid=evil", "a/b", "a b", "a+b", "#", "x" * 129, "é"])
def test_v1_method_names_are_checked(server: ServerProcess, name: str) -> None:
    with server.client() as admin:
        device = create_device(admin, "method-names", "abuse", "d")
        response = admin.post(
            f"/v1/devices/{device['id']}/method", json={"name": name, "payload": {}}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "name"


def test_central_answers_401_before_checking_api_version(server: ServerProcess) -> None:
    response = httpx.get(
        server.http_url + "/central/api/devices", params={"api-version": "bogus"}, timeout=30
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "Unauthorized"
