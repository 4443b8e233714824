"""The storage contract: every backend (memory, SQLite, PostgreSQL) must pass every test here."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tests.contract.conftest import Backend
from thinghub.domain.commands import Command, CommandMode, CommandStatus
from thinghub.domain.errors import Conflict, Invalid
from thinghub.domain.events import Event, EventType
from thinghub.domain.json_depth import JSON_DEPTH_CEILING
from thinghub.domain.model import (
    Account,
    ApiToken,
    Deployment,
    Device,
    DeviceKind,
    Project,
    Role,
    User,
)
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.domain.twin import Twin, TwinSection
from thinghub.ports import C2DMessage, ConnectionChange, EventQuery, Stores, TelemetryQuery

# Timestamps with all six decimals in use: they must come back exactly.
T0 = 1_700_000_000.123456
ACC = "acc-1"


def at(seconds: float) -> float:
    """T0 plus `seconds`, kept at microsecond precision."""
    return round(T0 + seconds, 6)


def device(device_id: str = "dev-1", **fields: Any) -> Device:
    base: dict[str, Any] = dict(
        id=device_id,
        account_id=ACC,
        kind=DeviceKind.DEVICE,
        name=f"name of {device_id}",
        primary_key="pk==",
        secondary_key="sk==",
        created_at=T0,
        updated_at=T0,
    )
    base.update(fields)
    return Device(**base)


def message(
    device_id: str = "dev-1", seconds: float = 0.0, body: Any = None, **fields: Any
) -> TelemetryMessage:
    base: dict[str, Any] = dict(
        account_id=ACC,
        device_id=device_id,
        enqueued_at=at(seconds),
        body={"temp": 21.5} if body is None else body,
        raw=b"",
    )
    base.update(fields)
    return TelemetryMessage(**base)


def command(command_id: str, device_id: str = "dev-1", **fields: Any) -> Command:
    base: dict[str, Any] = dict(
        id=command_id,
        account_id=ACC,
        device_id=device_id,
        name="reboot",
        payload={"delay": 5},
        mode=CommandMode.QUEUED,
        status=CommandStatus.PENDING,
        created_at=T0,
        expires_at=at(3600),
        response_timeout_s=30.0,
    )
    base.update(fields)
    return Command(**base)


def c2d(message_id: str, device_id: str = "dev-1", seconds: float = 0.0) -> C2DMessage:
    return C2DMessage(
        id=message_id,
        device_id=device_id,
        body=b"\x00\xffbinary",
        properties={"k": "v"},
        created_at=at(seconds),
        expires_at=at(seconds + 3600),
    )


async def all_telemetry(stores: Stores, query: TelemetryQuery) -> list[TelemetryMessage]:
    """Every page of a query, following continuation tokens."""
    items: list[TelemetryMessage] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await stores.telemetry.query(dataclasses.replace(query, cursor=cursor))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


# -- accounts and principals -----------------------------------------------------------------


async def test_accounts_by_id_name_and_scope(stores: Stores) -> None:
    account = Account("acc-1", "Contoso", "0ne000AAAA1", T0)
    other = Account("acc-2", "Fabrikam", "0ne000BBBB2", at(1))
    await stores.accounts.insert(account)
    await stores.accounts.insert(other)

    assert await stores.accounts.get("acc-1") == account
    assert await stores.accounts.get_by_name("Fabrikam") == other
    assert await stores.accounts.get_by_scope("0ne000AAAA1") == account
    assert await stores.accounts.get("nope") is None
    assert await stores.accounts.get_by_name("nope") is None
    assert await stores.accounts.get_by_scope("nope") is None


@pytest.mark.parametrize(
    "duplicate",
    [
        Account("acc-1", "Other", "scope-x", T0),  # same id
        Account("acc-9", "Contoso", "scope-y", T0),  # same name
        Account("acc-8", "Other2", "0ne000AAAA1", T0),  # same id scope
    ],
    ids=["id", "name", "scope"],
)
async def test_duplicate_account_is_conflict(stores: Stores, duplicate: Account) -> None:
    await stores.accounts.insert(Account("acc-1", "Contoso", "0ne000AAAA1", T0))
    with pytest.raises(Conflict):
        await stores.accounts.insert(duplicate)
    assert await stores.accounts.get_by_name("Contoso") == Account(
        "acc-1", "Contoso", "0ne000AAAA1", T0
    )


async def test_users(stores: Stores) -> None:
    user = User("u-1", ACC, "alice", "$argon2id$hash", Role.OPERATOR, T0)
    await stores.credentials.insert_user(user)
    assert await stores.credentials.get_user("alice") == user
    assert await stores.credentials.get_user("bob") is None
    with pytest.raises(Conflict):
        await stores.credentials.insert_user(dataclasses.replace(user, id="u-2"))
    with pytest.raises(Conflict):
        await stores.credentials.insert_user(dataclasses.replace(user, username="carol"))
    other = User("u-3", "acc-2", "bob", "$argon2id$hash", Role.VIEWER, T0)
    zed = User("u-4", ACC, "aaron", "$argon2id$hash", Role.ADMIN, T0)
    await stores.credentials.insert_user(other)
    await stores.credentials.insert_user(zed)
    assert await stores.credentials.list_users(ACC) == [zed, user]
    assert await stores.credentials.list_users("acc-2") == [other]
    assert await stores.credentials.list_users("acc-none") == []
    # A role changes only in the user's own account.
    assert not await stores.credentials.set_user_role("acc-2", "u-1", Role.ADMIN)
    assert not await stores.credentials.set_user_role(ACC, "u-none", Role.ADMIN)
    assert await stores.credentials.set_user_role(ACC, "u-1", Role.BUILDER)
    assert await stores.credentials.get_user("alice") == dataclasses.replace(
        user, role=Role.BUILDER
    )
    assert await stores.credentials.list_users("acc-2") == [other]


async def test_api_tokens(stores: Stores) -> None:
    t1 = ApiToken("tok-1", ACC, "hash-1", Role.ADMIN, T0)
    t2 = ApiToken(
        "tok-2", ACC, "hash-2", Role.VIEWER, at(1), label="ci", expires_at=at(86400),
        face="central", face_role="Operator",
    )  # fmt: skip
    t3 = ApiToken("tok-3", ACC, "hash-3", Role.OPERATOR, at(2), face="central", project="p1")
    foreign = ApiToken("tok-4", "acc-2", "hash-4", Role.ADMIN, T0)
    for token in (t3, t1, t2, foreign):
        await stores.credentials.insert_token(token)

    assert await stores.credentials.get_token(ACC, "tok-2") == t2
    assert await stores.credentials.get_token(ACC, "nope") is None
    assert await stores.credentials.get_token(ACC, "tok-4") is None  # another account's id
    assert await stores.credentials.get_token_by_hash("hash-1") == t1
    assert await stores.credentials.get_token_by_hash("nope") is None
    assert await stores.credentials.list_tokens(ACC) == [t1, t2, t3]
    assert await stores.credentials.list_tokens(ACC, face="central") == [t2, t3]
    assert await stores.credentials.list_tokens(ACC, face="st") == [t1]
    assert await stores.credentials.list_tokens("acc-3") == []

    with pytest.raises(Conflict):
        await stores.credentials.insert_token(dataclasses.replace(t1, secret_hash="hash-9"))
    with pytest.raises(Conflict):
        await stores.credentials.insert_token(dataclasses.replace(t1, id="tok-9"))
    # Token ids are per account: another account may use the same id (issue 11: a 409
    # there told that the id exists somewhere).
    twin = ApiToken("tok-1", "acc-2", "hash-5", Role.VIEWER, at(3))
    await stores.credentials.insert_token(twin)
    assert await stores.credentials.get_token("acc-2", "tok-1") == twin
    assert await stores.credentials.get_token(ACC, "tok-1") == t1

    assert await stores.credentials.delete_token("acc-2", "tok-3") is False  # not its account
    assert await stores.credentials.delete_token(ACC, "tok-1") is True
    assert await stores.credentials.delete_token(ACC, "tok-1") is False
    assert await stores.credentials.get_token(ACC, "tok-1") is None
    assert await stores.credentials.get_token("acc-2", "tok-1") == twin  # the other account's stays
    assert await stores.credentials.list_tokens(ACC) == [t2, t3]


# -- projects and deployments ----------------------------------------------------------------


async def test_projects_and_deployments(stores: Stores) -> None:
    await stores.devices.ensure_project(ACC, "plant-b", T0)
    await stores.devices.ensure_project(ACC, "plant-a", at(1))
    await stores.devices.ensure_project(ACC, "plant-a", at(5))  # idempotent: the first one stays
    await stores.devices.ensure_project("acc-2", "elsewhere", T0)
    assert await stores.devices.list_projects(ACC) == [
        Project(ACC, "plant-a", at(1)),
        Project(ACC, "plant-b", T0),
    ]

    await stores.devices.ensure_deployment(ACC, "plant-c", "line-2", at(2))  # makes the project too
    await stores.devices.ensure_deployment(ACC, "plant-c", "line-1", at(3))
    await stores.devices.ensure_deployment(ACC, "plant-c", "line-1", at(9))
    await stores.devices.ensure_deployment(ACC, "plant-a", "line-1", at(4))
    assert [p.name for p in await stores.devices.list_projects(ACC)] == [
        "plant-a",
        "plant-b",
        "plant-c",
    ]
    assert await stores.devices.list_deployments(ACC, "plant-c") == [
        Deployment(ACC, "plant-c", "line-1", at(3)),
        Deployment(ACC, "plant-c", "line-2", at(2)),
    ]
    assert await stores.devices.list_deployments(ACC, "plant-b") == []
    assert await stores.devices.list_deployments("acc-2", "plant-c") == []
    assert await stores.devices.list_projects("acc-3") == []


async def test_delete_project_only_when_no_device_uses_it(stores: Stores) -> None:
    await stores.devices.ensure_deployment(ACC, "p1", "d1", T0)
    await stores.devices.ensure_project(ACC, "p2", T0)
    await stores.devices.ensure_project("acc-2", "p1", T0)
    await stores.devices.insert(
        device("in-p2", project="p2", kind=DeviceKind.SENSOR), Twin("in-p2")
    )
    assert await stores.devices.delete_project(ACC, "p2") is False  # a device (any kind) uses it
    assert await stores.devices.delete_project(ACC, "nope") is False
    assert await stores.devices.delete_project(ACC, "p1") is True
    assert [p.name for p in await stores.devices.list_projects(ACC)] == ["p2"]
    assert await stores.devices.list_deployments(ACC, "p1") == []
    assert [p.name for p in await stores.devices.list_projects("acc-2")] == ["p1"]  # untouched
    assert await stores.devices.delete_project(ACC, "p1") is False


# -- devices ---------------------------------------------------------------------------------


async def test_insert_and_get_device(stores: Stores) -> None:
    d = device()
    await stores.devices.insert(d, Twin(d.id))
    assert await stores.devices.get("dev-1") == d
    assert await stores.twins.get("dev-1") == Twin("dev-1")
    assert await stores.devices.get("nope") is None
    with pytest.raises(Conflict):
        await stores.devices.insert(dataclasses.replace(d, name="again"), Twin(d.id))
    assert await stores.devices.get("dev-1") == d


async def test_list_devices_filters(stores: Stores) -> None:
    devices = [
        device("d1", project="p1", deployment="x", created_at=at(1)),
        device("d2", project="p1", deployment="y", created_at=at(2)),
        device("gw", project="p2", kind=DeviceKind.GATEWAY, created_at=at(3)),
        device("gw/m1", kind=DeviceKind.MODULE, parent_id="gw", module_id="m1",
               created_at=at(4)),
        device("gw/m2", kind=DeviceKind.MODULE, parent_id="gw", module_id="m2",
               created_at=at(4)),
        device("node", kind=DeviceKind.NODE, created_at=at(0)),
        device("other", account_id="acc-2", project="p1"),
    ]  # fmt: skip
    for d in devices:
        await stores.devices.insert(d, Twin(d.id))

    async def ids(**filters: Any) -> list[str]:
        return [d.id for d in await stores.devices.find(ACC, **filters)]

    assert await ids() == ["node", "d1", "d2", "gw", "gw/m1", "gw/m2"]
    assert await ids(project="p1") == ["d1", "d2"]
    assert await ids(project="p1", deployment="y") == ["d2"]
    assert await ids(deployment="x") == ["d1"]
    assert await ids(parent_id="gw") == ["gw/m1", "gw/m2"]
    assert await ids(kinds=[DeviceKind.GATEWAY, DeviceKind.NODE]) == ["node", "gw"]
    assert await ids(kinds=[DeviceKind.MODULE], parent_id="gw") == ["gw/m1", "gw/m2"]
    assert await ids(kinds=[DeviceKind.SENSOR]) == []
    assert await ids(kinds=[]) == await ids()  # empty means no filter
    assert await stores.devices.find(ACC, project="p1") == devices[:2]
    assert [d.id for d in await stores.devices.find("acc-2")] == ["other"]


async def test_update_device_round_trips_every_field(stores: Stores) -> None:
    before = device("gw/m", kind=DeviceKind.MODULE)
    await stores.devices.insert(before, Twin(before.id))
    after = Device(
        id="gw/m",
        account_id=ACC,
        kind=DeviceKind.SENSOR,
        name="renamed ✓",
        primary_key="pk2==",
        secondary_key="sk2==",
        created_at=at(-10),
        updated_at=at(10.000001),
        project="proj",
        deployment="dep",
        parent_id="gw",
        module_id="m",
        enabled=False,
        simulated=True,
        provisioned=True,
        template="tmpl-1",
        model_id="dtmi:com:example:Thermostat;1",
        connection_state="Connected",
        last_activity_at=at(9.999999),
        created_by="alice",
        attributes={"tags": {"floor": 3, "ok": True}, "list": [1, 2.5, None, "x"]},
    )
    await stores.devices.update(after)
    assert await stores.devices.get("gw/m") == after

    # ...and back: None, False and empty values round-trip too.
    await stores.devices.update(before)
    assert await stores.devices.get("gw/m") == before


async def test_touch_device(stores: Stores) -> None:
    await stores.devices.insert(device(), Twin("dev-1"))
    await stores.devices.touch("dev-1", at(5))
    d = await stores.devices.get("dev-1")
    assert d is not None
    assert (d.last_activity_at, d.connection_state, d.provisioned) == (at(5), "Disconnected", False)
    await stores.devices.touch("dev-1", at(6.5), "Connected")
    d = await stores.devices.get("dev-1")
    assert d is not None
    assert (d.last_activity_at, d.connection_state, d.provisioned) == (at(6.5), "Connected", True)
    await stores.devices.touch("nope", at(7))  # no such device: nothing happens
    assert await stores.devices.get("nope") is None


async def test_record_connections_sets_states_and_appends_events_in_order(
    stores: Stores,
) -> None:
    for d in ("dev-1", "dev-2"):
        await stores.devices.insert(device(d), Twin(d))

    def change(device_id: str, state: str, seconds: float) -> ConnectionChange:
        body = {"state": state, "n": seconds}
        event = Event(ACC, device_id, EventType.CONNECTION_STATE, at(seconds), body, "p", "x")
        return ConnectionChange(device_id, at(seconds), state, event)

    changes = [
        change("dev-1", "Connected", 1),
        change("dev-2", "Connected", 2),
        change("nope", "Connected", 3),  # no such device: no row changes, the event is kept
        change("dev-1", "Disconnected", 4),  # a device's later transition wins
    ]
    await stores.devices.record_connections(changes)
    await stores.devices.record_connections([])
    got = {d: await stores.devices.get(d) for d in ("dev-1", "dev-2")}
    assert {
        d: (x.connection_state, x.last_activity_at, x.provisioned)
        for d, x in got.items()
        if x is not None
    } == {"dev-1": ("Disconnected", at(4), True), "dev-2": ("Connected", at(2), True)}
    assert await stores.devices.get("nope") is None
    page = await stores.events.query(EventQuery(ACC))
    assert list(reversed(page.items)) == [c.event for c in changes]  # newest first


async def test_delete_device_cascades_to_modules_twins_commands_and_c2d(stores: Stores) -> None:
    for d in (
        device("gw", kind=DeviceKind.GATEWAY),
        device("gw/m1", kind=DeviceKind.MODULE, parent_id="gw", module_id="m1"),
        device("gw/m2", kind=DeviceKind.MODULE, parent_id="gw", module_id="m2"),
        device("keep"),
    ):
        await stores.devices.insert(d, Twin(d.id))
    for i, owner in enumerate(("gw", "gw/m1", "gw/m2", "keep")):
        await stores.commands.insert(command(f"cmd-{i}", owner))
    await stores.c2d.enqueue(c2d("c2d-gw", "gw"))
    await stores.c2d.enqueue(c2d("c2d-keep", "keep"))

    assert await stores.devices.delete("gw") is True
    for gone in ("gw", "gw/m1", "gw/m2"):
        assert await stores.devices.get(gone) is None
        assert await stores.twins.get(gone) is None
        assert await stores.commands.pending(gone) == []
    assert await stores.commands.get("cmd-1") is None
    assert await stores.c2d.pending("gw") == []
    assert await stores.devices.delete("gw") is False

    assert await stores.devices.get("keep") is not None
    assert await stores.twins.get("keep") is not None
    assert [c.id for c in await stores.commands.pending("keep")] == ["cmd-3"]
    assert [m.id for m in await stores.c2d.pending("keep")] == ["c2d-keep"]


# -- twins -----------------------------------------------------------------------------------


async def test_twin_compare_and_set(stores: Stores) -> None:
    await stores.devices.insert(device(), Twin("dev-1"))
    twin = await stores.twins.get("dev-1")
    assert twin == Twin("dev-1")
    assert twin is not None
    assert await stores.twins.get("nope") is None

    v2 = twin.patch_desired({"fan": {"speed": 3}, "mode": "eco"}, at(1.5))
    assert await stores.twins.put(v2, expected_version=1) is True
    assert await stores.twins.get("dev-1") == v2

    stale = twin.patch_reported({"temp": 20}, at(2))  # built on version 1 as well
    assert await stores.twins.put(stale, expected_version=1) is False
    assert await stores.twins.get("dev-1") == v2

    v3 = v2.patch_reported({"temp": 20.25, "nested": {"a": [1, "b", None]}}, at(2.000001))
    assert await stores.twins.put(v3, expected_version=2) is True
    got = await stores.twins.get("dev-1")
    assert got == v3
    assert got is not None
    assert got.version == 3
    assert got.desired.metadata["fan"]["speed"]["$lastUpdated"]
    assert got.reported.last_updated == at(2.000001)
    assert got.reported.properties == {"temp": 20.25, "nested": {"a": [1, "b", None]}}
    assert await stores.twins.put(Twin("nope", version=2), expected_version=1) is False


async def test_twin_sections_round_trip(stores: Stores) -> None:
    twin = Twin(
        "dev-1",
        desired=TwinSection({"a": 1}, 4, {"a": {"$lastUpdated": "2023-11-14T22:13:20Z"}}, T0),
        reported=TwinSection({"b": {"c": "d"}}, 7, {"b": {"c": {"$lastUpdated": "x"}}}, None),
        version=11,
    )
    await stores.devices.insert(device(), twin)
    assert await stores.twins.get("dev-1") == twin


# -- telemetry -------------------------------------------------------------------------------


async def test_append_telemetry_dedupes_by_device_and_message_id(stores: Stores) -> None:
    first = [message(message_id="m1"), message(message_id="m2"), message(message_id=None)]
    assert await stores.telemetry.append(first, []) == [True, True, True]
    again = [
        message(message_id="m1", seconds=1),  # redelivery
        message(message_id=None, seconds=1),  # no id: always new
        message("dev-2", message_id="m1", seconds=1),  # same id, other device: new
        message(message_id="m3", seconds=1),
        message(message_id="m3", seconds=2),  # duplicate inside one call
    ]
    assert await stores.telemetry.append(again, []) == [False, True, True, True, False]
    assert await stores.telemetry.append([], []) == []

    stored = await all_telemetry(stores, TelemetryQuery(ACC, limit=100))
    assert len(stored) == 6
    assert sorted(m.message_id or "-" for m in stored) == ["-", "-", "m1", "m1", "m2", "m3"]
    # The first copy of a duplicate is the one kept.
    m3 = [m for m in stored if m.message_id == "m3"]
    assert [m.enqueued_at for m in m3] == [at(1)]


async def test_an_empty_message_id_is_an_id(stores: Stores) -> None:
    sent = [message(message_id=""), message(message_id="", seconds=1), message("dev-2", 2,
            message_id="")]  # fmt: skip
    assert await stores.telemetry.append(sent, []) == [True, False, True]
    assert await stores.telemetry.append([message(message_id="", seconds=3)], []) == [False]
    stored = await all_telemetry(stores, TelemetryQuery(ACC))
    assert [(m.device_id, m.enqueued_at) for m in stored] == [("dev-2", at(2)), ("dev-1", T0)]


async def test_telemetry_round_trips_every_field(stores: Stores) -> None:
    full = TelemetryMessage(
        account_id=ACC,
        device_id="gw/mod",
        enqueued_at=at(0.000001),
        body={"temp": 21.5, "ok": True, "tags": ["a", None], "nested": {"x": -1}},
        raw=b"",
        properties={"alert": "high", "unicode": "ü✓"},
        message_id="mid-1",
        correlation_id="corr-1",
        content_type="application/json",
        content_encoding="utf-8",
        component="thermostat1",
        project="p",
        deployment="d",
        source="http",
    )
    binary = message(seconds=1, body=None, raw=b"\x00\x01\xfe\xff", content_type="x/bin")
    binary = dataclasses.replace(binary, body=None)
    text = message(seconds=2, body="plain text, not JSON")
    scalar = message(seconds=3, body=42)
    assert await stores.telemetry.append([full, binary, text, scalar], []) == [True] * 4

    got = await all_telemetry(stores, TelemetryQuery(ACC))
    assert got == [
        scalar,
        text,
        binary,
        full,
    ]
    assert got[2].body is None
    assert got[2].raw == b"\x00\x01\xfe\xff"
    assert isinstance(got[2].raw, bytes)


async def test_bodies_too_deep_to_render_are_read_back_as_their_text(stores: Stores) -> None:
    """Older versions stored a payload's own JSON text whatever its depth (`body_json`); a body
    deeper than JSON_DEPTH_CEILING could not be rendered (orjson writes at most 254 levels),
    so it is read back as that text, never parsed. Anything at the ceiling still parses."""
    too_deep = "[" * 300 + "]" * 300
    at_ceiling = "[" * JSON_DEPTH_CEILING + "]" * JSON_DEPTH_CEILING
    stored = [
        message(seconds=1, body="unused", body_json=too_deep.encode()),
        message(seconds=2, body="unused", body_json=at_ceiling.encode()),
        message(seconds=3, body="[[[ text, not JSON"),
    ]
    assert await stores.telemetry.append(stored, []) == [True] * 3
    found = await all_telemetry(stores, TelemetryQuery(ACC))
    bodies = {m.enqueued_at: m.body for m in found}
    assert bodies[at(1)] == too_deep
    assert isinstance(bodies[at(2)], list)
    assert bodies[at(3)] == "[[[ text, not JSON"


async def test_query_telemetry_filters(stores: Stores) -> None:
    batch = [
        message("a", 0, project="p1", deployment="d1"),
        message("a", 1, project="p1", deployment="d2"),
        message("b", 2, project="p2"),
        message("c", 3),
        message("c", 4, account_id="acc-2"),
    ]
    await stores.telemetry.append(batch, [])

    async def devices(**filters: Any) -> list[tuple[str, float]]:
        page = await stores.telemetry.query(TelemetryQuery(ACC, **filters))
        assert page.next_cursor is None
        return [(m.device_id, m.enqueued_at) for m in page.items]

    assert await devices() == [("c", at(3)), ("b", at(2)), ("a", at(1)), ("a", at(0))]
    assert await devices(project="p1") == [("a", at(1)), ("a", at(0))]
    assert await devices(project="p1", deployment="d1") == [("a", at(0))]
    assert await devices(deployment="d2") == [("a", at(1))]
    assert await devices(device_id="b") == [("b", at(2))]
    assert await devices(since=at(1), until=at(2)) == [("b", at(2)), ("a", at(1))]
    assert await devices(since=at(1.000001)) == [("c", at(3)), ("b", at(2))]
    assert await devices(until=at(0.999999)) == [("a", at(0))]
    assert await devices(device_id="zzz") == []
    other = await stores.telemetry.query(TelemetryQuery("acc-2"))
    assert [(m.device_id, m.account_id) for m in other.items] == [("c", "acc-2")]


async def test_query_telemetry_pages_newest_first_through_equal_timestamps(stores: Stores) -> None:
    # 23 messages over 5 distinct timestamps, appended in several calls.
    sent = [message("dev-1", seconds=i // 5, message_id=f"m{i:02d}") for i in range(23)]
    for chunk in (sent[:4], sent[4:11], sent[11:12], sent[12:]):
        await stores.telemetry.append(chunk, [])

    pages = []
    cursor = None
    while True:
        page = await stores.telemetry.query(TelemetryQuery(ACC, limit=4, cursor=cursor))
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 3]
    got = [m for p in pages for m in p]
    # Newest first; on equal timestamps the later insert first.
    assert [m.message_id for m in got] == [m.message_id for m in reversed(sent)]
    assert [m.enqueued_at for m in got] == sorted((m.enqueued_at for m in sent), reverse=True)

    # An exact multiple of the page size leaves no dangling cursor.
    page = await stores.telemetry.query(TelemetryQuery(ACC, limit=23))
    assert len(page.items) == 23
    assert page.next_cursor is None
    # A cursor composes with filters.
    first = await stores.telemetry.query(TelemetryQuery(ACC, since=at(2), limit=7))
    assert first.next_cursor is not None
    rest = await stores.telemetry.query(
        TelemetryQuery(ACC, since=at(2), limit=7, cursor=first.next_cursor)
    )
    assert [m.message_id for m in first.items + rest.items] == [
        f"m{i:02d}" for i in range(22, 9, -1)
    ]
    assert rest.next_cursor is None


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWEtY3Vyc29y", "MTpub3Q", "_w"])
async def test_invalid_cursor_is_invalid(stores: Stores, cursor: str) -> None:
    with pytest.raises(Invalid):
        await stores.telemetry.query(TelemetryQuery(ACC, cursor=cursor))
    with pytest.raises(Invalid):
        await stores.events.query(EventQuery(ACC, cursor=cursor))


async def test_a_device_filter_includes_its_modules_only(stores: Stores) -> None:
    ids = ["gw", "gw/m1", "gw/m2", "gw0", "gw2", "gw.x", "gw-1", "g"]
    await stores.telemetry.append([message(d, seconds=i) for i, d in enumerate(ids)], [])
    found = await all_telemetry(stores, TelemetryQuery(ACC, device_id="gw", limit=100))
    assert sorted(m.device_id for m in found) == ["gw", "gw/m1", "gw/m2"]
    one = await all_telemetry(stores, TelemetryQuery(ACC, device_id="gw/m2", limit=100))
    assert [m.device_id for m in one] == ["gw/m2"]


async def test_only_stored_messages_with_ids_add_their_own_observations(stores: Stores) -> None:
    """Observations derived from the bodies: a redelivery that is the newest of its batch
    adds none and leaves the latest value to the batch's messages that were stored."""
    first = message(message_id="a", seconds=5, body={"temp": 50.0})
    assert await stores.telemetry.append([first]) == [True]
    batch = [
        message(message_id="b", seconds=6, body={"temp": 60.0, "hum": 1.0}),
        message(message_id=None, seconds=6.5, body={"hum": 2.0}),
        message(message_id="c", seconds=6.8, body={"hum": 80.0}),
        message(message_id="a", seconds=7, body={"temp": 70.0, "hum": 99.0}),  # redelivery
    ]
    assert await stores.telemetry.append(batch) == [True, True, True, False]
    temp = await stores.telemetry.observations(ACC, "dev-1", "temp", None, None, 100)
    hum = await stores.telemetry.observations(ACC, "dev-1", "hum", None, None, 100)
    assert [(o.ts, o.value) for o in temp] == [(at(6), 60.0), (at(5), 50.0)]
    assert [(o.ts, o.value) for o in hum] == [(at(6.8), 80.0), (at(6.5), 2.0), (at(6), 1.0)]
    latest = await stores.telemetry.latest(ACC, "dev-1")
    assert {m: (o.ts, o.value) for m, o in latest.items()} == {
        "temp": (at(6), 60.0),
        "hum": (at(6.8), 80.0),
    }


