"""Composition root: the only module that picks concrete adapters and wires them together.

`ThingHub` is an async context manager: entering it creates the data directory, the CA, the
schema and the services, binds every listener (port 0 means ephemeral) and starts serving;
`addresses` then holds what was bound. Leaving it shuts down in this order, so a SIGTERM
loses nothing that was acknowledged and no bookkeeping runs against a closed store:

1. the device listener stops accepting and closes every device connection, and waits until
   each one has stored what it accepted and run its on_close bookkeeping (disconnect events,
   sessions, Wills);
2. the faces' workers stop (they end long-lived client connections such as Socket.IO
   sockets), the HTTP servers stop accepting and let requests in flight finish; the faces'
   own listeners close;
3. the background loops end: ingest writes everything still queued, delivery and the cache
   watchers stop;
4. the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from thinghub import __version__
from thinghub.bus.clock import SystemClock
from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.bus.nats import NatsCluster
from thinghub.config import Settings
from thinghub.devices import http_ingest
from thinghub.devices.dps import Dps
from thinghub.devices.hub import Hub
from thinghub.devices.links import LocalLinks
from thinghub.devices.mqtt_server import ListenerLimits, MqttServer
from thinghub.devices.router import DeviceRouter
from thinghub.devices.throttle import ConnectLimiter
from thinghub.domain.errors import Error, NotFound
from thinghub.domain.model import Retention
from thinghub.faces import FACES
from thinghub.faces._disconnect import CancelOnDisconnect
from thinghub.faces._http import ErrorRenderer, OrjsonResponse, error_body
from thinghub.faces.face import Face, FaceContext, FaceParts, Listener, Worker
from thinghub.http_server import HttpLimits, protocol_class
from thinghub.ports import Bus, Clock, Counter, DeviceChannel, Locks, Presence, Stores
from thinghub.security.ca import CertificateAuthority
from thinghub.services.auth import AuthService
from thinghub.services.c2d import C2DService
from thinghub.services.certificates import CertificateIssuer, CertificateService
from thinghub.services.commands import CommandService
from thinghub.services.core import Services
from thinghub.services.device_auth import DeviceAuth
from thinghub.services.events import EventService
from thinghub.services.ingest import IngestService
from thinghub.services.live import LiveService
from thinghub.services.properties import PropertyService
from thinghub.services.provisioning import ProvisioningService
from thinghub.services.queries import QueryService
from thinghub.services.registry import Registry
from thinghub.services.retention import RetentionService
from thinghub.services.sessions import SessionService
from thinghub.services.templates import TemplateService
from thinghub.services.twins import TwinService
from thinghub.storage import open_stores
from thinghub.storage.migrate import upgrade

__all__ = ["ThingHub", "build_services", "node_id"]

SHUTDOWN_GRACE_S = 10.0  # requests in flight at SIGTERM get this long to finish
READY_TIMEOUT_S = 2.0  # /readyz: the store and the bus each answer within this

logger = logging.getLogger(__name__)


def node_id() -> str:
    """This process's name among the nodes (Presence owners): host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def build_services(
    settings: Settings,
    stores: Stores,
    *,
    bus: Bus,
    clock: Clock,
    presence: Presence,
    channel: DeviceChannel,
    locks: Locks,
    counter: Counter,
    issuer: CertificateIssuer | None,
) -> Services:
    """Every service over the ports it needs, with its limits from `settings`."""
    auth = AuthService(stores, clock, jwt_ttl_s=settings.jwt_ttl_s)
    events = EventService(stores, bus, clock, counter)
    twins = TwinService(stores, clock, events, bus, presence=presence, channel=channel)
    registry = Registry(
        stores,
        clock,
        events,
        bus,
        presence=presence,
        channel=channel,
        locks=locks,
        twins=twins,
    )
    registry.on_delete.append(twins.forget)
    # Device templates (DTDL): telemetry of a templated device must match its template.
    templates = TemplateService(stores, clock, registry)
    ingest = IngestService(
        stores,
        clock,
        bus,
        registry,
        events,
        max_payload_bytes=settings.max_payload_bytes,
        max_queued_bytes=settings.ingest_queue_max_bytes,
        max_json_depth=settings.max_json_depth,
        templates=templates,
    )
    ingest.policies.append(templates.policy)
    return Services(
        auth=auth,
        registry=registry,
        twins=twins,
        events=events,
        ingest=ingest,
        queries=QueryService(stores, clock),
        commands=CommandService(
            stores,
            clock,
            presence=presence,
            channel=channel,
            registry=registry,
            templates=templates,
            max_timeout_s=settings.method_timeout_max_s,
            ttl_s=settings.command_ttl_s,
            locks=locks,
        ),
        c2d=C2DService(stores, clock, channel=channel, locks=locks, registry=registry),
        templates=templates,
        provisioning=ProvisioningService(stores, clock, registry),
        device_auth=DeviceAuth(registry, clock),
        retention=RetentionService(
            stores,
            clock,
            registry,
            Retention(
                telemetry_days=settings.retention_telemetry_days,
                events_days=settings.retention_events_days,
            ),
            interval_s=settings.retention_interval_s,
            batch_rows=settings.retention_batch_rows,
        ),
        certificates=CertificateService(issuer, registry=registry),
        sessions=SessionService(stores),
        live=LiveService(bus),
        properties=PropertyService(registry, twins, templates),
    )


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


