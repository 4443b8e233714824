"""The cloud link: the gateway and one module per port, connected to a thinghub cloud.

Theory of operation
-------------------
The gateway is a thinghub device with modules (IoT Hub's shape): the gateway connects as
itself (client id `gateway`), each port's module as `gateway/module` with that module's own
key, all over MQTT 3.1.1 + TLS with SAS tokens, through thinghub's sans-IO client session.

Each module runs one sender loop: connect, then move the queue to the cloud in seq order,
at most `max_inflight` PUBLISHes (QoS 1) awaiting PUBACK; a row is deleted only when its
PUBACK arrives (the cloud acknowledges after its commit), so a dropped connection or a crash
leaves unacknowledged rows to be sent again with the same `$.mid`. On any failure the loop
waits a jittered, growing delay (up to `reconnect_max_s`) and connects again. When
cloudConnection is set to false every connection closes and rows wait on disk; true resumes.

The gateway's own connection reports the edge's versions and ports as reported properties
and answers direct methods (`getInfo`); each module connection answers the `write` method
(the payload's `message` goes to the port). Desired-property patches are acknowledged by
nothing: they are logged and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from thinghub.mqtt import Publish

from .config import CloudSettings
from .credentials import HubIdentity
from .dps import DpsError, register
from .mqtt_link import ConnectRefusedError, MqttLink
from .queue import ForwardQueue, QueuedObservation

__all__ = ["CloudLink", "MethodHandler", "ModuleSpec"]

logger = logging.getLogger(__name__)

#: First reconnect delay; it doubles (with jitter) up to reconnect_max_s.
RECONNECT_MIN_S = 0.5
METHODS = "$iothub/methods/POST/"

#: (module or None for the gateway, method name, payload) -> (status, answer)
MethodHandler = Callable[[str | None, str, Any], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    module: str
    key: str | None
    port: int


class _Stopped(Exception):
    """cloudConnection was set to false: close and wait."""


class _Renew(Exception):
    """The connection's SAS token is about to expire: reconnect at once with a new one."""


#: A connection renews its token when this share of the token's lifetime has passed (the hub
#: closes a connection whose token expired, as IoT Hub does; the Azure SDKs renew early too).
SAS_RENEW_AT = 0.85


def _bag(properties: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in properties.items())


