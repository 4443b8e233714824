"""Random and mutated packets at the live device port: only the bad connection closes."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from typing import Any

import pytest

from tests.e2e.mqtt_client import RawDevice, credentials, register
from tests.e2e.server import ServerProcess
from thinghub.mqtt import Connect, Publish, Subscribe, encode

pytestmark = pytest.mark.backend_agnostic

ROUNDS = 150
SEED = 20261123


def _valid_packets(device: dict[str, Any]) -> list[bytes]:
    username, password = credentials(device)
    did = device["id"]
    return [
        encode(Connect(did, username, password.encode(), 60, False)),
        encode(Publish(f"devices/{did}/messages/events/", b'{"t": 1}', 1, packet_id=7)),
        encode(Subscribe(3, (("$iothub/methods/POST/#", 1),))),
        encode(Publish("$iothub/twin/GET/?$rid=1", b" ", 0)),
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    match rng.randrange(5):
        case 0:  # flip bits
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        case 1:  # truncate
            del out[rng.randrange(1, len(out)) :]
        case 2:  # lie about the remaining length
            out[1] = rng.randrange(256)
        case 3:  # append garbage
            out += rng.randbytes(rng.randint(1, 64))
        case _:  # splice random bytes in the middle
            at = rng.randrange(len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)


async def _attack(port: int, ca: str, payloads: list[bytes]) -> None:
    context = ssl.create_default_context(cafile=ca)
    for payload in payloads:
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
        except (OSError, ssl.SSLError):
            continue
        try:
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(0.005)
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()
            try:
                async with asyncio.timeout(2):
                    await writer.wait_closed()
            except (Exception, TimeoutError):
                pass
    # Also raw TCP garbage before TLS, and a broken proxy line.
    for junk in (b"\x00" * 50, b"GET / HTTP/1.1\r\n\r\n", b"CONNECT\r\n\r\n", b"\x16\x03\x01zz"):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            await writer.drain()
            async with asyncio.timeout(5):
                await reader.read(100)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()


async def _run(server: ServerProcess, good: dict[str, Any], victim: dict[str, Any]) -> int:
    rng = random.Random(SEED)
    valid = _valid_packets(victim)
    payloads = [rng.randbytes(rng.randint(1, 300)) for _ in range(ROUNDS // 3)]
    payloads += [_mutate(rng, rng.choice(valid)) for _ in range(ROUNDS)]
    # Authenticated, then garbage: the CONNECT is good, what follows is not.
    payloads += [valid[0] + _mutate(rng, rng.choice(valid[1:])) for _ in range(ROUNDS // 3)]

    device = RawDevice(server.mqtt_port, server.ca_file)
    username, password = credentials(good)
    assert await device.connect(good["id"], username, password) == 0
    attack = asyncio.create_task(_attack(server.mqtt_port, server.ca_file, payloads))
    sent = 0
    while not attack.done():
        topic = f"devices/{good['id']}/messages/events/"
        device.publish(topic, json.dumps({"seq": sent}).encode())
        sent += 1
        await asyncio.sleep(0.01)
    await attack
    async with asyncio.timeout(30):
        while len(device.acked) < sent:
            await asyncio.sleep(0.01)
    assert not device.closed.is_set(), "the good device was disconnected by others' garbage"
    await device.close()
    return sent


def test_garbage_closes_only_its_own_connection(server: ServerProcess, admin: Any) -> None:
    good = register(admin, "fuzz")
    victim = register(admin, "fuzz")
    sent = asyncio.run(_run(server, good, victim))
    assert sent > 10
    stored = admin.get("/v1/telemetries", params={"deviceID": good["id"], "limit": 1000}).json()
    assert sorted(item["body"]["seq"] for item in stored) == list(range(sent))
    # The server is still healthy and logged no crash.
    assert admin.get("/healthz").json() == {"status": "ok"}
    assert "Traceback" not in server.log()
