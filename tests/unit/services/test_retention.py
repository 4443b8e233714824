"""RetentionService: the days that apply, who may change them, and what a purge pass asks
the store to delete."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, cast

import pytest

from thinghub.domain.errors import Forbidden, Invalid
from thinghub.domain.model import Account, Principal, Retention, Role
from thinghub.ports import Store
from thinghub.services.registry import Registry
from thinghub.services.retention import DAY_S, RetentionService

NOW = 1_700_000_000.0
DEFAULTS = Retention(telemetry_days=30.0, events_days=10.0)


class Clock:
    def now(self) -> float:
        return NOW


class FakeStore:
    def __init__(self, *accounts: Account) -> None:
        self.accounts = {a.id: a for a in accounts}
        self.calls: list[tuple[str, str, float, int]] = []
        self.fail_once = False

    async def get_account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    async def list_accounts(self) -> list[Account]:
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("database went away")
        return list(self.accounts.values())

    async def set_retention(self, account_id: str, retention: Retention) -> bool:
        self.accounts[account_id] = dataclasses.replace(
            self.accounts[account_id], retention=retention
        )
        return True

    async def purge_telemetry(self, account_id: str, before: float, batch_rows: int) -> int:
        self.calls.append(("telemetry", account_id, before, batch_rows))
        return 3

    async def purge_events(self, account_id: str, before: float, batch_rows: int) -> int:
        self.calls.append(("events", account_id, before, batch_rows))
        return 2


def account(account_id: str, retention: Retention | None = None) -> Account:
    return Account(account_id, account_id, "0ne" + account_id, NOW, retention or Retention())


def service(store: FakeStore, interval_s: float = 3600.0) -> RetentionService:
    return RetentionService(
        cast(Store, store), Clock(), cast(Registry, None), DEFAULTS,
        interval_s=interval_s, batch_rows=500,
    )  # fmt: skip


async def test_a_pass_purges_by_each_account_days_or_the_defaults() -> None:
    store = FakeStore(
        account("a"),  # the server's defaults
        account("b", Retention(telemetry_days=1.5, events_days=0.0)),  # events kept forever
        account("c", Retention(telemetry_days=0.0, events_days=None)),  # telemetry forever
    )
    totals = await service(store).purge()
    assert store.calls == [
        ("telemetry", "a", NOW - 30 * DAY_S, 500),
        ("events", "a", NOW - 10 * DAY_S, 500),
        ("telemetry", "b", NOW - 1.5 * DAY_S, 500),
        ("events", "c", NOW - 10 * DAY_S, 500),
    ]
    assert totals == {"telemetry": 6, "events": 4}


async def test_set_changes_only_what_is_given() -> None:
    store = FakeStore(account("a", Retention(telemetry_days=5.0, events_days=6.0)))
    admin = Principal("a", Role.ADMIN, "admin")
    retention = service(store)
    view = await retention.set(admin, events_days=None)
    assert store.accounts["a"].retention == Retention(telemetry_days=5.0, events_days=None)
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
    store = FakeStore(account("a"))
    with pytest.raises(Forbidden):
        await service(store).set(principal, telemetry_days=1.0)
    assert store.accounts["a"].retention == Retention()
    assert (await service(store).get(principal)).effective == DEFAULTS


@pytest.mark.parametrize("days", [-1, 36_501, float("nan"), float("inf"), True, "7"])
async def test_bad_days_are_invalid(days: Any) -> None:
    store = FakeStore(account("a"))
    with pytest.raises(Invalid) as caught:
        await service(store).set(Principal("a", Role.ADMIN, "admin"), events_days=days)
    assert caught.value.field == "eventsDays"


async def test_a_failed_pass_is_retried_and_the_task_lives_on() -> None:
    store = FakeStore(account("a"))
    store.fail_once = True
    task = asyncio.create_task(service(store, interval_s=0.01).run())
    try:
        async with asyncio.timeout(5):
            while not store.calls:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.calls[0][:2] == ("telemetry", "a")