def _parse_face_listen(item: str, faces: Sequence[Face]) -> tuple[Face, str, int]:
    name, _, where = item.partition("=")
    host, _, port = where.rpartition(":")
    face = next((f for f in faces if f.name == name), None)
    if face is None or not host or not port.isdigit():
        raise ValueError(
            f"face_listen {item!r}: expected FACE=HOST:PORT with FACE one of "
            f"{', '.join(f.name for f in faces)}"
        )
    return face, host.strip("[]"), int(port)


def _render_default(error: Error, status: int) -> Response:
    return OrjsonResponse(error_body(error), status_code=status)


def _not_found_in(render_for: Callable[[str], ErrorRenderer]) -> Any:
    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        path = request.url.path
        return render_for(path)(NotFound(f"no route for {path}"), status)

    return not_found


def _renderer_by_prefix(faces: Sequence[Face]) -> Callable[[str], ErrorRenderer]:
    """Each face's error body for the paths under its prefix: a path that no route takes (one
    with a control character never even reaches the face's mount) still gets that face's
    shape."""

    def render_for(path: str) -> ErrorRenderer:
        for face in faces:
            if path == face.prefix or path.startswith(face.prefix + "/"):
                return face.render_error or _render_default
        return _render_default

    return render_for


def _always(render: ErrorRenderer) -> Callable[[str], ErrorRenderer]:
    return lambda _path: render


# Keys of the ready line that a face's listener may not take.
RESERVED_ADDRESSES = frozenset(
    {"http", "mqtt", "faces", "version", "pid", "data_dir", "database", "ca_file", "id_scope",
     "hub_hostname", "node", "bus"}
)  # fmt: skip


async def _crashed(request: Request, exc: Exception) -> Response:
    """A bug outside the faces (they answer their own): logged by the server, 500 here, and
    the connection ends after it (uvicorn closes it once the error has passed through)."""
    error = Error("internal error; it has been logged")
    error.code = "InternalError"
    return OrjsonResponse(error_body(error), status_code=500, headers={"Connection": "close"})


def _face_port_app(face: Face, parts: FaceParts) -> Starlette:
    """A face alone on a port of its own (--face-listen): its root routes, its app at its
    native prefix and at `/`, its error shape for every path."""
    if parts.app is None:
        raise ValueError(f"face_listen: face {face.name!r} has no HTTP app to serve")
    routes: list[BaseRoute] = [*parts.root_routes]
    if face.native_prefix not in ("", "/"):
        routes.append(Mount(face.native_prefix, app=parts.app))
    routes.append(Mount("/", app=parts.app))
    not_found = _not_found_in(_always(face.render_error or _render_default))
    return Starlette(
        routes=routes,
        middleware=[Middleware(CancelOnDisconnect)],
        exception_handlers={404: not_found, 405: not_found, 500: _crashed},
    )


