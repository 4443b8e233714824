"""The sockets under the iTwin socket API: plain TCP (4200), WebSocket on its own port (4201,
path `/`) and WebSocket at `/itwin/ws` on the HTTP port.

Each adapter turns its socket into the values an RpcConnection serves and into a Transport:

- TCP: requests are JSON objects back to back with no
  delimiter, split by framing.FrameDecoder as bytes arrive; replies are compact objects with
  nothing between them (framing.encode_frame). Bytes that are no JSON value get -32700 and
  the connection closes: a byte stream has no point to resynchronise at.
- WebSocket: one JSON-RPC object per text frame each way; a message that is no JSON value
  gets its error and the connection goes on. The own-port listener runs the `websockets`
  server; `/itwin/ws` is an ASGI WebSocket route served by the HTTP server.

Writes: `send` waits until the socket's buffer is under its high-water mark (streams and
answers: backpressure); `push` writes at once unless the buffer holds PUSH_BUFFER_BYTES
already, and then drops the push (subscriptions: a client that does not read cannot make the
server hold its pushes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from thinghub.faces.itwin.connection import RpcConnection, TransportClosed
from thinghub.faces.itwin.framing import (
    MAX_FRAME_BYTES,
    NEED_DATA,
    FrameDecoder,
    FrameError,
    decode_message,
)

__all__ = [
    "PUSH_BUFFER_BYTES",
    "READ_CHUNK_BYTES",
    "AsgiWebSocketTransport",
    "TcpListener",
    "TcpTransport",
    "WebSocketListener",
    "WebSocketTransport",
    "serve_asgi_websocket",
]

logger = logging.getLogger(__name__)

# A client's unsent pushes beyond this many bytes are dropped (about 25 data chunks of 1,000
# points, or 10,000 single-observation pushes).
PUSH_BUFFER_BYTES: Final = 1024 * 1024
READ_CHUNK_BYTES: Final = 64 * 1024
# A WebSocket message may hold one request of up to MAX_FRAME_BYTES, with some whitespace.
MAX_MESSAGE_BYTES: Final = MAX_FRAME_BYTES + 2048
TLS_HANDSHAKE_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 5.0

ConnectionFactory = Callable[[Any], RpcConnection]


# -- TCP --------------------------------------------------------------------------------------


class TcpTransport:
    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self._writer = writer
        self._peer = peer
        self.dropped = 0

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def delimits_messages(self) -> bool:
        return False  # a byte stream: readers count braces (framing.encode_frame)

    async def send(self, frame: bytes) -> None:
        if self._writer.is_closing():
            raise TransportClosed(self._peer)
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise TransportClosed(self._peer) from exc

    def push(self, frame: bytes) -> bool:
        transport = self._writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > PUSH_BUFFER_BYTES:
            self.dropped += 1
            return False
        transport.write(frame)
        return True

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()


async def _tcp_values(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """Decoded values as bytes arrive; a FrameError last when the bytes are not JSON."""
    decoder = FrameDecoder()
    while True:
        try:
            data = await reader.read(READ_CHUNK_BYTES)
        except (ConnectionError, OSError):
            return
        if not data:
            return
        decoder.receive_data(data)
        while True:
            try:
                value = decoder.next_frame()
            except FrameError as exc:
                yield exc
                return
            if value is NEED_DATA:
                break
            yield value


class TcpListener:
    """JSON-RPC over plain TCP (or TLS), one RpcConnection per client."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        connection: Callable[[TcpTransport], RpcConnection],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._name = name
        self.host = host
        self.port = port
        self._connection = connection
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            ssl=self._tls,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if self._tls else None,
            limit=READ_CHUNK_BYTES,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_of(writer.get_extra_info("peername"))
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._clients.add(writer)
        transport = TcpTransport(writer, peer)
        logger.debug("itwin tcp: %s connected", peer)
        try:
            await self._connection(transport).serve(_tcp_values(reader), close_on_frame_error=True)
        except Exception:
            logger.exception("itwin tcp: the connection of %s failed", peer)
        finally:
            self._clients.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            await transport.close()
            logger.debug("itwin tcp: %s disconnected", peer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._clients):
            writer.close()  # the reader sees EOF and the connection ends
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=CLOSE_TIMEOUT_S)


# -- WebSocket (own port) ---------------------------------------------------------------------