async def test_a_duplicate_message_adds_no_observations(stores: Stores) -> None:
    first = message(message_id="dup", seconds=1, body={"temp": 20.0})
    await stores.telemetry.append([first], [Observation(ACC, "dev-1", "temp", at(1), 20.0)])
    again = message(message_id="dup", seconds=2, body={"temp": 99.0})
    fresh = message(message_id="new", seconds=3, body={"temp": 30.0})
    result = await stores.telemetry.append(
        [again, fresh],
        [Observation(ACC, "dev-1", "temp", at(2), 99.0),
         Observation(ACC, "dev-1", "temp", at(3), 30.0)],
    )  # fmt: skip
    assert result == [False, True]
    history = await stores.telemetry.observations(ACC, "dev-1", "temp", None, None, 100)
    assert [o.value for o in history] == [30.0, 20.0]  # the duplicate's 99 never landed
    assert (await stores.telemetry.latest(ACC, "dev-1"))["temp"].value == 30.0
    # Redelivered alone (newest of all), it still changes nothing.
    late = message(message_id="dup", seconds=9, body={"temp": 99.0})
    assert await stores.telemetry.append(
        [late], [Observation(ACC, "dev-1", "temp", at(9), 99.0)]
    ) == [False]
    assert (await stores.telemetry.latest(ACC, "dev-1"))["temp"].value == 30.0


