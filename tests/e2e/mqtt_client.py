"""A small MQTT/TLS device client on thinghub's own codec, for raw-protocol e2e tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

import httpx

from thinghub.mqtt import (
    ClientSession,
    Connacked,
    PubackReceived,
    PublishReceived,
    SubackReceived,
)
from thinghub.security import sas


def register(client: httpx.Client, project: str = "raw", deployment: str = "d") -> dict[str, Any]:
    response = client.post(
        "/v1/devices", json={"name": "raw", "project": project, "deployment": deployment}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def credentials(
    device: dict[str, Any], host: str = "localhost", ttl: int = 3600
) -> tuple[str, str]:
    did = device["id"]
    key = device["credentials"]["symmetricKey"]["primaryKey"]
    token = sas.sign(key, f"{host}/devices/{did}", int(time.time()) + ttl)
    return f"{host}/{did}/?api-version=2021-04-12", token


class RawDevice:
    """Connects with TLS (trusting the hub CA) and speaks MQTT through ClientSession."""

    def __init__(self, port: int, ca_file: str) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=ca_file)
        self.session = ClientSession()
        self.acked: set[int] = set()
        self.subacked: set[int] = set()
        self.received: list[Any] = []
        self.connack: Connacked | None = None
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(
        self, client_id: str, username: str, password: str | None, clean: bool = False
    ) -> int:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context, server_hostname="localhost"
        )
        self._writer = writer
        self._task = asyncio.create_task(self._read(reader))
        self.session.connect(
            client_id, username, None if password is None else password.encode(), 60, clean
        )
        self.flush()
        async with asyncio.timeout(15):
            while self.connack is None and not self.closed.is_set():
                await asyncio.sleep(0.005)
        return -1 if self.connack is None else self.connack.return_code

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                self.session.receive_data(data)
                while (event := self.session.next_event()) is not None:
                    if isinstance(event, Connacked):
                        self.connack = event
                    elif isinstance(event, PubackReceived):
                        self.acked.add(event.packet_id)
                    elif isinstance(event, PublishReceived):
                        self.received.append(event.publish)
                    elif isinstance(event, SubackReceived):
                        self.subacked.add(event.packet_id)
                self.flush()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.closed.set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int | None:
        packet_id = self.session.publish(topic, payload, qos)
        self.flush()
        return packet_id

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """SUBSCRIBE and wait for the SUBACK (AssertionError if the connection closes)."""
        packet_id = self.session.subscribe([(topic_filter, qos)])
        self.flush()
        async with asyncio.timeout(15):
            while packet_id not in self.subacked and not self.closed.is_set():
                await asyncio.sleep(0.005)
        assert packet_id in self.subacked, f"no SUBACK for {topic_filter!r}"

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                async with asyncio.timeout(5):
                    await self._writer.wait_closed()
            except (Exception, TimeoutError):
                pass
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
