"""`thinghub serve` and the other commands as a user runs them: zero-config start, the ready
file, the CA, clean stops on SIGTERM and SIGINT that keep what was acknowledged, users from the
CLI, and `thinghub simulate` against a live server."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers_st import create_device, device_sas, post_telemetry
from tests.e2e.server import ServerProcess, running

pytestmark = pytest.mark.backend_agnostic

CLI_TIMEOUT_S = 60


def _thinghub(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "thinghub", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _stored_bodies(api: httpx.Client, device_id: str) -> list[Any]:
    bodies: list[Any] = []
    params: dict[str, Any] = {"deviceID": device_id, "limit": 1000}
    while True:
        response = api.get("/v1/telemetries", params=params)
        assert response.status_code == 200, response.text
        bodies += [item["body"] for item in response.json()]
        cursor = response.headers.get("x-continuation-token")
        if not cursor:
            return bodies
        params = {**params, "continuationToken": cursor}


def test_zero_config_start_makes_its_data_directory_and_ready_file(tmp_path: Path) -> None:
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    ready = tmp_path / "ready.json"
    proc = ServerProcess(logs, "--ready-file", str(ready), cwd=work)
    with running(proc):
        data = work / "thinghub-data"
        assert (data / "thinghub.db").is_file()
        ca_file = data / "certs" / "ca.pem"
        assert ca_file.is_file()
        # The ready file holds the ready line's JSON: every bound address.
        assert json.loads(ready.read_text()) == proc.addresses
        assert proc.addresses["http"]["host"] == "127.0.0.1"
        assert proc.addresses["mqtt"]["host"] == "127.0.0.1"
        assert proc.addresses["database"] == "sqlite"
        assert Path(proc.addresses["data_dir"]).resolve() == data.resolve()
        assert Path(proc.addresses["ca_file"]).resolve() == ca_file.resolve()
        # THINGHUB_ADMIN_TOKEN made an admin token on this first start.
        with proc.client() as api:
            assert api.get("/v1/devices").json() == []
            assert api.post("/v1/tokens", json={"role": "viewer"}).status_code == 201
        assert httpx.get(f"{proc.http_url}/healthz", timeout=10).json() == {"status": "ok"}

        # `thinghub ca` (in the same directory) prints the CA the device port's TLS chains to.
        pem = _thinghub("ca", cwd=work)
        assert pem == ca_file.read_text()
        context = ssl.create_default_context(cadata=pem)
        with (
            socket.create_connection(("127.0.0.1", proc.mqtt_port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def _post_until_stopped(
    url: str, device: dict[str, Any], worker: int, acknowledged: list[int]
) -> None:
    """Send telemetry as fast as the server answers; note every seq it acknowledged (204)."""
    sas = device_sas(device)
    seq = 0
    while True:
        try:
            response = post_telemetry(url, device["id"], {"w": worker, "seq": seq}, sas)
        except httpx.HTTPError:
            return  # the server went away
        if response.status_code != 204:
            return  # shutting down: refused, not acknowledged
        acknowledged.append(worker * 1_000_000 + seq)
        seq += 1


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_the_server_cleanly_and_keeps_every_acknowledged_message(
    start_server: Callable[..., ServerProcess], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    proc = start_server(data_dir=data_dir)
    with proc.client() as api:
        device = create_device(api, "sig", "sig-project", "sig-deployment")
    acknowledged: list[int] = []
    workers = [
        threading.Thread(target=_post_until_stopped, args=(proc.http_url, device, w, acknowledged))
        for w in range(6)
    ]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acknowledged) >= 200, "the server acknowledged too little to prove anything"
    assert proc.proc is not None
    proc.proc.send_signal(stop_signal)  # mid-stream: requests are in flight
    assert proc.proc.wait(30) == 0, proc.log()
    for worker in workers:
        worker.join(30)
    assert "Traceback" not in proc.log(), proc.log()

    again = start_server(data_dir=data_dir, admin_token=proc.admin_token)
    with again.client() as api:
        stored = {body["w"] * 1_000_000 + body["seq"] for body in _stored_bodies(api, device["id"])}
        missing = set(acknowledged) - stored
        assert not missing, f"acknowledged but not stored after a clean stop: {sorted(missing)[:5]}"
        assert api.get(f"/v1/devices/{device['id']}").status_code == 200


def test_users_made_by_the_cli_sign_in(server: ServerProcess) -> None:
    name = f"cli-user-{time.monotonic_ns()}"
    server.cli("user", "create", name, "--password", "long enough pass", "--role", "operator")
    grant = httpx.post(
        f"{server.http_url}/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": "long enough pass"},
        timeout=30,
    )
    assert grant.status_code == 200, grant.text
    headers = {"Authorization": f"Bearer {grant.json()['access_token']}"}
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=30) as api:
        made = api.post("/v1/devices", json={"name": "n", "project": "cli", "deployment": "d"})
        assert made.status_code == 200, made.text  # operators write
        assert api.post("/v1/tokens", json={"role": "viewer"}).status_code == 403  # not admin
    wrong = httpx.post(
        f"{server.http_url}/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": "not the password"},
        timeout=30,
    )
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"] == "invalid_grant"


def test_simulate_registers_devices_that_send_and_answer_methods(server: ServerProcess) -> None:
    project = f"sim-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "thinghub", "simulate",
        "--url", server.http_url, "--token", server.admin_token,
        "--mqtt", f"127.0.0.1:{server.mqtt_port}", "--ca", server.ca_file,
        "--devices", "3", "--rate", "20", "--duration", "8", "--project", project, "--json",
    ]  # fmt: skip
    simulation = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with server.client() as api:
            deadline = time.monotonic() + 30
            devices: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                devices = api.get("/v1/devices", params={"projectID": project}).json()
                if len(devices) == 3 and all(d["connectionState"] == "Connected" for d in devices):
                    break
                time.sleep(0.1)
            assert len(devices) == 3, devices
            assert {d["connectionState"] for d in devices} == {"Connected"}
            answer = api.post(
                f"/v1/devices/{devices[0]['id']}/method", json={"name": "ping", "payload": {}}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"ok": True}
            out, err = simulation.communicate(timeout=60)
            assert simulation.returncode == 0, err
            result = json.loads(out)
            assert result["devices"] == result["connected"] == 3
            assert result["failed"] == 0
            assert result["errors"] == []
            assert result["methods"] >= 1
            assert 0 < result["acked"] <= result["sent"]
            stored = sum(len(_stored_bodies(api, d["id"])) for d in devices)
            assert result["acked"] <= stored <= result["sent"]
    finally:
        if simulation.poll() is None:
            simulation.kill()
            simulation.communicate(timeout=10)
