"""Ingest: device-to-cloud telemetry from any adapter into the one store and the live bus.

A message is stored once, whole; its numeric fields also become observations. A policy (e.g.
a device template) may reject a message: it is then recorded as a rejected-telemetry event
with the reason, not stored as telemetry.

Memory is bounded: what is queued or being written counts against `max_queued_bytes` (each
message its raw bytes plus MESSAGE_OVERHEAD_BYTES) from submit() until its write ends. Over
the bound the service is full: nothing is refused or dropped, but adapters that read from
devices wait_for_room() before taking more (the MQTT listener stops reading its sockets), and
ingest() waits for room before it queues.
A payload nested deeper than max_json_depth is never parsed (IoT Hub takes any bytes as a
message body, so it is not refused either): it is stored as its text, with no observations.

Batches: every message submitted in one pass of the event loop shares a write unit; while
several devices are sending, a small batch also waits COMMIT_LINGER_S for more, since each
commit costs about as much as the rows it writes.

What goes wrong with one message fails that message only: the batching task never lets an
exception out, since that would end the TaskGroup it runs in, and with it the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, runtime_checkable

import orjson

from thinghub.domain.clock import parse_ts
from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.events import EventType
from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH, exceeds_depth
from thinghub.domain.live import TelemetryReceived, subject_of
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.storable import check_storable
from thinghub.domain.telemetry import TelemetryMessage, TelemetrySeries, decode_body
from thinghub.ports import Bus, Clock, SeriesTelemetryStore, Stores, TelemetryStore
from thinghub.services.events import EventService
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService

__all__ = [
    "BATCH_MAX",
    "MESSAGE_OVERHEAD_BYTES",
    "NOT_STORED",
    "SYSTEM_PROPERTY_MAX_CHARS",
    "BatchResult",
    "BatchTelemetryPolicy",
    "IngestService",
    "Outcome",
    "SelectiveTelemetryPolicy",
    "TelemetryPolicy",
    "message_size",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a submitted message."""

    is_new: bool  # False: a duplicate (same message id), or rejected
    rejected: str | None  # the policy's reason, when rejected


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of the messages of one ingest_batch: how many were stored, and for each
    one that was not (by its index in the batch) why."""

    stored: int
    refused: dict[int, str]


#: Why a message of a batch was not stored when no policy refused it: a duplicate (same
#: message id), or its write failed (logged).
NOT_STORED = "not stored"

_Pending = tuple[Device, TelemetryMessage, "asyncio.Future[Outcome]"]

# Outcomes of stored messages: shared, not one object per message.
_NEW = Outcome(True, None)
_DUPLICATE = Outcome(False, None)
# A message without system properties (what build() is given for most device messages).
_NO_SYSTEM = (None, None, None, None, None)

#: The longest value of each system property a message may carry, in characters (what the
#: store keeps; IoT Hub documents 128 for message ids). A longer one, or one holding NUL
#: (which PostgreSQL text cannot hold), refuses the message before it is queued: it used to
#: fail its database write on PostgreSQL (a 500 over HTTPS; over MQTT an unacknowledged
#: message and a closed connection, which the SDK then resends for ever).
SYSTEM_PROPERTY_MAX_CHARS = {
    "messageId": 256,
    "correlationId": 256,
    "contentType": 128,
    "contentEncoding": 64,
    "component": 128,
}

# Most messages in one write unit.
BATCH_MAX = 2000

#: How long a small batch waits for more messages before it goes to storage, in seconds,
#: while several devices are sending (the batch before it, less than LINGER_WINDOW_S ago,
#: ended with another device's message). At a steady 2,000 msgs/s from 100 devices each
#: message used to arrive alone and pay a commit of its own: a WAL frame for every index page
#: it touched, ~9 pages (36 KiB) written and checkpointed per message, ~220 µs of server CPU
#: per message against ~60 µs flat out. A device sending alone (each message waiting for its
#: PUBACK) never waits here: its next message is the same device's. 1 ms since
#: 2026-12-05 (2 ms before): with commits cheaper (append steps, observation sets), at that
#: rate PUBACK p50 / p99 went from 1.5 / 3.5-3.8 ms to 0.4-0.6 / 2.5-3.6 ms for 10-20% more
#: server CPU per message (bench.device_load --rate 2000, same half hour).
COMMIT_LINGER_S = 0.001
#: A batch of this many messages goes at once: it shares its commit already.
LINGER_BELOW = 64
#: How recent the previous batch must be for a new one to wait (messages are flowing).
LINGER_WINDOW_S = 0.01

#: What a queued message costs besides its raw bytes (the message, its future, its parsed
#: body's objects), so that many tiny messages also count against the queue bound.
MESSAGE_OVERHEAD_BYTES = 1024


def message_size(
    raw: bytes, properties: dict[str, str] | None, system: tuple[str | None, ...] = ()
) -> int:
    """A message's size as IoT Hub counts it against its 256 KiB limit: the body, plus the
    names and values of the application properties, plus the values of the system
    properties (IoT Hub developer guide, "Create and read IoT Hub messages", Message size)."""
    size = len(raw)
    if properties:
        size += sum(len(k.encode()) + len(v.encode()) for k, v in properties.items())
    return size + sum(len(value.encode()) for value in system if value)


class TelemetryPolicy(Protocol):
    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        """None to accept, else the reason the message is rejected."""


@runtime_checkable
class BatchTelemetryPolicy(TelemetryPolicy, Protocol):
    """A policy that can also check many messages of one device at once (ingest_batch)."""

    async def check_many(
        self, device: Device, messages: Sequence[TelemetryMessage]
    ) -> list[str | None]:
        """check() of each message, in order."""


@runtime_checkable
class SelectiveTelemetryPolicy(TelemetryPolicy, Protocol):
    """A policy that can tell when it checks no message of a device (ingest_series then
    stores the device's series without a message object per point)."""

    async def may_refuse(self, device: Device) -> bool:
        """False when check() accepts every message of `device`."""


def _message_time(value: Any, field: str) -> float:
    """A message time an application gives: an ISO-8601 string (parse_ts bounds it to years
    1..9999), not before 1970 (a mistake, not data)."""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be an ISO-8601 time string", field=field)
    ts = parse_ts(value, field)
    if ts < 0:
        raise Invalid(f"{field} is out of range: {value!r}", field=field)
    return ts


class IngestService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        bus: Bus,
        registry: Registry,
        events: EventService,
        *,
        max_payload_bytes: int,
        max_queued_bytes: int,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        templates: TemplateService | None = None,
    ) -> None:
        self.stores = stores
        # Device templates, for what `send` takes as the message time (None: no templates).
        self.templates = templates
        self.clock = clock
        self.bus = bus
        self.registry = registry
        self.events = events
        self.max_payload_bytes = max_payload_bytes
        self.max_json_depth = max_json_depth
        self.policies: list[TelemetryPolicy] = []
        # Told after each committed batch: its seconds in the store and its messages (the
        # server's metrics; they must not block).
        self.on_commit: list[Callable[[float, list[TelemetryMessage]], None]] = []
        # Told after each committed write of series (ingest_series): its seconds in the
        # store and how many messages of each source it stored.
        self.on_series_commit: list[Callable[[float, dict[str, int]], None]] = []
        self.batch_max = BATCH_MAX
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._running = False
        self._stopping = False
        self.max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0  # submitted and not yet written (or failed)
        self._room = asyncio.Event()  # set while queued bytes are under the bound
        self._room.set()
        # The running loop, while run() runs (asyncio.get_running_loop() makes a getpid()
        # system call on every call: ~7% of the event loop's time per message, profiled).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_batch_at = -LINGER_WINDOW_S  # loop time the previous batch went
        self._last_batch_device = ""  # the device of the previous batch's last message

    def build(
        self,
        device: Device,
        raw: bytes,
        *,
        properties: dict[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        component: str | None = None,
        source: str = "mqtt",
        body: Any = None,
        enqueued_at: float | None = None,
        is_raw_json: bool = False,
    ) -> TelemetryMessage:
        """A message of `device` from its payload `raw` (parsed here), or from an already
        parsed `body`: with `is_raw_json`, `raw` is that body's own JSON text (orjson's, as
        an upload serializes it) and is stored as it is."""
        system = (message_id, correlation_id, content_type, content_encoding, component)
        if properties or system != _NO_SYSTEM:
            for (name, limit), value in zip(SYSTEM_PROPERTY_MAX_CHARS.items(), system, strict=True):
                _check_system_property(name, value, limit)
            size = message_size(raw, properties, system)
        else:  # the common device message: a body alone (no loop, no generator per message)
            size = len(raw)
        if size > self.max_payload_bytes:
            raise TooLarge(
                f"telemetry is {size} bytes with its properties; the limit is "
                f"{self.max_payload_bytes}",
                field="body",
            )
        body_json = raw if body is not None and is_raw_json else None
        depth_limit = None
        if body is None and exceeds_depth(raw, self.max_json_depth):
            depth_limit = self.max_json_depth  # kept as text: never parsed
            body = _text(raw)
        elif body is None:
            try:
                # orjson accepts only what it can write back (no NaN, no integer past 64
                # bits), so a payload that parses is stored as its own text.
                body = orjson.loads(raw)
                body_json = raw
            except orjson.JSONDecodeError:
                body = decode_body(raw, content_type, self.max_json_depth)
                if not _is_storable(body):
                    # JSON that cannot be stored as it is (NaN, huge integers, a string or
                    # key with a lone surrogate such as "\ud800"): keep the text, so one odd
                    # message never fails the batch it shares.
                    body = raw.decode("utf-8")
        return _new_message(
            account_id=device.account_id,
            device_id=device.id,
            enqueued_at=self.clock.now() if enqueued_at is None else enqueued_at,
            body=body,
            body_json=body_json,
            raw=raw,
            properties=properties or {},
            message_id=message_id,
            correlation_id=correlation_id,
            content_type=content_type,
            content_encoding=content_encoding,
            component=component,
            project=device.project,
            deployment=device.deployment,
            source=source,
            depth_limit=depth_limit,
        )

    async def send(
        self,
        principal: Principal,
        device: Device | str,
        body: Any,
        *,
        source: str,
        time_key: str | None = None,
        body_field: str = "body",
    ) -> bool:
        """Store telemetry an application sends on a device's behalf (Permission.
        DEVICES_WRITE), as if the device had sent it: a JSON object, checked and stored like
        device telemetry (template, size, storable).

        `time_key`: a top-level key that, holding an ISO-8601 time string, is the message's
        time and is taken out of the body (IoT Central's `timestamp`), unless the device's
        template declares telemetry of that name: then it is data.

        Returns False for a duplicate (see `ingest`).

        Raises:
            Forbidden, NotFound: see Registry.device_for.
            Invalid: not an object, unstorable, a bad time, or refused by the template
                (naming `body_field` or `time_key`).
            TooLarge: over max_payload_bytes.
        """
        target = await self.registry.device_for(principal, device, Permission.DEVICES_WRITE)
        if not isinstance(body, dict):
            raise Invalid("telemetry must be a JSON object", field=body_field)
        enqueued_at = None
        if time_key is not None and time_key in body and not await self._declares(target, time_key):
            body = dict(body)
            enqueued_at = _message_time(body.pop(time_key), time_key)
        check_storable(body, body_field)
        message = self.build(
            target,
            orjson.dumps(body),
            body=body,
            content_type="application/json",
            source=source,
            enqueued_at=enqueued_at,
        )
        return await self.ingest(target, message)

    async def _declares(self, device: Device, telemetry: str) -> bool:
        """Whether the device's template declares telemetry of this name."""
        if self.templates is None:
            return False
        template = await self.templates.for_device(device)
        return template is not None and telemetry in template.model.telemetry

    async def ingest(self, device: Device, message: TelemetryMessage) -> bool:
        """Store one message (and its observations); publish it live.

        Returns False when it was a duplicate (same message id) and so not stored again.
        Raises Invalid when a policy rejects it (the rejection is recorded as an event).
        """
        if self._running:
            await self.wait_for_room()
            outcome = await self.submit(device, message)
        else:  # no batching loop (one-shot tools): write it directly
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            await self._write_batch([(device, message, future)])
            outcome = await future
        if outcome.rejected is not None:
            raise Invalid(outcome.rejected, field="body")
        return outcome.is_new

    def check_component(self, component: str | None) -> None:
        """The limits build() puts on a component name (SYSTEM_PROPERTY_MAX_CHARS).

        Raises:
            Invalid: too long, or holding NUL.
        """
        _check_system_property("component", component, SYSTEM_PROPERTY_MAX_CHARS["component"])

    def build_parsed(
        self,
        device: Device,
        raw: bytes,
        body: Any,
        *,
        component: str | None,
        source: str,
        enqueued_at: float,
    ) -> TelemetryMessage:
        """build() of a body its caller parsed and wrote as JSON itself (`raw`: orjson's
        text of `body`), with no properties and no ids: what an upload makes per
        observation, without build()'s per-message checks of the system properties. The
        caller checks the component once (check_component).

        Raises:
            TooLarge: over max_payload_bytes.
        """
        size = len(raw) + (len(component.encode()) if component else 0)
        if size > self.max_payload_bytes:
            raise TooLarge(
                f"telemetry is {size} bytes with its properties; the limit is "
                f"{self.max_payload_bytes}",
                field="body",
            )
        # Every field given, in order: half the cost of keywords with defaults (an upload
        # builds one message per value).
        return TelemetryMessage(
            device.account_id,
            device.id,
            enqueued_at,
            body,
            raw,
            {},  # properties
            None,  # message_id
            None,  # correlation_id
            None,  # content_type
            None,  # content_encoding
            component,
            device.project,
            device.deployment,
            source,
            raw,  # body_json
            None,  # depth_limit
        )

    async def ingest_batch(self, items: Sequence[tuple[Device, TelemetryMessage]]) -> BatchResult:
        """Store many messages (an upload) as ingest() stores each, checked once as a batch.

        The policies see each device's messages together (BatchTelemetryPolicy.check_many:
        a device's template is looked up once); the messages are stored in write units of
        `batch_max` (one database write each, awaited: no future per message), committed
        before this returns; each device is touched once a unit; every new message is
        published live (TelemetryReceived), as ingest() does. This does not
        go through the queue: the caller holds the messages already.

        Returns:
            How many were stored, and why each other one was not (by index in `items`).
        """
        refused: dict[int, str] = {}
        stored = 0
        for start in range(0, len(items), self.batch_max):
            unit = list(range(start, min(len(items), start + self.batch_max)))
            if self.policies:
                unit = await self._checked_indices(items, unit, refused)
            if unit:
                stored += await self._store_indices(items, unit, refused)
        return BatchResult(stored, refused)

    async def ingest_series(self, items: Sequence[tuple[Device, TelemetrySeries]]) -> BatchResult:
        """ingest_batch() of the messages of series (an upload's), given a write unit at a
        time (at most `batch_max` points): stored as rows straight from the points where no
        policy checks the device's messages and the store has a series path
        (SeriesTelemetryStore), else as messages through ingest_batch(). Either way the same
        rows, touched and published as ingest_batch() does.

        Returns:
            How many were stored, and why each other one was not (by its position among all
            the points of `items`, in order).
        """
        refused: dict[int, str] = {}
        stored = 0
        fast: list[tuple[int, Device, TelemetrySeries]] = []
        offset = 0
        for device, series in items:
            if await self._unchecked(device):
                fast.append((offset, device, series))
            else:  # a policy may refuse some: each point a message, checked
                result = await self.ingest_batch([(device, m) for m in series.messages()])
                stored += result.stored
                refused.update({offset + k: reason for k, reason in result.refused.items()})
            offset += len(series.points)
        if fast:
            stored += await self._store_series(fast, refused)
        return BatchResult(stored, refused)

    async def _unchecked(self, device: Device) -> bool:
        """True when no policy checks this device's messages (each says so)."""
        for policy in self.policies:
            if not _is_selective_policy(policy) or await policy.may_refuse(device):
                return False
        return True

    async def _store_series(
        self, fast: list[tuple[int, Device, TelemetrySeries]], refused: dict[int, str]
    ) -> int:
        """Series no policy checks: one write, then touched and published. A store without
        a series path, or a write that fails, goes a message at a time (_store_indices)."""
        store = self.stores.telemetry
        written = False
        if _is_series_store(store):
            started = time.perf_counter()
            try:
                await store.append_series([series for _, _, series in fast])
                written = True
            except Exception as exc:
                logger.warning("an upload unit of %d series failed (%s); writing each message",
                               len(fast), exc)  # fmt: skip
            else:
                elapsed = time.perf_counter() - started
                counts: dict[str, int] = {}
                for _, _, series in fast:
                    counts[series.source] = counts.get(series.source, 0) + len(series.points)
                for observe in self.on_series_commit:
                    observe(elapsed, counts)
        if not written:
            stored = 0
            for offset, device, series in fast:
                items = [(device, m) for m in series.messages()]
                part: dict[int, str] = {}
                stored += await self._store_indices(items, list(range(len(items))), part)
                refused.update({offset + k: reason for k, reason in part.items()})
            return stored
        stored = 0
        for device in {device.id: device for _, device, _ in fast}.values():
            await self.registry.touch(device)  # once per device per unit
        listened: dict[str, bool] = {}
        for _, device, series in fast:
            stored += len(series.points)
            listens = listened.get(device.id)
            if listens is None:
                listens = listened[device.id] = self._listens(device)
            if not listens:  # nobody on this node: no event per point
                continue
            for ts, body, _ in series.points:
                await self.bus.publish(
                    TelemetryReceived(
                        account_id=device.account_id,
                        project=device.project,
                        device_id=device.id,
                        ts=ts,
                        body=body,
                        properties={},
                        component=series.component,
                        source=series.source,
                        message_id=None,
                    )
                )
        return stored

    def _listens(self, device: Device) -> bool:
        """Whether anyone on this node listens to the device's telemetry now (most of the
        time nobody does, and no event is built for it)."""
        subject = subject_of(TelemetryReceived.kind, device.account_id, device.project, device.id)
        return self.bus.listens(subject)

    async def _checked_indices(
        self,
        items: Sequence[tuple[Device, TelemetryMessage]],
        unit: list[int],
        refused: dict[int, str],
    ) -> list[int]:
        """The indices of `unit` every policy accepts; the others get their reason, recorded
        as rejected-telemetry events (as _check does)."""
        by_device: dict[str, list[int]] = {}
        for index in unit:
            by_device.setdefault(items[index][0].id, []).append(index)
        accepted: list[int] = []
        for indices in by_device.values():
            device = items[indices[0]][0]
            reasons: list[str | None] = [None] * len(indices)
            broken: set[int] = set()  # positions whose check failed (our bug)
            for policy in self.policies:
                pending = [k for k, reason in enumerate(reasons) if reason is None]
                if not pending:
                    break
                messages = [items[indices[k]][1] for k in pending]
                try:
                    if _is_batch_policy(policy):
                        found = await policy.check_many(device, messages)
                    else:
                        found = [await policy.check(device, m) for m in messages]
                except Exception:  # our bug: these messages alone are not stored
                    logger.exception("ingest: checking messages of %s failed", device.id)
                    found = [NOT_STORED] * len(pending)
                    broken.update(pending)
                for k, reason in zip(pending, found, strict=True):
                    reasons[k] = reason
            if all(reason is None for reason in reasons):  # the common case
                accepted.extend(indices)
                continue
            for k, (index, reason) in enumerate(zip(indices, reasons, strict=True)):
                if reason is None:
                    accepted.append(index)
                    continue
                refused[index] = reason
                if k not in broken:
                    message = items[index][1]
                    await self.events.record(
                        device,
                        EventType.TELEMETRY_REJECTED,
                        {"reason": reason, "messageId": message.message_id, "body": message.body},
                    )
        accepted.sort()
        return accepted

    async def _store_indices(
        self,
        items: Sequence[tuple[Device, TelemetryMessage]],
        unit: list[int],
        refused: dict[int, str],
    ) -> int:
        """One write unit of ingest_batch: stored, told, touched, published. A unit that
        fails is written a message at a time, so only the one that fails is left out."""
        messages = [items[index][1] for index in unit]
        started = time.perf_counter()
        try:  # the store derives each message's observations (no object per observation)
            results = await self.stores.telemetry.append(messages)
        except Exception as exc:
            if len(unit) > 1:
                logger.warning("a batch of %d messages failed (%s); writing each alone",
                               len(unit), exc)  # fmt: skip
                stored = 0
                for index in unit:
                    stored += await self._store_indices(items, [index], refused)
                return stored
            logger.error("storing telemetry of %s failed: %s", items[unit[0]][0].id, exc)
            refused[unit[0]] = NOT_STORED
            return 0
        elapsed = time.perf_counter() - started
        for observe in self.on_commit:
            observe(elapsed, messages)
        devices = {items[index][0].id: items[index][0] for index in unit}
        for device in devices.values():
            await self.registry.touch(device)  # once per device per unit
        stored = 0
        publish = self.bus.publish
        # Whether anyone listens to each device's telemetry (asked once a unit): nothing
        # awaits between the question and the publishes, so no subscriber can start between.
        listened: dict[str, bool] = {}
        for index, message, is_new in zip(unit, messages, results, strict=True):
            if not is_new:
                refused[index] = NOT_STORED
                continue
            stored += 1
            device = items[index][0]
            listens = listened.get(device.id)
            if listens is None:
                listens = listened[device.id] = self._listens(device)
            if not listens:
                continue
            await publish(_received(device, message))
        return stored

    def submit(self, device: Device, message: TelemetryMessage) -> asyncio.Future[Outcome]:
        """Queue a message for the next batch; the future resolves after its commit.

        Every message submitted during one pass of the event loop (from any connection or
        request) goes to storage as one write unit, so concurrent devices share commits.
        The future never raises for a rejected message; it says so in the Outcome.
        """
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queued_bytes += len(message.raw) + MESSAGE_OVERHEAD_BYTES
        if self._queued_bytes >= self.max_queued_bytes:
            self._room.clear()
        self._pending.append((device, message, future))
        if len(self._pending) == 1:
            self._wake.set()
        return future

    @property
    def is_full(self) -> bool:
        """True while the queued messages' bytes are at or over `max_queued_bytes`."""
        return not self._room.is_set()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def wait_for_room(self) -> None:
        """Return once the queue is under its bound (at once when it already is)."""
        if not self._room.is_set():
            await self._room.wait()

    def _release(self, cost: int) -> None:
        self._queued_bytes -= cost
        if self._queued_bytes < self.max_queued_bytes:
            self._room.set()

    async def run(self) -> None:
        """The batching loop, until stop(): then it writes what is queued and returns."""
        self._running = True
        loop = self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tasks:
                while not (self._stopping and not self._pending):
                    await self._wake.wait()
                    self._wake.clear()
                    await asyncio.sleep(0)  # let this loop pass's other submitters join
                    if self._should_linger(loop.time()):
                        await asyncio.sleep(COMMIT_LINGER_S)
                    batch = self._pending[: self.batch_max]
                    del self._pending[: self.batch_max]
                    if self._pending:
                        self._wake.set()
                    if batch:
                        self._last_batch_at = loop.time()
                        self._last_batch_device = batch[-1][0].id
                        tasks.create_task(self._write_queued(batch), name="ingest.batch")
        finally:
            self._running = False
            self._loop = None

    def _should_linger(self, now: float) -> bool:
        """Whether the batch about to go should wait COMMIT_LINGER_S for company: it is
        small, messages are flowing (a batch went moments ago) and they come from more than
        one device (this one does not start with the previous one's device)."""
        pending = self._pending
        return (
            0 < len(pending) < LINGER_BELOW
            and not self._stopping
            and now - self._last_batch_at < LINGER_WINDOW_S
            and pending[0][0].id != self._last_batch_device
        )

    async def _write_queued(self, batch: list[_Pending]) -> None:
        """A batch of submitted messages: their bytes leave the queue bound when it ends."""
        try:
            await self._write_batch(batch)
        finally:
            self._release(
                sum(len(message.raw) for _, message, _ in batch)
                + MESSAGE_OVERHEAD_BYTES * len(batch)
            )

    def stop(self) -> None:
        """Finish: write what is queued and in flight, then let run() return."""
        self._stopping = True
        self._wake.set()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        """The top of a batch task: whatever fails here fails the batch's messages that are
        still waiting, never the TaskGroup (and so never the server)."""
        try:
            await self._write(batch)
        except Exception as exc:
            logger.exception("ingest: a batch of %d messages failed", len(batch))
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)

    async def _write(self, batch: list[_Pending]) -> None:
        if not self.policies:  # nothing to check: no coroutine per message
            accepted = batch
        else:
            accepted = await self._checked(batch)
        if not accepted:
            return
        await self._store(accepted)

    async def _checked(self, batch: list[_Pending]) -> list[_Pending]:
        """The batch's messages every policy accepts; the others are resolved here.

        The policies see each device's messages of the batch together (check_many: the
        device's template is looked up once, no coroutine per message). A rejected message
        is recorded as an event and resolved with its reason; a message whose check fails
        (our bug) gets the exception and alone is not stored: when a check_many fails, its
        messages are checked again one by one to find which."""
        by_device: dict[str, list[_Pending]] = {}
        for item in batch:
            items = by_device.get(item[0].id)
            if items is None:
                by_device[item[0].id] = [item]
            else:
                items.append(item)
        left_out: set[int] = set()  # id() of the items rejected or failed
        for items in by_device.values():
            device = items[0][0]
            for policy in self.policies:
                reasons: list[str | Exception | None] | None
                try:
                    if _is_batch_policy(policy):
                        reasons = list(await policy.check_many(device, [m for _, m, _ in items]))
                    else:
                        reasons = [await policy.check(device, m) for _, m, _ in items]
                except Exception:
                    reasons = None
                if reasons is None:  # find the message(s) whose check fails
                    reasons = [await _check_one(policy, device, m) for _, m, _ in items]
                kept: list[_Pending] = []
                for item, reason in zip(items, reasons, strict=True):
                    if reason is None:
                        kept.append(item)
                        continue
                    left_out.add(id(item))
                    if isinstance(reason, Exception):  # our bug, for this message
                        logger.error("ingest: checking a message of %s failed", device.id,
                                     exc_info=reason)  # fmt: skip
                        if not item[2].done():
                            item[2].set_exception(reason)
                        continue
                    await self.events.record(
                        device,
                        EventType.TELEMETRY_REJECTED,
                        {"reason": reason, "messageId": item[1].message_id, "body": item[1].body},
                    )
                    _resolve(item[2], Outcome(False, reason))
                items = kept
                if not items:
                    break
        if not left_out:  # the common case
            return batch
        return [item for item in batch if id(item) not in left_out]

    async def _store(self, accepted: list[_Pending]) -> None:
        messages = [message for _, message, _ in accepted]
        started = time.perf_counter()
        try:  # the store derives each message's observations (no object per observation)
            results = await self.stores.telemetry.append(messages)
        except Exception as exc:  # not stored, so not acknowledged: every caller hears it
            if len(accepted) > 1:  # find the one that failed; the others still land
                logger.warning("a batch of %d messages failed (%s); writing each alone",
                               len(accepted), exc)  # fmt: skip
                for item in accepted:
                    await self._write([item])
                return
            logger.error("storing telemetry of %s failed: %s", accepted[0][0].id, exc)
            if not accepted[0][2].done():
                accepted[0][2].set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        for observe in self.on_commit:
            observe(elapsed, messages)
        for (_, _, future), is_new in zip(accepted, results, strict=True):
            _resolve(future, _NEW if is_new else _DUPLICATE)
        # Once per device per batch: its activity, and whether anyone listens to its
        # telemetry now (most of the time nobody does: no event is built for it then).
        listened: dict[str, bool] = {}
        for device, _, _ in accepted:
            if device.id not in listened:
                await self.registry.touch(device)
                listened[device.id] = self._listens(device)
        for (device, message, _), is_new in zip(accepted, results, strict=True):
            if is_new and listened[device.id]:
                await self.bus.publish(_received(device, message))


