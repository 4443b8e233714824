"""Events in SQL: appended with increasing ids, newest-first pages, deletes in batches."""

from __future__ import annotations

from typing import Any

from thinghub.domain.events import Event
from thinghub.ports.store import EventQuery, Page
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea, account_term
from thinghub.storage.sql._rows import as_event, event_params, range_us, to_us

__all__ = ["SqlEventStore"]


class SqlEventStore(SqlArea):
    async def append(self, event: Event) -> int:
        (row,) = await self._write(
            Step(
                "one",
                "INSERT INTO events (account_id, device_id, project, deployment, type, "
                "ts, body) VALUES (?,?,?,?,?,?,?) RETURNING id",
                event_params(event),
            )
        )
        return int(row[0])

    async def query(self, query: EventQuery) -> Page[Event]:
        sql = (
            "SELECT id, account_id, device_id, project, deployment, type, ts, body "
            f"FROM events WHERE {account_term(query.device_id)} = ?"
        )
        params: list[Any] = [query.account_id]
        if query.event_types is not None:
            types = sorted(t.value for t in query.event_types)
            sql += f" AND type IN ({','.join('?' * len(types))})" if types else " AND 0 = 1"
            params.extend(types)
        return await self._page(sql, params, query, "ts", 6, lambda r: as_event(r[1:]))

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        return await self._delete_batches(
            "events", "ts", "account_id = ? AND {ts} < ?", [account_id, to_us(before)], batch_rows
        )

    async def delete_for_device(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int:
        """A device's events in [since, until] (a device id includes its modules)."""
        low, high = range_us(since, until)
        where = f"{account_term(device_id)} = ? AND device_id = ? AND {{ts}} >= ? AND {{ts}} <= ?"
        count = 0
        for entity in await self._entities("events", device_id):
            count += await self._delete_batches(
                "events", "ts", where, [account_id, entity, low, high], batch_rows
            )
        return count
