"""The storage contract for retention: an account's setting, the batched purge of old telemetry
and events, and deleting one device's data."""

from __future__ import annotations

import dataclasses

import pytest

from tests.contract.test_store import ACC, T0, all_telemetry, at, message
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Account, Retention
from thinghub.domain.telemetry import Observation
from thinghub.ports import EventQuery, Stores, TelemetryQuery

OTHER = "acc-2"
ALL_TYPES = frozenset(EventType)


def obs(entity: str, seconds: float, value: float, account: str = ACC) -> Observation:
    return Observation(account, entity, "temp", at(seconds), value)


async def telemetry_times(
    stores: Stores, account: str = ACC, device: str | None = None
) -> list[float]:
    items = await all_telemetry(stores, TelemetryQuery(account, device_id=device, limit=1000))
    return sorted(round(m.enqueued_at - T0, 3) for m in items)


async def event_times(stores: Stores, account: str = ACC, device: str | None = None) -> list[float]:
    page = await stores.events.query(
        EventQuery(account, device_id=device, event_types=ALL_TYPES, limit=1000)
    )
    return sorted(round(e.ts - T0, 3) for e in page.items)


async def observation_times(stores: Stores, entity: str, account: str = ACC) -> list[float]:
    found = await stores.telemetry.observations(account, entity, "temp", None, None, 1000)
    return sorted(round(o.ts - T0, 3) for o in found)


async def seed(stores: Stores, devices: list[str], seconds: range, account: str = ACC) -> None:
    """A message, an observation and an event per device and second."""
    for s in seconds:
        await stores.telemetry.append(
            [message(d, s, {"temp": float(s)}, account_id=account) for d in devices],
            [obs(d, s, float(s), account) for d in devices],
        )
        for d in devices:
            await stores.events.append(
                Event(account, d, EventType.CONNECTION_STATE, at(s), {"s": s})
            )


# -- the account's setting ------------------------------------------------------------------------


async def test_retention_is_stored_with_the_account(stores: Stores) -> None:
    plain = Account(ACC, "Contoso", "0ne000AAAA1", T0)
    await stores.accounts.insert(plain)
    assert (await stores.accounts.get(ACC)) == plain
    assert plain.retention == Retention(None, None)

    assert (
        await stores.accounts.set_retention(ACC, Retention(telemetry_days=7.5, events_days=0.0))
        is True
    )
    changed = dataclasses.replace(plain, retention=Retention(7.5, 0.0))
    assert await stores.accounts.get(ACC) == changed
    assert await stores.accounts.get_by_name("Contoso") == changed
    assert await stores.accounts.get_by_scope("0ne000AAAA1") == changed

    await stores.accounts.set_retention(ACC, Retention(telemetry_days=None, events_days=2.0))
    assert (await stores.accounts.get(ACC)).retention == Retention(None, 2.0)  # type: ignore[union-attr]
    assert await stores.accounts.set_retention("nope", Retention(1.0, 1.0)) is False

    other = Account(OTHER, "Fabrikam", "0ne000BBBB2", at(1), Retention(3.0, None))
    await stores.accounts.insert(other)
    assert await stores.accounts.all() == [
        dataclasses.replace(plain, retention=Retention(None, 2.0)),
        other,
    ]


# -- the purge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_rows", [1, 3, 1000])
async def test_purge_deletes_only_what_is_older_of_that_account(
    stores: Stores, batch_rows: int
) -> None:
    await seed(stores, ["dev-1", "dev-2"], range(10))
    await seed(stores, ["far-1"], range(10), account=OTHER)

    deleted = await stores.telemetry.purge(ACC, at(4), batch_rows)
    assert deleted == 8  # seconds 0..3 of two devices; second 4 is not older than at(4)
    assert await telemetry_times(stores) == sorted([*range(4, 10)] * 2)
    assert await observation_times(stores, "dev-1") == list(range(4, 10))
    assert await observation_times(stores, "dev-2") == list(range(4, 10))
    # The latest value of a metric stays (here it is newer anyway).
    assert (await stores.telemetry.latest(ACC, "dev-1"))["temp"].value == 9.0

    assert await stores.events.purge(ACC, at(6), batch_rows) == 12
    assert await event_times(stores) == sorted([*range(6, 10)] * 2)

    # The other account keeps everything; a second purge finds nothing more.
    assert await telemetry_times(stores, OTHER) == list(range(10))
    assert await event_times(stores, OTHER) == list(range(10))
    assert await observation_times(stores, "far-1", OTHER) == list(range(10))
    assert await stores.telemetry.purge(ACC, at(4), batch_rows) == 0
    assert await stores.events.purge(ACC, at(6), batch_rows) == 0

    # Everything older than the future: all of it, in as many batches as it takes.
    assert await stores.telemetry.purge(ACC, at(100), batch_rows) == 12
    assert await telemetry_times(stores) == []
    assert await observation_times(stores, "dev-1") == []