def _iso(epoch_s: float) -> str:
    text = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class _Backoff:
    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.delay = RECONNECT_MIN_S

    def next(self) -> float:
        delay = self.delay * random.uniform(0.5, 1.0)
        self.delay = min(self.maximum, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = RECONNECT_MIN_S


class CloudLink:
    """Connections to the cloud; `run()` until cancelled."""

    def __init__(
        self,
        settings: CloudSettings,
        queue: ForwardQueue,
        *,
        modules: Callable[[], list[ModuleSpec]],
        reported: Callable[[], dict[str, Any]],
        on_method: MethodHandler,
        enabled: bool = True,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self._modules = modules
        self._reported = reported
        self._on_method = on_method
        self._enabled = asyncio.Event()
        self._disabled = asyncio.Event()
        self.set_enabled(enabled)
        self._changed = asyncio.Event()
        self._gateway: HubIdentity | None = None
        self._ssl: ssl.SSLContext | None = None
        self.connected: dict[str, bool] = {}  # "$gateway" or module -> connected now
        self.last_error: dict[str, str] = {}
        self._tasks: dict[str, tuple[ModuleSpec, asyncio.Task[None]]] = {}

    # -- control ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled.is_set()

    def set_enabled(self, enabled: bool) -> None:
        if enabled:
            self._disabled.clear()
            self._enabled.set()
        else:
            self._enabled.clear()
            self._disabled.set()

    def modules_changed(self) -> None:
        self._changed.set()

    @property
    def gateway_id(self) -> str | None:
        return None if self._gateway is None else self._gateway.device_id

    def status(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "gateway": self.gateway_id,
            "connected": dict(sorted(self.connected.items())),
            "errors": dict(sorted(self.last_error.items())),
        }

    # -- identity --------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ca = self.settings.ca_file
            self._ssl = ssl.create_default_context(cafile=str(ca) if ca else None)
        return self._ssl

    async def _identity(self) -> HubIdentity:
        s = self.settings
        if s.connection is not None:
            c = s.connection
            return HubIdentity(c.host_name, c.device_id, None, c.key)
        if s.dps is None or s.host is None:
            raise ValueError("no connection string and no DPS settings")
        backoff = _Backoff(s.reconnect_max_s)
        while True:
            await self._enabled.wait()
            try:
                registration = await register(
                    host=s.host,
                    port=s.port,
                    ssl_context=self._ssl_context(),
                    server_hostname=s.host,
                    id_scope=s.dps.id_scope,
                    registration_id=s.dps.registration_id,
                    key=s.dps.key,
                )
            except (DpsError, OSError, ssl.SSLError) as exc:
                self.last_error["$dps"] = str(exc)
                logger.warning("dps: %s", exc)
                await asyncio.sleep(backoff.next())
                continue
            self.last_error.pop("$dps", None)
            return HubIdentity(registration.assigned_hub, registration.device_id, None, s.dps.key)

    def _address(self, identity: HubIdentity) -> tuple[str, int]:
        return (self.settings.host or identity.host_name, self.settings.port)

    # -- supervision -----------------------------------------------------------------------

    async def run(self) -> None:
        gateway = await self._identity()
        self._gateway = gateway
        async with asyncio.TaskGroup() as group:
            group.create_task(
                self._loop("$gateway", gateway, self._gateway_session), name="cloud[gateway]"
            )
            while True:
                self._reconcile(group, gateway)
                await self._changed.wait()
                self._changed.clear()

    def _reconcile(self, group: asyncio.TaskGroup, gateway: HubIdentity) -> None:
        wanted = {spec.module: spec for spec in self._modules()}
        for module, (spec, task) in list(self._tasks.items()):
            if wanted.get(module) != spec:
                task.cancel()
                del self._tasks[module]
                self.connected.pop(module, None)
        for module, spec in wanted.items():
            if module in self._tasks:
                continue
            if spec.key is None:
                self.last_error[module] = "no MODULE_KEY: observations wait in the queue"
                logger.warning("module %s (port %d) has no MODULE_KEY: not sent", module, spec.port)
                continue
            identity = HubIdentity(gateway.host_name, gateway.device_id, module, spec.key)

            async def session(link: MqttLink, acks: _Pubacks, spec: ModuleSpec = spec) -> None:
                await self._module_session(link, acks, spec)

            task = group.create_task(self._loop(module, identity, session), name=f"cloud[{module}]")
            self._tasks[module] = (spec, task)

    async def _loop(
        self,
        name: str,
        identity: HubIdentity,
        session: Callable[[MqttLink, _Pubacks], Coroutine[Any, Any, None]],
    ) -> None:
        """Connect, run the session, reconnect after a jittered delay; for ever."""
        backoff = _Backoff(self.settings.reconnect_max_s)
        host, port = self._address(identity)
        while True:
            await self._enabled.wait()
            methods: asyncio.Queue[Publish] = asyncio.Queue()
            state = _Pubacks()
            ttl_s = self.settings.sas_ttl_s
            renewing = False
            # Renewed a share of the token's lifetime after it was signed, not after connecting.
            renew_at = asyncio.get_running_loop().time() + ttl_s * SAS_RENEW_AT
            try:
                password = identity.password(ttl_s=ttl_s)
            except ValueError as exc:  # a key that is not base64 (SasError)
                self._failed(name, identity, exc)
                await asyncio.sleep(self.settings.reconnect_max_s)
                continue
            link = MqttLink(
                host=host,
                port=port,
                ssl_context=self._ssl_context(),
                server_hostname=identity.host_name,
                client_id=identity.client_id,
                username=identity.username,
                password=password,
                keepalive_s=self.settings.keepalive_s,
                on_puback=state.acked,
                on_publish=methods.put_nowait,
            )
            try:
                await link.connect()
                logger.info("cloud %s: connected to %s:%d", identity.client_id, host, port)
                self.connected[name] = True
                self.last_error.pop(name, None)
                backoff.reset()
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(link.run(), name=f"cloud[{name}].read")
                    tasks.create_task(session(link, state), name=f"cloud[{name}].session")
                    tasks.create_task(
                        self._methods(link, name, methods), name=f"cloud[{name}].methods"
                    )
                    tasks.create_task(self._until_disabled(), name=f"cloud[{name}].switch")
                    tasks.create_task(self._until_renewal(renew_at), name=f"cloud[{name}].renew")
            except* _Renew:
                logger.info("cloud %s: SAS token renewed before it expires", identity.client_id)
                renewing = True
            except* _Stopped:
                logger.info("cloud %s: cloudConnection is false; disconnected", identity.client_id)
            except* ConnectRefusedError as group:
                self._failed(name, identity, group.exceptions[0])
            except* (ConnectionError, OSError, ssl.SSLError, TimeoutError) as group:
                self._failed(name, identity, group.exceptions[0])
            except* Exception as group:  # our bug: log it, keep the other connections
                logger.error(
                    "cloud %s: unexpected failure", identity.client_id, exc_info=group.exceptions[0]
                )
                self.last_error[name] = f"unexpected failure: {group.exceptions[0]!r}"
            finally:
                self.connected[name] = False
                await link.close()
            if self.enabled and not renewing:
                await asyncio.sleep(backoff.next())

    def _failed(self, name: str, identity: HubIdentity, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        if self.last_error.get(name) != text:
            logger.warning("cloud %s: %s; reconnecting", identity.client_id, text)
        self.last_error[name] = text

    async def _until_disabled(self) -> None:
        await self._disabled.wait()
        raise _Stopped

    @staticmethod
    async def _until_renewal(at: float) -> None:
        """Raise _Renew at loop time `at`."""
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        raise _Renew

    # -- sessions --------------------------------------------------------------------------

    async def _gateway_session(self, link: MqttLink, acks: _Pubacks) -> None:
        await link.subscribe(
            [
                (f"{METHODS}#", 1),
                ("$iothub/twin/PATCH/properties/desired/#", 1),
                ("$iothub/twin/res/#", 1),
            ]
        )
        body = json.dumps({"thinghubEdge": self._reported()}).encode()
        await link.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", body, 0)
        await asyncio.Event().wait()  # the reader and the method task do the rest

    async def _module_session(self, link: MqttLink, acks: _Pubacks, spec: ModuleSpec) -> None:
        await link.subscribe([(f"{METHODS}#", 1)])
        gateway = self._gateway
        if gateway is None:
            raise RuntimeError("no gateway identity")
        signal = self.queue.signal(spec.module)
        acks.wake = signal
        inflight: dict[int, int] = {}  # packet id -> seq
        last_seq = 0
        max_inflight = self.settings.max_inflight
        topic_root = f"devices/{gateway.device_id}/modules/{spec.module}/messages/events/"
        while True:
            signal.clear()  # before looking: a row or PUBACK arriving after this sets it
            done = acks.take()
            if done:
                await self.queue.remove([inflight.pop(pid) for pid in done if pid in inflight])
            room = max_inflight - len(inflight)
            if room > 0:
                rows = await self.queue.peek(spec.module, last_seq, room)
                for row in rows:
                    packet_id = await link.publish(self._topic(topic_root, row), row.body, 1)
                    if packet_id is not None:
                        inflight[packet_id] = row.seq
                    last_seq = row.seq
                if rows:
                    continue
            await signal.wait()

    def _topic(self, root: str, row: QueuedObservation) -> str:
        return root + _bag(
            {
                "$.mid": self.queue.message_id(row.seq),
                "$.ct": "application/json",
                "$.ce": "utf-8",
                "port": str(row.port),
                "iothub-creation-time-utc": _iso(row.read_at),
            }
        )

    async def _methods(self, link: MqttLink, name: str, requests: asyncio.Queue[Publish]) -> None:
        module = None if name == "$gateway" else name
        while True:
            publish = await requests.get()
            topic = publish.topic
            if topic.startswith("$iothub/twin/PATCH/properties/desired/"):
                logger.info("cloud %s: desired properties patch ignored", name)
                continue
            if not topic.startswith(METHODS):
                continue
            method, _, query = topic[len(METHODS) :].partition("/?")
            rid = ""
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key in ("$rid", "%24rid"):
                    rid = value
            try:
                payload = json.loads(publish.payload) if publish.payload.strip() else None
            except ValueError:
                payload = None
            try:
                status, answer = await self._on_method(module, method, payload)
            except Exception:  # a handler bug must not end the connection
                logger.exception("cloud %s: method %s failed", name, method)
                status, answer = 500, {"message": f"method {method} failed on the edge"}
            await link.publish(
                f"$iothub/methods/res/{status}/?$rid={rid}", json.dumps(answer).encode(), 0
            )


class _Pubacks:
    """PUBACKs of one connection, handed from the reader to the sender."""

    def __init__(self) -> None:
        self._acked: list[int] = []
        self.wake: asyncio.Event | None = None

    def acked(self, packet_id: int) -> None:
        self._acked.append(packet_id)
        if self.wake is not None:
            self.wake.set()

    @property
    def pending(self) -> bool:
        return bool(self._acked)

    def take(self) -> list[int]:
        taken, self._acked = self._acked, []
        return taken
