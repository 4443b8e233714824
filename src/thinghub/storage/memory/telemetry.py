"""Telemetry in memory: messages (unique per device and message id), observations and the
latest value per metric, exactly as the SQL area keeps them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from thinghub.domain.telemetry import Observation, TelemetryMessage, observations_of
from thinghub.ports.store import Page, TelemetryQuery
from thinghub.storage.memory._tables import (
    MemoryArea,
    Row,
    check_batch_rows,
    matches_device,
    not_null,
    page,
)
from thinghub.storage.sql._rows import as_telemetry, from_us, range_us, telemetry_params, to_us

__all__ = ["MemoryTelemetryStore"]

# Columns of a telemetry row (TELEMETRY_COLUMNS), and the time and value of an observation
# row (account_id, entity_id, metric, ts, value).
_ACCOUNT, _DEVICE, _TS, _MESSAGE_ID = 0, 1, 4, 8
_NOT_NULL = {"account_id": 0, "device_id": 1, "enqueued_at": 4, "source": 13}
_OBSERVED, _VALUE = 3, 4


class MemoryTelemetryStore(MemoryArea):
    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        """All or nothing, as one write unit: messages with an id first (a duplicate of its
        device's id is dropped), then those without; observations of new messages only."""
        rows = [telemetry_params(m) for m in messages]
        for row in rows:
            not_null("telemetry", row, _NOT_NULL)
        landed = {
            i: self._insert(row) for i, row in enumerate(rows) if row[_MESSAGE_ID] is not None
        }
        for i, row in enumerate(rows):
            if row[_MESSAGE_ID] is None:
                landed[i] = self._insert(row)
        if observations is None:
            observations = [o for m in messages for o in observations_of(m)]
        self._observe(messages, observations)
        return [landed[i] for i in range(len(rows))]

    def _insert(self, row: Row) -> bool:
        t = self.tables
        key = (row[_DEVICE], row[_MESSAGE_ID])
        if row[_MESSAGE_ID] is not None and key in t.message_ids:
            return False
        row_id = next(t.telemetry_ids)
        t.telemetry[row_id] = row
        if row[_MESSAGE_ID] is not None:
            t.message_ids[key] = row_id
        return True

    def _observe(
        self, messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
    ) -> None:
        """An observation of a message with an id counts only if the stored row for that id
        is this message's (same enqueued time); the latest value changes for a newer or equal
        time (as the SQL area: plain observations first, then those of messages with ids)."""
        ids = {(m.device_id, to_us(m.enqueued_at)): m.message_id for m in messages}
        plain: list[Row] = []
        newest: dict[tuple[str, str], Row] = {}
        guarded: list[Row] = []
        for o in observations:
            ts_us = to_us(o.ts)
            row = (o.account_id, o.entity_id, o.metric, ts_us, o.value)
            message_id = ids.get((o.entity_id, ts_us))
            if message_id is None:
                plain.append(row)
                prior = newest.get((o.entity_id, o.metric))
                if prior is None or ts_us >= prior[_OBSERVED]:
                    newest[(o.entity_id, o.metric)] = row
            elif self._landed(o.entity_id, message_id, ts_us):
                guarded.append(row)
        t = self.tables
        for row in [*plain, *guarded]:
            t.observations[next(t.observation_ids)] = row
        for row in [*newest.values(), *guarded]:
            self._upsert_latest(row)

    def _landed(self, device_id: str, message_id: str, ts_us: int) -> bool:
        row_id = self.tables.message_ids.get((device_id, message_id))
        return row_id is not None and self.tables.telemetry[row_id][_TS] == ts_us

    def _upsert_latest(self, row: Row) -> None:
        """The newest value per (entity, metric); the row keeps the account it was made with
        (the SQL upsert changes only the time and value)."""
        account_id, entity, metric, ts, value = row
        prior = self.tables.latest.get((entity, metric))
        if prior is None:
            self.tables.latest[(entity, metric)] = (account_id, ts, value)
        elif ts >= prior[1]:
            self.tables.latest[(entity, metric)] = (prior[0], ts, value)

    async def query(self, query: TelemetryQuery) -> Page[TelemetryMessage]:
        rows = (
            (row_id, row)
            for row_id, row in self.tables.telemetry.items()
            if row[_ACCOUNT] == query.account_id
        )
        return page(rows, query, _TS, as_telemetry)

    async def latest(self, account_id: str, entity_id: str) -> dict[str, Observation]:
        return {
            metric: Observation(account_id, entity_id, metric, from_us(ts) or 0.0, value)
            for (entity, metric), (account, ts, value) in self.tables.latest.items()
            if (entity, account) == (entity_id, account_id)
        }

    async def observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[Observation]:
        low, high = range_us(since, until)
        found = sorted(
            (
                (row[_OBSERVED], row_id, row[_VALUE])
                for row_id, row in self.tables.observations.items()
                if row[:3] == (account_id, entity_id, metric) and low <= row[_OBSERVED] <= high
            ),
            reverse=True,
        )
        return [
            Observation(account_id, entity_id, metric, from_us(ts) or 0.0, value)
            for ts, _, value in found[:limit]
        ]

    async def stream_observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> AsyncIterator[list[tuple[int, float]]]:
        """As the SQL area: pages in time order (times in integer microseconds), each read
        afresh after the last time sent; a page never ends inside a run of equal times."""
        check_batch_rows(batch_rows)
        low, high = range_us(since, until)
        key = (account_id, entity_id, metric)
        while True:
            found = sorted(
                (row[_OBSERVED], row[_VALUE])
                for row in self.tables.observations.values()
                if row[:3] == key and low <= row[_OBSERVED] <= high
            )
            rows = found[:batch_rows]
            is_full = len(rows) == batch_rows
            if is_full:
                last = rows[-1][0]
                rows = [r for r in found if r[0] < last or r[0] == last]
                low = last + 1
            if rows:
                yield rows
            if not is_full:
                return

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        check_batch_rows(batch_rows)
        before_us = to_us(before)
        count = self._delete_messages(
            lambda row: row[_ACCOUNT] == account_id and row[_TS] < before_us
        )
        self._delete_observations(
            lambda row: row[_ACCOUNT] == account_id and row[_OBSERVED] < before_us
        )
        return count

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
        count = self._delete_messages(
            lambda row: (
                row[_ACCOUNT] == account_id
                and matches_device(row[_DEVICE], device_id)
                and low <= row[_TS] <= high
            )
        )
        # Observations go per metric the account has a latest value of (as in SQL); a latest
        # value in the range gives way to the newest observation left.
        t = self.tables
        for (entity, metric), (account, ts, _) in list(t.latest.items()):
            if account != account_id or not matches_device(entity, device_id):
                continue
            key = (account_id, entity, metric)
            for row_id in [
                row_id
                for row_id, row in t.observations.items()
                if row[:3] == key and low <= row[_OBSERVED] <= high
            ]:
                del t.observations[row_id]
            if low <= ts <= high:
                del t.latest[(entity, metric)]
                left = [r for r in t.observations.values() if r[:3] == key]
                if left:
                    newest = max(left, key=lambda r: r[_OBSERVED])
                    t.latest[(entity, metric)] = (account_id, newest[_OBSERVED], newest[_VALUE])
        return count

    def _delete_messages(self, doomed: Callable[[Row], bool]) -> int:
        t = self.tables
        gone = [row_id for row_id, row in t.telemetry.items() if doomed(row)]
        for row_id in gone:
            row = t.telemetry.pop(row_id)
            if row[_MESSAGE_ID] is not None:
                del t.message_ids[(row[_DEVICE], row[_MESSAGE_ID])]
        return len(gone)

    def _delete_observations(self, doomed: Callable[[Row], bool]) -> None:
        t = self.tables
        for row_id in [row_id for row_id, row in t.observations.items() if doomed(row)]:
            del t.observations[row_id]
