"""Queries: telemetry and events of an account, filtered and paged; a telemetry field's last
value."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from thinghub.domain.errors import NotFound
from thinghub.domain.events import Event
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Page, Stores, TelemetryQuery
from thinghub.services.authz import authorize

__all__ = ["LAST_VALUE_SCAN_MESSAGES", "QueryService", "TelemetryValue"]

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


class QueryService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

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
