"""One MQTT 3.1.1 connection over TLS: thinghub's sans-IO ClientSession on an asyncio stream.

The session (thinghub.mqtt) holds the protocol; this adapter owns the socket, the keep-alive
timer and the callbacks. `connect()` returns once CONNACK 0 arrived (else raises
ConnectRefusedError); `run()` reads until the connection ends and then raises ConnectionError,
so the owner's reconnect loop sees every end the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from thinghub.mqtt import (
    ClientSession,
    Connacked,
    PingResponse,
    ProtocolViolation,
    PubackReceived,
    Publish,
    PublishReceived,
    SubackReceived,
)

__all__ = ["CONNECT_TIMEOUT_S", "ConnectRefusedError", "MqttLink"]

logger = logging.getLogger(__name__)

#: TCP + TLS + CONNACK must be done within this many seconds.
CONNECT_TIMEOUT_S = 20.0
#: Bytes read from the socket at a time.
READ_BYTES = 65536
#: The server drops a client silent for 1.5 keep-alives; ping at half of one.
PING_FRACTION = 0.5


class ConnectRefusedError(ConnectionError):
    """The server answered CONNACK with a non-zero return code."""

    def __init__(self, client_id: str, return_code: int) -> None:
        super().__init__(f"{client_id}: CONNACK refused with return code {return_code}")
        self.return_code = return_code


class MqttLink:
    """A connected client. Callbacks run on the loop, from the reader; keep them short."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        client_id: str,
        username: str,
        password: str | None,
        keepalive_s: int = 60,
        on_puback: Callable[[int], None] | None = None,
        on_publish: Callable[[Publish], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._username = username
        self._password = password
        self._keepalive_s = keepalive_s
        self._on_puback = on_puback
        self._on_publish = on_publish
        self.session = ClientSession()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.suback = asyncio.Event()

    async def connect(self) -> None:
        """Open TCP + TLS, send CONNECT, wait for CONNACK 0."""
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname
            )
            self._reader, self._writer = reader, writer
            password = None if self._password is None else self._password.encode()
            self.session.connect(
                self.client_id,
                username=self._username,
                password=password,
                keepalive_s=self._keepalive_s,
                clean_session=True,
            )
            await self._flush()
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    raise ConnectionError(f"{self.client_id}: closed before CONNACK")
                self.session.receive_data(data)
                event = self.session.next_event()
                if isinstance(event, Connacked):
                    if event.return_code:
                        raise ConnectRefusedError(self.client_id, event.return_code)
                    self._dispatch_pending()
                    return
                if isinstance(event, ProtocolViolation):
                    raise ConnectionError(f"{self.client_id}: {event.error}")

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)
            await self._writer.drain()

    def _dispatch_pending(self) -> None:
        while (event := self.session.next_event()) is not None:
            self._dispatch(event)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, PubackReceived):
            if self._on_puback is not None:
                self._on_puback(event.packet_id)
        elif isinstance(event, PublishReceived):
            if self._on_publish is not None:
                self._on_publish(event.publish)
        elif isinstance(event, SubackReceived):
            self.suback.set()
        elif isinstance(event, ProtocolViolation):
            raise ConnectionError(f"{self.client_id}: protocol violation: {event.error}")
        elif isinstance(event, PingResponse):
            pass

    async def run(self) -> None:
        """Read and dispatch until the connection ends; always ends by raising
        ConnectionError (or CancelledError)."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("connect() first")
        interval = max(1.0, self._keepalive_s * PING_FRACTION)
        silent = 0.0
        while True:
            try:
                async with asyncio.timeout(interval):
                    data = await reader.read(READ_BYTES)
            except TimeoutError:
                silent += interval
                if silent > self._keepalive_s * 1.5:
                    raise ConnectionError(f"{self.client_id}: server silent") from None
                self.session.ping()
                await self._flush()
                continue
            except (OSError, ssl.SSLError) as exc:
                raise ConnectionError(f"{self.client_id}: {exc!r}") from exc
            if not data:
                raise ConnectionError(f"{self.client_id}: closed by the server")
            silent = 0.0
            self.session.receive_data(data)
            self._dispatch_pending()
            await self._flush()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int | None:
        """Send a PUBLISH; its packet id (QoS 1) comes back in on_puback."""
        packet_id = self.session.publish(topic, payload, qos)
        try:
            await self._flush()
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(f"{self.client_id}: {exc!r}") from exc
        return packet_id

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self.session.subscribe(filters)
        await self._flush()

    async def close(self) -> None:
        """DISCONNECT (when still connected) and close the socket."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        with contextlib.suppress(ValueError, OSError, ssl.SSLError):
            self.session.disconnect()
            writer.write(self.session.data_to_send())
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(2):
                await writer.wait_closed()
