"""Tests for thinghub.services.ingest: deep payloads are never parsed, and one message's
failure fails that message only (never the batching task, and so never the server)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from tests.unit.services.node import node
from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.json_depth import DEFAULT_MAX_JSON_DEPTH
from thinghub.domain.live import live_pattern
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, TelemetryQuery
from thinghub.services.events import EventService
from thinghub.services.ingest import _MESSAGE_FIELDS, IngestService, _new_message
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService
from thinghub.storage.memory import memory_stores

ACCOUNT = "acc-1"
# The report's 1.8 KB message: one telemetry field holding 300 nested objects.
DEEP_MESSAGE = b'{"x":' + b'{"a":' * 300 + b"1}" + b"}" * 300
WAIT_S = 10.0  # a batching loop that died never answers: fail instead of hanging


class FakeClock:
    def now(self) -> float:
        return 1_700_000_000.0


def device(template: str | None = None, device_id: str = "d1") -> Device:
    return Device(
        device_id, ACCOUNT, DeviceKind.DEVICE, device_id, "k1", "k2", 0.0, 0.0, template=template
    )


def one_double_template(template_id: str) -> dict[str, Any]:
    return {
        "@id": template_id,
        "capabilityModel": {
            "@type": "Interface",
            "contents": [{"@type": "Telemetry", "name": "x", "schema": "double"}],
        },
    }


class World:
    def __init__(self) -> None:
        self.stores = stores = memory_stores()
        clock = FakeClock()
        n = node(clock)
        events = EventService(stores, n.bus, clock, n.counter)
        registry = Registry(
            stores, clock, events, n.bus, presence=n.presence, channel=n.links, locks=n.locks
        )
        self.ingest = IngestService(
            stores,
            clock,
            n.bus,
            registry,
            events,
            max_payload_bytes=262_144,
            max_queued_bytes=1 << 26,
        )
        self.templates = TemplateService(stores, clock, registry)
        self.ingest.policies.append(self.templates.policy)

    async def stored(self) -> list[TelemetryMessage]:
        """The account's telemetry, oldest first."""
        page = await self.stores.telemetry.query(TelemetryQuery(ACCOUNT))
        return page.items[::-1]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A World whose batching loop runs for the test; it must still be running at the end."""
    w = World()
    run = asyncio.create_task(w.ingest.run())
    await asyncio.sleep(0)
    yield w
    assert not run.done(), run.exception() if run.done() else None
    w.ingest.stop()
    await asyncio.wait_for(run, WAIT_S)


# -- building: deep payloads are kept as text ----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 131072 + b"]" * 131072,  # segfaulted orjson 3.8.3
        b'{"":' * 52428,  # a RecursionError in json.loads (it is not valid JSON either)
        DEEP_MESSAGE,
    ],
    ids=["arrays", "open-objects", "templated-report"],
)
def test_payloads_deeper_than_the_limit_are_kept_as_text(raw: bytes) -> None:
    message = World().ingest.build(device(), raw)
    assert message.body == raw.decode()
    assert message.body_json is None
    assert message.depth_limit == DEFAULT_MAX_JSON_DEPTH


def test_payloads_at_the_limit_are_parsed() -> None:
    levels = DEFAULT_MAX_JSON_DEPTH - 1
    raw = b'{"x":' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
    message = World().ingest.build(device(), raw)
    assert isinstance(message.body, dict)
    assert message.depth_limit is None
    deeper = World().ingest.build(device(), b"[" + raw + b"]")
    assert deeper.body == "[" + raw.decode() + "]"


def test_the_limit_follows_the_setting() -> None:
    ingest = World().ingest
    ingest.max_json_depth = 2
    assert ingest.build(device(), b"[[1]]").body == [[1]]
    assert ingest.build(device(), b"[[[1]]]").body == "[[[1]]]"
    assert ingest.build(device(), b"[[[NaN]]]").body == "[[[NaN]]]"  # the json.loads path


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"a\\udc00b"', b' "\\ud83d" ', b'"\\ud800\\u0041"'])
def test_a_json_string_with_a_lone_surrogate_is_kept_as_its_text(raw: bytes) -> None:
    """json.loads turns "\\ud800" into a string with no UTF-8 form; stored as it was, that
    string failed the database write (a 500 over HTTPS, an unacknowledged PUBLISH and a closed
    connection over MQTT, so the device resent it for ever). Found by the e2e abuse fuzz."""
    message = World().ingest.build(device(), raw)
    assert message.body == raw.decode()
    orjson.dumps(message.body)  # what the stores do with it


async def test_a_lone_surrogate_message_is_stored(world: World) -> None:
    message = world.ingest.build(device(), b'"\\ud800"')
    assert await asyncio.wait_for(world.ingest.ingest(device(), message), WAIT_S) is True
    assert [m.body for m in await world.stored()] == ['"\\ud800"']


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("message_id", "m" * 257, "messageId is 257 characters; at most 256"),
        ("correlation_id", "c" * 257, "correlationId is 257 characters; at most 256"),
        ("content_type", "t" * 129, "contentType is 129 characters; at most 128"),
        ("content_encoding", "e" * 65, "contentEncoding is 65 characters; at most 64"),
        ("component", "x" * 129, "component is 129 characters; at most 128"),
        ("message_id", "a\x00b", "messageId holds the NUL character (U+0000)"),
    ],
)
def test_system_properties_the_store_cannot_keep_refuse_the_message(
    field: str, value: str, why: str
) -> None:
    """On PostgreSQL these failed the database write (a 500 over HTTPS; over MQTT the message
    went unacknowledged and the connection closed). Found by the e2e abuse fuzz."""
    with pytest.raises(Invalid) as refused:
        World().ingest.build(device(), b"{}", **{field: value})
    assert refused.value.message == why
    at_limit = {"message_id": 256, "correlation_id": 256, "content_type": 128}
    limit = at_limit.get(field, 64 if field == "content_encoding" else 128)
    assert World().ingest.build(device(), b"{}", **{field: "v" * limit}).raw == b"{}"


def test_deep_binary_payloads_stay_undecoded() -> None:
    raw = b"\xff" + b"[" * 100
    message = World().ingest.build(device(), raw)
    assert message.body is None
    assert message.raw == raw


# -- batching: a failure stays with its message ------------------------------------------------


async def test_a_templated_devices_deep_message_is_rejected_and_recorded(world: World) -> None:
    """The report: the rejection event of a 301-level body failed to save (orjson's
    recursion limit) inside the batch task, and the error ended the server."""
    principal = Principal(ACCOUNT, Role.ADMIN, "admin")
    await world.templates.put(principal, "tpl", one_double_template("tpl"))
    templated = device("tpl")
    async with asyncio.timeout(WAIT_S):
        outcome = await world.ingest.submit(templated, world.ingest.build(templated, DEEP_MESSAGE))
    assert outcome.is_new is False
    assert outcome.rejected is not None
    assert "nests deeper than 64 levels" in outcome.rejected
    [event] = (await world.stores.events.query(EventQuery(ACCOUNT))).items
    assert event.body["body"] == DEEP_MESSAGE.decode()
    async with asyncio.timeout(WAIT_S):
        fine = await world.ingest.submit(templated, world.ingest.build(templated, b'{"x": 1.5}'))
    assert fine.is_new is True
    assert [m.body for m in await world.stored()] == [{"x": 1.5}]


class Exploding:
    """A policy with a bug: it raises for the device named `boom`."""

    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        if device.id == "boom":
            raise RuntimeError("a bug in a policy")
        return None


async def test_an_error_checking_one_message_fails_that_message_only(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.ingest.policies.append(Exploding())
    bad, good = device(device_id="boom"), device(device_id="fine")
    with caplog.at_level(logging.ERROR, logger="thinghub.services.ingest"):
        failing = world.ingest.submit(bad, world.ingest.build(bad, b'{"t": 1}'))
        passing = world.ingest.submit(good, world.ingest.build(good, b'{"t": 2}'))
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(RuntimeError, match="a bug in a policy"):
                await failing
            assert (await passing).is_new is True
    assert [m.device_id for m in await world.stored()] == ["fine"]
    assert any(r.exc_info and "checking a message of boom" in r.message for r in caplog.records)
    async with asyncio.timeout(WAIT_S):
        later = await world.ingest.submit(good, world.ingest.build(good, b'{"t": 3}'))
    assert later.is_new is True  # the batching loop is still there


class CountingBatchPolicy:
    """A batch policy that rejects bodies with "bad", raises for bodies with "boom" (in
    check_many too, for the whole call), and counts its calls."""

    def __init__(self) -> None:
        self.many_calls: list[tuple[str, int]] = []
        self.single_calls = 0

    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        self.single_calls += 1
        if "boom" in message.body:
            raise RuntimeError("a bug in a policy")
        return "bad field" if "bad" in message.body else None

    async def check_many(
        self, device: Device, messages: Sequence[TelemetryMessage]
    ) -> list[str | None]:
        self.many_calls.append((device.id, len(messages)))
        if any("boom" in m.body for m in messages):
            raise RuntimeError("a bug in a policy")
        return ["bad field" if "bad" in m.body else None for m in messages]


async def test_device_messages_are_checked_together_and_a_failing_one_alone_fails(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue's batch goes to check_many once per device; when that raises, the device's
    messages are checked one by one, so only the one whose check fails is not stored, and a
    rejected one is recorded and still resolved (not stored)."""
    policy = CountingBatchPolicy()
    world.ingest.policies.append(policy)
    one, two = device(device_id="one"), device(device_id="two")
    with caplog.at_level(logging.ERROR, logger="thinghub.services.ingest"):
        futures = [
            world.ingest.submit(d, world.ingest.build(d, body))
            for d, body in (
                (one, b'{"ok": 1}'),
                (two, b'{"ok": 2}'),
                (one, b'{"bad": 3}'),
                (two, b'{"boom": 4}'),
                (two, b'{"ok": 5}'),
                (one, b'{"ok": 6}'),
            )
        ]
        async with asyncio.timeout(WAIT_S):
            results = await asyncio.gather(*futures, return_exceptions=True)
    assert sorted(policy.many_calls) == [("one", 3), ("two", 3)]  # once per device
    assert policy.single_calls == 3  # only two's messages, after its check_many raised
    assert isinstance(results[3], RuntimeError)
    outcomes = [r for i, r in enumerate(results) if i != 3]
    assert [(o.is_new, o.rejected) for o in outcomes] == [  # type: ignore[union-attr]
        (True, None), (True, None), (False, "bad field"), (True, None), (True, None)
    ]  # fmt: skip
    stored = sorted(((m.device_id, m.body) for m in await world.stored()), key=repr)
    assert stored == [
        ("one", {"ok": 1}), ("one", {"ok": 6}), ("two", {"ok": 2}), ("two", {"ok": 5})
    ]  # fmt: skip
    events = (await world.stores.events.query(EventQuery(ACCOUNT))).items
    assert len(events) == 1 and events[0].device_id == "one"
    assert any(r.exc_info and "checking a message of two" in r.message for r in caplog.records)


