"""Retention: an account's telemetry and events age out; a device's data can be deleted.

Theory of operation: `run()` is one task owned by the composition root's TaskGroup. Every
`interval_s` it makes one pass over the accounts: for each kind of data whose retention (the
account's own days, else the server's default; 0 = forever) is finite, it deletes what is
older than that, through the store's batched deletes (`batch_rows` rows per transaction), so
the SQLite writer commits device telemetry between batches and a first pass over millions of
rows never stalls ingest. A pass that fails is logged and retried at the next interval; the
task itself only ends when it is cancelled at shutdown. On several nodes each runs its own
passes: deleting what another node already deleted is a no-op.

Telemetry covers the messages and their observations (the latest value of each metric stays);
files are device uploads (the Ioto face), counted from when each was last written, deleted
with their bytes through the file service.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from thinghub.domain.errors import Invalid
from thinghub.domain.ids import entity_id
from thinghub.domain.model import Account, Principal, Retention
from thinghub.domain.roles import Permission
from thinghub.ports import Clock, Stores
from thinghub.services.authz import authorize
from thinghub.services.registry import Registry

__all__ = ["KINDS", "MAX_RETENTION_DAYS", "RetentionService", "days_of"]

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
# A century: more is "forever" (0), and a bound keeps `now - days` a representable time.
MAX_RETENTION_DAYS = 36_500.0
KINDS = ("telemetry", "events", "files")
_UNSET: Any = object()


def days_of(retention: Retention, kind: str) -> float | None:
    if kind == "telemetry":
        return retention.telemetry_days
    if kind == "events":
        return retention.events_days
    if kind == "files":
        return retention.files_days
    raise ValueError(f"unknown kind of data {kind!r}")


def check_days(value: Any, field: str) -> float | None:
    """None (the server's default), or a number of days from 0 (forever) to a century.

    Raises:
        Invalid: naming `field`.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{field} must be a number of days, or null", field=field)
    days = float(value)
    if not math.isfinite(days) or not 0 <= days <= MAX_RETENTION_DAYS:
        raise Invalid(
            f"{field} must be 0 (keep forever) to {MAX_RETENTION_DAYS:g} days, got {value!r}",
            field=field,
        )
    return days


@dataclass(frozen=True, slots=True)
class RetentionView:
    """An account's retention: its own setting, and what applies (own, else the server's)."""

    account: Retention
    effective: Retention
    server: Retention


class FilePurger(Protocol):
    """What deletes an account's old files, bytes and records (services.files)."""

    def purge(self, account_id: str, before: float, batch_rows: int) -> Awaitable[int]: ...


class RetentionService:
    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        registry: Registry,
        defaults: Retention,
        *,
        interval_s: float,
        batch_rows: int,
        files: FilePurger | None = None,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.defaults = defaults
        self.interval_s = interval_s
        self.batch_rows = batch_rows
        self.files = files

    def effective(self, account: Account) -> Retention:
        own, default = account.retention, self.defaults
        return Retention(
            telemetry_days=(
                default.telemetry_days if own.telemetry_days is None else own.telemetry_days
            ),
            events_days=default.events_days if own.events_days is None else own.events_days,
            files_days=default.files_days if own.files_days is None else own.files_days,
        )

    def view(self, account: Account) -> RetentionView:
        return RetentionView(account.retention, self.effective(account), self.defaults)

    # -- the account's setting -----------------------------------------------------------

    async def get(self, principal: Principal) -> RetentionView:
        authorize(principal, Permission.READ)
        account = await self._account(principal.account_id)
        return self.view(account)

    async def set(
        self,
        principal: Principal,
        *,
        telemetry_days: float | None = _UNSET,
        events_days: float | None = _UNSET,
        files_days: float | None = _UNSET,
    ) -> RetentionView:
        """Change the account's days (None = back to the server's default); others stay.
        Permission.ACCOUNT_ADMIN, which concerns the whole account (not a project's token)."""
        authorize(principal, Permission.ACCOUNT_ADMIN)
        return await self.set_account(
            principal.account_id,
            telemetry_days=telemetry_days,
            events_days=events_days,
            files_days=files_days,
        )

    async def set_account(
        self,
        account_id: str,
        *,
        telemetry_days: float | None = _UNSET,
        events_days: float | None = _UNSET,
        files_days: float | None = _UNSET,
    ) -> RetentionView:
        """As `set`, with no principal (the CLI)."""
        account = await self._account(account_id)
        changes: dict[str, float | None] = {}
        if telemetry_days is not _UNSET:
            changes["telemetry_days"] = check_days(telemetry_days, "telemetryDays")
        if events_days is not _UNSET:
            changes["events_days"] = check_days(events_days, "eventsDays")
        if files_days is not _UNSET:
            changes["files_days"] = check_days(files_days, "filesDays")
        retention = replace(account.retention, **changes)
        await self.stores.accounts.set_retention(account.id, retention)
        logger.info("account %s: retention %s", account.id, retention)
        return self.view(replace(account, retention=retention))

    async def _account(self, account_id: str) -> Account:
        account = await self.stores.accounts.get(account_id)
        if account is None:
            raise Invalid(f"account {account_id!r} does not exist", field="account")
        return account

    # -- one device's data ---------------------------------------------------------------

    async def delete_device_data(
        self,
        principal: Principal,
        kind: str,
        device_id: str,
        module_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Delete a device's telemetry (with its observations) or events in [since, until];
        a device's own id includes its modules. Returns how many messages or events went.
        Permission.DEVICES_WRITE."""
        device = await self.registry.device_for(principal, device_id, Permission.DEVICES_WRITE)
        entity = entity_id(device.id, module_id)
        now = self.clock.now()
        # Nothing newer than the request: a device still sending is not chased forever.
        until = now if until is None else min(until, now)
        if kind == "telemetry":
            count = await self.stores.telemetry.delete_for_device(
                device.account_id, entity, since, until, self.batch_rows
            )
        elif kind == "events":
            count = await self.stores.events.delete_for_device(
                device.account_id, entity, since, until, self.batch_rows
            )
        else:
            raise ValueError(f"unknown kind of data {kind!r}")
        logger.info("device %s: %d %s deleted by %s", entity, count, kind, principal.subject)
        return count

    # -- the purge -----------------------------------------------------------------------

    async def purge(self) -> dict[str, int]:
        """One pass over every account; returns how many rows of each kind went."""
        now = self.clock.now()
        totals = dict.fromkeys(KINDS, 0)
        for account in await self.stores.accounts.all():
            effective = self.effective(account)
            for kind in KINDS:
                days = days_of(effective, kind)
                if not days:
                    continue  # None or 0: kept forever
                before = now - days * DAY_S
                if kind == "telemetry":
                    count = await self.stores.telemetry.purge(account.id, before, self.batch_rows)
                elif kind == "events":
                    count = await self.stores.events.purge(account.id, before, self.batch_rows)
                elif self.files is not None:
                    count = await self.files.purge(account.id, before, self.batch_rows)
                else:
                    continue
                if count:
                    logger.info(
                        "retention: %d %s older than %g days deleted (account %s)",
                        count,
                        kind,
                        days,
                        account.id,
                    )
                totals[kind] += count
        return totals

    async def run(self) -> None:
        """Purge now and then every interval_s, until cancelled."""
        while True:
            try:
                await self.purge()
            except Exception:  # a failed pass is retried at the next interval
                logger.exception("retention pass failed")
            await asyncio.sleep(self.interval_s)