class ThingHub:
    def __init__(self, settings: Settings, faces: Sequence[Face] = FACES) -> None:
        self.settings = settings
        self.faces = tuple(faces)
        self.addresses: dict[str, Any] = {}
        self.services: Services | None = None
        self.ca: CertificateAuthority | None = None
        self._servers: list[_Server] = []
        self._loops: list[asyncio.Task[None]] = []  # cancelled at shutdown, after the ingest
        self._server_tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []  # faces' own listeners, started
        self._workers: list[Worker] = []  # faces' workers, running
        self.mqtt: MqttServer | None = None
        self.cluster: NatsCluster | None = None
        self._stores: Stores | None = None
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
        self.ca = ca = await asyncio.to_thread(
            CertificateAuthority.load_or_create,
            (s.data_dir / "certs").resolve(),
            hostnames=hostnames,
        )
        await asyncio.to_thread(upgrade, s.database_url)
        stores = open_stores(s)
        self._stores = stores
        clock = SystemClock()
        me = s.node_id or node_id()
        bus: Bus
        presence: Presence
        channel: DeviceChannel
        locks: Locks
        cluster: NatsCluster | None = None
        if s.bus is not None:  # one of several nodes: shared state and routing over NATS
            cluster = await NatsCluster.connect(s.bus, me, lease_s=s.node_lease_s)
            self._exit.push_async_callback(cluster.close)  # after the loops and the store
            self.cluster = cluster
            bus, presence, locks = cluster.bus, cluster.presence, cluster.locks
            links = LocalLinks(presence, me)
            channel = cluster.channel(links)
        else:
            bus, presence, locks = MemoryBus(), MemoryPresence(clock), MemoryLocks()
            channel = links = LocalLinks(presence, me)
        services = build_services(
            s,
            stores,
            bus=bus,
            clock=clock,
            presence=presence,
            channel=channel,
            locks=locks,
            counter=MemoryCounter(),  # per node: see thinghub.bus.nats on sequence numbers
            issuer=ca,
        )
        await stores.start()
        self._exit.push_async_callback(stores.close)
        await services.start()
        self.services = services
        account = await services.auth.ensure_account()
        if s.admin_token:
            await services.auth.bootstrap_admin_token(account, s.admin_token)

        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._exit.push_async_exit(tasks.__aexit__)
        self._exit.push_async_callback(self._shutdown)  # steps 1 to 3 of the order above
        tasks.create_task(services.ingest.run(), name="ingest.batches")
        for name, loop in (
            ("commands.delivery", services.commands.run),
            ("retention.purge", services.retention.run),
            ("registry.watch", services.registry.watch),  # other nodes' device changes
            ("twins.watch", services.twins.watch),  # other nodes' twin changes
        ):
            self._loops.append(tasks.create_task(loop(), name=name))
        if cluster is not None:
            registry = services.registry

            async def lost(device_id: str) -> None:  # its node's lease lapsed
                device = await registry.load(device_id)
                if device is not None:
                    await registry.set_connected(device, False)
                    logger.info("device %s disconnected (its node's lease lapsed)", device_id)

            async def found(device_id: str) -> None:  # still here after NATS was away
                device = await registry.load(device_id)
                if device is not None and links.get(device_id) is not None:
                    await registry.set_connected(device, True)

            self._loops.append(
                tasks.create_task(cluster.run(links, lost, found), name="nats.cluster")
            )

        hub = Hub(
            services,
            links,
            max_json_depth=s.max_json_depth,
            connects=ConnectLimiter(s.mqtt_device_connects_per_min, s.mqtt_device_connect_burst),
        )
        dps = Dps(
            services.provisioning, s.hub_hostname, clock=clock, max_json_depth=s.max_json_depth
        )
        mqtt = MqttServer(
            DeviceRouter(hub, dps),
            ca.server_ssl_context(),
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
            gate=services.ingest,
        )
        self.mqtt = mqtt  # set before start: _shutdown closes whatever was started
        mqtt_host, mqtt_port = await mqtt.start()
        self.addresses["mqtt"] = {"host": mqtt_host, "port": mqtt_port}

        context = FaceContext(
            services,
            s,
            ca.server_ssl_context,
            clock,
            nats=None if cluster is None else cluster.nc,
            node_id=me,
        )
        built = [(face, face.build(context)) for face in self.faces]
        http_sock = _bind(s.host, s.http_port)
        self.addresses["http"] = _address(http_sock, "http")
        self._serve(tasks, self._root_app(services, built), http_sock, "http")
        own_ports: dict[str, Any] = {}
        for item in s.face_listen:
            face, host, port = _parse_face_listen(item, self.faces)
            own = _face_port_app(face, face.build(context))  # its own app: its own docs
            sock = _bind(host, port)
            own_ports[face.name] = _address(sock, "http")
            self._serve(tasks, own, sock, f"face[{face.name}]")
        for face, parts in built:
            for listener in parts.listeners:
                await self._start_listener(face, listener)
            for worker in parts.workers:
                self._workers.append(worker)
                self._loops.append(
                    tasks.create_task(worker.run(), name=f"face[{face.name}].{worker.name}")
                )
        self.addresses.update(
            faces=own_ports,
            version=__version__,
            pid=os.getpid(),
            data_dir=str(s.data_dir.resolve()),
            database="postgresql" if s.is_postgres else "sqlite",
            ca_file=str(ca.ca_path),
            id_scope=account.id_scope,
            hub_hostname=s.hub_hostname,
            node=me,
            bus="nats" if cluster is not None else "memory",
        )
        await self._wait_started()
        # What start-up made lives as long as the process (modules, schemas, the unit
        # registry, caches): keep the collector from scanning it again on every full
        # collection, which a busy server triggers often (an upload of 100,000 values
        # allocates millions of objects): about a third off such a request here.
        gc.freeze()

    async def _start_listener(self, face: Face, listener: Listener) -> None:
        name = listener.name
        if name in RESERVED_ADDRESSES or name in self.addresses:
            raise ValueError(f"face {face.name}: listener name {name!r} is taken")
        host, port = await listener.start()
        self._listeners.append(listener)
        self.addresses[name] = {"host": host, "port": port}
        logger.info("face %s: %s listening on %s:%d", face.name, name, host, port)

    def _root_app(self, services: Services, built: list[tuple[Face, FaceParts]]) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/", self._index, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            Route("/readyz", self._ready, methods=["GET"]),
            *http_ingest.routes(services),
        ]
        for face, parts in built:
            routes += parts.root_routes
            if parts.app is not None:
                routes.append(Mount(face.prefix, app=parts.app))
        not_found = _not_found_in(_renderer_by_prefix(self.faces))
        return Starlette(
            routes=routes,
            exception_handlers={404: not_found, 405: not_found, 500: _crashed},
            middleware=[Middleware(CancelOnDisconnect)],
        )

    async def _index(self, request: Request) -> Response:
        return OrjsonResponse(
            {
                "name": "thinghub",
                "version": __version__,
                "faces": {face.name: face.prefix for face in self.faces},
                "docs": {
                    face.name: face.prefix + face.docs
                    for face in self.faces
                    if face.docs is not None
                },
            }
        )

    async def _health(self, request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def _ready(self, request: Request) -> Response:
        """Ready when the store answers a query and the bus (NATS, with --bus) a round trip
        within READY_TIMEOUT_S each: 200, else 503; the body names each part's state."""
        parts: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                assert self._stores is not None
                await self._stores.accounts.get_by_name("")
            parts["store"] = "ok"
        except Exception as exc:  # any failure means "not ready"; say which
            parts["store"] = f"unavailable: {type(exc).__name__}"
        if self.cluster is None:
            parts["bus"] = "ok (in-process)"
        else:
            try:
                if not self.cluster.is_connected:
                    raise ConnectionError("disconnected")
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await self.cluster.ping()
                parts["bus"] = "ok"
            except Exception as exc:
                parts["bus"] = f"unavailable: {type(exc).__name__}"
        ready = all(v.startswith("ok") for v in parts.values())
        body = {"status": "ready" if ready else "unavailable", **parts}
        return OrjsonResponse(body, status_code=200 if ready else 503)

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
            # No permessage-deflate: live channels send small JSON frames to many sockets, and
            # a zlib context per socket cost ~40 KiB each and CPU per frame (bench/ux4iot.py).
            ws_per_message_deflate=False,
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
        """Devices first (their on_close needs every service), then the faces' workers' client
        connections, HTTP and the faces' own listeners, then the loops: the ingest loop writes
        everything queued before it returns."""
        if self.mqtt is not None:
            await self.mqtt.close()
        for worker in self._workers:
            try:
                await worker.stop()
            except Exception:  # one face's failure must not keep the others from stopping
                logger.exception("stopping face worker %s failed", worker.name)
        for server in self._servers:
            server.should_exit = True
        if self._server_tasks:
            await asyncio.wait(self._server_tasks, timeout=SHUTDOWN_GRACE_S)
        for listener in reversed(self._listeners):
            await listener.close()
        if self.services is not None:
            self.services.ingest.stop()
        for loop in self._loops:
            loop.cancel()


def write_ready_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
