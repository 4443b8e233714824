"""A new user's first hour with the `thinghub` command: offline commands that refuse to invent
a data directory, device and token management, `--json` for scripts, the live stream of a
device (`GET /v1/devices/{id}/stream`) and `thinghub telemetry tail`, and `simulate`'s errors."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import (
    assert_error,
    client,
    create_device,
    device_sas,
    post_telemetry,
)
from tests.e2e.server import ServerProcess

EXIT_ERROR = 1
EXIT_SERVER_GONE = 4


def thinghub(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("THINGHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "thinghub", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**environment, **(env or {})},
        check=False,
    )


def on_server(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """A command on the server's data directory (and database), its exit code kept."""
    database = ("--database", server.database) if server.database else ()
    return thinghub(*args, "--data-dir", str(server.data_dir), *database)


def ok_json(server: ServerProcess, *args: str) -> Any:
    out = on_server(server, *args, "--json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


# -- the data directory --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("token", "create"),
        ("token", "list"),
        ("account", "create", "acme"),
        ("device", "list"),
        ("device", "create", "thermostat"),
        ("ux4iot", "key", "list"),
        ("ca",),
    ],
)
def test_offline_commands_refuse_to_invent_a_data_directory(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    out = thinghub(*command, cwd=tmp_path)
    assert out.returncode == EXIT_ERROR, out
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "thinghub-data") in out.stderr, out.stderr
    assert "--data-dir" in out.stderr and "--init" in out.stderr, out.stderr
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_init_creates_the_data_directory_a_server_then_uses(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    data = tmp_path / "fresh"
    created = thinghub("token", "create", "--init", "--json", "--data-dir", str(data))
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert (data / "thinghub.db").is_file()
    pem = thinghub("ca", "--init", "--data-dir", str(data))
    assert pem.returncode == 0 and pem.stdout.startswith("-----BEGIN CERTIFICATE-----")
    # SQLite in the data directory (an empty --database), also when the suite runs on PostgreSQL:
    # the database file is what --init made.
    server = start_server("--database", "", data_dir=data)
    assert server.ca_file == str(data / "certs" / "ca.pem")
    assert (data / "certs" / "ca.pem").read_text().strip() == pem.stdout.strip()
    with client(server, token["token"]) as api:
        assert api.get("/v1/devices").status_code == 200


# -- tokens --------------------------------------------------------------------------------


def test_token_create_prints_the_id_the_client_credentials_grant_needs(
    server: ServerProcess,
) -> None:
    made = ok_json(server, "token", "create", "--role", "viewer", "--label", "grafana")
    assert set(made) >= {"id", "token", "role", "label", "account", "createdAt"}
    assert made["role"] == "viewer" and made["label"] == "grafana" and made["account"] == "default"
    grant = httpx.post(
        f"{server.http_url}/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": made["id"]},
        auth=(made["id"], made["token"]),
        timeout=30,
    )
    assert grant.status_code == 200, grant.text
    with client(server, grant.json()["access_token"]) as api:
        assert api.get("/v1/devices").status_code == 200
        body = {"name": "x", "project": "p", "deployment": "d"}
        assert api.post("/v1/devices", json=body).status_code == 403  # a viewer's

    # Without --json: a readable table with the id and the token in full (never wrapped).
    table = on_server(server, "token", "create", "--label", "table")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[-1] for line in table.stdout.splitlines() if line}
    assert rows["id"].startswith("tok_") or len(rows["id"]) >= 8, table.stdout
    assert rows["token"].startswith("thk_"), table.stdout
    assert on_server(server, "token", "create", "--quiet").stdout.strip().startswith("thk_")