async def test_observations_derived_from_the_messages_skip_duplicates(stores: Stores) -> None:
    """append(messages) without observations stores each message's own numeric fields (what
    ingest does), under its component's name; a redelivered message id adds none."""
    first = message(message_id="m1", seconds=1, body={"temp": 20, "on": True, "s": "x"})
    plain = message(seconds=2, body={"temp": 21.5, "hum": 40}, component="c1")
    assert await stores.telemetry.append([first, plain]) == [True, True]
    again = message(message_id="m1", seconds=3, body={"temp": 99})
    fresh = message(message_id="m2", seconds=4, body={"temp": 25})
    assert await stores.telemetry.append([again, fresh]) == [False, True]
    history = await stores.telemetry.observations(ACC, "dev-1", "temp", None, None, 100)
    assert [(o.ts, o.value) for o in history] == [(at(4), 25.0), (at(1), 20.0)]
    latest = await stores.telemetry.latest(ACC, "dev-1")
    assert {k: (o.ts, o.value) for k, o in latest.items()} == {
        "temp": (at(4), 25.0),
        "c1.temp": (at(2), 21.5),
        "c1.hum": (at(2), 40.0),
    }
    assert await stores.telemetry.append([message(seconds=5, body="text")]) == [True]
    assert await stores.telemetry.latest(ACC, "dev-1") == latest


