"""The ux4iot face's running part: sessions, the Socket.IO channel, the live feed and the
sweeper of idle sessions, once per server.

One `Ux4iotRuntime` serves every build of the face (the shared HTTP port and its own port
under --face-listen keep it in `FaceContext.shared`), so a session opened on one port is the
same session on the other, and one Socket.IO server holds every socket. It is the face's
`Worker`: `run()` owns the feed and the sweeper in the server's TaskGroup; `stop()` ends
every socket before the HTTP servers stop.

It also answers "what is the value now" for both wire generations: the REST reads, and the
values a v2 session is pushed at once when a grant subscribes it (or when its socket
connects after the grant, since ux4iot-react 2.0.2 grants before its socket is up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from thinghub.config import Settings
from thinghub.domain import live as core
from thinghub.domain.errors import NotFound
from thinghub.domain.model import Device, Principal, Role
from thinghub.faces.ux4iot.fanout import ConnectionChanged, MessageArrived, TwinChanged
from thinghub.faces.ux4iot.feed import Feed
from thinghub.faces.ux4iot.grants import Subscription, SubscriptionType, WireProtocol
from thinghub.faces.ux4iot.live import LiveChannel
from thinghub.faces.ux4iot.nats_store import NatsSessionStore
from thinghub.faces.ux4iot.payloads import (
    connection_state_data,
    device_twin_data,
    select_telemetry,
    telemetry_data,
    twin_document,
)
from thinghub.faces.ux4iot.sessions import SessionTable
from thinghub.faces.ux4iot.store import MemorySessionStore, SessionStore
from thinghub.services.core import Services

__all__ = ["SWEEP_MAX_S", "SWEEP_MIN_S", "Ux4iotRuntime", "session_principal"]

logger = logging.getLogger(__name__)

# Idle sessions are unknown at once (lazy expiry); the sweep only returns their memory, a
# quarter of the idle time after they went idle, within these bounds.
SWEEP_MIN_S = 0.5
SWEEP_MAX_S = 60.0


def session_principal(session_id: str, account_id: str) -> Principal:
    """Who a session acts as: its account, with what its grants allow (checked by the face:
    the role only lets it invoke methods and patch desired properties)."""
    return Principal(account_id, Role.OPERATOR, f"ux4iot-session:{session_id}", "session")


class Ux4iotRuntime:
    def __init__(
        self,
        services: Services,
        settings: Settings,
        *,
        now: Callable[[], float],
        store: SessionStore | None = None,
    ) -> None:
        self.services = services
        self.now = now
        idle_s = settings.ux4iot_session_idle_s
        self.store: SessionStore = store or MemorySessionStore(
            SessionTable(idle_s=idle_s, max_sessions=settings.ux4iot_max_sessions)
        )
        self.channel = LiveChannel(self.store, now, on_attach=self._on_attach)
        self.feed = Feed(services.live, self._deliver)
        self.sweep_s = min(SWEEP_MAX_S, max(SWEEP_MIN_S, idle_s / 4))
        if isinstance(self.store, NatsSessionStore):  # other nodes change sessions too
            self.store.on_removed = self._removed
            self.store.on_bound = self.bound

    @property
    def name(self) -> str:
        return "sessions"

    # -- Worker --------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.feed.run(), name="ux4iot.feed")
            tasks.create_task(self._sweep(), name="ux4iot.sweeper")
            if isinstance(self.store, NatsSessionStore):
                tasks.create_task(self.store.run(), name="ux4iot.sessions.watch")

    async def stop(self) -> None:
        closed = await self.channel.close_all()
        await self.channel.shutdown()
        logger.info("ux4iot: closed %d sockets", closed)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            gone = await self.store.expire(self.now())
            if gone:
                logger.info("ux4iot: %d idle sessions expired", len(gone))
                await self.retain_feed()

    # -- sessions ------------------------------------------------------------------------------

    async def bound(self, account_id: str) -> None:
        """A grant bound a session to this account: its devices' events are watched."""
        await self.feed.ensure(account_id)

    async def retain_feed(self) -> None:
        """Stop watching accounts that have no session left."""
        self.feed.retain(await self.store.accounts())

    async def sessions_deleted(self, session_ids: Iterable[str]) -> None:
        """Sessions are gone: their sockets are disconnected (the client opens a new
        session), and accounts without sessions are no longer watched."""
        for session_id in session_ids:
            await self.channel.close_session(session_id)
        await self.retain_feed()

    async def _removed(self, session_id: str) -> None:
        """A session left the shared store (deleted or expired on any node): this node's
        sockets of it are disconnected."""
        await self.channel.close_session(session_id)
        await self.retain_feed()

    # -- the live feed -------------------------------------------------------------------------

    async def _deliver(self, event: core.LiveEvent) -> None:
        """One core event to the sessions watching its device (fanout.plan via publish)."""
        if isinstance(event, core.TelemetryReceived):
            await self.channel.publish(
                MessageArrived(event.account_id, event.device_id, event.ts, event.body)
            )
        elif isinstance(event, core.ConnectionChanged):
            await self.channel.publish(
                ConnectionChanged(event.account_id, event.device_id, event.ts, event.connected)
            )
        elif isinstance(event, core.TwinChanged):
            kind = SubscriptionType.DEVICE_TWIN
            if not self.store.audience(event.account_id, event.device_id, kind):
                return  # nobody watches this twin: do not even read it
            device = await self.services.registry.find(event.device_id)
            if device is None or device.account_id != event.account_id:
                return
            document = await self.twin_document(device)
            await self.channel.publish(
                TwinChanged(event.account_id, event.device_id, self.now(), document)
            )

    # -- values now ----------------------------------------------------------------------------

    async def twin_document(self, device: Device) -> dict[str, Any]:
        """ux4iot's twin: `{version, properties: {reported, desired}}`, each section with its
        `$version` and `$metadata` as IoT Hub writes them."""
        twin = await self.services.twins.get(device)
        return twin_document(twin.version, twin.reported.document(), twin.desired.document())

    async def twin_time(self, device: Device) -> float:
        twin = await self.services.twins.get(device)
        times = [t for t in (twin.desired.last_updated, twin.reported.last_updated) if t]
        return max(times) if times else device.created_at

    async def connection_time(self, device: Device) -> float:
        return device.last_activity_at or device.updated_at

    async def push_current(
        self, session_id: str, account_id: str, subscriptions: Iterable[Subscription]
    ) -> int:
        """Send a v2 session the present value of each subscription (telemetry: the last
        values; connection state; the twin; nothing for d2c). How many payloads went."""
        principal = session_principal(session_id, account_id)
        sent = 0
        for sub in subscriptions:
            try:
                device = await self.services.registry.get_device(principal, sub.device_id)
            except NotFound:
                continue  # deleted since the grant
            payload = await self._current(principal, device, sub)
            if payload is not None:
                await self.channel.send_to([session_id], payload)
                sent += 1
        return sent

    async def _current(
        self, principal: Principal, device: Device, sub: Subscription
    ) -> dict[str, Any] | None:
        if sub.type is SubscriptionType.TELEMETRY:
            keys = None if sub.telemetry_key is None else frozenset({sub.telemetry_key})
            values = await self.services.queries.latest_values(principal, device, keys)
            picked = select_telemetry({k: v for k, (v, _) in values.items()}, keys)
            if picked is None:
                return None
            ts = max(values[key][1] for key in picked)
            return telemetry_data(device.id, ts, picked)
        if sub.type is SubscriptionType.CONNECTION_STATE:
            connected = await self.services.registry.is_connected(device.id)
            ts = await self.connection_time(device)
            return connection_state_data(device.id, ts, connected, WireProtocol.V2)
        if sub.type is SubscriptionType.DEVICE_TWIN:
            document = await self.twin_document(device)
            return device_twin_data(device.id, await self.twin_time(device), document)
        return None  # d2c messages have no present value

    async def _on_attach(self, session_id: str, namespace: str) -> None:
        info = await self.store.get(session_id, self.now())
        if info is None or info.protocol is not WireProtocol.V2 or info.account_id is None:
            return
        subscriptions = await self.store.subscriptions(session_id, self.now())
        await self.push_current(session_id, info.account_id, subscriptions)
