"""Composition root: the only module that picks concrete adapters and wires them together.

`ThingHub` is an async context manager: entering it first binds every port it will listen on
and checks those of the faces' own listeners (port 0 means ephemeral; a busy port ends it with
binding.PortUnavailable before anything is written), then creates the data directory, the CA,
the schema and the services and starts serving; `addresses` then holds what was bound.
Leaving it shuts down in this order, so a SIGTERM loses nothing that was acknowledged and no
bookkeeping runs against a closed store:

1. the device listener stops accepting and closes every device connection, and waits until
   each one has stored what it accepted and run its on_close bookkeeping (disconnect events,
   sessions, Wills);
2. the faces' workers stop (they end long-lived client connections such as Socket.IO
   sockets), the bus closes its subscriptions (live streams to clients end), the HTTP
   servers stop accepting and let requests in flight finish; the faces' own listeners
   close;
3. the background loops end: ingest writes everything still queued, delivery and the cache
   watchers stop;
4. the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import html
import logging
import os
import socket
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from thinghub import __version__
from thinghub.access_log import RequestLog
from thinghub.binding import ListenAddress, PortUnavailable, bind, probe
from thinghub.bus.clock import SystemClock
from thinghub.bus.memory import MemoryBus, MemoryCounter, MemoryLocks, MemoryPresence
from thinghub.bus.nats import NatsBus, NatsCluster
from thinghub.config import Settings
from thinghub.devices import dps_http, file_upload, http_ingest
from thinghub.devices.dps import Dps
from thinghub.devices.hub import Hub
from thinghub.devices.ioto import Ioto
from thinghub.devices.links import LocalLinks
from thinghub.devices.mqtt_server import ListenerLimits, MqttServer
from thinghub.devices.router import DeviceRouter
from thinghub.devices.throttle import ConnectLimiter
from thinghub.domain.errors import Error, NotFound
from thinghub.domain.model import Retention
from thinghub.faces import FACES
from thinghub.faces._disconnect import CancelOnDisconnect
from thinghub.faces._http import (
    DOCS_PATH,
    OPENAPI_PATH,
    REDOC_PATH,
    ErrorRenderer,
    OrjsonResponse,
    error_body,
)
from thinghub.faces.face import Face, FaceContext, FaceParts, Listener, Worker
from thinghub.fast_path import FastPath, FastRoute
from thinghub.http_server import HttpLimits, protocol_class
from thinghub.metrics import Metrics, Sources, metrics_route
from thinghub.ports import (
    BlobStore,
    Bus,
    Clock,
    Counter,
    DeviceChannel,
    Locks,
    Presence,
    Stores,
)
from thinghub.security.ca import CertificateAuthority
from thinghub.services.auth import AuthService
from thinghub.services.c2d import C2DService
from thinghub.services.certificates import CertificateIssuer, CertificateService
from thinghub.services.claims import ClaimService
from thinghub.services.commands import CommandService
from thinghub.services.console_sessions import ConsoleSessionService
from thinghub.services.core import Services
from thinghub.services.device_auth import DeviceAuth
from thinghub.services.device_groups import DeviceGroupService
from thinghub.services.events import EventService
from thinghub.services.files import FileService
from thinghub.services.ingest import IngestService
from thinghub.services.jobs import JobService
from thinghub.services.live import LiveService
from thinghub.services.products import ProductService
from thinghub.services.properties import PropertyService
from thinghub.services.provisioning import ProvisioningService
from thinghub.services.queries import QueryService
from thinghub.services.registry import Registry
from thinghub.services.retention import RetentionService
from thinghub.services.scheduled_jobs import ScheduledJobService
from thinghub.services.sessions import SessionService
from thinghub.services.templates import TemplateService
from thinghub.services.twins import TwinService
from thinghub.storage import open_stores
from thinghub.storage.blobs import FileBlobStore
from thinghub.storage.memory.blobs import MemoryBlobStore
from thinghub.storage.migrate import upgrade

__all__ = ["ThingHub", "build_services", "node_id"]

SHUTDOWN_GRACE_S = 10.0  # requests in flight at SIGTERM get this long to finish
MQTT_BACKLOG = 4096  # device connections the kernel queues (reconnect storms)
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
    blobs: BlobStore | None = None,
) -> Services:
    """Every service over the ports it needs, with its limits from `settings`.

    `blobs` holds device files; None: in memory (tests and one-shot tools, which never
    serve files).
    """
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
    certificates = CertificateService(issuer, registry=registry)
    products = ProductService(stores, clock)
    claims = ClaimService(
        stores,
        clock,
        registry=registry,
        products=products,
        certificates=certificates,
        channel=channel,
        locks=locks,
        cloud_name=settings.ioto_cloud_name,
        region=settings.ioto_region,
        hub_hostname=settings.hub_hostname,
    )
    files = FileService(
        stores,
        MemoryBlobStore() if blobs is None else blobs,
        clock,
        claims=claims,
        registry=registry,
        region=settings.ioto_region,
        credentials_ttl_s=settings.ioto_credentials_ttl_s,
        signed_url_ttl_s=settings.ioto_signed_url_ttl_s,
        max_file_bytes=settings.ioto_max_file_bytes,
    )
    commands = CommandService(
        stores,
        clock,
        presence=presence,
        channel=channel,
        registry=registry,
        templates=templates,
        max_timeout_s=settings.method_timeout_max_s,
        ttl_s=settings.command_ttl_s,
        locks=locks,
    )
    properties = PropertyService(registry, twins, templates)
    return Services(
        auth=auth,
        registry=registry,
        twins=twins,
        events=events,
        ingest=ingest,
        queries=QueryService(stores, clock),
        commands=commands,
        c2d=C2DService(stores, clock, channel=channel, locks=locks, registry=registry),
        templates=templates,
        provisioning=ProvisioningService(stores, clock, registry, templates),
        device_auth=DeviceAuth(registry, clock),
        retention=RetentionService(
            stores,
            clock,
            registry,
            Retention(
                telemetry_days=settings.retention_telemetry_days,
                events_days=settings.retention_events_days,
                files_days=settings.retention_files_days,
            ),
            interval_s=settings.retention_interval_s,
            batch_rows=settings.retention_batch_rows,
            files=files,
        ),
        certificates=certificates,
        sessions=SessionService(stores),
        live=LiveService(bus),
        properties=properties,
        device_groups=DeviceGroupService(stores, clock),
        jobs=JobService(stores, clock, registry=registry, properties=properties, commands=commands),
        scheduled_jobs=ScheduledJobService(stores, clock),
        products=products,
        claims=claims,
        files=files,
        console_sessions=ConsoleSessionService(stores, clock),
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: thinghub owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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


def _always_face(name: str) -> Callable[[str], str]:
    return lambda _path: name


def _doc_pages(face: Face) -> list[tuple[str, str]]:
    """A face's documentation pages as (title, path): its Swagger UI and, when it is a
    face_app (docs at DOCS_PATH), its ReDoc and OpenAPI document; then its own references."""
    pages: list[tuple[str, str]] = []
    if face.docs is not None:
        pages.append(("Swagger UI", face.prefix + face.docs))
        if face.docs == DOCS_PATH:
            pages += [
                ("ReDoc", face.prefix + REDOC_PATH),
                ("OpenAPI document", face.prefix + OPENAPI_PATH),
            ]
    pages += [(title, face.prefix + path) for title, path in face.references]
    return pages


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


async def _crashed_app(scope: Scope, receive: Receive, send: Send) -> None:
    """_crashed as an ASGI app, for thinghub.fast_path's endpoints."""
    response = await _crashed(Request(scope, receive), RuntimeError("crashed"))
    await response(scope, receive, send)


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


