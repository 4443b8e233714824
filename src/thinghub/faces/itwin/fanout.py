"""Live pushes of the iTwin face: subscribeData and subscribeNodes/Devices/Sensors, fanned out.

Theory of operation. Every client subscription belongs to one *feed*: the live events of one
account and project (services.live.watch, the only door to the bus). A feed is one bus
subscription however many clients share it, and its one pump task reads the events and
dispatches them:

- data subscriptions are grouped by what they ask (sensor, metric, unit, params): a new
  observation is converted and encoded once per group, and only the JSON-RPC id differs
  between the group's subscribers, so each push is a concatenation of bytes;
- entity subscriptions get the changed node, device or sensor rendered once per event and
  sent to every subscriber of it.

Pushes are written without waiting (`Push`, the transport's `push`): a client that does not
read has its pushes dropped once its transport's buffer is full (the transport counts them),
so one slow client never holds the feed or the other clients up. Live delivery is at most
once, like the bus; the store is the record (getData).

Feeds start with their first subscriber and stop with their last. The Fanout is a worker of
the face (`run` in the server's TaskGroup): each feed's pump task runs in the Fanout's own
TaskGroup, is cancelled and awaited when its feed stops, and all of them with `stop`. The bus
subscription is made inside the pump, which says when it is made, so a subscriber is told
"acknowledged" only once nothing published after that can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from thinghub.domain.deltas import DeltaParams, reference_time
from thinghub.domain.live import ConnectionChanged, DeviceChanged, LiveEvent, TelemetryReceived
from thinghub.faces.itwin.data import MetricChoice, Observations
from thinghub.faces.itwin.framing import encode_frame
from thinghub.faces.itwin.ids import EntityKind
from thinghub.faces.itwin.jsonrpc import RequestId
from thinghub.faces.itwin.network import Entity, Facts, Network, Sensor
from thinghub.faces.itwin.scope import Scope
from thinghub.faces.itwin.timestamps import format_time
from thinghub.services.live import LiveService

__all__ = ["FEED_KINDS", "Fanout", "Push", "Subscriber"]

logger = logging.getLogger(__name__)

# Writes one encoded frame to a client without waiting; False when it was dropped.
Push = Callable[[bytes], bool]
# What a feed watches: new observations, connections, and changes of the records.
FEED_KINDS: Final = frozenset({"telemetry", "connection", "device"})


class Subscriber:
    """One client subscription: the frames it gets reuse its subscribe request's id."""

    __slots__ = ("_head", "_push", "dropped")

    def __init__(self, request_id: RequestId, push: Push) -> None:
        self._push = push
        self._head = b'{"jsonrpc":"2.0","id":' + encode_frame(request_id) + b',"result":'
        self.dropped = 0

    def send(self, result: bytes) -> None:
        """Push one result (encoded with framing.encode_frame) under this subscription's id."""
        if not self._push(self._head + result + b"}"):
            self.dropped += 1


@dataclass(slots=True, eq=False)
class _DataGroup:
    """Data subscribers asking the same thing of one sensor."""

    choice: MetricChoice
    source: str  # the telemetry field the raw values are in
    is_delta: bool
    window_s: float | None
    reference_at: float | None  # non-rolling deltas: the reference is at or after this time
    reference: float | None  # ... and its value, once there is one
    subscribers: set[Subscriber] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _EntityWatch:
    kind: EntityKind
    ids: frozenset[str] | None  # None: every entity of the kind in the feed's project
    subscriber: Subscriber


@dataclass(slots=True, eq=False)
class _Feed:
    key: tuple[str, str | None]
    scope: Scope  # the first subscriber's, for reads while dispatching
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    users: int = 0
    # (holder core id, component) -> group key -> group
    data: dict[tuple[str, str | None], dict[tuple[Any, ...], _DataGroup]] = field(
        default_factory=dict
    )
    entities: list[_EntityWatch] = field(default_factory=list)


