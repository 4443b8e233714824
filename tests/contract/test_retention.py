"""The Store contract for retention: an account's setting, the batched purge of old telemetry
and events, and deleting one device's data."""

from __future__ import annotations

import dataclasses

import pytest

from tests.contract.test_store import ACC, T0, all_telemetry, at, message
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Account, Retention
from thinghub.domain.telemetry import Observation
from thinghub.ports import EventQuery, Store, TelemetryQuery

OTHER = "acc-2"
ALL_TYPES = frozenset(EventType)


def obs(entity: str, seconds: float, value: float, account: str = ACC) -> Observation:
    return Observation(account, entity, "temp", at(seconds), value)


async def telemetry_times(
    store: Store, account: str = ACC, device: str | None = None
) -> list[float]:
    items = await all_telemetry(store, TelemetryQuery(account, device_id=device, limit=1000))
    return sorted(round(m.enqueued_at - T0, 3) for m in items)


async def event_times(store: Store, account: str = ACC, device: str | None = None) -> list[float]:
    page = await store.query_events(
        EventQuery(account, device_id=device, event_types=ALL_TYPES, limit=1000)
    )
    return sorted(round(e.ts - T0, 3) for e in page.items)


async def observation_times(store: Store, entity: str, account: str = ACC) -> list[float]:
    found = await store.query_observations(account, entity, "temp", None, None, 1000)
    return sorted(round(o.ts - T0, 3) for o in found)


async def seed(store: Store, devices: list[str], seconds: range, account: str = ACC) -> None:
    """A message, an observation and an event per device and second."""
    for s in seconds:
        await store.append_telemetry(
            [message(d, s, {"temp": float(s)}, account_id=account) for d in devices],
            [obs(d, s, float(s), account) for d in devices],
        )
        for d in devices:
            await store.append_event(Event(account, d, EventType.CONNECTION_STATE, at(s), {"s": s}))


# -- the account's setting ------------------------------------------------------------------------


async def test_retention_is_stored_with_the_account(store: Store) -> None:
    plain = Account(ACC, "Contoso", "0ne000AAAA1", T0)
    await store.insert_account(plain)
    assert (await store.get_account(ACC)) == plain
    assert plain.retention == Retention(None, None)

    assert await store.set_retention(ACC, Retention(telemetry_days=7.5, events_days=0.0)) is True
    changed = dataclasses.replace(plain, retention=Retention(7.5, 0.0))
    assert await store.get_account(ACC) == changed
    assert await store.get_account_by_name("Contoso") == changed
    assert await store.get_account_by_scope("0ne000AAAA1") == changed

    await store.set_retention(ACC, Retention(telemetry_days=None, events_days=2.0))
    assert (await store.get_account(ACC)).retention == Retention(None, 2.0)  # type: ignore[union-attr]
    assert await store.set_retention("nope", Retention(1.0, 1.0)) is False

    other = Account(OTHER, "Fabrikam", "0ne000BBBB2", at(1), Retention(3.0, None))
    await store.insert_account(other)
    assert await store.list_accounts() == [
        dataclasses.replace(plain, retention=Retention(None, 2.0)),
        other,
    ]


# -- the purge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
async def test_purge_deletes_only_what_is_older_of_that_account(
    store: Store, batch_rows: int
) -> None:
    await seed(store, ["dev-1", "dev-2"], range(10))
    await seed(store, ["far-1"], range(10), account=OTHER)

    deleted = await store.purge_telemetry(ACC, at(4), batch_rows)
    assert deleted == 8  # seconds 0..3 of two devices; second 4 is not older than at(4)
    assert await telemetry_times(store) == sorted([*range(4, 10)] * 2)
    assert await observation_times(store, "dev-1") == list(range(4, 10))
    assert await observation_times(store, "dev-2") == list(range(4, 10))
    # The latest value of a metric stays (here it is newer anyway).
    assert (await store.latest_observations(ACC, "dev-1"))["temp"].value == 9.0

    assert await store.purge_events(ACC, at(6), batch_rows) == 12
    assert await event_times(store) == sorted([*range(6, 10)] * 2)

    # The other account keeps everything; a second purge finds nothing more.
    assert await telemetry_times(store, OTHER) == list(range(10))
    assert await event_times(store, OTHER) == list(range(10))
    assert await observation_times(store, "far-1", OTHER) == list(range(10))
    assert await store.purge_telemetry(ACC, at(4), batch_rows) == 0
    assert await store.purge_events(ACC, at(6), batch_rows) == 0

    # Everything older than the future: all of it, in as many batches as it takes.
    assert await store.purge_telemetry(ACC, at(100), batch_rows) == 12
    assert await telemetry_times(store) == []
    assert await observation_times(store, "dev-1") == []


