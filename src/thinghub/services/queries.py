"""Queries: telemetry and events of an account, filtered and paged; the latest values of a
device's telemetry; observations of one entity, latest, recent or streamed; one telemetry
field's last value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from thinghub.domain.errors import NotFound
from thinghub.domain.events import Event
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.ports import Clock, EventQuery, Page, Stores, TelemetryQuery
from thinghub.services.authz import authorize

__all__ = [
    "LAST_VALUE_SCAN_MESSAGES",
    "LATEST_SCAN_MESSAGES",
    "QueryService",
    "TelemetryValue",
]

# Latest values: numbers come from the latest observation of each metric (kept for ever, one
# row per metric); values of other types (text, booleans, objects) from the device's newest
# messages, this many of them.
LATEST_SCAN_MESSAGES = 20
# The document kind that holds, per device, when its latest values were last cleared.
LATEST_CLEARED = "latest_cleared"
# How many of a device's newest messages a last-value look-up reads before it gives up (the
# field is then reported as having no value): bounded work per request.
LAST_VALUE_SCAN_MESSAGES = 1000
_SCAN_PAGE = 100


@dataclass(frozen=True, slots=True)
class TelemetryValue:
    value: Any
    timestamp: float


Q = TypeVar("Q", TelemetryQuery, EventQuery)


def _scoped(principal: Principal, query: Q) -> Q | None:
    """Pin the query to the principal's account, and to its project if it has one; None when
    it asks for another project than the principal's (an empty answer, never a query)."""
    authorize(principal, Permission.READ)
    project = query.project
    if principal.project is not None:
        if project not in (None, principal.project):
            return None
        project = principal.project
    return replace(query, account_id=principal.account_id, project=project)


def _missing(device: Device) -> NotFound:
    return NotFound(f"device {device.id!r} not found", field="deviceId")


