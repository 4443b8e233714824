"""Queries: telemetry and events of an account, filtered and paged."""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from thinghub.domain.events import Event
from thinghub.domain.model import Principal
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Page, Store, TelemetryQuery

__all__ = ["QueryService"]


Q = TypeVar("Q", TelemetryQuery, EventQuery)

_NOWHERE = "\x00"  # a project name no id can have: an empty result


def _scoped(principal: Principal, query: Q) -> Q:
    """Pin the query to the principal's account, and to its project if it has one."""
    project = query.project
    if principal.project is not None:
        project = principal.project if project in (None, principal.project) else _NOWHERE
    return replace(query, account_id=principal.account_id, project=project)


class QueryService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def telemetry(
        self, principal: Principal, query: TelemetryQuery
    ) -> Page[TelemetryMessage]:
        return await self.store.query_telemetry(_scoped(principal, query))

    async def events(self, principal: Principal, query: EventQuery) -> Page[Event]:
        return await self.store.query_events(_scoped(principal, query))
