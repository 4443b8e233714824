"""The WebSocket bridge `/ws/port/N`: an instrument's bytes to every client, and back.

Byte-transparent both ways. What the instrument sends goes to every connected client as it
arrives: a text frame when the chunk is valid UTF-8, else a binary frame (`?frames=binary`
makes every frame binary); the payloads, joined, are exactly the instrument's bytes. What a
client sends, text (as UTF-8) or binary, is written to the instrument unchanged. A port that is
unknown or whose deviceConnection is false refuses the handshake (403); setting
deviceConnection to false closes its clients (code 4000, with the reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from .port_config import PortConfigError, check_port_number
from .ports import Listener, PortManager, PortNotConnectedError

__all__ = ["CLOSE_PORT_GONE", "port_socket"]

logger = logging.getLogger(__name__)

#: Close code when the server ends the bridge (port disabled, removed, client too slow).
CLOSE_PORT_GONE = 4000


class _ClientGone(Exception):
    pass


def port_socket(manager: PortManager) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        try:
            number = check_port_number(websocket.path_params["number"])
        except PortConfigError:
            await websocket.close(code=1008)
            return
        port = manager.ports.get(number)
        if port is None or not manager.state.device_connection(number):
            await websocket.close(code=1008)
            return
        binary_only = websocket.query_params.get("frames") == "binary"
        await websocket.accept()
        listener = Listener()
        port.listeners.add(listener)
        logger.info("ws port %d: client %s connected", number, websocket.client)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    _to_client(websocket, listener, binary_only), name=f"ws[{number}].out"
                )
                tasks.create_task(
                    _to_port(websocket, manager, number, listener), name=f"ws[{number}].in"
                )
        except* _ClientGone:
            pass
        except* (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            current = manager.ports.get(number)
            for holder in (port, current):
                if holder is not None:
                    holder.listeners.discard(listener)
            logger.info("ws port %d: client %s gone", number, websocket.client)

    return endpoint


async def _to_client(websocket: WebSocket, listener: Listener, binary_only: bool) -> None:
    while (data := await listener.get()) is not None:
        if binary_only:
            await websocket.send_bytes(data)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await websocket.send_bytes(data)
        else:
            await websocket.send_text(text)
    reason = (listener.closed_reason or "closed")[:120]
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code=CLOSE_PORT_GONE, reason=reason)
    raise _ClientGone


async def _to_port(
    websocket: WebSocket, manager: PortManager, number: int, listener: Listener
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            listener.close("client disconnected")
            raise _ClientGone
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode("utf-8")
        port = manager.ports.get(number)
        if port is None or not data:
            continue
        try:
            await port.write(data)
        except PortNotConnectedError as exc:
            logger.info("ws port %d: %d bytes from a client dropped: %s", number, len(data), exc)
