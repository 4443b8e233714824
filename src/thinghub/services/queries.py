"""Queries: telemetry and events of an account, filtered and paged."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from thinghub.domain.events import Event
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Page, Stores, TelemetryQuery
from thinghub.services.authz import authorize

__all__ = ["QueryService"]


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