async def test_purge_gets_through_rows_that_share_a_timestamp(stores: Stores) -> None:
    # Five messages in the same microsecond: a batch of 2 must not stall on them.
    await stores.telemetry.append([message(f"dev-{i}", 1) for i in range(5)], [])
    await stores.telemetry.append([message("dev-1", 2)], [])
    assert await stores.telemetry.purge(ACC, at(1.5), 2) == 5
    assert await telemetry_times(stores) == [2]


# -- one device's data ----------------------------------------------------------------------------


async def test_delete_a_device_telemetry_with_its_modules_only(stores: Stores) -> None:
    await seed(stores, ["gw", "gw/m1", "gw/m2", "gwx", "gw-2"], range(5))
    await seed(stores, ["gw"], range(5), account=OTHER)  # the same id in another account

    assert await stores.telemetry.delete_for_device(ACC, "gw", None, None, 2) == 15
    assert await telemetry_times(stores, device="gw") == []
    assert await observation_times(stores, "gw/m1") == []
    assert await stores.telemetry.latest(ACC, "gw") == {}
    assert await stores.telemetry.latest(ACC, "gw/m2") == {}
    # Devices whose ids merely start alike, and the other account's "gw", keep theirs.
    assert await telemetry_times(stores, device="gwx") == list(range(5))
    assert await telemetry_times(stores, device="gw-2") == list(range(5))
    assert await observation_times(stores, "gwx") == list(range(5))
    assert await telemetry_times(stores, OTHER, device="gw") == list(range(5))
    assert await observation_times(stores, "gw", OTHER) == list(range(5))
    # Events are apart.
    assert await event_times(stores, device="gw") == sorted([*range(5)] * 3)


async def test_delete_one_module_and_a_time_range(stores: Stores) -> None:
    await seed(stores, ["gw", "gw/m1", "gw/m2"], range(6))
    assert await stores.telemetry.delete_for_device(ACC, "gw/m1", at(2), at(3), 1000) == 2
    assert await telemetry_times(stores, device="gw/m1") == [0, 1, 4, 5]
    assert await observation_times(stores, "gw/m1") == [0, 1, 4, 5]
    assert await telemetry_times(stores, device="gw/m2") == list(range(6))

    # Deleting the newest rows: the latest value falls back to the newest one left.
    assert await stores.telemetry.delete_for_device(ACC, "gw/m2", at(4), None, 1000) == 2
    latest = await stores.telemetry.latest(ACC, "gw/m2")
    assert latest == {"temp": obs("gw/m2", 3, 3.0)}
    assert await stores.telemetry.delete_for_device(ACC, "gw/m2", None, None, 1000) == 4
    assert await stores.telemetry.latest(ACC, "gw/m2") == {}


async def test_delete_a_device_events(stores: Stores) -> None:
    await seed(stores, ["gw", "gw/m1", "dev-9"], range(4))
    await seed(stores, ["gw"], range(4), account=OTHER)
    assert await stores.events.delete_for_device(ACC, "gw", at(1), at(2), 1) == 4
    assert await event_times(stores, device="gw") == [0, 0, 3, 3]
    assert await stores.events.delete_for_device(ACC, "gw/m1", None, None, 1) == 2
    assert await event_times(stores, device="gw") == [0, 3]
    assert await event_times(stores, device="dev-9") == list(range(4))
    assert await event_times(stores, OTHER, device="gw") == list(range(4))
    # Telemetry is apart.
    assert await telemetry_times(stores, device="gw") == sorted([*range(4)] * 2)