@functools.cache
def _selective_policy_type(kind: type) -> bool:
    return issubclass(kind, SelectiveTelemetryPolicy)


def _is_selective_policy(policy: TelemetryPolicy) -> TypeGuard[SelectiveTelemetryPolicy]:
    return _selective_policy_type(type(policy))


@functools.cache
def _series_store_type(kind: type) -> bool:
    return issubclass(kind, SeriesTelemetryStore)


def _is_series_store(store: TelemetryStore) -> TypeGuard[SeriesTelemetryStore]:
    """isinstance(store, SeriesTelemetryStore), asked once per class."""
    kind: type = type(store)
    return _series_store_type(kind)


@functools.cache
def _batch_policy_type(kind: type) -> bool:
    return issubclass(kind, BatchTelemetryPolicy)


async def _check_one(
    policy: TelemetryPolicy, device: Device, message: TelemetryMessage
) -> str | Exception | None:
    """policy.check(device, message), or the exception it raised."""
    try:
        return await policy.check(device, message)
    except Exception as exc:
        return exc


def _is_batch_policy(policy: TelemetryPolicy) -> TypeGuard[BatchTelemetryPolicy]:
    """isinstance(policy, BatchTelemetryPolicy), asked once per class (a runtime protocol
    check inspects every member each time)."""
    return _batch_policy_type(type(policy))