class WebSocketTransport:
    def __init__(self, connection: ServerConnection, peer: str) -> None:
        self._conn = connection
        self._peer = peer
        self.dropped = 0

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def delimits_messages(self) -> bool:
        return True  # one message a text frame

    async def send(self, frame: bytes) -> None:
        try:
            await self._conn.send(frame, text=True)
        except ConnectionClosed as exc:
            raise TransportClosed(self._peer) from exc

    def push(self, frame: bytes) -> bool:
        conn = self._conn
        if (
            conn.protocol.state is not State.OPEN
            or conn.send_in_progress is not None
            or conn.transport.get_write_buffer_size() > PUSH_BUFFER_BYTES
        ):
            self.dropped += 1
            return False
        try:  # as websockets.broadcast writes: frame it, hand it to the transport
            conn.protocol.send_text(frame)
            conn.send_data()
        except Exception:  # the connection is failing; its reader sees it
            self.dropped += 1
            return False
        return True

    async def close(self) -> None:
        await self._conn.close()


async def _ws_values(connection: ServerConnection) -> AsyncIterator[Any]:
    try:
        async for message in connection:
            try:
                yield decode_message(message)
            except FrameError as exc:
                yield exc
    except ConnectionClosed:
        return


class WebSocketListener:
    """JSON-RPC over WebSocket on a port of its own (path `/`; any path is served)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        connection: Callable[[WebSocketTransport], RpcConnection],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._name = name
        self.host = host
        self.port = port
        self._connection = connection
        self._tls = tls
        self._server: Server | None = None

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> tuple[str, int]:
        self._server = await serve(
            self._serve,
            self.host,
            self.port,
            ssl=self._tls,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            ping_interval=None,  # clients keep alive with `time` (seed, "Utilities")
            close_timeout=CLOSE_TIMEOUT_S,
            server_header=None,
        )
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return str(host), int(port)

    async def _serve(self, connection: ServerConnection) -> None:
        peer = _peer_of(connection.remote_address)
        transport = WebSocketTransport(connection, peer)
        try:
            await self._connection(transport).serve(
                _ws_values(connection), close_on_frame_error=False
            )
        except Exception:
            logger.exception("itwin ws: the connection of %s failed", peer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- WebSocket (ASGI, on the HTTP port) -------------------------------------------------------


class AsgiWebSocketTransport:
    """An ASGI WebSocket: sends go through a queue its writer task empties, so `push` can
    return at once and `send` waits while the queue is over PUSH_BUFFER_BYTES."""

    def __init__(self, websocket: WebSocket, peer: str) -> None:
        self._ws = websocket
        self._peer = peer
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self.dropped = 0

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def delimits_messages(self) -> bool:
        return True  # one message a text frame

    def _put(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._queued += len(frame)
        if self._queued > PUSH_BUFFER_BYTES:
            self._room.clear()
        self._wake.set()

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise TransportClosed(self._peer)
        await self._room.wait()
        if self._closed:
            raise TransportClosed(self._peer)
        self._put(frame)

    def push(self, frame: bytes) -> bool:
        if self._closed or self._queued > PUSH_BUFFER_BYTES:
            self.dropped += 1
            return False
        self._put(frame)
        return True

    async def write_loop(self) -> None:
        """Write what is queued, until close()."""
        try:
            while True:
                while self._queue:
                    frame = self._queue.popleft()
                    self._queued -= len(frame)
                    if self._queued <= PUSH_BUFFER_BYTES:
                        self._room.set()
                    await self._ws.send_text(frame.decode("utf-8"))
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client left
        finally:
            self._closed = True
            self._room.set()  # a waiting send() sees the close

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._room.set()


async def _asgi_values(websocket: WebSocket) -> AsyncIterator[Any]:
    while True:
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is None:
            continue
        try:
            yield decode_message(data)
        except FrameError as exc:
            yield exc


async def serve_asgi_websocket(
    websocket: WebSocket, connection: Callable[[AsgiWebSocketTransport], RpcConnection]
) -> None:
    """Serve one ASGI WebSocket (the `/itwin/ws` route)."""
    await websocket.accept()
    client = websocket.client
    peer = f"{client.host}:{client.port}" if client else "?"
    transport = AsgiWebSocketTransport(websocket, peer)
    try:
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(transport.write_loop(), name=f"itwin.ws-writer[{peer}]")
            try:
                await connection(transport).serve(
                    _asgi_values(websocket), close_on_frame_error=False
                )
            finally:
                await transport.close()
                await writer
    except Exception:
        logger.exception("itwin ws: the connection of %s failed", peer)
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await websocket.close()


def _peer_of(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return "?"