class Fanout:
    """The feeds of one face instance (see the module docstring)."""

    def __init__(self, live: LiveService, network: Network, observations: Observations) -> None:
        self.live = live
        self.network = network
        self.observations = observations
        self._feeds: dict[tuple[str, str | None], _Feed] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()

    @property
    def name(self) -> str:
        return "itwin.fanout"

    async def run(self) -> None:
        """Host the feeds' pump tasks until cancelled (the face's worker)."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._running.set()
            try:
                await asyncio.get_running_loop().create_future()  # until cancelled
            finally:
                self._running.clear()
                self._tasks = None
                await self.stop()

    async def stop(self) -> None:
        """Stop every feed (the face is shutting down; subscribers get no more pushes)."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await _stop(feed)

    # -- feeds -----------------------------------------------------------------------------

    async def _acquire(self, scope: Scope, project: str | None) -> _Feed:
        key = (scope.account_id, project)
        feed = self._feeds.get(key)
        if feed is None:
            await self._running.wait()  # the worker is up (at once, once the server is)
            if self._tasks is None:  # pragma: no cover - stopped while waiting
                raise RuntimeError("the iTwin fan-out is not running")
            feed = _Feed(key, scope)
            self._feeds[key] = feed
            feed.task = self._tasks.create_task(
                self._pump(feed), name=f"itwin.feed[{scope.account_id}/{project or '_'}]"
            )
        feed.users += 1
        await feed.ready.wait()
        return feed

    async def _release(self, feed: _Feed) -> None:
        feed.users -= 1
        if feed.users > 0:
            return
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        await _stop(feed)

    @property
    def feeds(self) -> int:
        """How many feeds (bus subscriptions) are open."""
        return len(self._feeds)

    async def _pump(self, feed: _Feed) -> None:
        account_id, project = feed.key
        events = self.live.watch(account_id, kinds=FEED_KINDS, project=project)
        feed.ready.set()  # watch() subscribed: nothing published from now on is missed
        try:
            async for event in events:
                try:
                    await self._dispatch(feed, event)
                except Exception:  # one event's bug: log it, keep the feed for the rest
                    logger.exception("itwin: pushing a %s event failed", event.kind)
        finally:
            await events.aclose()

    # -- subscribing ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def data(
        self,
        scope: Scope,
        sensors: Sequence[tuple[Sensor, MetricChoice]],
        delta: DeltaParams,
        subscriber: Subscriber,
    ) -> AsyncIterator[None]:
        """Push new observations of `sensors` to `subscriber` while the context is open."""
        joined: list[tuple[_Feed, tuple[str, str | None], tuple[Any, ...]]] = []
        try:
            for sensor, choice in sensors:
                feed = await self._acquire(scope, sensor.holder.project)
                where = (sensor.holder.id, sensor.component)
                group_key = (choice.metric.id, choice.unit, delta)
                groups = feed.data.setdefault(where, {})
                group = groups.get(group_key)
                if group is None:
                    group = await self._group(scope, sensor, choice, delta)
                    group = groups.setdefault(group_key, group)
                group.subscribers.add(subscriber)
                joined.append((feed, where, group_key))
            yield
        finally:
            for feed, where, group_key in joined:
                groups = feed.data.get(where, {})
                group = groups.get(group_key)
                if group is not None:
                    group.subscribers.discard(subscriber)
                    if not group.subscribers:
                        del groups[group_key]
                        if not groups:
                            feed.data.pop(where, None)
                await self._release(feed)

    async def _group(
        self, scope: Scope, sensor: Sensor, choice: MetricChoice, delta: DeltaParams
    ) -> _DataGroup:
        is_delta = choice.metric.delta_of is not None
        reference_at = reference = None
        if is_delta and delta.window_s is None:
            reference_at = reference_time(delta)
            found = await self.observations.first_after(scope, sensor, choice, reference_at)
            reference = None if found is None else found[1]
        return _DataGroup(
            choice,
            choice.raw.id,
            is_delta,
            delta.window_s if is_delta else None,
            reference_at,
            reference,
        )

    @contextlib.asynccontextmanager
    async def entities(
        self,
        scope: Scope,
        kind: EntityKind,
        found: Sequence[Entity] | None,
        subscriber: Subscriber,
    ) -> AsyncIterator[None]:
        """Push every change of the entities `found` (None: every entity of `kind` in the
        scope's project) to `subscriber` while the context is open."""
        if found is None:
            projects: dict[str | None, frozenset[str] | None] = {scope.feed_project: None}
        else:
            by_project: dict[str | None, set[str]] = {}
            for entity in found:
                core = entity.holder if isinstance(entity, Sensor) else entity.core
                by_project.setdefault(core.project, set()).add(entity.id)
            projects = {project: frozenset(ids) for project, ids in by_project.items()}
        watches: list[tuple[_Feed, _EntityWatch]] = []
        try:
            for project, ids in projects.items():
                feed = await self._acquire(scope, project)
                watch = _EntityWatch(kind, ids, subscriber)
                feed.entities.append(watch)
                watches.append((feed, watch))
            yield
        finally:
            for feed, watch in watches:
                feed.entities.remove(watch)
                await self._release(feed)

    # -- dispatching -----------------------------------------------------------------------

    async def _dispatch(self, feed: _Feed, event: LiveEvent) -> None:
        if isinstance(event, TelemetryReceived):
            groups = feed.data.get((event.device_id, event.component))
            if groups and isinstance(event.body, dict):
                for group in list(groups.values()):
                    await self._push_data(feed, group, event)
        if feed.entities and isinstance(
            event, TelemetryReceived | ConnectionChanged | DeviceChanged
        ):
            await self._push_entities(feed, event)

    async def _push_data(self, feed: _Feed, group: _DataGroup, event: TelemetryReceived) -> None:
        value = event.body.get(group.source)
        if value.__class__ is bool or not isinstance(value, int | float):
            return
        try:
            number = float(value)
        except OverflowError:
            return
        if not math.isfinite(number):
            return
        if group.is_delta:
            if group.window_s is not None:
                found = await self.observations.value_before(
                    feed.scope, event.device_id, group.choice.key, event.ts - group.window_s
                )
                if found is None:
                    return
                number -= found
            else:
                if group.reference is None:
                    if group.reference_at is not None and event.ts < group.reference_at:
                        return
                    group.reference = number
                number -= group.reference
        converted = group.choice.conversion(number)
        if not math.isfinite(converted):
            return
        result = encode_frame({"data": {format_time(event.ts): converted}})
        for subscriber in list(group.subscribers):
            subscriber.send(result)

    async def _push_entities(
        self, feed: _Feed, event: TelemetryReceived | ConnectionChanged | DeviceChanged
    ) -> None:
        facts = Facts()
        component = event.component if isinstance(event, TelemetryReceived) else None
        affected = await self.network.affected(
            feed.scope,
            facts,
            event.device_id,
            component,
            every_sensor=not isinstance(event, TelemetryReceived),
        )
        for entity in affected:
            watchers = [
                w.subscriber
                for w in feed.entities
                if w.kind is entity.kind and (w.ids is None or entity.id in w.ids)
            ]
            if not watchers:
                continue
            rendered = await self.network.render(feed.scope, facts, entity)
            result = encode_frame({"data": rendered})
            for subscriber in watchers:
                subscriber.send(result)


async def _stop(feed: _Feed) -> None:
    if feed.task is not None:
        feed.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feed.task
