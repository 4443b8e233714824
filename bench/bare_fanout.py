"""The fan-out reference: a bare `websockets` server broadcasting one frame to every client.

`python -m bench.bare_fanout --rate 1000 --size 86` listens on an ephemeral port, prints
`bare_fanout ready {"host", "port"}`, and from then on sends a text frame of `--size` bytes
to every connected client `--rate` times a second with `websockets.broadcast` (the library's
fastest way: no await per client, slow clients skipped). It is what bench.itwin compares the
iTwin face's subscribeData fan-out with: the same frames, the same rate, the same clients.
SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def main(rate: float, size: int) -> None:
    clients: set[ServerConnection] = set()
    frame = ("x" * size).encode()

    async def handler(connection: ServerConnection) -> None:
        clients.add(connection)
        try:
            await connection.wait_closed()
        finally:
            clients.discard(connection)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(
        handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=2**20
    ) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        print("bare_fanout ready " + json.dumps({"host": host, "port": port}), flush=True)
        interval = 1.0 / rate
        start, sent = time.perf_counter(), 0
        while not stop.is_set():
            broadcast(clients, frame, text=True)
            sent += 1
            delay = start + sent * interval - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bare_fanout")
    parser.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    parser.add_argument("--size", type=int, default=86, help="bytes per frame")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.rate, args.size))
    except ImportError:  # pragma: no cover - uvloop is a thinghub dependency on Linux
        asyncio.run(main(args.rate, args.size))