async def test_observations_and_latest(stores: Stores) -> None:
    def obs(entity: str, metric: str, seconds: float, value: float) -> Observation:
        return Observation(ACC, entity, metric, at(seconds), value)

    await stores.telemetry.append(
        [message()],
        [obs("dev-1", "temp", 10, 21.5), obs("dev-1", "hum", 10, 40.0),
         obs("dev-2", "temp", 10, 5.0)],
    )  # fmt: skip
    # Older values land in history but do not replace the latest.
    await stores.telemetry.append([], [obs("dev-1", "temp", 5, 19.0)])
    # Newer ones do, also when a call carries several for the same metric.
    await stores.telemetry.append(
        [], [obs("dev-1", "hum", 12, 41.0), obs("dev-1", "hum", 11, 40.5)]
    )

    latest = await stores.telemetry.latest(ACC, "dev-1")
    assert latest == {"temp": obs("dev-1", "temp", 10, 21.5), "hum": obs("dev-1", "hum", 12, 41.0)}
    assert await stores.telemetry.latest(ACC, "dev-2") == {"temp": obs("dev-2", "temp", 10, 5.0)}
    assert await stores.telemetry.latest(ACC, "nope") == {}
    assert await stores.telemetry.latest("acc-2", "dev-1") == {}

    # An equal timestamp written later wins.
    await stores.telemetry.append([], [obs("dev-1", "temp", 10, 22.0)])
    assert (await stores.telemetry.latest(ACC, "dev-1"))["temp"].value == 22.0

    history = await stores.telemetry.observations(ACC, "dev-1", "temp", None, None, 100)
    assert [o.ts for o in history] == [at(10), at(10), at(5)]  # newest first
    assert sorted((o.ts, o.value) for o in history) == [
        (at(5), 19.0), (at(10), 21.5), (at(10), 22.0),
    ]  # fmt: skip
    hum = await stores.telemetry.observations(ACC, "dev-1", "hum", None, None, 100)
    assert [(o.ts, o.value) for o in hum] == [(at(12), 41.0), (at(11), 40.5), (at(10), 40.0)]
    assert hum[0] == obs("dev-1", "hum", 12, 41.0)
    assert [o.value for o in await stores.telemetry.observations(
        ACC, "dev-1", "hum", at(10.5), at(11.5), 100)] == [40.5]  # fmt: skip
    assert [o.value for o in await stores.telemetry.observations(
        ACC, "dev-1", "hum", at(11), None, 1)] == [41.0]  # fmt: skip
    assert await stores.telemetry.observations(ACC, "dev-1", "hum", None, at(9), 100) == []
    assert await stores.telemetry.observations("acc-2", "dev-1", "hum", None, None, 100) == []


