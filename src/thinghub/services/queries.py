"""Queries: telemetry and events of an account, filtered and paged."""

from __future__ import annotations

from dataclasses import replace

from thinghub.domain.events import Event
from thinghub.domain.model import Principal
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Page, Store, TelemetryQuery

__all__ = ["QueryService"]


class QueryService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def telemetry(
        self, principal: Principal, query: TelemetryQuery
    ) -> Page[TelemetryMessage]:
        return await self.store.query_telemetry(replace(query, account_id=principal.account_id))

    async def events(self, principal: Principal, query: EventQuery) -> Page[Event]:
        return await self.store.query_events(replace(query, account_id=principal.account_id))