@dataclass(frozen=True, slots=True)
class _Sockets:
    """The listening sockets bound at start, before anything else."""

    http: socket.socket
    mqtt: socket.socket
    faces: list[tuple[Face, socket.socket]]  # --face-listen


#: Young-generation size of the cyclic garbage collector, in container objects allocated
#: (CPython's default is 700): each PUBLISH allocates dozens, and every young collection
#: also promotes the messages still in flight, which older collections then walk again.
#: 50,000 with older generations every 20 saved little more CPU per message (~60 µs either
#: way) but let garbage cycles pile up: +207 MiB instead of +142 MiB under the abuse suite's
#: siege, over its 200 MiB bound.
GC_YOUNG_OBJECTS = 10_000
#: Young collections per middle one, and middle ones per full one (CPython's defaults).
GC_OLDER_EVERY = 10


def tune_gc() -> None:
    """Once the server is up: what start-up allocated (modules, settings, schemas, the unit
    registry, caches, the SQL text) is moved out of the collector's sight for good
    (gc.freeze), and collections run less often. Full collections walking that heap were ~30%
    of the CPU per MQTT message, a third of an iTwin upload of 100,000 values, and stalled the
    event loop for milliseconds (docs/performance.md)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, GC_OLDER_EVERY, GC_OLDER_EVERY)


class ThingHub:
    def __init__(self, settings: Settings, faces: Sequence[Face] = FACES) -> None:
        self.settings = settings
        self.faces = tuple(faces)
        self.addresses: dict[str, Any] = {}
        self.services: Services | None = None
        self.ca: CertificateAuthority | None = None
        self._servers: list[_Server] = []
        self._server_names: list[str] = []  # the listener of each server: "http", "face[st]"
        self.metrics: Metrics | None = None
        self._operator_account: str | None = None
        self._loops: list[asyncio.Task[None]] = []  # cancelled at shutdown, after the ingest
        self._server_tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []  # faces' own listeners, started
        self._workers: list[Worker] = []  # faces' workers, running
        self.mqtt: MqttServer | None = None
        self.bus: MemoryBus | NatsBus | None = None
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

    def _bind_all(self) -> _Sockets:
        """Bind the HTTP, --face-listen and MQTT ports, and check the ports of the faces' own
        listeners, before anything is created (PortUnavailable names the first that fails).
        The sockets close with the server."""
        s = self.settings
        face_ports = [_parse_face_listen(item, self.faces) for item in s.face_listen]
        http = bind(ListenAddress("HTTP", s.host, s.http_port, "http_port"))
        self._exit.callback(http.close)
        own: list[tuple[Face, socket.socket]] = []
        for face, host, port in face_ports:
            sock = bind(ListenAddress(f"face {face.name}", host, port, "face_listen"))
            self._exit.callback(sock.close)
            own.append((face, sock))
        mqtt = bind(ListenAddress("MQTT over TLS", s.host, s.mqtt_port, "mqtt_port"), MQTT_BACKLOG)
        self._exit.callback(mqtt.close)
        for face in self.faces:
            for setting in face.listen_ports:
                port = getattr(s, setting)
                probe(ListenAddress(f"face {face.name} ({setting})", s.host, port, setting))
        return _Sockets(http, mqtt, own)

    async def _start(self) -> None:
        s = self.settings
        sockets = self._bind_all()
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
            live_bus: MemoryBus | NatsBus = cluster.bus
            bus, presence, locks = live_bus, cluster.presence, cluster.locks
            links = LocalLinks(presence, me)
            channel = cluster.channel(links)
        else:
            live_bus = MemoryBus()
            bus, presence, locks = live_bus, MemoryPresence(clock), MemoryLocks()
            channel = links = LocalLinks(presence, me)
        self.bus = live_bus  # closed at shutdown; its subscriptions counted for /metrics
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
            blobs=FileBlobStore(s.files_path.resolve()),
        )
        await stores.start()
        self._exit.push_async_callback(stores.close)
        await services.start()
        self.services = services
        account = await services.auth.ensure_account()
        if s.admin_token:
            await services.auth.bootstrap_admin_token(account, s.admin_token)
        self._operator_account = account.id  # its admins may read /metrics
        self.metrics = metrics = Metrics(
            Sources(
                mqtt_connections=lambda: self.mqtt.connections_by_dialect() if self.mqtt else {},
                mqtt_traffic=lambda: self.mqtt.traffic if self.mqtt else {},
                http_connections=self._http_connections,
                ingest_queue_bytes=lambda: services.ingest.queued_bytes,
                ingest_queue_limit_bytes=s.ingest_queue_max_bytes,
                live_subscriptions=lambda: live_bus.subscriptions,
                bus_round_trips=lambda: getattr(channel, "round_trips", 0),
            )
        )
        services.ingest.on_commit.append(metrics.observe_commit)
        services.ingest.on_series_commit.append(metrics.observe_series_commit)

        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._exit.push_async_exit(tasks.__aexit__)
        self._exit.push_async_callback(self._shutdown)  # steps 1 to 3 of the order above
        tasks.create_task(services.ingest.run(), name="ingest.batches")
        for name, loop in (
            ("commands.delivery", services.commands.run),
            ("jobs.run", services.jobs.run),
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

        # One connect budget per client id, whichever dialect it speaks.
        connects = ConnectLimiter(s.mqtt_device_connects_per_min, s.mqtt_device_connect_burst)
        hub = Hub(services, links, max_json_depth=s.max_json_depth, connects=connects)
        dps = Dps(
            services.provisioning, s.hub_hostname, clock=clock, max_json_depth=s.max_json_depth
        )
        ioto = Ioto(services, links, clock=clock, connects=connects)
        mqtt = MqttServer(
            DeviceRouter(hub, dps, ioto),
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
        mqtt_host, mqtt_port = await mqtt.start(sockets.mqtt)
        self.addresses["mqtt"] = {"host": mqtt_host, "port": mqtt_port}

        context = FaceContext(
            services,
            s,
            ca.server_ssl_context,
            clock,
            nats=None if cluster is None else cluster.nc,
            node_id=me,
            node_boot="" if cluster is None else cluster.boot,
            node_alive=None if cluster is None else cluster.presence.is_alive,
            addresses=lambda: self.addresses,
        )
        built = [(face, face.build(context)) for face in self.faces]
        for face, parts in built:
            if parts.connections is not None:
                metrics.sources.face_connections[face.name] = parts.connections
        self.addresses["http"] = _address(sockets.http, "http")
        # Where devices reach us, now that the ports are known (Ioto register and provision
        # answers, signed URLs); requests are served only after this.
        base_url = s.public_url or self.addresses["http"]["url"]
        services.claims.bind(base_url=base_url, mqtt_port=mqtt_port)
        services.files.bind(base_url=base_url)
        root = self._root_app(services, built)
        self._serve(tasks, root, sockets.http, "http", self._face_of)
        own_ports: dict[str, Any] = {}
        for face, sock in sockets.faces:
            own = _face_port_app(face, face.build(context))  # its own app: its own docs
            own_ports[face.name] = _address(sock, "http")
            self._serve(tasks, own, sock, f"face[{face.name}]", _always_face(face.name))
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
        tune_gc()

    async def _start_listener(self, face: Face, listener: Listener) -> None:
        name = listener.name
        if name in RESERVED_ADDRESSES or name in self.addresses:
            raise ValueError(f"face {face.name}: listener name {name!r} is taken")
        try:
            host, port = await listener.start()
        except OSError as exc:  # taken since the check at start, or a port not declared
            setting = f"{name}_port"  # the convention: listener itwin_tcp, itwin_tcp_port
            if setting not in face.listen_ports:
                raise
            port = getattr(self.settings, setting)
            where = ListenAddress(f"face {face.name} ({name})", self.settings.host, port, setting)
            raise PortUnavailable(where, exc) from exc
        self._listeners.append(listener)
        self.addresses[name] = {"host": host, "port": port}
        logger.info("face %s: %s listening on %s:%d", face.name, name, host, port)

    def _root_app(self, services: Services, built: list[tuple[Face, FaceParts]]) -> Any:
        assert self.metrics is not None
        s = self.settings
        routes: list[BaseRoute] = [
            Route("/", self._index, methods=["GET"]),
            Route("/healthz", self._health, methods=["GET"]),
            Route("/docs", self._docs_page, methods=["GET"]),
            Route("/readyz", self._ready, methods=["GET"]),
            Route(
                "/metrics",
                metrics_route(
                    self.metrics,
                    mode=s.metrics,
                    token=s.metrics_token,
                    auth=services.auth,
                    operator_account=lambda: self._operator_account,
                ),
                methods=["GET"],
            ),
            *http_ingest.routes(services),
            *file_upload.routes(services),
        ]
        for face, parts in built:
            routes += parts.root_routes
            if parts.app is not None:
                routes.append(Mount(face.prefix, app=parts.app))
        # DPS over HTTPS: its first segment (the id scope) is any name, so after the faces.
        routes += dps_http.routes(
            services.provisioning,
            s.hub_hostname,
            services.provisioning.clock,
            s.max_json_depth,
        )
        not_found = _not_found_in(_renderer_by_prefix(self.faces))
        app = Starlette(
            routes=routes,
            exception_handlers={404: not_found, 405: not_found, 500: _crashed},
            middleware=[Middleware(CancelOnDisconnect)],
        )
        # The faces' hot read routes and the device ingest, before all of the above
        # (thinghub.fast_path).
        fast: list[tuple[str, FastRoute]] = [
            (face.prefix + route.prefix, route)
            for face, parts in built
            for route in parts.fast_routes
        ]
        return FastPath(app, fast, http_ingest.fast_endpoints(services), _crashed_app)

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
                "reference": {
                    face.name: dict(_doc_pages(face)) for face in self.faces if _doc_pages(face)
                },
                "docs_index": "/docs",
            }
        )

    async def _docs_page(self, request: Request) -> Response:
        """One HTML page listing every face's documentation (all served by thinghub)."""
        items = []
        for face in self.faces:
            pages = _doc_pages(face)
            links = (
                " · ".join(
                    f'<a href="{html.escape(path)}">{html.escape(title)}</a>'
                    for title, path in pages
                )
                or "no reference pages"
            )
            items.append(
                f"<li><b>{html.escape(face.name)}</b> at <code>{html.escape(face.prefix)}</code>"
                f": {links}</li>"
            )
        body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>thinghub {__version__}: API documentation</title></head><body>"
            f"<h1>thinghub {__version__}: API documentation</h1><ul>{''.join(items)}</ul>"
            "<p>Every page and its scripts are served by this server: no internet needed. "
            "Health: <a href='/healthz'>/healthz</a>.</p></body></html>"
        )
        return HTMLResponse(body)

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

    def _face_of(self, path: str) -> str:
        """Which face a path of the shared HTTP port belongs to, for the request log."""
        for face in self.faces:
            if path == face.prefix or path.startswith(face.prefix + "/"):
                return face.name
        if path.startswith("/devices/"):
            return "device-http"
        return "server"  # /, /healthz, /metrics, /docs, a face's root routes

    def _http_connections(self) -> dict[str, int]:
        return {
            name: len(server.server_state.connections)
            for name, server in zip(self._server_names, self._servers, strict=True)
        }

    def _serve(
        self,
        tasks: asyncio.TaskGroup,
        app: Any,
        sock: socket.socket,
        name: str,
        face_of: Callable[[str], str],
    ) -> None:
        s = self.settings
        assert self.metrics is not None
        app = RequestLog(
            app,
            listener=name,
            face_of=face_of,
            count=self.metrics.count_response,
            log=s.access_log,
        )
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
        self._server_names.append(name)
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
        if self.bus is not None:
            self.bus.close()  # live streams to clients end, so their requests finish
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
