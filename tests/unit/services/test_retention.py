"""RetentionService: the days that apply, who may change them, and what a purge pass
deletes (on the memory stores)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest

from thinghub.domain.errors import Forbidden, Invalid
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Account, Principal, Retention, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Stores, TelemetryQuery
from thinghub.services.registry import Registry
from thinghub.services.retention import DAY_S, RetentionService
from thinghub.storage.memory import MemoryAccountStore, Tables, memory_stores

NOW = 1_700_000_000.0
DEFAULTS = Retention(telemetry_days=30.0, events_days=10.0)


class Clock:
    def now(self) -> float:
        return NOW


def account(account_id: str, retention: Retention | None = None) -> Account:
    return Account(account_id, account_id, "0ne" + account_id, NOW, retention or Retention())


async def seeded(*accounts: Account) -> Stores:
    """Memory stores holding the accounts, each with a message and an event per age
    (in days) in AGES_DAYS."""
    stores = memory_stores()
    for a in accounts:
        await stores.accounts.insert(a)
        for days in AGES_DAYS:
            ts = NOW - days * DAY_S
            await stores.telemetry.append(
                [TelemetryMessage(a.id, f"dev-{a.id}", ts, {"days": days}, b"")], []
            )
            await stores.events.append(Event(a.id, f"dev-{a.id}", EventType.CHANGE, ts, {}))
    return stores


AGES_DAYS = (31.0, 29.0, 11.0, 9.0, 2.0, 1.0)


async def ages(stores: Stores, account_id: str) -> tuple[list[float], list[float]]:
    """The ages (days) of the account's messages and of its events, oldest first."""
    messages = await stores.telemetry.query(TelemetryQuery(account_id, limit=100))
    events = await stores.events.query(EventQuery(account_id, limit=100))
    return (
        [round((NOW - m.enqueued_at) / DAY_S, 3) for m in reversed(messages.items)],
        [round((NOW - e.ts) / DAY_S, 3) for e in reversed(events.items)],
    )


def service(stores: Stores, interval_s: float = 3600.0) -> RetentionService:
    return RetentionService(
        stores, Clock(), cast(Registry, None), DEFAULTS, interval_s=interval_s, batch_rows=500,
    )  # fmt: skip


async def test_a_pass_purges_by_each_account_days_or_the_defaults() -> None:
    stores = await seeded(
        account("a"),  # the server's defaults
        account("b", Retention(telemetry_days=1.5, events_days=0.0)),  # events kept forever
        account("c", Retention(telemetry_days=0.0, events_days=None)),  # telemetry forever
    )
    totals = await service(stores).purge()
    assert await ages(stores, "a") == ([29, 11, 9, 2, 1], [9, 2, 1])
    assert await ages(stores, "b") == ([1], list(AGES_DAYS))
    assert await ages(stores, "c") == (list(AGES_DAYS), [9, 2, 1])
    assert totals == {"telemetry": 1 + 5, "events": 3 + 3, "files": 0}  # no file service


async def test_set_changes_only_what_is_given() -> None:
    stores = await seeded(account("a", Retention(telemetry_days=5.0, events_days=6.0)))
    admin = Principal("a", Role.ADMIN, "admin")
    retention = service(stores)
    view = await retention.set(admin, events_days=None)
    stored = await stores.accounts.get("a")
    assert stored is not None
    assert stored.retention == Retention(telemetry_days=5.0, events_days=None)
    assert view.account == Retention(5.0, None)
    assert view.effective == Retention(5.0, 10.0)  # events: back to the server's default
    assert view.server == DEFAULTS
    view = await retention.set(admin, telemetry_days=0)
    assert view.effective == Retention(0.0, 10.0)


@pytest.mark.parametrize(
    "principal",
    [
        Principal("a", Role.OPERATOR, "op"),
        Principal("a", Role.VIEWER, "viewer"),
        Principal("a", Role.ADMIN, "limited", project="p1"),  # the setting is account-wide
    ],
    ids=["operator", "viewer", "project-admin"],
)
async def test_only_an_account_wide_admin_sets_retention(principal: Principal) -> None:
    stores = await seeded(account("a"))
    with pytest.raises(Forbidden):
        await service(stores).set(principal, telemetry_days=1.0)
    assert await stores.accounts.get("a") == account("a")
    assert (await service(stores).get(principal)).effective == DEFAULTS


@pytest.mark.parametrize("days", [-1, 36_501, float("nan"), float("inf"), True, "7"])
async def test_bad_days_are_invalid(days: Any) -> None:
    stores = await seeded(account("a"))
    with pytest.raises(Invalid) as caught:
        await service(stores).set(Principal("a", Role.ADMIN, "admin"), events_days=days)
    assert caught.value.field == "eventsDays"


async def test_a_failed_pass_is_retried_and_the_task_lives_on() -> None:
    stores = await seeded(account("a"))
    flaky = FlakyAccounts(cast(MemoryAccountStore, stores.accounts).tables)
    task = asyncio.create_task(
        service(dataclasses.replace(stores, accounts=flaky), interval_s=0.01).run()
    )
    try:
        async with asyncio.timeout(5):
            while (await ages(stores, "a"))[0][0] == 31:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert flaky.failed
    assert await ages(stores, "a") == ([29, 11, 9, 2, 1], [9, 2, 1])


class FlakyAccounts(MemoryAccountStore):
    """The memory accounts area, whose first listing fails (the database went away)."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.failed = False

    async def all(self) -> list[Account]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database went away")
        return await super().all()