class QueryService:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock

    def now(self) -> float:
        """The time relative windows of a query ("the last day") end at: the server's clock."""
        return self.clock.now()

    async def telemetry(
        self, principal: Principal, query: TelemetryQuery
    ) -> Page[TelemetryMessage]:
        scoped = _scoped(principal, query)
        return Page([], None) if scoped is None else await self.stores.telemetry.query(scoped)

    async def events(self, principal: Principal, query: EventQuery) -> Page[Event]:
        scoped = _scoped(principal, query)
        return Page([], None) if scoped is None else await self.stores.events.query(scoped)

    async def last_value(
        self, principal: Principal, device: Device, name: str, component: str | None = None
    ) -> TelemetryValue:
        """The newest value of telemetry field `name` (of `component`, when given) the device
        (a device, or a module, exactly: not its modules) sent, among its newest
        LAST_VALUE_SCAN_MESSAGES messages (Permission.READ on the device).

        Raises:
            Forbidden: the caller may not read.
            NotFound: the device is not the caller's, or no such value.
        """
        authorize(
            principal,
            Permission.READ,
            device,
            absent=NotFound(f"device {device.id!r} not found", field="deviceId"),
        )
        cursor: str | None = None
        read = 0
        while read < LAST_VALUE_SCAN_MESSAGES:
            page = await self.stores.telemetry.query(
                TelemetryQuery(
                    account_id=device.account_id,
                    device_id=device.id,
                    limit=_SCAN_PAGE,
                    cursor=cursor,
                )
            )
            for message in page.items:
                read += 1
                if message.device_id != device.id or message.component != component:
                    continue
                body = message.body
                if isinstance(body, dict) and name in body:
                    return TelemetryValue(body[name], message.enqueued_at)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        raise NotFound(
            f"telemetry {name!r} of device {device.id!r} has no value", field="telemetryName"
        )

    async def device_observations(
        self, device: Device, metric: str, *, since: float | None, limit: int
    ) -> list[Observation]:
        """A device's own values of one metric since `since`, newest first (for the device
        itself: the Ioto agent's metric/get)."""
        return await self.stores.telemetry.observations(
            device.account_id, device.id, metric, since, None, limit
        )

    async def latest_values(
        self, principal: Principal, device: Device, wanted: frozenset[str] | None = None
    ) -> dict[str, tuple[Any, float]]:
        """The latest value of each top-level key of the device's telemetry, with its time
        (epoch seconds), newer than the last `clear_latest`.

        Numbers are the latest observations (every numeric key the device ever sent); other
        values come from its LATEST_SCAN_MESSAGES newest messages. A key whose newest value
        is in those messages gets it as sent (an integer stays an integer). A key of `wanted`
        found in neither is looked for further back, among the LAST_VALUE_SCAN_MESSAGES
        newest messages (a text or boolean a device sends once, then many other messages).
        """
        authorize(principal, Permission.READ, device, absent=_missing(device))
        account = device.account_id
        cleared = await self.stores.documents.get(account, LATEST_CLEARED, device.id)
        after = float(cleared) if isinstance(cleared, int | float) else None
        values: dict[str, tuple[Any, float]] = {}
        page = await self.stores.telemetry.query(
            TelemetryQuery(account, device_id=device.id, since=after, limit=LATEST_SCAN_MESSAGES)
        )
        self._take_newest(values, page.items, device.id, after, None)
        for metric, observation in (await self.stores.telemetry.latest(account, device.id)).items():
            if after is not None and observation.ts <= after:
                continue
            known = values.get(metric)
            if known is None or observation.ts > known[1]:
                values[metric] = (observation.value, observation.ts)
        missing = set(wanted or ()) - values.keys()
        read, cursor = len(page.items), page.next_cursor
        while missing and cursor is not None and read < LAST_VALUE_SCAN_MESSAGES:
            page = await self.stores.telemetry.query(
                TelemetryQuery(
                    account, device_id=device.id, since=after, limit=_SCAN_PAGE, cursor=cursor
                )
            )
            read, cursor = read + len(page.items), page.next_cursor
            missing -= self._take_newest(values, page.items, device.id, after, missing)
        return values

    @staticmethod
    def _take_newest(
        values: dict[str, tuple[Any, float]],
        messages: list[TelemetryMessage],
        device_id: str,
        after: float | None,
        keys: set[str] | None,
    ) -> set[str]:
        """Fold newest-first `messages` of the device into `values` (a key already there
        keeps its value), only `keys` unless None; the keys it added."""
        added: set[str] = set()
        for message in messages:
            if message.device_id != device_id or not isinstance(message.body, dict):
                continue
            if after is not None and message.enqueued_at <= after:
                continue
            for key, value in message.body.items():
                if key not in values and (keys is None or key in keys):
                    values[key] = (value, message.enqueued_at)
                    added.add(key)
        return added

    async def clear_latest(self, principal: Principal, device: Device) -> None:
        """Forget the device's latest values (its telemetry stays): `latest_values` answers
        only what arrives from now on."""
        authorize(principal, Permission.DEVICES_WRITE, device, absent=_missing(device))
        now = self.clock.now()
        await self.stores.documents.put(device.account_id, LATEST_CLEARED, device.id, now, now)

    # -- observations of one entity ----------------------------------------------------------
    # The caller has already found the entity visible to `principal` (a device, module or
    # sensor of its account and project); these read within the principal's account only.

    async def latest_observations(
        self, principal: Principal, entity_id: str
    ) -> dict[str, Observation]:
        """The newest value of each metric of an entity."""
        return await self.stores.telemetry.latest(principal.account_id, entity_id)

    async def recent_observations(
        self,
        principal: Principal,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[Observation]:
        """Up to `limit` observations of one metric in [since, until], newest first."""
        return await self.stores.telemetry.observations(
            principal.account_id, entity_id, metric, since, until, limit
        )

    def observation_batches(
        self,
        principal: Principal,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
        affine: tuple[float, float, float] | None = None,
    ) -> AsyncIterator[list[tuple[int, float]]]:
        """Every `(ts, value)` of one metric in [since, until], oldest first (the time in
        integer microseconds, as stored), a batch at a time: the next batch is read only when
        the caller asks for it, so a slow consumer slows the read and nothing holds more than
        one batch. `affine` (scale, shift, divisor): the values converted by the store."""
        return self.stores.telemetry.stream_observations(
            principal.account_id, entity_id, metric, since, until, batch_rows, affine
        )