async def _streamed(stores: Stores, *args: Any) -> list[list[tuple[int, float]]]:
    return [batch async for batch in stores.telemetry.stream_observations(ACC, *args)]


def us(seconds: float) -> int:
    """at(seconds) as the store keeps it and streams it: integer microseconds."""
    return round(at(seconds) * 1_000_000)


async def test_stream_observations_keeps_equal_times_together(stores: Stores) -> None:
    def obs(metric: str, seconds: float, value: float, entity: str = "dev-1") -> Observation:
        return Observation(ACC, entity, metric, at(seconds), value)

    # Five rows at one time (three of them the same pair), around them others; another metric,
    # entity and account that must not show.
    rows = [
        obs("temp", 1, 1.0),
        obs("temp", 2, 7.0),
        obs("temp", 2, 5.0),
        obs("temp", 2, 5.0),
        obs("temp", 2, 5.0),
        obs("temp", 2, 6.0),
        obs("temp", 3, 0.5),
        obs("temp", 4, 2.0),
    ]
    await stores.telemetry.append([], rows)
    await stores.telemetry.append(
        [], [obs("hum", 2, 9.0), obs("temp", 2, 9.0, entity="dev-2"),
             Observation("acc-2", "dev-1", "temp", at(2), 9.0)],
    )  # fmt: skip
    expected = sorted((round(o.ts * 1_000_000), o.value) for o in rows)
    for size in (1, 2, 3, 4, 7, 8, 100):
        batches = await _streamed(stores, "dev-1", "temp", None, None, size)
        flat = [p for batch in batches for p in batch]
        assert [p[0] for p in flat] == [p[0] for p in expected], size  # oldest first
        assert sorted(flat) == expected, size  # every row once
        # A time's rows come together, so a batch may hold more than `size` (the five at
        # t=2), and a full one ends at a time boundary. (Pages are of `size` observation
        # sets: one set of dev-1, hum's at t=2, has no temp, so a page may hold one fewer.)
        times = [{p[0] for p in batch} for batch in batches]
        assert all(not (a & b) for a, b in zip(times, times[1:], strict=False)), size
        assert all(len(b) >= size - 1 or b[-1][0] == us(2) for b in batches[:-1]), size
    # A range, both ends included.
    ranged = await _streamed(stores, "dev-1", "temp", at(2), at(3), 2)
    in_range = [p for p in expected if us(2) <= p[0] <= us(3)]
    assert all(type(p[0]) is int for b in ranged for p in b)  # as stored, not a float
    assert sorted(p for b in ranged for p in b) == in_range
    assert await _streamed(stores, "dev-1", "temp", at(5), None, 10) == []
    assert await _streamed(stores, "nope", "temp", None, None, 10) == []
    with pytest.raises(ValueError, match="batch_rows"):
        await _streamed(stores, "dev-1", "temp", None, None, 0)