def test_token_list_and_revoke(server: ServerProcess) -> None:
    made = ok_json(server, "token", "create", "--role", "operator", "--label", "to-revoke")
    listed = ok_json(server, "token", "list")
    mine = [t for t in listed if t["id"] == made["id"]]
    assert mine == [
        {
            "id": made["id"],
            "role": "operator",
            "label": "to-revoke",
            "project": None,
            "face": "st",
            "createdAt": made["createdAt"],
            "expiresAt": None,
        }
    ]
    assert made["token"] not in json.dumps(listed)  # never a secret
    table = on_server(server, "token", "list")
    assert made["id"] in table.stdout and "to-revoke" in table.stdout
    assert made["token"] not in table.stdout

    with client(server, made["token"]) as api:
        assert api.get("/v1/devices").status_code == 200
        assert ok_json(server, "token", "revoke", made["id"]) == {"revoked": made["id"]}
        # A running server forgets a revoked token within its 5 s cache.
        deadline = time.monotonic() + 15
        while api.get("/v1/devices").status_code != 401:
            assert time.monotonic() < deadline, "the revoked token still works"
            time.sleep(0.2)
    assert made["id"] not in {t["id"] for t in ok_json(server, "token", "list")}
    again = on_server(server, "token", "revoke", made["id"])
    assert again.returncode == EXIT_ERROR and made["id"] in again.stderr, again
    assert "Traceback" not in again.stderr


# -- devices -------------------------------------------------------------------------------


def test_device_commands_manage_the_registry(
    server: ServerProcess, unique: Callable[[str], str]
) -> None:
    project = unique("cli")
    made = ok_json(
        server, "device", "create", "boiler", "--project", project, "--deployment", "hall"
    )
    assert made["name"] == "boiler" and made["project"] == project and made["enabled"] is True
    assert made["connectionString"] == (
        f"HostName=localhost;DeviceId={made['id']};SharedAccessKey={made['primaryKey']}"
    )
    with client(server) as api:
        seen = api.get(f"/v1/devices/{made['id']}")
        assert seen.status_code == 200 and seen.json()["tags"]["name"] == "boiler"
        key = seen.json()["credentials"]["symmetricKey"]["primaryKey"]
        assert key == made["primaryKey"]

        gateway = ok_json(
            server, "device", "create", "edge", "--id", unique("gw"), "--project", project,
            "--deployment", "hall", "--gateway", "--disabled",
        )  # fmt: skip
        assert gateway["kind"] == "gateway" and gateway["enabled"] is False
        listed = ok_json(server, "device", "list", "--project", project)
        assert [d["id"] for d in listed] == [made["id"], gateway["id"]]
        quiet = on_server(server, "device", "list", "--project", project, "--quiet")
        assert quiet.stdout.split() == [made["id"], gateway["id"]]
        table = on_server(server, "device", "list", "--project", project)
        assert table.stdout.split()[:2] == ["id", "name"], table.stdout
        assert made["id"] in table.stdout and gateway["id"] in table.stdout
        shown = ok_json(server, "device", "show", made["id"])
        assert {k: shown[k] for k in made if k != "lastActivityTime"} == {
            k: made[k] for k in made if k != "lastActivityTime"
        }
        assert ok_json(server, "device", "show", gateway["id"])["modules"] == []

        # disable: the device's telemetry is refused; enable: accepted again.
        device = {"id": made["id"], "credentials": {"symmetricKey": {"primaryKey": key}}}
        assert ok_json(server, "device", "disable", made["id"])["enabled"] is False

        def ingest_status() -> int:
            return post_telemetry(
                server.http_url, made["id"], {"t": 1}, device_sas(device)
            ).status_code

        _eventually(lambda: ingest_status() == 401, "a disabled device still sends")
        assert api.get(f"/v1/devices/{made['id']}").json()["provisioningStatus"] == "disabled"
        assert ok_json(server, "device", "enable", made["id"])["enabled"] is True
        _eventually(lambda: ingest_status() == 204, "an enabled device is still refused")

        refused = on_server(server, "device", "delete", made["id"])  # asks; no answer: no
        assert refused.returncode != 0 and "Delete device" in refused.stderr
        assert api.get(f"/v1/devices/{made['id']}").status_code == 200
        assert ok_json(server, "device", "delete", made["id"], "--yes") == {"deleted": made["id"]}
        # A running server forgets it within its 5 s registry cache.
        _eventually(
            lambda: api.get(f"/v1/devices/{made['id']}").status_code == 404,
            "the deleted device is still served",
        )
    missing = on_server(server, "device", "show", made["id"])
    assert missing.returncode == EXIT_ERROR and made["id"] in missing.stderr, missing
    assert "Traceback" not in missing.stderr


