"""The IoT Hub MQTT device dialect: what the Azure IoT device SDK expects of a hub.

Topics and shapes are in docs/faces/device-mqtt.md: SAS or X.509 authentication,
telemetry with property bags, twin GET / reported PATCH / desired notifications, direct
methods, cloud-to-device messages, modules. A device may only use its own topics; anything
else closes its connection.

Sessions persist per client id (the SDK never re-subscribes after a reconnect): the
subscriptions and the last desired version the device was sent are stored; unacknowledged
QoS 1 publishes are kept in memory and redelivered on the next connection. A clean-session
CONNECT gets a session that ends with its connection (MQTT 3.1.1 §3.1.2.4). When a device
(re)connects, it gets the desired properties that changed while it was away, pending
direct-method requests (each once per connection), queued commands and cloud-to-device
messages.

Where IoT Hub departs from a general broker, we do as it documents ("Communicate with an IoT
hub using the MQTT protocol"): a QoS 2 PUBLISH closes the connection, RETAIN is not kept but
marks the message with the `mqtt-retain` property, a Will on the device's own telemetry topic
becomes a telemetry message with `iothub-MessageType: Will`, and `devices/+/messages/
devicebound/#` (the filter azure-sdk-for-c subscribes) is the device's own C2D filter.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from thinghub.devices.errors import codes_for
from thinghub.devices.hub_topics import (
    Telemetry,
    encode_bag,
    parse_hub_username,
    parse_telemetry_topic,
    request_id,
)
from thinghub.devices.links import LocalLinks
from thinghub.devices.mqtt_server import (
    REFUSAL_LOG_INTERVAL_S,
    Connection,
    ConnectionClosed,
    DropConnection,
)
from thinghub.devices.throttle import ConnectLimiter
from thinghub.domain.errors import (
    DeviceOffline,
    Error,
    Invalid,
    RateLimited,
    TimedOut,
    TooLarge,
    Unauthorized,
)
from thinghub.domain.ids import entity_id
from thinghub.domain.json_depth import check_depth, exceeds_depth
from thinghub.domain.model import Device
from thinghub.domain.twin import check_patch_size
from thinghub.mqtt import Publish
from thinghub.mqtt.packets import Connect, Will
from thinghub.ports import C2DMessage, DeviceFeed, MethodResult
from thinghub.security import sas
from thinghub.security.ca import device_identity_of
from thinghub.services.core import Services

__all__ = ["Hub", "HubLink"]

logger = logging.getLogger(__name__)

# Twin answers that are not errors (errors: devices/errors.py).
TWIN_OK = 200  # the twin document of a GET
TWIN_UPDATED = 204  # a reported patch applied; `$version` is the new reported version

TWIN_RES = "$iothub/twin/res/#"
TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/#"
METHODS = "$iothub/methods/POST/#"
METHOD_REQUESTS = "$iothub/methods/POST/"
# azure-sdk-for-c (and the Arduino and FreeRTOS libraries on it) subscribe C2D with this
# filter; IoT Hub accepts it and delivers only the device's own messages.
C2D_ANY_DEVICE = "devices/+/messages/devicebound/#"
# Each accepted connection is logged at debug; at info, a line says how many were accepted
# since the previous such line, at most this often (a lone connect is still seen at once; a
# reconnect storm of thousands a second writes one line, not one per device).
CONNECT_LOG_INTERVAL_S = 10.0
# The heap of SAS expiries is purged of ended connections once it holds this many entries
# (then twice as many as it kept).
EXPIRY_PURGE_MIN = 1024
EXPIRY_TIMER_MAX_S = 86400.0


def _filters_for(device: Device) -> tuple[str, ...]:
    """The topic filters a device (or module) may subscribe to, in their canonical form."""
    root = (
        f"devices/{device.parent_id}/modules/{device.module_id}"
        if device.module_id
        else f"devices/{device.id}"
    )
    own = (f"{root}/inputs/#",) if device.module_id else (f"{root}/messages/devicebound/#",)
    return (TWIN_RES, TWIN_DESIRED, METHODS, *own)


def _c2d_topic(device: Device) -> str:
    return f"devices/{device.id}/messages/devicebound/"


def _canonical_filter(device: Device, topic_filter: str) -> str:
    """The session key of a filter: the `+` form of the C2D filter is the device's own."""
    if topic_filter == C2D_ANY_DEVICE and not device.module_id:
        return f"{_c2d_topic(device)}#"
    return topic_filter