async def test_stream_observations_reads_each_page_when_asked(stores: Stores) -> None:
    """Pages are read one at a time: rows added between two pages, after the last pair sent,
    show in the next page (nothing was read ahead)."""
    await stores.telemetry.append(
        [], [Observation(ACC, "dev-1", "t", at(s), float(s)) for s in range(4)]
    )
    stream = stores.telemetry.stream_observations(ACC, "dev-1", "t", None, None, 2)
    first = await anext(stream)
    assert first == [(us(0), 0.0), (us(1), 1.0)]
    await stores.telemetry.append([], [Observation(ACC, "dev-1", "t", at(1.5), 1.5)])
    rest = [p async for batch in stream for p in batch]
    assert rest == [(us(1.5), 1.5), (us(2), 2.0), (us(3), 3.0)]


# -- events ----------------------------------------------------------------------------------


async def test_events_append_and_query(stores: Stores) -> None:
    events = [
        Event(ACC, "dev-1", EventType.CONNECTION_STATE, at(i), {"n": i, "state": "Connected"},
              project="p1" if i % 2 else None, deployment="d1" if i % 3 == 0 else None)
        for i in range(7)
    ] + [
        Event(ACC, "dev-2", EventType.CHANGE, at(3), {"twin": {"a": 1}}),
        Event(ACC, "dev-2", EventType.LIFECYCLE, at(3), {"op": "create"}),
        Event("acc-2", "dev-1", EventType.CHANGE, at(3), {}),
    ]  # fmt: skip
    ids = [await stores.events.append(e) for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)

    page = await stores.events.query(EventQuery(ACC))
    assert page.next_cursor is None
    # Newest first, and on equal timestamps the later append first.
    assert page.items == [events[6], events[5], events[4], events[8], events[7], events[3],
                          events[2], events[1], events[0]]  # fmt: skip

    async def query(**filters: Any) -> list[Event]:
        return (await stores.events.query(EventQuery(ACC, **filters))).items

    assert await query(event_types=frozenset({EventType.CHANGE})) == [events[7]]
    both = frozenset({EventType.CHANGE, EventType.LIFECYCLE})
    assert await query(event_types=both, device_id="dev-2") == [events[8], events[7]]
    assert await query(event_types=frozenset({EventType.CHANGE, EventType.CONNECTION_STATE}),
                       device_id="dev-2") == [events[7]]  # fmt: skip
    assert await query(event_types=frozenset()) == []
    assert await query(device_id="dev-2") == [events[8], events[7]]
    assert await query(project="p1") == [events[5], events[3], events[1]]
    assert await query(deployment="d1") == [events[6], events[3], events[0]]
    assert await query(since=at(2), until=at(3), device_id="dev-1") == [events[3], events[2]]
    connections = frozenset({EventType.CONNECTION_STATE})
    assert await query(event_types=connections, since=at(6)) == [events[6]]

    got: list[Event] = []
    cursor = None
    for _ in range(10):
        page = await stores.events.query(
            EventQuery(ACC, event_types=connections, limit=3, cursor=cursor)
        )
        got += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == events[6::-1]
    assert (await stores.events.query(EventQuery("acc-2"))).items == [events[9]]