def _eventually(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


# -- the live stream -----------------------------------------------------------------------


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:])


def test_the_stream_sends_a_devices_telemetry_and_connection_changes(
    server: ServerProcess, unique: Callable[[str], str]
) -> None:
    with client(server) as api:
        device = create_device(api, "streamed", unique("s"), "d")
        other = create_device(api, "other", unique("s"), "d")
        with api.stream("GET", f"/v1/devices/{device['id']}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _sse_events(response)
            assert next(events) == ("ready", {"deviceId": device["id"]})
            sas = device_sas(other)
            assert post_telemetry(server.http_url, other["id"], {"n": 0}, sas).status_code == 204
            for n in (1, 2):
                sent = post_telemetry(server.http_url, device["id"], {"n": n}, device_sas(device))
                assert sent.status_code == 204
            got = [next(events) for _ in range(2)]
    assert [(name, data["deviceId"], data["body"]) for name, data in got] == [
        ("telemetry", device["id"], {"n": 1}),
        ("telemetry", device["id"], {"n": 2}),
    ]  # not the other device's
    assert got[0][1]["source"] == "http" and got[0][1]["timestamp"].endswith("Z")


def test_the_stream_has_the_apis_auth_and_limits(
    server: ServerProcess, unique: Callable[[str], str]
) -> None:
    project = unique("p")
    with client(server) as api:
        device = create_device(api, "guarded", project, "d")
        assert_error(api.get(f"/v1/devices/{device['id']}/stream", params={"kinds": "x"}), 400)
        assert_error(api.get("/v1/devices/no-such/stream"), 404)
    path = f"/v1/devices/{device['id']}/stream"
    with httpx.Client(base_url=server.http_url, timeout=30) as anonymous:
        assert_error(anonymous.get(path), 401)
    limited = server.cli("token", "create", "--quiet", "--project", unique("elsewhere"))
    with client(server, limited) as api:
        assert_error(api.get(path), 404)
    name = unique("acct")
    server.cli("account", "create", name, "--json")
    other_account = server.cli("token", "create", "--quiet", "--account", name)
    with client(server, other_account) as api:
        assert_error(api.get(path), 404)


# -- telemetry tail ------------------------------------------------------------------------


def test_telemetry_tail_follows_a_device_from_the_running_server(
    server: ServerProcess, unique: Callable[[str], str]
) -> None:
    with client(server) as api:
        device = create_device(api, "tailed", unique("t"), "d")
    # No --url: it finds the server through its data directory (server.json).
    command = [
        sys.executable, "-m", "thinghub", "telemetry", "tail", device["id"], "--json",
        "--count", "3", "--kinds", "telemetry", "--data-dir", str(server.data_dir),
    ]  # fmt: skip
    env = {**os.environ, "THINGHUB_TOKEN": server.admin_token}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as tail:
        deadline = time.monotonic() + 30
        n = 0
        while tail.poll() is None:  # send until it has seen three (it may start late)
            assert time.monotonic() < deadline, "telemetry tail did not end"
            sent = post_telemetry(server.http_url, device["id"], {"n": n}, device_sas(device))
            assert sent.status_code == 204
            n += 1
            time.sleep(0.1)
        out, err = tail.communicate(timeout=10)
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3, out
    bodies = [line["body"]["n"] for line in lines]
    assert bodies == list(range(bodies[0], bodies[0] + 3))  # in order, none missed
    assert {line["deviceId"] for line in lines} == {device["id"]}
    assert {line["kind"] for line in lines} == {"telemetry"}


def test_telemetry_tail_errors(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    unknown = thinghub(
        "telemetry", "tail", "no-such-device", "--url", server.http_url,
        "--token", server.admin_token,
    )  # fmt: skip
    assert unknown.returncode == EXIT_ERROR and "404" in unknown.stderr, unknown
    nowhere = thinghub("telemetry", "tail", "x", "--token", "t", "--data-dir", str(tmp_path))
    assert nowhere.returncode == EXIT_SERVER_GONE, nowhere
    assert "cannot reach thinghub" in nowhere.stderr and "Traceback" not in nowhere.stderr

    with client(server) as api:
        device = create_device(api, "tailed", "p", "d")
    command = [
        sys.executable, "-m", "thinghub", "telemetry", "tail", device["id"],
        "--url", server.http_url, "--token", server.admin_token,
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as tail:
        assert tail.stderr is not None
        ready, _, _ = select.select([tail.stderr], [], [], 30)
        assert ready, "no 'following' line"
        assert tail.stderr.readline().startswith(f"following {device['id']}")
        sent = post_telemetry(server.http_url, device["id"], {"n": 7}, device_sas(device))
        assert sent.status_code == 204
        assert tail.stdout is not None
        ready, _, _ = select.select([tail.stdout], [], [], 30)
        assert ready, "no telemetry line"
        line = tail.stdout.readline()
        assert device["id"] in line and '{"n": 7}' in line, line
        assert server.stop() == 0  # the server goes away: tail says so and exits 4
        out, err = tail.communicate(timeout=30)
    assert tail.returncode == EXIT_SERVER_GONE, (out, err)
    assert "closed the stream" in err and "Traceback" not in err


# -- simulate ------------------------------------------------------------------------------


def test_simulate_names_the_missing_ca_file_and_the_way_to_point_at_it(tmp_path: Path) -> None:
    out = thinghub("simulate", "--token", "t", "--devices", "1", "--duration", "5", cwd=tmp_path)
    assert out.returncode == EXIT_ERROR, out
    assert str(tmp_path / "thinghub-data" / "certs" / "ca.pem") in out.stderr
    assert "--ca FILE" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello")
    out = thinghub("simulate", "--token", "t", "--ca", str(bad), "--duration", "5")
    assert out.returncode == EXIT_ERROR and str(bad) in out.stderr, out
    assert "Traceback" not in out.stderr


def test_simulate_without_a_server_exits_4_at_once(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(_any_ca())
    started = time.monotonic()
    out = thinghub(
        "simulate", "--token", "t", "--url", "http://127.0.0.1:1", "--ca", str(ca),
        "--duration", "20",
    )  # fmt: skip
    assert out.returncode == EXIT_SERVER_GONE, out
    assert "cannot reach thinghub at http://127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 15


def _any_ca() -> str:
    import certifi

    pem = Path(certifi.where()).read_text()
    return pem[
        pem.index("-----BEGIN CERTIFICATE-----") : pem.index("-----END CERTIFICATE-----")
    ] + ("-----END CERTIFICATE-----\n")


def test_simulate_stops_with_a_summary_when_the_server_goes_away(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    command = [
        sys.executable, "-m", "thinghub", "simulate", "--token", server.admin_token,
        "--data-dir", str(server.data_dir), "--devices", "2", "--rate", "10",
        "--duration", "60", "--project", "gone", "--json",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as simulation:
        with client(server) as api:

            def both_connected() -> bool:
                devices = api.get("/v1/devices", params={"projectID": "gone"}).json()
                return len(devices) == 2 and all(
                    d["connectionState"] == "Connected" for d in devices
                )

            _eventually(both_connected, "the simulated devices did not connect", 30)

            def one_stored() -> bool:  # so the summary has acknowledged messages to count
                page = api.get("/v1/telemetries", params={"projectID": "gone"}).json()
                items = page.get("items", page) if isinstance(page, dict) else page
                return len(items) > 0

            _eventually(one_stored, "no simulated message was stored", 30)
        stopped = time.monotonic()
        assert server.stop() == 0
        out, err = simulation.communicate(timeout=40)
    assert simulation.returncode == EXIT_SERVER_GONE, (out, err)
    assert time.monotonic() - stopped < 30  # not the whole --duration of 60 s
    summary = json.loads(out)
    assert summary["devices"] == summary["connected"] == 2
    assert summary["lost"] == 2 and summary["acked"] > 0
    assert "went away" in err and "Traceback" not in err


def test_simulate_is_bounded_by_its_duration_and_shows_progress_on_a_terminal(
    server: ServerProcess,
) -> None:
    """On a terminal (a pty here) the run shows a bar with its percentage and time left."""
    command = [
        sys.executable, "-m", "thinghub", "simulate", "--token", server.admin_token,
        "--data-dir", str(server.data_dir), "--devices", "2", "--rate", "5",
        "--duration", "4", "--project", "bounded", "--json",
    ]  # fmt: skip
    started = time.monotonic()
    code, out, shown = _on_a_terminal(command, timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, shown
    assert elapsed < 4 + 10  # start-up of Python and the devices' TLS, then at most 4 s
    summary = json.loads(out)
    assert summary["seconds"] <= 4.5 and summary["connected"] == 2
    assert "%" in shown and "connected" in shown, shown
    assert "0:00:0" in shown or "-:--:--" in shown, shown  # the time left column


def test_the_stream_ends_when_its_device_is_deleted(
    server: ServerProcess, unique: Callable[[str], str]
) -> None:
    with client(server) as api:
        device = create_device(api, "doomed", unique("s"), "d")
        with api.stream("GET", f"/v1/devices/{device['id']}/stream") as response:
            events = _sse_events(response)
            assert next(events)[0] == "ready"
            assert api.delete(f"/v1/devices/{device['id']}").status_code in (200, 204)
            rest = list(events)  # the response ends: the generator runs out
    assert ("device", {"kind": "device", "deviceId": device["id"], "operation": "deleted"}) in rest


# -- status --------------------------------------------------------------------------------


def test_status_finds_the_running_server_through_its_data_directory(
    server: ServerProcess, tmp_path: Path
) -> None:
    shown = thinghub("status", "--json", "--data-dir", str(server.data_dir))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["status"] == "ok" and status["url"] == server.http_url
    assert status["mqtt"] == f"127.0.0.1:{server.mqtt_port}"
    assert status["ca_file"] == server.ca_file and status["docs"] == f"{server.http_url}/docs"
    assert set(status["faces"]) >= {"st", "central", "ux4iot"}
    table = thinghub("status", "--data-dir", str(server.data_dir))
    assert server.http_url in table.stdout
    nobody = thinghub("status", "--url", "http://127.0.0.1:1", "--wait", "0.5")
    assert nobody.returncode == EXIT_SERVER_GONE and "http://127.0.0.1:1" in nobody.stderr
    assert "Traceback" not in nobody.stderr


def _on_a_terminal(command: list[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (where progress bars show); (code, out, err)."""
    import pty

    leader, follower = pty.openpty()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    ) as process:
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, "the command did not end"
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the follower side closed: the command ended
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        out = process.stdout.read() if process.stdout else ""
        code = process.wait(10)
    os.close(leader)
    return code, out, seen.decode(errors="replace")


def test_migrate_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    data = tmp_path / "new"
    command = [sys.executable, "-m", "thinghub", "migrate", "--init", "--json"]
    code, out, err = _on_a_terminal([*command, "--data-dir", str(data)])
    assert code == 0, err
    ran = json.loads(out)["migrations"]
    assert ran >= 1 and (data / "thinghub.db").is_file()
    assert "migration" in err and "%" in err, err  # the bar: step, percentage, time left
    code, out, err = _on_a_terminal([*command, "--data-dir", str(data)])
    assert code == 0 and json.loads(out)["migrations"] == 0  # nothing left to run