async def test_an_error_after_storing_never_ends_the_batching_loop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the store (touch, live publish) nothing may escape the task either."""

    async def broken_touch(device: Device) -> None:
        raise RuntimeError("touch failed")

    world.ingest.registry.touch = broken_touch  # type: ignore[method-assign]
    target = device()
    with caplog.at_level(logging.ERROR, logger="thinghub.services.ingest"):
        async with asyncio.timeout(WAIT_S):
            outcome = await world.ingest.submit(target, world.ingest.build(target, b'{"t": 1}'))
    assert outcome.is_new is True  # stored and acknowledged before the failure
    assert any("a batch of 1 messages failed" in r.message for r in caplog.records)


# -- ingest_batch: an upload's many messages, checked and stored as a batch ---------------------


async def test_a_batch_is_stored_committed_and_published(world: World) -> None:
    """Every message is stored (with its observations) before ingest_batch returns, each
    device touched, every message published live; a template's refusal is named by index
    and recorded as an event, and the other messages still land."""
    principal = Principal(ACCOUNT, Role.ADMIN, "admin")
    await world.templates.put(principal, "tpl", one_double_template("tpl"))
    plain, templated = device(device_id="plain"), device("tpl", device_id="typed")
    live = world.ingest.bus.subscribe("telemetry.>")
    world.ingest.batch_max = 2  # three write units
    bodies = [{"x": 1.0}, {"x": 2.0}, {"x": "text"}, {"x": 4.0}, {"y": 5.0}]
    items = [
        (templated if i in (2, 3) else plain, world.ingest.build_parsed(
            templated if i in (2, 3) else plain, orjson.dumps(body), body,
            component=None, source="itwin", enqueued_at=1_700_000_000.0 + i,
        ))
        for i, body in enumerate(bodies)
    ]  # fmt: skip
    async with asyncio.timeout(WAIT_S):
        result = await world.ingest.ingest_batch(items)
    assert result.stored == 4
    assert list(result.refused) == [2]
    assert "x" in result.refused[2]
    stored = await world.stored()
    assert [m.body for m in stored] == [{"x": 1.0}, {"x": 2.0}, {"x": 4.0}, {"y": 5.0}]
    assert [m.source for m in stored] == ["itwin"] * 4
    values = await world.stores.telemetry.observations(ACCOUNT, "plain", "x", None, None, 10)
    assert sorted(o.value for o in values) == [1.0, 2.0]
    [event] = (await world.stores.events.query(EventQuery(ACCOUNT))).items
    assert event.device_id == "typed" and event.body["body"] == {"x": "text"}
    async with asyncio.timeout(WAIT_S):
        pushed = [await anext(live) for _ in range(4)]
    assert [(e.device_id, e.body) for e in pushed] == [  # type: ignore[union-attr]
        ("plain", {"x": 1.0}), ("plain", {"x": 2.0}), ("typed", {"x": 4.0}), ("plain", {"y": 5.0}),
    ]  # fmt: skip
    await live.aclose()


async def test_a_batch_publishes_only_what_someone_listens_to(world: World) -> None:
    """Events are built and published for a device someone subscribed to; a device nobody
    listens to gets none (an upload of 100,000 values builds no events for nobody), and
    every message is stored either way."""
    heard, quiet = device(device_id="heard"), device(device_id="quiet")
    live = world.ingest.bus.subscribe(live_pattern("telemetry", ACCOUNT, None, "heard"))
    published: list[str] = []
    publish = world.ingest.bus.publish

    async def counting(event: Any) -> None:
        published.append(event.device_id)
        await publish(event)

    world.ingest.bus.publish = counting  # type: ignore[method-assign]
    items = [
        (d, world.ingest.build_parsed(d, b'{"t":1}', {"t": 1}, component=None, source="itwin",
                                      enqueued_at=1_700_000_000.0 + i))
        for i, d in enumerate((quiet, heard, quiet, heard))
    ]  # fmt: skip
    async with asyncio.timeout(WAIT_S):
        result = await world.ingest.ingest_batch(items)
        pushed = [await anext(live) for _ in range(2)]
    assert result.stored == 4 and len(await world.stored()) == 4
    assert published == ["heard", "heard"]
    assert [e.ts for e in pushed] == [1_700_000_001.0, 1_700_000_003.0]  # type: ignore[union-attr]
    await live.aclose()


async def test_a_batch_whose_write_fails_leaves_out_only_the_failing_message(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    original = world.stores.telemetry.append

    async def append(messages: Any, observations: Any = None) -> list[bool]:
        if any(m.body == {"t": "bad"} for m in messages):
            raise RuntimeError("the database refused a row")
        return await original(messages, observations)

    world.stores.telemetry.append = append  # type: ignore[method-assign]
    target = device()
    bodies: list[dict[str, Any]] = [{"t": 1}, {"t": "bad"}, {"t": 3}]
    items = [
        (target, world.ingest.build_parsed(target, orjson.dumps(b), b, component=None,
                                           source="itwin", enqueued_at=1_700_000_000.0 + i))
        for i, b in enumerate(bodies)
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="thinghub.services.ingest"):
        async with asyncio.timeout(WAIT_S):
            result = await world.ingest.ingest_batch(items)
    assert result.stored == 2
    assert result.refused == {1: "not stored"}
    assert [m.body for m in await world.stored()] == [{"t": 1}, {"t": 3}]
    assert any("writing each alone" in r.message for r in caplog.records)


async def test_a_batch_policy_error_fails_that_devices_messages_only(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.ingest.policies.append(Exploding())
    bad, good = device(device_id="boom"), device(device_id="fine")
    items = [
        (d, world.ingest.build_parsed(d, b'{"t":1}', {"t": 1}, component=None, source="itwin",
                                      enqueued_at=1_700_000_000.0))
        for d in (bad, good, bad)
    ]  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="thinghub.services.ingest"):
        async with asyncio.timeout(WAIT_S):
            result = await world.ingest.ingest_batch(items)
    assert result.stored == 1 and result.refused == {0: "not stored", 2: "not stored"}
    assert [m.device_id for m in await world.stored()] == ["fine"]
    assert (await world.stores.events.query(EventQuery(ACCOUNT))).items == []  # no rejection


def test_build_parsed_bounds_the_size_and_check_component_the_name() -> None:
    world = World()
    target = device()
    big = b'{"x":"' + b"a" * 262_144 + b'"}'
    with pytest.raises(TooLarge):
        world.ingest.build_parsed(
            target, big, {"x": "..."}, component=None, source="itwin", enqueued_at=0.0
        )
    message = world.ingest.build_parsed(
        target, b'{"x":1}', {"x": 1}, component="c", source="itwin", enqueued_at=5.0
    )
    assert (message.body, message.body_json, message.component, message.enqueued_at) == (
        {"x": 1}, b'{"x":1}', "c", 5.0,
    )  # fmt: skip
    world.ingest.check_component("c")
    with pytest.raises(Invalid):
        world.ingest.check_component("x" * 129)
    with pytest.raises(Invalid):
        world.ingest.check_component("a\x00b")


def test_messages_built_through_the_slots_are_the_dataclass_s_own() -> None:
    """build() sets TelemetryMessage's slots directly (services.ingest._new_message): every
    field of the class must be set, and the object must be what the constructor makes."""
    fields = {f.name for f in dataclasses.fields(TelemetryMessage)}
    assert set(_MESSAGE_FIELDS) == fields and len(_MESSAGE_FIELDS) == len(fields)
    values: dict[str, Any] = {
        "account_id": "acc",
        "device_id": "dev",
        "enqueued_at": 1.5,
        "body": {"t": 1},
        "raw": b'{"t":1}',
        "properties": {"k": "v"},
        "message_id": "m",
        "correlation_id": "c",
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "component": "thermo",
        "project": "p",
        "deployment": "d",
        "source": "mqtt",
        "body_json": b'{"t":1}',
        "depth_limit": 3,
    }
    made = _new_message(**values)
    assert type(made) is TelemetryMessage
    assert made == TelemetryMessage(**values)
    assert {name: getattr(made, name) for name in fields} == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.source = "http"  # type: ignore[misc]
