"""The reference of the ux4iot fan-out benchmark: a bare `websockets` broadcast server.

`python -m bench.bare_ws` binds 127.0.0.1 on an ephemeral port, prints one line
`bare-ws ready {"host": ..., "port": ...}` and serves until SIGTERM or SIGINT (uvloop, one
process, as thinghub runs):

- `/client`: a subscriber; it gets every message, and sends nothing;
- `/device`: the source; each text frame it sends (a JSON object) goes to every subscriber,
  wrapped exactly as thinghub's Socket.IO `data` event frame is
  (`42/ux4iot,["data",{"deviceId":..., "timestamp":..., "telemetry": {...}}]`), encoded once,
  and sent with `websockets.broadcast` (no task per recipient).

So the load generator's work per frame is the same against both servers, and the ratio
measures thinghub's own work: MQTT over TLS, the store, the bus, sessions and Socket.IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

__all__ = ["main"]

DEVICE_ID = "bench-device"


def _frame(message: str) -> str:
    body = json.loads(message)
    ts = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
    payload = {"deviceId": DEVICE_ID, "timestamp": ts[:-6] + "Z", "telemetry": body}
    return "42/ux4iot," + json.dumps(["data", payload], separators=(",", ":"))


async def _serve() -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        if path == "/client":
            clients.add(ws)
            try:
                await ws.wait_closed()
            finally:
                clients.discard(ws)
        elif path == "/device":
            async for message in ws:
                broadcast(clients, _frame(str(message)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # No keepalive pings: a load generator busy reading a backlog must not be cut off.
    async with serve(
        handler, "127.0.0.1", 0, max_size=2**20, compression=None, ping_interval=None
    ) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        print("bare-ws ready " + json.dumps({"host": host, "port": port}), flush=True)
        await stop.wait()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve())


if __name__ == "__main__":
    main()
