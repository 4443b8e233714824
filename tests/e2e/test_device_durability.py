"""An acknowledged QoS 1 message survives `kill -9`, and redelivery stores it exactly once.

Run on both backends: SQLite in the data directory, and PostgreSQL (the session's real server,
a database of its own) where telemetry goes through the COPY batcher.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mqtt_client import RawDevice, credentials, register
from tests.e2e.server import ServerProcess
from tests.pg import create_database, drop_database

DEVICES = 8
MESSAGES = 300  # per device; the kill lands mid-stream


def _telemetry_seqs(client: httpx.Client, device_id: str) -> list[int]:
    seqs: list[int] = []
    token = None
    while True:
        params: dict[str, Any] = {"deviceID": device_id, "limit": 1000}
        if token:
            params["continuationToken"] = token
        response = client.get("/v1/telemetries", params=params)
        assert response.status_code == 200, response.text
        seqs += [item["body"]["seq"] for item in response.json()]
        token = response.headers.get("x-continuation-token")
        if not token:
            return seqs


async def _blast(
    port: int, ca: str, devices: list[dict[str, Any]], proc: ServerProcess
) -> dict[str, dict[int, int]]:
    """Publish QoS 1 from every device; kill -9 the server once a third is acked.

    Returns per device {packet id: seq} of the messages whose PUBACK arrived.
    """
    clients = []
    sent: list[dict[int, int]] = []
    for device in devices:
        raw = RawDevice(port, ca)
        username, password = credentials(device)
        assert await raw.connect(device["id"], username, password) == 0
        clients.append(raw)
        sent.append({})
    killed = False
    for seq in range(MESSAGES):
        for raw, device, ids in zip(clients, devices, sent, strict=True):
            if raw.closed.is_set():
                continue
            body = json.dumps({"seq": seq, "temperature": seq % 40}).encode()
            topic = (
                f"devices/{device['id']}/messages/events/"
                f"%24.mid={device['id']}-{seq}&%24.ct=application%2Fjson"
            )
            packet_id = raw.publish(topic, body)
            assert packet_id is not None
            ids[packet_id] = seq
        await asyncio.sleep(0.002)
        acked = sum(len(r.acked) for r in clients)
        if not killed and acked >= DEVICES * MESSAGES // 3:
            proc.kill()  # SIGKILL: no shutdown, no flush
            killed = True
    if not killed:  # everything is written; kill while the rest is still in flight
        async with asyncio.timeout(60):
            while sum(len(r.acked) for r in clients) < DEVICES * MESSAGES // 3:
                await asyncio.sleep(0.001)
        proc.kill()
    in_flight = DEVICES * MESSAGES - sum(len(r.acked) for r in clients)
    assert in_flight > 0, "nothing was in flight at the kill: the test proves nothing"
    await asyncio.sleep(0.3)
    result = {}
    for raw, device, ids in zip(clients, devices, sent, strict=True):
        result[device["id"]] = {pid: ids[pid] for pid in raw.acked if pid in ids}
        await raw.close()
    return result


async def _redeliver(port: int, ca: str, device: dict[str, Any], seqs: list[int]) -> None:
    raw = RawDevice(port, ca)
    username, password = credentials(device)
    assert await raw.connect(device["id"], username, password) == 0
    for seq in seqs:
        topic = (
            f"devices/{device['id']}/messages/events/"
            f"%24.mid={device['id']}-{seq}&%24.ct=application%2Fjson"
        )
        raw.publish(topic, json.dumps({"seq": seq, "temperature": seq % 40}).encode())
    async with asyncio.timeout(30):
        while len(raw.acked) < len(seqs):
            await asyncio.sleep(0.01)
    await raw.close()


# It runs itself on both backends (database_args): the PostgreSQL pass of `make test` would
# only repeat it.
pytestmark = [pytest.mark.backend_agnostic]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_args(request: pytest.FixtureRequest) -> Iterator[tuple[str, ...]]:
    """Server arguments choosing the backend: none for SQLite, --database for PostgreSQL."""
    if request.param == "sqlite":
        yield ()
        return
    dsn = create_database(request.getfixturevalue("postgres_dsn"), "thinghub_e2e_crash")
    yield ("--database", dsn)
    drop_database(dsn)


def test_kill_minus_nine_loses_no_acknowledged_message(
    database_args: tuple[str, ...], start_server: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "crash"
    proc = start_server(*database_args, data_dir=data_dir)
    with proc.client() as client:
        devices = [register(client, "crash") for _ in range(DEVICES)]
    acked = asyncio.run(_blast(proc.mqtt_port, proc.ca_file, devices, proc))
    total_acked = sum(len(v) for v in acked.values())
    assert total_acked >= DEVICES * MESSAGES // 3

    # Same data directory, same admin token: the restarted server sees the committed rows.
    again = start_server(*database_args, data_dir=data_dir, admin_token=proc.admin_token)
    with again.client() as client:
        for device in devices:
            stored = _telemetry_seqs(client, device["id"])
            missing = set(acked[device["id"]].values()) - set(stored)
            assert not missing, f"acknowledged but lost after kill -9: {sorted(missing)[:10]}"
            assert len(stored) == len(set(stored)), "a message was stored twice"

        # The device redelivers everything (acked or not) with the same message ids:
        # every message ends up stored exactly once.
        for device in devices:
            asyncio.run(_redeliver(again.mqtt_port, again.ca_file, device, list(range(MESSAGES))))
        for device in devices:
            stored = _telemetry_seqs(client, device["id"])
            assert sorted(stored) == list(range(MESSAGES)), "not exactly once after redelivery"
