"""Face registration: how an API face plugs into the server, whatever its protocol.

A face is one `Face` value in `thinghub.faces.FACES`. The composition root (app.py) calls
`build(FaceContext)` and serves what the `FaceParts` hold:

- `app`: an ASGI app (REST, WebSocket routes, a Socket.IO server) mounted at `prefix` on the
  shared HTTP port; with `--face-listen FACE=HOST:PORT` also at `/` and at `native_prefix`
  of a port of the face's own, for clients with hard-coded paths;
- `root_routes`: routes at the root of the HTTP port (`/connect/token`, `/socket.io/`);
- `listeners`: servers on ports of the face's own (JSON-RPC over TCP, an MQTT dialect):
  started after the HTTP listeners bind, each reporting its address under its name in the
  ready line, closed with the HTTP servers at shutdown. The settings of their ports go in
  `Face.listen_ports`, so that start-up checks them before it creates anything.
- `workers`: background work of the face (a feed of live events, a sweeper of expired
  sessions): `run()` runs in the server's TaskGroup from start until it is cancelled at
  shutdown; `stop()` is awaited first, before the HTTP servers stop, to end long-lived client
  connections (Socket.IO sockets, long polls) that would otherwise hold the shutdown up.

`build` only constructs (it may be called more than once: once for the shared port and once
per `--face-listen` port); nothing runs until app.py serves the app or starts a listener.
Only the listeners and workers of the first build are started. What the builds of one face
must share (one Socket.IO server for the shared port and the face's own port, its sessions)
they keep in `FaceContext.shared`, which lives as long as the server.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.client import Client
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from thinghub.config import Settings
from thinghub.faces._http import ErrorRenderer
from thinghub.fast_path import FastRoute
from thinghub.ports import Clock
from thinghub.services.core import Services

__all__ = ["Face", "FaceContext", "FaceParts", "Listener", "Worker"]


class Listener(Protocol):
    """A server on a port of its own. `name` keys its address in the ready line
    ("itwin_tcp"); `start` binds (port 0: ephemeral) and returns (host, port)."""

    @property
    def name(self) -> str: ...

    async def start(self) -> tuple[str, int]: ...

    async def close(self) -> None: ...


class Worker(Protocol):
    """Background work of a face. `run` runs in the server's TaskGroup until it is cancelled
    (shutdown, step 3); `stop` is awaited at shutdown before the HTTP servers stop (step 2)."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FaceContext:
    """What a face is built from: the services (its only door to the core), the settings,
    the server TLS context for listeners that speak TLS, the clock for the face's own
    bookkeeping (session expiry; a face reads the time nowhere else), and the server's
    bound addresses (the ready line's JSON, complete once the server is up: read it per
    request, not at build time).

    `shared` is one dict per server, kept across the builds of every face: a face keeps there,
    under its own name, what its builds construct once and share.
    """

    services: Services
    settings: Settings
    server_ssl: Callable[[], ssl.SSLContext]
    clock: Clock
    addresses: Callable[[], Mapping[str, Any]] = field(default=lambda: {})
    shared: dict[str, Any] = field(default_factory=dict)
    # One of several nodes (--bus nats://...): the cluster's NATS connection, where a face
    # keeps what every node must see (ux4iot sessions), and this node's id. None on a lone node.
    nats: Client | None = None
    node_id: str = ""
    node_boot: str = ""  # this run of the node
    node_alive: Callable[[str, str], Awaitable[bool]] | None = None  # (node id, run) alive?


@dataclass(frozen=True, slots=True)
class FaceParts:
    app: ASGIApp | None = None
    root_routes: tuple[BaseRoute, ...] = ()
    listeners: tuple[Listener, ...] = ()
    workers: tuple[Worker, ...] = ()
    # Open client connections the face counts itself, by kind ({"socketio": 12}), read when
    # /metrics is scraped (thinghub_face_connections); None: it counts none.
    connections: Callable[[], Mapping[str, int]] | None = None
    # Read routes of `app` answered before the HTTP port's routing when all goes well (see
    # thinghub.fast_path): only on the shared port, under `prefix`.
    fast_routes: tuple[FastRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class Face:
    name: str  # "st", "central", ...: the key of --face-listen and of the `/` index
    prefix: str  # where `app` is mounted on the shared HTTP port ("/v1")
    native_prefix: str  # its own port also answers here ("/api"); "" for only `/`
    build: Callable[[FaceContext], FaceParts]
    # The error body of a path under `prefix` that no route takes (404, 405); None: the
    # default {"error": {...}} shape.
    render_error: ErrorRenderer | None = None
    docs: str | None = "/docs"  # its API documentation, under `prefix`; None: none
    # The settings holding the ports its own `listeners` bind on `host` ("itwin_tcp_port"):
    # `thinghub serve` checks each is free before it creates anything, and a busy one is
    # reported with the setting that moves it.
    listen_ports: tuple[str, ...] = ()
    # Reference pages besides the OpenAPI ones ((title, path under `prefix`): a JSON-RPC
    # method table, the Socket.IO events), listed on the server's /docs page and in `/`.
    references: tuple[tuple[str, str], ...] = ()