async def test_purge_gets_through_rows_that_share_a_timestamp(store: Store) -> None:
    # Five messages in the same microsecond: a batch of 2 must not stall on them.
    await store.append_telemetry([message(f"dev-{i}", 1) for i in range(5)], [])
    await store.append_telemetry([message("dev-1", 2)], [])
    assert await store.purge_telemetry(ACC, at(1.5), 2) == 5
    assert await telemetry_times(store) == [2]


# -- one device's data ----------------------------------------------------------------------------


async def test_delete_a_device_telemetry_with_its_modules_only(store: Store) -> None:
    await seed(store, ["gw", "gw/m1", "gw/m2", "gwx", "gw-2"], range(5))
    await seed(store, ["gw"], range(5), account=OTHER)  # the same id in another account

    assert await store.delete_device_telemetry(ACC, "gw", None, None, 2) == 15
    assert await telemetry_times(store, device="gw") == []
    assert await observation_times(store, "gw/m1") == []
    assert await store.latest_observations(ACC, "gw") == {}
    assert await store.latest_observations(ACC, "gw/m2") == {}
    # Devices whose ids merely start alike, and the other account's "gw", keep theirs.
    assert await telemetry_times(store, device="gwx") == list(range(5))
    assert await telemetry_times(store, device="gw-2") == list(range(5))
    assert await observation_times(store, "gwx") == list(range(5))
    assert await telemetry_times(store, OTHER, device="gw") == list(range(5))
    assert await observation_times(store, "gw", OTHER) == list(range(5))
    # Events are apart.
    assert await event_times(store, device="gw") == sorted([*range(5)] * 3)


async def test_delete_one_module_and_a_time_range(store: Store) -> None:
    await seed(store, ["gw", "gw/m1", "gw/m2"], range(6))
    assert await store.delete_device_telemetry(ACC, "gw/m1", at(2), at(3), 1000) == 2
    assert await telemetry_times(store, device="gw/m1") == [0, 1, 4, 5]
    assert await observation_times(store, "gw/m1") == [0, 1, 4, 5]
    assert await telemetry_times(store, device="gw/m2") == list(range(6))

    # Deleting the newest rows: the latest value falls back to the newest one left.
    assert await store.delete_device_telemetry(ACC, "gw/m2", at(4), None, 1000) == 2
    latest = await store.latest_observations(ACC, "gw/m2")
    assert latest == {"temp": obs("gw/m2", 3, 3.0)}
    assert await store.delete_device_telemetry(ACC, "gw/m2", None, None, 1000) == 4
    assert await store.latest_observations(ACC, "gw/m2") == {}


async def test_delete_a_device_events(store: Store) -> None:
    await seed(store, ["gw", "gw/m1", "dev-9"], range(4))
    await seed(store, ["gw"], range(4), account=OTHER)
    assert await store.delete_device_events(ACC, "gw", at(1), at(2), 1) == 4
    assert await event_times(store, device="gw") == [0, 0, 3, 3]
    assert await store.delete_device_events(ACC, "gw/m1", None, None, 1) == 2
    assert await event_times(store, device="gw") == [0, 3]
    assert await event_times(store, device="dev-9") == list(range(4))
    assert await event_times(store, OTHER, device="gw") == list(range(4))
    # Telemetry is apart.
    assert await telemetry_times(store, device="gw") == sorted([*range(4)] * 2)
