"""Events in memory: appended with increasing ids, newest-first pages."""

from __future__ import annotations

from collections.abc import Callable

from thinghub.domain.events import Event
from thinghub.ports.store import EventQuery, Page
from thinghub.storage.memory._tables import (
    MemoryArea,
    Row,
    check_batch_rows,
    matches_device,
    not_null,
    page,
)
from thinghub.storage.sql._rows import as_event, event_params, range_us, to_us

__all__ = ["MemoryEventStore"]

# Columns of an event row (account_id, device_id, project, deployment, type, ts, body).
_ACCOUNT, _DEVICE, _TYPE, _TS = 0, 1, 4, 5
_NOT_NULL = {"account_id": 0, "device_id": 1, "type": 4, "ts": 5, "body": 6}


class MemoryEventStore(MemoryArea):
    async def append(self, event: Event) -> int:
        row = event_params(event)
        not_null("events", row, _NOT_NULL)
        row_id = next(self.tables.event_ids)
        self.tables.events[row_id] = row
        return row_id

    async def query(self, query: EventQuery) -> Page[Event]:
        types = None if query.event_types is None else {t.value for t in query.event_types}
        rows = (
            (row_id, row)
            for row_id, row in self.tables.events.items()
            if row[_ACCOUNT] == query.account_id and (types is None or row[_TYPE] in types)
        )
        return page(rows, query, _TS, as_event)

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        check_batch_rows(batch_rows)
        before_us = to_us(before)
        return self._delete(lambda row: row[_ACCOUNT] == account_id and row[_TS] < before_us)

    async def delete_for_device(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int:
        check_batch_rows(batch_rows)
        low, high = range_us(since, until)
        return self._delete(
            lambda row: (
                row[_ACCOUNT] == account_id
                and matches_device(row[_DEVICE], device_id)
                and low <= row[_TS] <= high
            )
        )

    def _delete(self, doomed: Callable[[Row], bool]) -> int:
        events = self.tables.events
        gone = [row_id for row_id, row in events.items() if doomed(row)]
        for row_id in gone:
            del events[row_id]
        return len(gone)