def _check_system_property(name: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise Invalid(f"{name} is {len(value)} characters; at most {limit}", field=name)
    if "\x00" in value:
        raise Invalid(f"{name} holds the NUL character (U+0000)", field=name)


def _is_storable(body: Any) -> bool:
    """False for a parsed body storage cannot write as it is (domain/storable.py), a bare
    string with a lone surrogate included: it has no UTF-8 form."""
    try:
        check_storable(body, "body")
    except Invalid:
        return False
    return True


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# TelemetryMessage is built once per device message. Its frozen __init__ sets each of its 16
# fields with object.__setattr__ (a lookup by name each); setting the slots through their
# descriptors instead costs about half (0.6 against 1.3 µs a message, measured). Same object,
# same equality; every field must be given (tests/unit/services/test_ingest.py checks that
# _MESSAGE_FIELDS is the class's fields, so a new field cannot be left unset).
_MESSAGE_FIELDS = (
    "account_id",
    "device_id",
    "enqueued_at",
    "body",
    "raw",
    "properties",
    "message_id",
    "correlation_id",
    "content_type",
    "content_encoding",
    "component",
    "project",
    "deployment",
    "source",
    "body_json",
    "depth_limit",
)
_slot = {name: TelemetryMessage.__dict__[name].__set__ for name in _MESSAGE_FIELDS}
_set_account_id = _slot["account_id"]
_set_device_id = _slot["device_id"]
_set_enqueued_at = _slot["enqueued_at"]
_set_body = _slot["body"]
_set_raw = _slot["raw"]
_set_properties = _slot["properties"]
_set_message_id = _slot["message_id"]
_set_correlation_id = _slot["correlation_id"]
_set_content_type = _slot["content_type"]
_set_content_encoding = _slot["content_encoding"]
_set_component = _slot["component"]
_set_project = _slot["project"]
_set_deployment = _slot["deployment"]
_set_source = _slot["source"]
_set_body_json = _slot["body_json"]
_set_depth_limit = _slot["depth_limit"]
del _slot


def _new_message(
    *,
    account_id: str,
    device_id: str,
    enqueued_at: float,
    body: Any,
    raw: bytes,
    properties: dict[str, str],
    message_id: str | None,
    correlation_id: str | None,
    content_type: str | None,
    content_encoding: str | None,
    component: str | None,
    project: str | None,
    deployment: str | None,
    source: str,
    body_json: bytes | None,
    depth_limit: int | None,
) -> TelemetryMessage:
    """TelemetryMessage(**fields), every field given (see _MESSAGE_FIELDS)."""
    message: TelemetryMessage = object.__new__(TelemetryMessage)
    _set_account_id(message, account_id)
    _set_device_id(message, device_id)
    _set_enqueued_at(message, enqueued_at)
    _set_body(message, body)
    _set_raw(message, raw)
    _set_properties(message, properties)
    _set_message_id(message, message_id)
    _set_correlation_id(message, correlation_id)
    _set_content_type(message, content_type)
    _set_content_encoding(message, content_encoding)
    _set_component(message, component)
    _set_project(message, project)
    _set_deployment(message, deployment)
    _set_source(message, source)
    _set_body_json(message, body_json)
    _set_depth_limit(message, depth_limit)
    return message


def _received(device: Device, message: TelemetryMessage) -> TelemetryReceived:
    """The live event of a stored message."""
    return TelemetryReceived(
        account_id=device.account_id,
        project=device.project,
        device_id=device.id,
        ts=message.enqueued_at,
        body=message.body,
        properties=message.properties,
        component=message.component,
        source=message.source,
        message_id=message.message_id,
    )


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)