# -- commands --------------------------------------------------------------------------------


async def test_commands(stores: Stores) -> None:
    c1 = command("c1", created_at=at(2))
    c2 = command("c2", created_at=at(1), payload=None, mode=CommandMode.AWAITED,
                 response_timeout_s=7)  # fmt: skip
    c3 = command("c3", device_id="dev-2")
    for c in (c1, c2, c3):
        await stores.commands.insert(c)
    with pytest.raises(Conflict):
        await stores.commands.insert(c1)

    assert await stores.commands.get("c1") == c1
    assert await stores.commands.get("c2") == c2
    assert await stores.commands.get("nope") is None
    assert await stores.commands.pending("dev-1") == [c2, c1]

    done = c1.finish(CommandStatus.COMPLETED, at(3.000001), 200, {"ok": [1, 2]})
    await stores.commands.update(done)
    assert await stores.commands.get("c1") == done
    failed = c2.finish(CommandStatus.FAILED, at(4), None, None)
    await stores.commands.update(failed)
    assert await stores.commands.get("c2") == failed
    assert await stores.commands.pending("dev-1") == []
    assert await stores.commands.pending("dev-2") == [c3]


async def test_command_history_is_per_device_and_name_newest_first(stores: Stores) -> None:
    made = [
        command("h1", created_at=at(1)),
        command("h2", created_at=at(3)),
        command("h3", created_at=at(2), name="ping"),
        command("h4", created_at=at(4), device_id="dev-2"),
        command("h5", created_at=at(5)),
    ]
    for c in made:
        await stores.commands.insert(c)
    done = made[1].finish(CommandStatus.COMPLETED, at(6), 200, "ok")
    await stores.commands.update(done)
    assert await stores.commands.history("dev-1", "reboot", 10) == [made[4], done, made[0]]
    assert await stores.commands.history("dev-1", "reboot", 2) == [made[4], done]
    assert await stores.commands.history("dev-1", "ping", 10) == [made[2]]
    assert await stores.commands.history("dev-2", "reboot", 10) == [made[3]]
    assert await stores.commands.history("dev-3", "reboot", 10) == []
    # A page after a command: the older ones; at the same time, the smaller ids.
    assert await stores.commands.history("dev-1", "reboot", 10, (at(3), "h2")) == [made[0]]
    assert await stores.commands.history("dev-1", "reboot", 1, (at(5), "h5")) == [done]
    twin = command("h0", created_at=at(5))
    await stores.commands.insert(twin)
    assert await stores.commands.history("dev-1", "reboot", 10, (at(5), "h5")) == [
        twin,
        done,
        made[0],
    ]
    assert await stores.commands.history("dev-1", "reboot", 10, (at(1), "h1")) == []


# -- cloud-to-device messages ----------------------------------------------------------------


async def test_c2d_messages(stores: Stores) -> None:
    m1, m2, m3 = c2d("m1", seconds=2), c2d("m2", seconds=1), c2d("m3", "dev-2")
    for m in (m1, m2, m3):
        await stores.c2d.enqueue(m)
    pending = await stores.c2d.pending("dev-1")
    assert pending == [m2, m1]
    assert isinstance(pending[0].body, bytes)
    await stores.c2d.delete("m2")
    await stores.c2d.delete("nope")
    assert await stores.c2d.pending("dev-1") == [m1]
    assert await stores.c2d.pending("dev-2") == [m3]
    assert await stores.c2d.pending("dev-3") == []


