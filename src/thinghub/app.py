"""Composition root: the only module that picks concrete adapters and wires them together.

`ThingHub` is an async context manager: entering it creates the data directory, the CA, the
schema and the services, binds every listener (port 0 means ephemeral) and starts serving;
`addresses` then holds what was bound. Leaving it shuts down in this order, so a SIGTERM
loses nothing that was acknowledged and no bookkeeping runs against a closed store:

1. the device listener stops accepting and closes every device connection, and waits until
   each one has stored what it accepted and run its on_close bookkeeping (disconnect events,
   sessions, Wills);
2. the HTTP servers stop accepting and let requests in flight finish;
3. the background loops end: ingest writes everything still queued, delivery stops;
4. the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from thinghub import __version__
from thinghub.config import Settings
from thinghub.devices import http_ingest
from thinghub.devices.dps import Dps
from thinghub.devices.hub import Hub
from thinghub.devices.mqtt_server import ListenerLimits, MqttServer
from thinghub.devices.router import DeviceRouter
from thinghub.devices.throttle import ConnectLimiter
from thinghub.domain.errors import Error, NotFound
from thinghub.domain.model import Retention
from thinghub.faces import central, st
from thinghub.faces._disconnect import CancelOnDisconnect
from thinghub.faces._http import ErrorRenderer, OrjsonResponse, error_body
from thinghub.http_server import HttpLimits, protocol_class
from thinghub.security.ca import CertificateAuthority
from thinghub.services.bus import MemoryBus
from thinghub.services.clock import SystemClock
from thinghub.services.core import Core, CoreOptions
from thinghub.storage import open_stores
from thinghub.storage.migrate import upgrade

__all__ = ["FACES", "ThingHub"]

SHUTDOWN_GRACE_S = 10.0  # requests in flight at SIGTERM get this long to finish

logger = logging.getLogger(__name__)

# Faces that can be served at the root of their own port with --face-listen FACE=HOST:PORT.
FACES: dict[str, Callable[[Core], FastAPI]] = {"st": st.create_app, "central": central.create_app}
FACE_PREFIXES = {"st": "/v1", "central": "/central/api"}
# On a face's own port (--face-listen) it answers at `/` and at the prefix its real clients
# hard-code: ST AIoT Craft's `/v1/...`, IoT Central's `/api/...`.
NATIVE_PREFIXES = {"st": "/v1", "central": "/api"}


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: thinghub owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _address(sock: socket.socket, scheme: str | None = None) -> dict[str, Any]:
    host, port = sock.getsockname()[:2]
    out: dict[str, Any] = {"host": host, "port": port}
    if scheme:
        shown = f"[{host}]" if ":" in host else host
        out["url"] = f"{scheme}://{shown}:{port}"
    return out


def _parse_face_listen(item: str) -> tuple[str, str, int]:
    face, _, where = item.partition("=")
    host, _, port = where.rpartition(":")
    if face not in FACES or not host or not port.isdigit():
        raise ValueError(
            f"face_listen {item!r}: expected FACE=HOST:PORT with FACE one of {', '.join(FACES)}"
        )
    return face, host.strip("[]"), int(port)


def _render_default(error: Error, status: int) -> Response:
    return OrjsonResponse(error_body(error), status_code=status)


# Each face's error body: a path under a face's prefix that no route takes (one with a control
# character never even reaches the face's mount) still gets that face's shape.
FACE_RENDERERS: dict[str, ErrorRenderer] = {"st": _render_default, "central": central.render_error}


def _not_found_in(render_for: Callable[[str], ErrorRenderer]) -> Any:
    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        path = request.url.path
        return render_for(path)(NotFound(f"no route for {path}"), status)

    return not_found


def _root_renderer(path: str) -> ErrorRenderer:
    for face, prefix in FACE_PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return FACE_RENDERERS[face]
    return _render_default


def _always(render: ErrorRenderer) -> Callable[[str], ErrorRenderer]:
    return lambda _path: render


_not_found = _not_found_in(_root_renderer)


async def _crashed(request: Request, exc: Exception) -> Response:
    """A bug outside the faces (they answer their own): logged by the server, 500 here, and
    the connection ends after it (uvicorn closes it once the error has passed through)."""
    error = Error("internal error; it has been logged")
    error.code = "InternalError"
    return OrjsonResponse(error_body(error), status_code=500, headers={"Connection": "close"})


class ThingHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.addresses: dict[str, Any] = {}
        self.core: Core | None = None
        self.ca: CertificateAuthority | None = None
        self._servers: list[_Server] = []
        self._delivery: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._server_tasks: list[asyncio.Task[None]] = []
        self.mqtt: MqttServer | None = None
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> ThingHub:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        hostnames = [s.hub_hostname, *s.hostnames]
        self.ca = await asyncio.to_thread(
            CertificateAuthority.load_or_create,
            (s.data_dir / "certs").resolve(),
            hostnames=hostnames,
        )
        await asyncio.to_thread(upgrade, s.database_url)
        stores = open_stores(s)
        core = Core(
            stores,
            MemoryBus(),
            SystemClock(),
            CoreOptions(
                jwt_ttl_s=s.jwt_ttl_s,
                max_payload_bytes=s.max_payload_bytes,
                max_request_bytes=s.max_request_bytes,
                max_json_depth=s.max_json_depth,
                method_timeout_max_s=s.method_timeout_max_s,
                command_ttl_s=s.command_ttl_s,
                page_max=s.page_max,
                hub_hostname=s.hub_hostname,
                retention=Retention(
                    telemetry_days=s.retention_telemetry_days,
                    events_days=s.retention_events_days,
                ),
                retention_interval_s=s.retention_interval_s,
                retention_batch_rows=s.retention_batch_rows,
                public_url=s.public_url,
                ingest_queue_max_bytes=s.ingest_queue_max_bytes,
            ),
        )
        core.certificate_issuer = self.ca
        await core.start()
        self._exit.push_async_callback(stores.close)
        self.core = core
        account = await core.auth.ensure_account()
        if s.admin_token:
            await core.auth.bootstrap_admin_token(account, s.admin_token)

        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._exit.push_async_exit(tasks.__aexit__)
        self._exit.push_async_callback(self._shutdown)  # steps 1 to 3 of the order above
        self._delivery = tasks.create_task(core.commands.run(), name="commands.delivery")
        tasks.create_task(core.ingest.run(), name="ingest.batches")
        self._retention = tasks.create_task(core.retention.run(), name="retention.purge")

        hub = Hub(
            core,
            connects=ConnectLimiter(s.mqtt_device_connects_per_min, s.mqtt_device_connect_burst),
        )
        mqtt = MqttServer(
            DeviceRouter(hub, Dps(core, core.provisioning, s.hub_hostname)),
            self.ca.server_ssl_context(),
            s.host,
            s.mqtt_port,
            limits=ListenerLimits(
                max_connections=s.mqtt_max_connections,
                max_handshakes=s.mqtt_max_handshakes,
                handshake_timeout_s=s.mqtt_handshake_timeout_s,
                connect_timeout_s=s.mqtt_connect_timeout_s,
                max_inflight=s.mqtt_device_max_inflight,
                messages_per_s=s.mqtt_device_messages_per_s,
                bytes_per_s=s.mqtt_device_bytes_per_s,
            ),
            gate=core.ingest,
        )
        self.mqtt = mqtt  # set before start: _shutdown closes whatever was started
        mqtt_host, mqtt_port = await mqtt.start()
        self.addresses["mqtt"] = {"host": mqtt_host, "port": mqtt_port}

        http_sock = _bind(s.host, s.http_port)
        self.addresses["http"] = _address(http_sock, "http")
        self._serve(tasks, self._root_app(core), http_sock, "http")
        faces: dict[str, Any] = {}
        for item in s.face_listen:
            face, host, port = _parse_face_listen(item)
            sock = _bind(host, port)
            faces[face] = _address(sock, "http")
            app = FACES[face](core)
            not_found = _not_found_in(_always(FACE_RENDERERS[face]))
            own = Starlette(
                routes=[Mount(NATIVE_PREFIXES[face], app=app), Mount("/", app=app)],
                middleware=[Middleware(CancelOnDisconnect)],
                exception_handlers={404: not_found, 405: not_found, 500: _crashed},
            )
            self._serve(tasks, own, sock, f"face[{face}]")
        self.addresses.update(
            faces=faces,
            version=__version__,
            pid=os.getpid(),
            data_dir=str(s.data_dir.resolve()),
            database="postgresql" if s.is_postgres else "sqlite",
            ca_file=str(self.ca.ca_path),
            id_scope=account.id_scope,
            hub_hostname=s.hub_hostname,
        )
        await self._wait_started()

    def _root_app(self, core: Core) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/", self._index, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            *http_ingest.routes(core),
        ]
        routes += [Mount(FACE_PREFIXES[name], app=factory(core)) for name, factory in FACES.items()]
        return Starlette(
            routes=routes,
            exception_handlers={404: _not_found, 405: _not_found, 500: _crashed},
            middleware=[Middleware(CancelOnDisconnect)],
        )

    async def _index(self, request: Request) -> Response:
        return OrjsonResponse(
            {
                "name": "thinghub",
                "version": __version__,
                "faces": {name: FACE_PREFIXES[name] for name in FACES},
                "docs": {name: FACE_PREFIXES[name] + "/docs" for name in FACES},
            }
        )

    async def _health(self, request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    def _serve(self, tasks: asyncio.TaskGroup, app: Any, sock: socket.socket, name: str) -> None:
        s = self.settings
        limits = HttpLimits(
            max_head_bytes=s.http_max_header_bytes,
            max_headers=s.http_max_headers,
            head_timeout_s=s.http_header_timeout_s,
            body_timeout_s=s.http_body_timeout_s,
            keepalive_timeout_s=s.http_keepalive_timeout_s,
            max_connections=s.http_max_connections,
        )
        config = uvicorn.Config(
            app,
            http=protocol_class(limits),  # httptools, with the limits of docs/limits.md
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # no proxy in front by default; saves a layer per request
            timeout_graceful_shutdown=5,
            limit_concurrency=None,
            timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
            backlog=2048,
        )
        server = _Server(config)
        self._servers.append(server)
        self._server_tasks.append(
            tasks.create_task(server.serve(sockets=[sock]), name=f"{name}.serve")
        )

    async def _wait_started(self) -> None:
        async with asyncio.timeout(30):
            # uvicorn exposes `started` as a flag only, so poll it (bounded by the timeout).
            while not all(server.started for server in self._servers):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    async def _shutdown(self) -> None:
        """Devices first (their on_close needs every service), then HTTP, then the loops:
        the ingest loop writes everything queued before it returns."""
        if self.mqtt is not None:
            await self.mqtt.close()
        for server in self._servers:
            server.should_exit = True
        if self._server_tasks:
            await asyncio.wait(self._server_tasks, timeout=SHUTDOWN_GRACE_S)
        assert self.core is not None
        self.core.ingest.stop()
        if self._delivery is not None:
            self._delivery.cancel()
        if self._retention is not None:
            self._retention.cancel()


def write_ready_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