@dataclass
class _PendingMethod:
    name: str
    payload: bytes
    future: asyncio.Future[MethodResult]
    sent_on: Connection | None = None  # the connection the request last went out on


@dataclass
class _Session:
    """What persists per client id: subscriptions and the last desired version sent."""

    subscriptions: dict[str, int] = field(default_factory=dict)
    desired_version: int | None = None
    # What the last connection left unacknowledged: (sent, never sent), redelivered on connect.
    inflight: tuple[tuple[Publish, ...], tuple[Publish, ...]] = ((), ())

    def state(self) -> dict[str, Any]:
        return {"subscriptions": self.subscriptions, "desired_version": self.desired_version}

    def has(self, topic_filter: str) -> bool:
        return topic_filter in self.subscriptions


class HubLink:
    """One device's live connection, as the services see it (the DeviceLink port)."""

    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        device: Device,
        session: _Session,
        *,
        persistent: bool = True,
        will: Will | None = None,
    ) -> None:
        self.hub = hub
        self.conn = conn
        self.device = device
        self.device_id = device.id
        self.session = session
        self.persistent = persistent  # clean session 0: the session outlives the connection
        self.will = will  # only a Will on the device's own telemetry topic is kept
        # Set once a newer connection took over or this one closed: from then on it no longer
        # speaks for the client id (its unacknowledged messages went to exactly one place).
        self.handed_over = False
        self.last_topic: tuple[str, Telemetry] | None = None
        # The SAS token's `se` (epoch seconds): IoT Hub closes the connection then; None for
        # an X.509 connection.
        self.expires_at: int | None = None

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        return await self.hub.call_method(self.device, name, payload, timeout_s)

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        if not self.session.has(TWIN_DESIRED):
            return
        body = json.dumps({"$version": version, **patch}).encode()
        self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", body)
        self.session.desired_version = version
        await self.hub.save_session(self)

    async def push_c2d(self, message: C2DMessage) -> bool:
        if not self.session.has(f"{_c2d_topic(self.device)}#"):
            return False
        props = {"$.mid": message.id, **message.properties}
        self._publish(_c2d_topic(self.device) + encode_bag(props), message.body)
        return True

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        if feed == "methods":
            return self.session.has(METHODS)
        if feed == "desired":
            return self.session.has(TWIN_DESIRED)
        return self.session.has(f"{_c2d_topic(self.device)}#")

    async def close(self, *, revoked: bool = False) -> None:
        self.conn.close()  # IoT Hub has no message for revoked credentials

    def _publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Send on this link; DeviceOffline once its connection is closed. Our own misuse of
        the session (mqtt.LocalProtocolError) is a bug and goes through as one."""
        try:
            self.conn.publish(topic, payload, qos)
        except ConnectionClosed as exc:
            raise DeviceOffline(
                f"device {self.device_id!r} disconnected", field="deviceId"
            ) from exc


class Hub:
    """The hub dialect for every device connection (one instance per server)."""

    def __init__(
        self,
        services: Services,
        links: LocalLinks,
        *,
        max_json_depth: int,
        connects: ConnectLimiter | None = None,
    ) -> None:
        self.services = services
        self.links = links  # this node's connected devices (attach, detach, get)
        self.max_json_depth = max_json_depth
        self.auth = services.device_auth
        self.connects = connects  # accepted connects per client id; None: unlimited
        self._refused = 0  # connects refused since the last log line
        self._refused_logged_at = -REFUSAL_LOG_INTERVAL_S
        self._accepted = 0  # connections accepted since the last info line about them
        self._accepted_logged_at = -CONNECT_LOG_INTERVAL_S
        self._rids = itertools.count(1)
        # (token expiry, tie-breaker, link): the SAS connections to close when their token
        # expires, with one timer for the earliest. Entries of connections that ended (closed
        # or handed over) stay until they come due or the heap is purged of them, when it
        # has doubled: no timer per device, and a device reconnecting in a loop with a
        # far-off expiry does not pile up closed links.
        self._expiries: list[tuple[int, int, HubLink]] = []
        self._expiry_order = itertools.count()
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._purge_expiries_at = EXPIRY_PURGE_MIN
        self._pending: dict[str, dict[str, _PendingMethod]] = {}
        self._inflight: dict[str, tuple[tuple[Publish, ...], tuple[Publish, ...]]] = {}
        services.registry.on_delete.append(self._forget)

    def _forget(self, device_id: str) -> None:
        """A deleted device (and its modules) leaves nothing here for a later holder of the id:
        no unacknowledged messages to redeliver, no method requests to resend."""
        for table in (self._inflight, self._pending):
            for key in [k for k in table if k == device_id or k.startswith(device_id + "/")]:
                del table[key]

    # -- connect -------------------------------------------------------------------------

    async def on_connect(self, conn: Connection, connect: Connect) -> int:
        identity = parse_hub_username(connect.username or "")
        if identity is None:
            error: Error = Invalid("the username is not host/device/?...", field="username")
            logger.info("mqtt %s: %s", connect.client_id, error.message)
            return codes_for(error).connack
        expected_client = entity_id(identity.device_id, identity.module_id)
        if connect.client_id != expected_client:
            error = Invalid(f"the client id is not {expected_client!r}", field="clientId")
            return codes_for(error).connack
        # An empty password is no token: with a client certificate, some MQTT libraries send
        # one instead of none, and IoT Hub takes their certificate.
        token = connect.password.decode("utf-8", "replace") if connect.password else None
        try:
            if token is not None:
                device = await self.auth.with_sas(
                    identity.device_id,
                    identity.module_id,
                    token,
                    host=identity.host,
                    remember=False,  # checked once per connection: no token kept for it
                )
            elif conn.peer_cert is not None:
                # CN the device id, OU the account it was issued for: a certificate for an
                # id another account once held is no key to this device.
                cn, ou = device_identity_of(conn.peer_cert)
                if cn != expected_client:
                    raise Unauthorized(f"certificate CN {cn!r} is not {expected_client!r}")
                device = await self.auth.device(identity.device_id, identity.module_id)
                if ou != device.account_id:
                    raise Unauthorized("certificate was issued for another account")
            else:
                raise Unauthorized("no SAS token and no matching client certificate")
        except Unauthorized as exc:
            logger.info("mqtt %s: authentication failed: %s", connect.client_id, exc.message)
            return codes_for(exc).connack
        expires_at = None if token is None else sas.parse(token).expiry  # verified: it parses
        # Counted only once authenticated (nobody else can use up a device's budget), and
        # checked before anything is recorded: a device reconnecting in a loop is refused
        # before it writes connection events or touches its session.
        if self.connects is not None and not self.connects.allow(
            connect.client_id, time.monotonic()
        ):
            self._log_connect_refused(connect.client_id)
            return codes_for(RateLimited("connecting too often", field="clientId")).connack
        sessions = self.services.sessions
        saved = None if connect.clean_session else await sessions.load(connect.client_id)
        if connect.clean_session:
            await sessions.delete(connect.client_id)
            self._inflight.pop(connect.client_id, None)
        session = _Session()
        if saved is not None:
            session.subscriptions = dict(saved.get("subscriptions", {}))
            session.desired_version = saved.get("desired_version")
            session.inflight = self._inflight.pop(connect.client_id, ((), ()))
        if identity.model_id and (
            announced := await self.services.templates.announced(device, identity.model_id)
        ):
            device = await self.services.registry.save(device, **announced)
        conn.state = HubLink(
            self,
            conn,
            device,
            session,
            persistent=not connect.clean_session,
            will=self._own_will(device, connect),
        )
        conn.state.expires_at = expires_at
        conn.session_present = saved is not None
        return 0

    def _log_connect_refused(self, client_id: str) -> None:
        """One line per REFUSAL_LOG_INTERVAL_S: a device in a reconnect loop would flood it."""
        self._refused += 1
        now = time.monotonic()
        if self.connects is not None and now - self._refused_logged_at >= REFUSAL_LOG_INTERVAL_S:
            logger.warning(
                "mqtt %s: connecting too often (over %d at once, then %g a minute); refused "
                "with CONNACK 3 (%d refused in all since the last such line)",
                client_id,
                self.connects.burst,
                self.connects.per_min,
                self._refused,
            )
            self._refused = 0
            self._refused_logged_at = now

    @staticmethod
    def _own_will(device: Device, connect: Connect) -> Will | None:
        will = connect.will
        if will is None:
            return None
        parsed = parse_telemetry_topic(will.topic)
        if parsed is None or entity_id(parsed.device_id, parsed.module_id) != device.id:
            logger.info("mqtt %s: ignoring a Will on %r", connect.client_id, will.topic)
            return None
        return will

    async def on_accepted(self, conn: Connection) -> None:
        link: HubLink = conn.state
        sent, queued = link.session.inflight
        # Method requests are not redelivered from here: _catch_up sends those still
        # awaited (once), and an expired one must not reach the device at all.
        sent = tuple(p for p in sent if not p.topic.startswith(METHOD_REQUESTS))
        if sent:
            conn.session.redeliver(sent)  # same packet ids, DUP set (§4.4)
        for publish in queued:
            if not publish.topic.startswith(METHOD_REQUESTS):
                conn.session.publish(publish.topic, publish.payload, publish.qos)
        link.session.inflight = ((), ())
        conn.flush()
        previous = await self.links.attach(link)
        if previous is not None and previous is not link:
            logger.info("mqtt %s: new connection replaces the old one", conn.client_id)
            await previous.close()
            if isinstance(previous, HubLink):
                self._take_over(previous, link)
        if link.expires_at is not None:
            self._close_at_expiry(link, link.expires_at)
        link.device = await self.services.registry.set_connected(link.device, True)
        self._log_connected(link.device_id, conn.peer)
        await self._catch_up(link)

    # -- SAS token expiry ----------------------------------------------------------------

    def _close_at_expiry(self, link: HubLink, expiry: int) -> None:
        """Close `link` when its SAS token expires, as IoT Hub does (401003
        IoTHubUnauthorized, then the connection closes): some device SDKs renew their token
        only when that happens, and an expired token must not keep a connection open."""
        heap = self._expiries
        heapq.heappush(heap, (expiry, next(self._expiry_order), link))
        if len(heap) >= self._purge_expiries_at:
            heap[:] = [e for e in heap if not (e[2].handed_over or e[2].conn.is_closed)]
            heapq.heapify(heap)
            self._purge_expiries_at = max(EXPIRY_PURGE_MIN, 2 * len(heap))
        if heap[0][2] is link:  # the earliest now: (re)arm the timer for it
            self._arm_expiry_timer()

    def _arm_expiry_timer(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if self._expiries:
            # At most a day ahead (then again): a token may name any far-off second.
            delay = min(max(0.0, self._expiries[0][0] - self.auth.clock.now()), EXPIRY_TIMER_MAX_S)
            loop = asyncio.get_running_loop()
            self._expiry_timer = loop.call_later(delay, self._close_expired)

    def _close_expired(self) -> None:
        self._expiry_timer = None
        now = self.auth.clock.now()
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, _, link = heapq.heappop(heap)
            if not link.handed_over and not link.conn.is_closed:
                logger.info("device %s: SAS token expired; connection closed", link.device_id)
                link.conn.close()
        self._arm_expiry_timer()

    def _log_connected(self, device_id: str, peer: str) -> None:
        """Debug: every connection; info: one line per CONNECT_LOG_INTERVAL_S at most."""
        logger.debug("device %s connected from %s", device_id, peer)
        self._accepted += 1
        now = time.monotonic()
        if now - self._accepted_logged_at >= CONNECT_LOG_INTERVAL_S:
            logger.info(
                "device %s connected from %s (%d device connections accepted since the last "
                "such line)",
                device_id,
                peer,
                self._accepted,
            )
            self._accepted = 0
            self._accepted_logged_at = now

    async def _catch_up(self, link: HubLink) -> None:
        """Send what the device missed: desired changes, methods, commands, C2D."""
        session = link.session
        if session.has(TWIN_DESIRED):
            twin = await self.services.twins.get(link.device)
            if (
                session.desired_version is not None
                and twin.desired.version != session.desired_version
            ):
                await link.push_desired(twin.desired.properties, twin.desired.version)
        if session.has(METHODS):
            await self._methods_ready(link)
        if session.has(f"{_c2d_topic(link.device)}#"):
            await self.services.c2d.deliver_pending(link.device_id)

    async def _methods_ready(self, link: HubLink) -> None:
        """Send the awaited method requests this connection has not had yet (a device may
        subscribe twice; the SDK forgets unanswered requests when it reconnects)."""
        for rid, pending in list(self._pending.get(link.device_id, {}).items()):
            if pending.sent_on is link.conn or pending.future.done():
                continue
            link._publish(f"{METHOD_REQUESTS}{pending.name}/?$rid={rid}", pending.payload)
            pending.sent_on = link.conn
        await self.services.commands.device_connected(link.device_id)

    async def on_close(self, conn: Connection) -> None:
        link = conn.state
        if not isinstance(link, HubLink):
            return
        # Keep what is unacknowledged and detach at once (no await in between), so a new
        # connection either finds the messages kept or takes them over, never both.
        if link.persistent:  # a clean session was never stored and ends here (§3.1.2.4)
            self._keep_unacknowledged(conn, link)
        link.handed_over = True
        if await self.links.detach(link):
            await self.services.registry.set_connected(link.device, False)
            logger.info("device %s disconnected", link.device_id)
        if link.will is not None and not conn.will_discarded:
            try:
                await self._publish_will(link, link.will)
            except Exception:  # the connection is gone either way; say what was lost
                logger.exception("device %s: the will could not be stored", link.device_id)

    def _keep_unacknowledged(self, conn: Connection, link: HubLink) -> None:
        """Keep what the device did not acknowledge for its next connection (§4.4)."""
        sent, queued = conn.session.inflight(), conn.session.queued()
        if (sent or queued) and not link.handed_over:
            self._inflight[conn.client_id] = (sent, queued)

    @staticmethod
    def _take_over(old: HubLink, new: HubLink) -> None:
        """Resend on the new connection what the one it replaces left unacknowledged.

        Done at once, not when the old connection's close completes (a TLS shutdown can
        take its time). Sent as new messages: the old packet ids mean nothing here. Method
        requests are left to _catch_up, which sends those still awaited.
        """
        if old.handed_over:  # its on_close already kept them for the next connection
            return
        old.handed_over = True
        if not (old.persistent and new.persistent):
            return  # a clean session on either side: nothing carries over (§3.1.2.4)
        for publish in (*old.conn.session.inflight(), *old.conn.session.queued()):
            if not publish.topic.startswith(METHOD_REQUESTS):
                new.conn.publish(publish.topic, publish.payload, publish.qos)

    async def _publish_will(self, link: HubLink, will: Will) -> None:
        """Send the Will as telemetry, as IoT Hub does (`iothub-MessageType: Will`)."""
        telemetry = parse_telemetry_topic(will.topic)
        if telemetry is None:
            return
        system = telemetry.system
        try:
            message = self.services.ingest.build(
                link.device,
                will.payload,
                properties={**telemetry.properties, "iothub-MessageType": "Will"},
                message_id=system.get("message_id"),
                correlation_id=system.get("correlation_id"),
                content_type=system.get("content_type"),
                content_encoding=system.get("content_encoding"),
                component=system.get("component"),
            )
            await self.services.ingest.ingest(link.device, message)
        except Error as exc:
            logger.warning("device %s: will not stored: %s", link.device_id, exc.message)
        else:
            logger.info("device %s: connection lost, will sent as telemetry", link.device_id)

    async def save_session(self, link: HubLink) -> None:
        """Store a persistent session; a clean one lives only as long as its connection, and
        a connection that is over or taken over no longer speaks for the client id."""
        if link.persistent and not link.handed_over:
            await self.services.sessions.save(link.conn.client_id, link.session.state())

    # -- subscriptions -------------------------------------------------------------------

    async def on_subscribe(
        self, conn: Connection, filters: tuple[tuple[str, int], ...]
    ) -> list[int]:
        link: HubLink = conn.state
        allowed = _filters_for(link.device)
        codes = []
        canonical = []
        for topic_filter, qos in filters:
            key = _canonical_filter(link.device, topic_filter)
            if key not in allowed:
                # IoT Hub closes the connection rather than answer 0x80 (it "only supports
                # the documented topic filters"); azure-iot-middleware-freertos relies on it.
                raise DropConnection(f"subscribe to {topic_filter!r} is not allowed")
            link.session.subscriptions[key] = min(qos, 1)  # at most QoS 1 is granted
            codes.append(min(qos, 1))
            canonical.append(key)
        await self.save_session(link)
        for key in canonical:
            if key == METHODS:
                await self._methods_ready(link)
            elif key == TWIN_DESIRED and link.session.desired_version is None:
                twin = await self.services.twins.get(link.device)
                link.session.desired_version = twin.desired.version
                await self.save_session(link)
            elif key.endswith("/messages/devicebound/#"):
                await self.services.c2d.deliver_pending(link.device_id)
        return codes

    async def on_unsubscribe(self, conn: Connection, filters: tuple[str, ...]) -> None:
        link: HubLink = conn.state
        for topic_filter in filters:
            link.session.subscriptions.pop(_canonical_filter(link.device, topic_filter), None)
        await self.save_session(link)

    async def on_puback(self, conn: Connection, publish: Publish) -> None:
        return None

    # -- publishes from the device -------------------------------------------------------

    def publish_now(self, conn: Connection, publish: Publish) -> asyncio.Future[Any] | None:
        """Telemetry, queued without awaiting anything (the common PUBLISH); None for the
        rest (a request on `$iothub/`, QoS 2), which on_publish handles."""
        if publish.qos == 2 or publish.topic.startswith("$iothub/"):
            return None
        return self._telemetry(conn.state, publish)

    async def on_publish(self, conn: Connection, publish: Publish) -> Any:
        link: HubLink = conn.state
        topic = publish.topic
        if publish.qos == 2:
            raise DropConnection(f"QoS 2 publish to {topic!r}: IoT Hub supports QoS 0 and 1")
        if topic.startswith("$iothub/"):
            await self._iothub_request(link, publish)
            return None
        return self._telemetry(link, publish)

    def _telemetry(self, link: HubLink, publish: Publish) -> asyncio.Future[Any]:
        """Queue a telemetry PUBLISH; the future resolves once it is stored."""
        topic = publish.topic
        if link.last_topic is not None and link.last_topic[0] == topic:
            telemetry = link.last_topic[1]  # devices repeat their topic: parse it once
        else:
            parsed = parse_telemetry_topic(topic)
            if parsed is None:
                raise DropConnection(f"publish to {topic!r} is not allowed")
            if entity_id(parsed.device_id, parsed.module_id) != link.device_id:
                raise DropConnection(f"publish to another device's topic {topic!r}")
            telemetry = parsed
            link.last_topic = (topic, parsed)
        system = telemetry.system
        properties = telemetry.properties
        if publish.retain:  # not retained: marked, as IoT Hub does
            properties = {**properties, "mqtt-retain": "true"}
        try:
            message = self.services.ingest.build(
                link.device,
                publish.payload,
                properties=properties,
                message_id=system.get("message_id"),
                correlation_id=system.get("correlation_id"),
                content_type=system.get("content_type"),
                content_encoding=system.get("content_encoding"),
                component=system.get("component"),
            )
        except Error as exc:
            raise DropConnection(f"telemetry refused: {exc.message}") from exc
        # Resolves after the batch holding it commits; a message a policy rejects is
        # recorded as an event and still acknowledged (resending it would not help).
        return self.services.ingest.submit(link.device, message)

    async def _iothub_request(self, link: HubLink, publish: Publish) -> None:
        topic = publish.topic
        rid = request_id(topic)
        if topic.startswith("$iothub/twin/GET/"):
            twin = await self.services.twins.get(link.device)
            body = {
                "desired": twin.desired.with_version(),
                "reported": twin.reported.with_version(),
            }
            link._publish(f"$iothub/twin/res/{TWIN_OK}/?$rid={rid}", json.dumps(body).encode(), 0)
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            await self._patch_reported(link, publish.payload, rid)
        elif topic.startswith("$iothub/methods/res/"):
            self._method_response(link, topic, publish.payload, rid)
        else:
            raise DropConnection(f"publish to {topic!r} is not allowed")

    async def _patch_reported(self, link: HubLink, payload: bytes, rid: str) -> None:
        try:
            check_patch_size(payload, "reported")  # before anything parses it
            check_depth(payload, self.max_json_depth, "reported")
            try:
                patch = json.loads(payload)
            except ValueError as exc:
                raise Invalid(f"reported is not JSON: {exc}", field="reported") from None
            twin = await self.services.twins.patch_reported(link.device, patch)
        except (Invalid, TooLarge) as exc:  # TooLarge: the patch, or the section, is too big
            logger.info("device %s: reported patch refused: %s", link.device_id, exc.message)
            status = codes_for(exc).twin_status
            link._publish(f"$iothub/twin/res/{status}/?$rid={rid}", b"", 0)
            return
        version = twin.reported.version
        link._publish(f"$iothub/twin/res/{TWIN_UPDATED}/?$rid={rid}&$version={version}", b"", 0)

    # -- direct methods ------------------------------------------------------------------

    async def call_method(
        self, device: Device, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        link = self.links.get(device.id)
        if not isinstance(link, HubLink):
            raise DeviceOffline(f"device {device.id!r} is not connected", field="deviceId")
        if not link.session.has(METHODS):
            raise DeviceOffline(
                f"device {device.id!r} is connected but not listening for direct methods",
                field="deviceId",
            )
        rid = format(next(self._rids), "x")
        body = b"" if payload is None else json.dumps(payload).encode()
        future: asyncio.Future[MethodResult] = asyncio.get_running_loop().create_future()
        pending = self._pending.setdefault(device.id, {})
        pending[rid] = _PendingMethod(name, body, future, sent_on=link.conn)
        try:
            link._publish(f"{METHOD_REQUESTS}{name}/?$rid={rid}", body)
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise TimedOut(
                f"device {device.id!r} did not answer {name!r} within {timeout_s:g} s",
                field="responseTimeoutInSeconds",
            ) from None
        finally:
            pending.pop(rid, None)
            if not pending:
                self._pending.pop(device.id, None)

    def _method_response(self, link: HubLink, topic: str, payload: bytes, rid: str) -> None:
        parts = topic.split("/")
        try:
            status = int(parts[3])
        except (IndexError, ValueError):
            raise DropConnection(f"bad method response topic {topic!r}") from None
        pending = self._pending.get(link.device_id, {}).get(unquote(rid))
        if pending is None or pending.future.done():
            logger.info("device %s answered unknown or late method request %s", link.device_id, rid)
            return
        depth = self.max_json_depth
        pending.future.set_result(MethodResult(status, _decode_payload(payload, depth)))


def _decode_payload(payload: bytes, max_depth: int) -> Any:
    """A method answer: its JSON value, else its text (also when it nests deeper than
    `max_depth`: it is then never parsed), else None.

    Parsed by orjson, which takes only JSON it can write back: an answer holding NaN, an
    integer past 64 bits or a lone surrogate ("\\ud800") is kept as its text. (json.loads
    took them, and the caller then got a 500, a command's result could not be saved.)"""
    if not payload:
        return None
    try:
        if exceeds_depth(payload, max_depth):
            raise ValueError("nested too deep to parse")
        return orjson.loads(payload)
    except ValueError:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