# -- MQTT sessions ---------------------------------------------------------------------------


async def test_mqtt_sessions(stores: Stores) -> None:
    state = {
        "subscriptions": {"devices/dev-1/messages/devicebound/#": 1},
        "expiry_s": 3600,
        "pending": [{"topic": "t", "qos": 1, "payload": "aGk="}],
    }
    assert await stores.sessions.load("client-1") is None
    await stores.sessions.save("client-1", state)
    await stores.sessions.save("client-2", {})
    assert await stores.sessions.load("client-1") == state
    assert await stores.sessions.load("client-2") == {}
    await stores.sessions.save("client-1", {"subscriptions": {"$iothub/twin/res/#": 0}})
    assert await stores.sessions.load("client-1") == {"subscriptions": {"$iothub/twin/res/#": 0}}
    await stores.sessions.delete("client-1")
    await stores.sessions.delete("client-1")
    assert await stores.sessions.load("client-1") is None
    assert await stores.sessions.load("client-2") == {}


# -- documents -------------------------------------------------------------------------------


async def test_documents(stores: Stores) -> None:
    await stores.documents.put(ACC, "template", "b", {"v": 1, "list": [1, None]}, T0)
    await stores.documents.put(ACC, "template", "a", ["x", 2.5], T0)
    await stores.documents.put(ACC, "other", "a", "scalar", T0)
    await stores.documents.put("acc-2", "template", "a", {"foreign": True}, T0)

    assert await stores.documents.get(ACC, "template", "b") == {"v": 1, "list": [1, None]}
    assert await stores.documents.get(ACC, "template", "zz") is None
    assert await stores.documents.all(ACC, "template") == [
        ("a", ["x", 2.5]), ("b", {"v": 1, "list": [1, None]}),
    ]  # fmt: skip
    assert await stores.documents.all("acc-2", "template") == [("a", {"foreign": True})]
    assert await stores.documents.all(ACC, "none") == []

    await stores.documents.put(ACC, "template", "b", {"v": 2}, at(1))  # replaces
    assert await stores.documents.get(ACC, "template", "b") == {"v": 2}

    assert await stores.documents.delete("acc-2", "template", "b") is False
    assert await stores.documents.delete(ACC, "template", "b") is True
    assert await stores.documents.delete(ACC, "template", "b") is False
    assert await stores.documents.get(ACC, "template", "b") is None
    assert await stores.documents.get("acc-2", "template", "a") == {"foreign": True}
    assert await stores.documents.get(ACC, "other", "a") == "scalar"


# -- concurrency and durability --------------------------------------------------------------


async def test_concurrent_appends_land_exactly_once(stores: Stores) -> None:
    calls = 500
    # Every message twice, plus id-less ones, all at once from separate tasks.
    results = await asyncio.gather(
        *(
            stores.telemetry.append(
                [message(f"dev-{i % 7}", seconds=i / 1000, message_id=f"m{i}")],
                [Observation(ACC, f"dev-{i % 7}", "n", at(i / 1000), float(i))],
            )
            for i in list(range(calls)) * 2
        ),
        *(stores.telemetry.append([message("dev-x", seconds=i)], []) for i in range(50)),
    )
    flat = [r for result in results for r in result]
    assert len(flat) == 2 * calls + 50
    assert flat[:calls].count(True) + flat[calls : 2 * calls].count(True) == calls
    assert all(flat[i] != flat[i + calls] for i in range(calls))  # exactly one copy is new
    assert all(flat[2 * calls :])

    stored = await all_telemetry(stores, TelemetryQuery(ACC, limit=333))
    assert len(stored) == calls + 50
    assert sorted(m.message_id for m in stored if m.message_id) == sorted(
        f"m{i}" for i in range(calls)
    )
    latest = await stores.telemetry.latest(ACC, "dev-0")
    assert latest["n"].value == float(max(i for i in range(calls) if i % 7 == 0))


async def test_failing_call_does_not_fail_others(stores: Stores) -> None:
    good = [stores.telemetry.append([message(message_id=f"ok{i}")], []) for i in range(20)]
    bad = stores.telemetry.append([message(message_id="bad", account_id=None)], [])
    results = await asyncio.gather(*good[:10], bad, *good[10:], return_exceptions=True)
    assert isinstance(results[10], Exception)
    assert not isinstance(results[10], Conflict)
    assert [r for i, r in enumerate(results) if i != 10] == [[True]] * 20
    stored = await all_telemetry(stores, TelemetryQuery(ACC))
    assert sorted(m.message_id or "" for m in stored) == sorted(f"ok{i}" for i in range(20))


async def test_a_value_the_driver_cannot_encode_fails_its_call_only(stores: Stores) -> None:
    """A str holding a lone surrogate has no UTF-8 form: on SQLite binding it raised
    UnicodeEncodeError in the writer thread, which ended the thread, and no later write ever
    finished (found by tests/e2e/test_abuse_fuzz.py, through a DPS modelId)."""
    bad = device("bad", model_id="\ud800")
    good = [stores.devices.insert(device(f"ok{i}"), Twin(f"ok{i}")) for i in range(5)]
    results = await asyncio.wait_for(
        asyncio.gather(stores.devices.insert(bad, Twin("bad")), *good, return_exceptions=True),
        10,
    )
    assert results[1:] == [None] * 5
    after = device("after")
    await asyncio.wait_for(stores.devices.insert(after, Twin(after.id)), 10)
    assert await stores.devices.get("after") == after
    # The databases refuse it (the memory backend, which encodes nothing, keeps it).
    stored = await stores.devices.get("bad")
    assert stored is None if isinstance(results[0], Exception) else stored == bad


async def test_close_writes_everything_queued(backend: Backend) -> None:
    stores = await backend.open()
    tasks = [
        asyncio.create_task(stores.telemetry.append([message(message_id=f"m{i}")], []))
        for i in range(100)
    ]
    await asyncio.sleep(0)  # every call is queued
    await stores.close()
    assert [await t for t in tasks] == [[True]] * 100

    reopened = await backend.open()
    assert len(await all_telemetry(reopened, TelemetryQuery(ACC))) == 100
