"""The reference server: a bare Starlette hello-world served exactly the way thinghub serves HTTP.

`python -m bench.bare_app` binds 127.0.0.1 on an ephemeral port, prints one line
`bare ready {"host": ..., "port": ...}` and serves until SIGTERM or SIGINT. The uvicorn options
mirror thinghub.app.ThingHub._serve (httptools, uvloop, one process, no access log, no server
header, backlog 2048, our own pre-bound socket), so the ratio thinghub / bare measures thinghub's
own work rather than differences in server setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections.abc import Generator

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["create_app", "main"]

BACKLOG = 2048  # the same listen backlog thinghub uses


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling, as in thinghub.app: we set should_exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


async def ingest(request: Request) -> Response:
    # Read the body like thinghub's ingest does, then acknowledge without doing anything else.
    await request.body()
    return Response(status_code=204)


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/hello", hello, methods=["GET"]),
            Route("/ingest", ingest, methods=["POST"]),
        ]
    )


async def serve(host: str = "127.0.0.1") -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    config = uvicorn.Config(
        create_app(),
        http="httptools",
        loop="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        limit_concurrency=None,
        backlog=BACKLOG,
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="bare.serve")
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    bound_host, port = sock.getsockname()[:2]
    print("bare ready " + json.dumps({"host": bound_host, "port": port}), flush=True)
    await task


def main() -> None:
    uvloop.run(serve())


if __name__ == "__main__":
    main()
