"""The Ioto MQTT dialect: what the Embedthis Ioto agent expects of its cloud after provisioning.

Theory of operation
-------------------
An Ioto device connects to the same TLS port as Azure devices, with the client certificate
provisioning gave it and no user name (devices/router.py sends such a CONNECT here). The
certificate must be the device's latest (services.claims.device_for_certificate), the client
id its device id. Topics and payloads are devices/ioto_topics.py; this module connects them
to the core:

- subscriptions: the agent's three wildcard subscriptions (and narrower ones under them) are
  granted; anything else gets 0x80. They persist with the session (clean session 0).
- ``db/syncDown``: the desired properties changed since the device's last sync go down as
  ``sync/UPSERT`` Store items, then ``sync/SYNCDOWN {updated}`` (the agent is not ready
  before it). ``db/syncToDynamo``: Store items become the device's reported properties
  (``remove``: the property is deleted); items of other tables are kept as telemetry
  (``{"model", "cmd", "key", "item"}``); then ``sync/SYNC {seq, keys, updated}``.
  ``store/set`` (sync off) is a reported property too.
- ``metric/set``: a telemetry message ``{metric: value}`` (so an observation of that metric,
  on every face); the dimensions ride along as the property ``ioto-dimensions``.
  ``ioto/service/{id}/metric/get/{seq}``: the statistic over the device's own values,
  answered on ``ioto/device/{id}/metric/get/{seq}`` in plain text; ``store/get/{seq}``
  (``{"key"}``: ioGetNum, ioGetBool, ioGet without sync) the Store key's value, likewise.
- desired patches from any face reach the device as ``sync/UPSERT`` (``sync/REMOVE`` for a
  deleted property) of Store items; commands (ST methods, IoT Central commands) as
  ``sync/UPSERT`` of a Command row, counted as delivered when the device acknowledges it.
- AWS IoT named shadows (``$aws/things/{id}/shadow/name/{name}/get|update|delete``, used by
  the agent when ``services.shadow`` is on): the device's own shadow topics may be
  subscribed to, and each shadow's reported state is the reported property
  ``shadow.{name}`` (so every face sees it); get, update and delete are answered on
  ``.../accepted`` or ``.../rejected`` as AWS IoT answers them.
- a release (services.claims) publishes ``provision/release`` (a millisecond timestamp),
  waits briefly for its PUBACK, and closes the connection.

Every QoS 1 PUBLISH from the device is acknowledged after its work is stored. A payload
that cannot be used (not JSON, a bad field) cannot be fixed by sending it again: it is
recorded as a telemetry_rejected_event and acknowledged. A topic naming another device,
and QoS 2, close the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from thinghub.devices import ioto_topics as topics
from thinghub.devices.errors import codes_for
from thinghub.devices.ioto_topics import (
    PublishKind,
    ServicePublish,
    ShadowOp,
    ShadowRequest,
    Statistic,
    SyncKind,
)
from thinghub.devices.links import LocalLinks
from thinghub.devices.mqtt_server import (
    REFUSAL_LOG_INTERVAL_S,
    Connection,
    ConnectionClosed,
    DropConnection,
)
from thinghub.devices.throttle import ConnectLimiter
from thinghub.domain.claims import Registration
from thinghub.domain.clock import parse_ts
from thinghub.domain.errors import (
    DeviceOffline,
    Error,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    TimedOut,
    TooLarge,
    Unauthorized,
)
from thinghub.domain.events import EventType
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Device
from thinghub.domain.storable import check_storable
from thinghub.domain.twin import validate_patch
from thinghub.mqtt import Publish
from thinghub.mqtt.packets import Connect
from thinghub.mqtt.topics import topic_matches
from thinghub.ports import C2DMessage, Clock, DeviceFeed, MethodResult
from thinghub.services.core import Services

__all__ = ["Ioto", "IotoLink"]

logger = logging.getLogger(__name__)

# How long a release waits for the device to acknowledge provision/release before closing.
RELEASE_ACK_TIMEOUT_S = 5.0
# metric/get reads at most this many of the newest values in its period.
MAX_METRIC_POINTS = 10_000
SUBACK_REFUSED = 0x80
# The reported property holding the named shadows' reported states, by shadow name.
SHADOW_PROPERTY = "shadow"


@dataclass
class _Session:
    """What persists per device (clean session 0): its subscriptions."""

    subscriptions: dict[str, int] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return {"dialect": "ioto", "subscriptions": self.subscriptions}


class IotoLink:
    """One Ioto device's live connection, as the services see it (the DeviceLink port)."""

    def __init__(
        self,
        dialect: Ioto,
        conn: Connection,
        device: Device,
        registration: Registration,
        session: _Session,
        *,
        persistent: bool,
    ) -> None:
        self.dialect = dialect
        self.conn = conn
        self.device = device
        self.device_id = device.id
        self.registration = registration
        self.session = session
        self.persistent = persistent
        self.handed_over = False
        # QoS 1 publishes awaiting their PUBACK, by payload (each carries a unique id).
        self._awaiting: dict[bytes, asyncio.Future[None]] = {}

    @property
    def account_id(self) -> str:
        return self.device.account_id

    def covers(self, topic: str) -> bool:
        """Whether the device subscribed to something that matches `topic`."""
        return any(topic_matches(f, topic) for f in self.session.subscriptions)

    # -- DeviceLink ----------------------------------------------------------------------

    async def call_method(self, name: str, payload: Any, timeout_s: float) -> MethodResult:
        """A command as a Command row (sync/UPSERT); delivered once the device acknowledges it
        (the agent answers commands with actions, not with a reply)."""
        if not self.covers(topics.sync_topic(self.device_id, SyncKind.UPSERT)):
            raise DeviceOffline(
                f"device {self.device_id!r} is connected but not subscribed to its sync topics",
                field="deviceId",
            )
        command_id = new_uuid()
        if payload is None:
            args: dict[str, Any] = {}
        elif isinstance(payload, dict):
            args = payload
        else:
            args = {"value": payload}
        item = topics.command_item(
            account_id=self.account_id,
            device_id=self.device_id,
            command_id=command_id,
            command=name,
            args=args,
            created=self.dialect.now(),
        )
        body = topics.sync_item_message(item)
        acked = self._await_ack(body)
        try:
            self._publish(topics.sync_topic(self.device_id, SyncKind.UPSERT), body)
            async with asyncio.timeout(timeout_s):
                await acked
        except TimeoutError:
            raise TimedOut(
                f"device {self.device_id!r} did not acknowledge command {name!r} within "
                f"{timeout_s:g} s",
                field="responseTimeoutInSeconds",
            ) from None
        finally:
            self._awaiting.pop(body, None)
        logger.info("ioto device %s: command %s delivered", self.device_id, name)
        return MethodResult(200, {"id": command_id, "command": name, "status": "delivered"})

    async def push_desired(self, patch: dict[str, Any], version: int) -> None:
        upsert = topics.sync_topic(self.device_id, SyncKind.UPSERT)
        if not self.covers(upsert):
            return
        twin = await self.dialect.services.twins.get(self.device)
        now = self.dialect.now()
        for key in patch:
            if key in twin.desired.properties:
                self._send_store_item(key, twin.desired.properties[key], now)
            else:
                self._send_removal(key, now)

    async def push_c2d(self, message: C2DMessage) -> bool:
        return False  # Ioto has no cloud-to-device messages: they wait for another dialect

    def has_subscribed(self, feed: DeviceFeed) -> bool:
        if feed == "c2d":
            return False
        return self.covers(topics.sync_topic(self.device_id, SyncKind.UPSERT))

    async def close(self, *, revoked: bool = False) -> None:
        if revoked:
            body = topics.release_message(self.dialect.now())
            acked = self._await_ack(body)
            try:
                self._publish(topics.release_topic(self.device_id), body)
                async with asyncio.timeout(RELEASE_ACK_TIMEOUT_S):
                    await acked
            except (DeviceOffline, TimeoutError):
                logger.info("ioto device %s: provision/release not acknowledged", self.device_id)
            finally:
                self._awaiting.pop(body, None)
        self.conn.close()

    # -- sending -------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes) -> None:
        try:
            self.conn.publish(topic, payload, 1)
        except ConnectionClosed as exc:
            raise DeviceOffline(
                f"device {self.device_id!r} disconnected", field="deviceId"
            ) from exc

    def _await_ack(self, payload: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._awaiting[payload] = future
        return future

    def acknowledged(self, publish: Publish) -> None:
        future = self._awaiting.pop(publish.payload, None)
        if future is not None and not future.done():
            future.set_result(None)

    def closed(self) -> None:
        for future in self._awaiting.values():
            if not future.done():
                future.set_exception(
                    DeviceOffline(f"device {self.device_id!r} disconnected", field="deviceId")
                )
        self._awaiting.clear()

    def _send_store_item(self, key: str, value: Any, updated: float) -> None:
        item = topics.store_item(
            account_id=self.account_id,
            device_id=self.device_id,
            key=key,
            value=value,
            created=updated,
            updated=updated,
        )
        topic = topics.sync_topic(self.device_id, SyncKind.UPSERT)
        self._publish(topic, topics.sync_item_message(item))

    def _send_removal(self, key: str, updated: float) -> None:
        item = {
            "sk": f"s#{key}",
            "_type": "Store",
            "accountId": self.account_id,
            "deviceId": self.device_id,
            "key": key,
            "updated": topics.format_iso_ms(updated),
        }
        topic = topics.sync_topic(self.device_id, SyncKind.REMOVE)
        self._publish(topic, topics.sync_item_message(item))


class Ioto:
    """The Ioto dialect for every connection with a provisioned certificate (one instance)."""

    def __init__(
        self,
        services: Services,
        links: LocalLinks,
        *,
        clock: Clock,
        connects: ConnectLimiter | None = None,
    ) -> None:
        self.services = services
        self.links = links
        self.clock = clock  # the times written into messages to devices
        self.connects = connects  # shared with the hub dialect: one budget per client id
        self._refused = 0
        self._refused_logged_at = -REFUSAL_LOG_INTERVAL_S

    def now(self) -> float:
        return self.clock.now()

    # -- connect -------------------------------------------------------------------------

    async def on_connect(self, conn: Connection, connect: Connect) -> int:
        try:
            if conn.peer_cert is None:
                raise Unauthorized("no client certificate", field="certificate")
            if connect.username is not None or connect.password is not None:
                raise Unauthorized("an Ioto device sends no user name", field="username")
            device, registration = await self.services.claims.device_for_certificate(
                connect.client_id, conn.peer_cert
            )
        except Unauthorized as exc:
            logger.info("ioto %s: refused: %s", connect.client_id, exc.message)
            return codes_for(exc).connack
        if self.connects is not None and not self.connects.allow(
            connect.client_id, time.monotonic()
        ):
            self._log_refused(connect.client_id)
            return codes_for(RateLimited("connecting too often", field="clientId")).connack
        sessions = self.services.sessions
        saved = None if connect.clean_session else await sessions.load(connect.client_id)
        if connect.clean_session:
            await sessions.delete(connect.client_id)
        session = _Session()
        if saved is not None and saved.get("dialect") == "ioto":
            session.subscriptions = {
                str(k): int(v) for k, v in dict(saved.get("subscriptions", {})).items()
            }
        else:
            saved = None
        conn.state = IotoLink(
            self, conn, device, registration, session, persistent=not connect.clean_session
        )
        conn.session_present = saved is not None
        return 0

    def _log_refused(self, client_id: str) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSAL_LOG_INTERVAL_S:
            logger.warning(
                "ioto %s: connecting too often; refused with CONNACK 3 (%d since the last line)",
                client_id,
                self._refused,
            )
            self._refused = 0
            self._refused_logged_at = now

    async def on_accepted(self, conn: Connection) -> None:
        link: IotoLink = conn.state
        previous = await self.links.attach(link)
        if previous is not None and previous is not link:
            logger.info("ioto %s: new connection replaces the old one", conn.client_id)
            await previous.close()
        link.device = await self.services.registry.set_connected(link.device, True)
        logger.info("ioto device %s connected from %s", link.device_id, conn.peer)
        if link.has_subscribed("methods"):
            await self.services.commands.device_connected(link.device_id)

    async def on_close(self, conn: Connection) -> None:
        link = conn.state
        if not isinstance(link, IotoLink):
            return
        link.handed_over = True
        link.closed()
        if await self.links.detach(link):
            await self.services.registry.set_connected(link.device, False)
            logger.info("ioto device %s disconnected", link.device_id)

    async def _save(self, link: IotoLink) -> None:
        if link.persistent and not link.handed_over:
            await self.services.sessions.save(link.conn.client_id, link.session.state())

    # -- subscriptions -------------------------------------------------------------------

    async def on_subscribe(
        self, conn: Connection, filters: tuple[tuple[str, int], ...]
    ) -> list[int]:
        link: IotoLink = conn.state
        had_commands = link.has_subscribed("methods")
        codes = []
        for topic_filter, qos in filters:
            if topics.allowed_subscription(
                topic_filter, device_id=link.device_id, account_id=link.account_id
            ):
                granted = min(qos, 1)
                link.session.subscriptions[topic_filter] = granted
                codes.append(granted)
            else:
                logger.info("ioto %s: subscription to %r refused", link.device_id, topic_filter)
                codes.append(SUBACK_REFUSED)
        await self._save(link)
        if not had_commands and link.has_subscribed("methods"):
            await self.services.commands.device_connected(link.device_id)
        return codes

    async def on_unsubscribe(self, conn: Connection, filters: tuple[str, ...]) -> None:
        link: IotoLink = conn.state
        for topic_filter in filters:
            link.session.subscriptions.pop(topic_filter, None)
        await self._save(link)

    async def on_puback(self, conn: Connection, publish: Publish) -> None:
        link: IotoLink = conn.state
        link.acknowledged(publish)

    # -- publishes from the device -------------------------------------------------------

    def publish_now(self, conn: Connection, publish: Publish) -> asyncio.Future[Any] | None:
        return None  # every PUBLISH goes to on_publish

    async def on_publish(self, conn: Connection, publish: Publish) -> Any:
        link: IotoLink = conn.state
        if publish.qos == 2:
            raise DropConnection(f"QoS 2 publish to {publish.topic!r}: QoS 0 and 1 only")
        try:
            shadow = topics.parse_shadow_topic(publish.topic, device_id=link.device_id)
            if shadow is None:
                request = topics.parse_publish_topic(publish.topic, device_id=link.device_id)
        except Forbidden as exc:
            raise DropConnection(exc.message) from exc
        except Invalid as exc:
            await self._reject(link, publish.topic, exc)
            return None
        await self.services.registry.touch(link.device)
        if shadow is not None:
            await self._shadow(link, shadow, publish.payload)
            return None
        try:
            return await self._dispatch(link, request, publish.payload)
        except (Invalid, TooLarge) as exc:
            await self._reject(link, publish.topic, exc)
            return None

    async def _dispatch(self, link: IotoLink, request: ServicePublish, payload: bytes) -> Any:
        kind = request.kind
        if kind is PublishKind.SYNC_DOWN:
            await self._sync_down(link, topics.parse_sync_down(payload).since)
        elif kind is PublishKind.SYNC_TO_DYNAMO:
            await self._sync_up(link, topics.parse_sync_to_dynamo(payload))
        elif kind is PublishKind.METRIC_SET:
            metric = topics.parse_metric_set(payload, device_id=link.device_id)
            return self._metric(link, metric)
        elif kind is PublishKind.STORE_SET:
            store = topics.parse_store_set(payload)
            await self._report(link, {store.key: store.value}, "store/set")
        elif request.service == "metric/get" and request.seq is not None:
            query = topics.parse_metric_get(payload, device_id=link.device_id)
            value = await self._statistic(link, query)
            reply = topics.reply_topic(link.device_id, request.service, request.seq)
            link._publish(reply, topics.format_metric_reply(value))
        elif request.service == "store/get" and request.seq is not None:
            key = topics.parse_store_get(payload)
            reply = topics.reply_topic(link.device_id, request.service, request.seq)
            link._publish(reply, topics.format_store_reply(await self._store_get(link, key)))
        else:
            logger.info("ioto %s: no handler for request %r", link.device_id, request.service)
        return None

    async def _store_get(self, link: IotoLink, key: str) -> Any:
        """A Store key's value: the newer of its desired (set by the cloud) and reported (set
        by the device) values, as the vendor's one Store row per key holds the last write."""
        twin = await self.services.twins.get(link.device)
        held = [
            (section.changed_at(key) or 0.0, section.properties[key])
            for section in (twin.reported, twin.desired)
            if key in section.properties
        ]
        return max(held, key=lambda pair: pair[0])[1] if held else None

    async def _reject(self, link: IotoLink, topic: str, error: Error) -> None:
        """A message that cannot be used: recorded as an event, and acknowledged."""
        logger.info("ioto %s: %s refused: %s", link.device_id, topic[:200], error.message)
        await self.services.events.record(
            link.device,
            EventType.TELEMETRY_REJECTED,
            {"reason": error.message, "field": error.field, "topic": topic[:256]},
        )

    # -- sync ----------------------------------------------------------------------------

    async def _sync_down(self, link: IotoLink, since: float) -> None:
        """Desired properties changed since `since` as Store items, then SYNCDOWN."""
        twin = await self.services.twins.get(link.device)
        desired = twin.desired
        for key, value in desired.properties.items():
            updated = _updated(desired.metadata.get(key), desired.last_updated)
            if updated > since:
                link._send_store_item(key, value, updated)
        link._publish(
            topics.sync_topic(link.device_id, SyncKind.SYNCDOWN), topics.syncdown_ack(self.now())
        )

    async def _sync_up(self, link: IotoLink, batch: topics.SyncToDynamo) -> None:
        """Store the changes of a syncToDynamo batch, then acknowledge them (SYNC)."""
        reported: dict[str, Any] = {}
        kept = []
        where = "db/syncToDynamo"
        for change in batch.changes:
            # Each change on its own: one the core cannot take is refused alone (recorded),
            # and the batch is still acknowledged, or the agent would send it for ever.
            try:
                if change.model != "Store":
                    kept.append(self._keep(link, change))
                elif change.cmd is topics.ChangeCommand.REMOVE:
                    reported[_store_key(change)] = None
                else:
                    item = change.item
                    value = topics.store_value(item.get("value"), item.get("type"))
                    reported[_store_key(change)] = value
            except (Invalid, TooLarge) as exc:
                await self._reject(link, where, exc)
        if reported:
            await self._report(link, reported, where)
        for future in kept:
            await future
        link._publish(
            topics.sync_topic(link.device_id, SyncKind.SYNC),
            topics.sync_ack(batch.seq, batch.keys, self.now()),
        )

    def _keep(self, link: IotoLink, change: topics.Change) -> asyncio.Future[Any]:
        """A change to a table other than Store, kept as a telemetry message."""
        body = {"model": change.model, "cmd": change.cmd.value, "key": change.key,
                "item": change.item}  # fmt: skip
        check_storable(body, "item")
        ingest = self.services.ingest
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        message = ingest.build(
            link.device,
            raw,
            properties={"ioto-model": str(change.model or "")[:128]},
            content_type="application/json",
            source="ioto",
        )
        return ingest.submit(link.device, message)

    async def _report(self, link: IotoLink, changes: dict[str, Any], topic: str) -> None:
        """Store items as reported properties; a key the twin cannot hold is refused alone."""
        patch: dict[str, Any] = {}
        for key, value in changes.items():
            try:
                one = validate_patch({key: value}, "reported")
                check_storable(one, "reported")
            except Invalid as exc:
                await self._reject(link, topic, exc)
                continue
            patch.update(one)
        if patch:
            try:
                await self.services.twins.patch_reported(link.device, patch)
            except (Invalid, TooLarge) as exc:  # e.g. the section would be over its cap
                await self._reject(link, topic, exc)

    # -- shadows -------------------------------------------------------------------------

    async def _shadow(self, link: IotoLink, request: ShadowRequest, payload: bytes) -> None:
        """A named shadow's get, update or delete, answered on .../accepted or .../rejected."""
        now = self.now()
        token: str | None = None
        twins = self.services.twins
        try:
            if request.op is ShadowOp.UPDATE:
                update = topics.parse_shadow_update(payload)
                token = update.client_token
                patch = {SHADOW_PROPERTY: {request.name: update.reported}}
                twin = await twins.patch_reported(link.device, patch)
                body = topics.shadow_document(
                    update.reported or {},
                    version=twin.reported.version,
                    updated=now,
                    now=now,
                    client_token=token,
                )
            else:
                token = topics.parse_shadow_request(payload)
                twin = await twins.get(link.device)
                shadows = twin.reported.properties.get(SHADOW_PROPERTY)
                state = shadows.get(request.name) if isinstance(shadows, dict) else None
                if not isinstance(state, dict):
                    raise NotFound(f"No shadow exists with name: '{request.name}'")
                if request.op is ShadowOp.GET:
                    updated = twin.reported.changed_at(SHADOW_PROPERTY, request.name) or now
                    body = topics.shadow_document(
                        state,
                        version=twin.reported.version,
                        updated=updated,
                        now=now,
                        client_token=token,
                    )
                else:
                    patch = {SHADOW_PROPERTY: {request.name: None}}
                    twin = await twins.patch_reported(link.device, patch)
                    body = topics.shadow_deleted(
                        version=twin.reported.version, now=now, client_token=token
                    )
        except (Invalid, TooLarge, NotFound) as exc:
            code = 404 if isinstance(exc, NotFound) else 413 if isinstance(exc, TooLarge) else 400
            logger.info("ioto %s: shadow %s refused: %s", link.device_id, request, exc.message)
            reply = topics.shadow_reply_topic(link.device_id, request, accepted=False)
            body = topics.shadow_error(code, exc.message, now=now, client_token=token)
        else:
            reply = topics.shadow_reply_topic(link.device_id, request, accepted=True)
        if link.covers(reply):
            link._publish(reply, body)

    # -- metrics -------------------------------------------------------------------------

    def _metric(self, link: IotoLink, metric: topics.MetricSet) -> asyncio.Future[Any]:
        """metric/set as a telemetry message {metric: value}: an observation of the metric."""
        ingest = self.services.ingest
        raw = json.dumps({metric.metric: metric.value}, ensure_ascii=False).encode()
        dimensions = json.dumps(list(metric.dimensions), separators=(",", ":"))
        message = ingest.build(
            link.device,
            raw,
            properties={"ioto-dimensions": dimensions},
            content_type="application/json",
            source="ioto",
        )
        return ingest.submit(link.device, message)

    async def _statistic(self, link: IotoLink, query: topics.MetricGet) -> float | None:
        """The statistic of the device's own values of a metric over the period (the
        dimensions always name the device itself: a device reads only its own data)."""
        queries = self.services.queries
        if query.statistic is Statistic.CURRENT:
            newest = await queries.device_observations(
                link.device, query.metric, since=None, limit=1
            )
            return newest[0].value if newest else None
        since = self.now() - query.period_s
        values = [
            o.value
            for o in await queries.device_observations(
                link.device, query.metric, since=since, limit=MAX_METRIC_POINTS
            )
        ]
        if query.statistic is Statistic.COUNT:
            return float(len(values))
        if not values:
            return None
        if query.statistic is Statistic.SUM:
            return math.fsum(values)
        if query.statistic is Statistic.MIN:
            return min(values)
        if query.statistic is Statistic.MAX:
            return max(values)
        return math.fsum(values) / len(values)


def _store_key(change: topics.Change) -> str:
    """A Store item's key: its `key` field, else the change's key without ``s#``."""
    key = change.item.get("key")
    if isinstance(key, str) and key:
        return key
    return change.key.removeprefix("s#")


def _updated(meta: Any, fallback: float | None) -> float:
    """When a desired property last changed, from its `$metadata`."""
    if isinstance(meta, dict) and isinstance(meta.get("$lastUpdated"), str):
        try:
            return parse_ts(meta["$lastUpdated"], "$lastUpdated")
        except Invalid:
            pass
    return fallback or 0.0
