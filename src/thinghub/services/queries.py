"""Queries: telemetry, observations and events of an account, filtered and paged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TypeVar

from thinghub.domain.events import Event
from thinghub.domain.model import Principal
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
    ) -> AsyncIterator[list[tuple[float, float]]]:
        """Every `(ts, value)` of one metric in [since, until], oldest first, a batch at a
        time: the next batch is read only when the caller asks for it, so a slow consumer
        slows the read and nothing holds more than one batch."""
        return self.stores.telemetry.stream_observations(
            principal.account_id, entity_id, metric, since, until, batch_rows
        )
