"""Queries: telemetry and events of an account, filtered and paged."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from thinghub.domain.events import Event
from thinghub.domain.model import Device, Principal
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.ports import EventQuery, Page, Stores, TelemetryQuery

__all__ = ["QueryService"]


Q = TypeVar("Q", TelemetryQuery, EventQuery)


def _scoped(principal: Principal, query: Q) -> Q | None:
    """Pin the query to the principal's account, and to its project if it has one; None when
    it asks for another project than the principal's (an empty answer, never a query)."""
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

    async def device_observations(
        self, device: Device, metric: str, *, since: float | None, limit: int
    ) -> list[Observation]:
        """A device's own values of one metric since `since`, newest first (for the device
        itself: the Ioto agent's metric/get)."""
        return await self.stores.telemetry.observations(
            device.account_id, device.id, metric, since, None, limit
        )
