"""The IoT Hub MQTT device dialect: what the Azure IoT device SDK expects of a hub.

Topics and shapes are in specs/azure-device-protocol.md §2-§6: SAS or X.509 authentication,
telemetry with property bags, twin GET / reported PATCH / desired notifications, direct
methods, cloud-to-device messages, modules. A device may only use its own topics; anything
else closes its connection.

Sessions persist per client id (the SDK never re-subscribes after a reconnect, §1.1): the
subscriptions and the last desired version the device was sent are stored; unacknowledged
QoS 1 publishes are kept in memory and redelivered on the next connection. When a device
(re)connects, it gets the desired properties that changed while it was away, pending
direct-method requests, queued commands and cloud-to-device messages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from thinghub.devices.hub_topics import (
    Telemetry,
    encode_bag,
    parse_hub_username,
    parse_query,
    parse_telemetry_topic,
)
from thinghub.devices.mqtt_server import Connection, DropConnection
from thinghub.domain.errors import DeviceOffline, Error, Invalid, TimedOut, Unauthorized
from thinghub.domain.ids import entity_id
from thinghub.domain.model import Device
from thinghub.mqtt import Publish
from thinghub.mqtt.packets import Connect
from thinghub.ports import C2DMessage, MethodResult
from thinghub.security.ca import common_name_of
from thinghub.services.core import Core

__all__ = ["Hub", "HubLink"]

logger = logging.getLogger(__name__)

CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5
CONNACK_IDENTIFIER_REJECTED = 2

TWIN_RES = "$iothub/twin/res/#"
TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/#"
METHODS = "$iothub/methods/POST/#"


def _filters_for(device: Device) -> tuple[str, ...]:
    """The topic filters a device (or module) may subscribe to."""
    root = (
        f"devices/{device.parent_id}/modules/{device.module_id}"
        if device.module_id
        else f"devices/{device.id}"
    )
    own = (f"{root}/inputs/#",) if device.module_id else (f"{root}/messages/devicebound/#",)
    return (TWIN_RES, TWIN_DESIRED, METHODS, *own)


def _c2d_topic(device: Device) -> str:
    return f"devices/{device.id}/messages/devicebound/"


@dataclass
class _PendingMethod:
    name: str
    payload: bytes
    future: asyncio.Future[MethodResult]


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

    def __init__(self, hub: Hub, conn: Connection, device: Device, session: _Session) -> None:
        self.hub = hub
        self.conn = conn
        self.device = device
        self.device_id = device.id
        self.session = session
        self.last_topic: tuple[str, Telemetry] | None = None

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        return await self.hub.call_method(self.device, name, payload, timeout_s)

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        if not self.session.has(TWIN_DESIRED):
            return
        body = json.dumps({**patch, "$version": version}).encode()
        self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", body)
        self.session.desired_version = version
        await self.hub.save_session(self.conn.client_id, self.session)

    async def push_c2d(self, message: C2DMessage) -> bool:
        if not self.session.has(f"{_c2d_topic(self.device)}#"):
            return False
        props = {"$.mid": message.id, **message.properties}
        self._publish(_c2d_topic(self.device) + encode_bag(props), message.body)
        return True

    async def close(self) -> None:
        self.conn.close()

    def _publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        try:
            self.conn.publish(topic, payload, qos)
        except ConnectionError as exc:
            raise DeviceOffline(
                f"device {self.device_id!r} disconnected", field="deviceId"
            ) from exc


class Hub:
    """The hub dialect for every device connection (one instance per server)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.auth = core.device_auth
        self._rids = itertools.count(1)
        self._pending: dict[str, dict[str, _PendingMethod]] = {}
        self._inflight: dict[str, tuple[tuple[Publish, ...], tuple[Publish, ...]]] = {}

    # -- connect -------------------------------------------------------------------------

    async def on_connect(self, conn: Connection, connect: Connect) -> int:
        identity = parse_hub_username(connect.username or "")
        if identity is None:
            logger.info("mqtt %s: username is not host/device/?...", connect.client_id)
            return CONNACK_BAD_CREDENTIALS
        expected_client = entity_id(identity.device_id, identity.module_id)
        if connect.client_id != expected_client:
            return CONNACK_IDENTIFIER_REJECTED
        try:
            if connect.password is not None:
                device = await self.auth.with_sas(
                    identity.device_id,
                    identity.module_id,
                    connect.password.decode("utf-8", "replace"),
                    host=identity.host,
                )
            elif conn.peer_cert is not None and common_name_of(conn.peer_cert) == expected_client:
                device = await self.auth.device(identity.device_id, identity.module_id)
            else:
                raise Unauthorized("no SAS token and no matching client certificate")
        except Unauthorized as exc:
            logger.info("mqtt %s: authentication failed: %s", connect.client_id, exc.message)
            return CONNACK_NOT_AUTHORIZED
        saved = (
            None if connect.clean_session else await self.core.store.load_session(connect.client_id)
        )
        if connect.clean_session:
            await self.core.store.delete_session(connect.client_id)
            self._inflight.pop(connect.client_id, None)
        session = _Session()
        if saved is not None:
            session.subscriptions = dict(saved.get("subscriptions", {}))
            session.desired_version = saved.get("desired_version")
            session.inflight = self._inflight.pop(connect.client_id, ((), ()))
        if identity.model_id and identity.model_id != device.model_id:
            device = await self.core.registry.save(device, model_id=identity.model_id)
        conn.state = HubLink(self, conn, device, session)
        conn.session_present = saved is not None
        return 0

    async def on_accepted(self, conn: Connection) -> None:
        link: HubLink = conn.state
        sent, queued = link.session.inflight
        if sent:
            conn.session.redeliver(sent)  # same packet ids, DUP set (§4.4)
        for publish in queued:
            conn.session.publish(publish.topic, publish.payload, publish.qos)
        link.session.inflight = ((), ())
        conn.flush()
        previous = self.core.links.attach(link)
        if previous is not None and previous is not link:
            logger.info("mqtt %s: new connection replaces the old one", conn.client_id)
            await previous.close()
        link.device = await self.core.registry.set_connected(link.device, True)
        logger.info("device %s connected from %s", link.device_id, conn.peer)
        await self._catch_up(link)

    async def _catch_up(self, link: HubLink) -> None:
        """Send what the device missed: desired changes, methods, commands, C2D."""
        session = link.session
        if session.has(TWIN_DESIRED):
            twin = await self.core.twins.get(link.device)
            if (
                session.desired_version is not None
                and twin.desired.version != session.desired_version
            ):
                await link.push_desired(twin.desired.properties, twin.desired.version)
        if session.has(METHODS):
            await self._methods_ready(link)
        if session.has(f"{_c2d_topic(link.device)}#"):
            await self.core.c2d.deliver_pending(link.device_id)

    async def _methods_ready(self, link: HubLink) -> None:
        for rid, pending in list(self._pending.get(link.device_id, {}).items()):
            link._publish(f"$iothub/methods/POST/{pending.name}/?$rid={rid}", pending.payload)
        await self.core.commands.device_connected(link.device_id)

    async def on_close(self, conn: Connection) -> None:
        link = conn.state
        if not isinstance(link, HubLink):
            return
        sent, queued = conn.session.inflight(), conn.session.queued()
        if sent or queued:
            self._inflight[conn.client_id] = (sent, queued)
        if self.core.links.detach(link):
            await self.core.registry.set_connected(link.device, False)
            logger.info("device %s disconnected", link.device_id)

    async def save_session(self, client_id: str, session: _Session) -> None:
        await self.core.store.save_session(client_id, session.state())

    # -- subscriptions -------------------------------------------------------------------

    async def on_subscribe(
        self, conn: Connection, filters: tuple[tuple[str, int], ...]
    ) -> list[int]:
        link: HubLink = conn.state
        allowed = _filters_for(link.device)
        codes = []
        for topic_filter, qos in filters:
            if topic_filter not in allowed:
                raise DropConnection(f"subscribe to {topic_filter!r} is not allowed")
            link.session.subscriptions[topic_filter] = min(qos, 1)
            codes.append(min(qos, 1))
        await self.save_session(conn.client_id, link.session)
        for topic_filter, _ in filters:
            if topic_filter == METHODS:
                await self._methods_ready(link)
            elif topic_filter == TWIN_DESIRED and link.session.desired_version is None:
                twin = await self.core.twins.get(link.device)
                link.session.desired_version = twin.desired.version
                await self.save_session(conn.client_id, link.session)
            elif topic_filter.endswith("/messages/devicebound/#"):
                await self.core.c2d.deliver_pending(link.device_id)
        return codes

    async def on_unsubscribe(self, conn: Connection, filters: tuple[str, ...]) -> None:
        link: HubLink = conn.state
        for topic_filter in filters:
            link.session.subscriptions.pop(topic_filter, None)
        await self.save_session(conn.client_id, link.session)

    async def on_puback(self, conn: Connection, publish: Publish) -> None:
        return None

    # -- publishes from the device -------------------------------------------------------

    async def on_publish(self, conn: Connection, publish: Publish) -> Any:
        link: HubLink = conn.state
        topic = publish.topic
        if topic.startswith("$iothub/"):
            await self._iothub_request(link, publish)
            return None
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
        try:
            message = self.core.ingest.build(
                link.device,
                publish.payload,
                properties=telemetry.properties,
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
        return self.core.ingest.submit(link.device, message)

    async def _iothub_request(self, link: HubLink, publish: Publish) -> None:
        topic = publish.topic
        query = parse_query(topic)
        rid = query.get("$rid", "")
        if topic.startswith("$iothub/twin/GET/"):
            twin = await self.core.twins.get(link.device)
            body = {
                "desired": twin.desired.with_version(),
                "reported": twin.reported.with_version(),
            }
            link._publish(f"$iothub/twin/res/200/?$rid={rid}", json.dumps(body).encode(), 0)
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            await self._patch_reported(link, publish.payload, rid)
        elif topic.startswith("$iothub/methods/res/"):
            self._method_response(link, topic, publish.payload, rid)
        else:
            raise DropConnection(f"publish to {topic!r} is not allowed")

    async def _patch_reported(self, link: HubLink, payload: bytes, rid: str) -> None:
        try:
            patch = json.loads(payload)
            twin = await self.core.twins.patch_reported(link.device, patch)
        except (ValueError, Invalid) as exc:
            logger.info("device %s: bad reported patch: %s", link.device_id, exc)
            link._publish(f"$iothub/twin/res/400/?$rid={rid}", b"", 0)
            return
        link._publish(f"$iothub/twin/res/204/?$rid={rid}&$version={twin.reported.version}", b"", 0)

    # -- direct methods ------------------------------------------------------------------

    async def call_method(
        self, device: Device, name: str, payload: Any, timeout_s: float
    ) -> MethodResult:
        link = self.core.links.get(device.id)
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
        pending[rid] = _PendingMethod(name, body, future)
        try:
            link._publish(f"$iothub/methods/POST/{name}/?$rid={rid}", body)
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
        pending = self._pending.get(link.device_id, {}).get(rid)
        if pending is None or pending.future.done():
            logger.info("device %s answered unknown or late method request %s", link.device_id, rid)
            return
        pending.future.set_result(MethodResult(status, _decode_payload(payload)))


def _decode_payload(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
