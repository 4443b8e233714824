"""Telemetry in SQL: messages (unique per device and message id), observations and the
latest value per metric; newest-first pages; retention and per-device deletes in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from operator import itemgetter
from typing import Any

from thinghub.domain.telemetry import Observation, TelemetryMessage, observation_values
from thinghub.ports.store import Page, TelemetryQuery, convert_rows
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea, account_term, device_filter
from thinghub.storage.sql._rows import (
    TELEMETRY_COLUMNS,
    as_telemetry,
    from_us,
    range_us,
    telemetry_params,
    to_us,
)

__all__ = ["SqlTelemetryStore", "append_steps"]

_Row = tuple[Any, ...]
_Owned = tuple[_Row, int]  # a row of a message with an id, and that message's place
_BY_KEY = itemgetter(1)  # a row's entity_id


def _owned_key(item: _Owned) -> Any:
    return item[0][1]  # the row's entity_id


_INSERT_TELEMETRY = (
    f"INSERT INTO telemetry ({TELEMETRY_COLUMNS}) VALUES "
    f"({','.join('?' * 14)}) ON CONFLICT DO NOTHING"
)
_COLUMNS = "(account_id, entity_id, metric, ts, value)"
_LATEST = (
    " ON CONFLICT (entity_id, metric) DO UPDATE SET ts = excluded.ts, "
    "value = excluded.value WHERE excluded.ts >= latest_observations.ts"
)
_INSERT_PLAIN = f"INSERT INTO observations {_COLUMNS} VALUES (?,?,?,?,?)"
_UPSERT_PLAIN = f"INSERT INTO latest_observations {_COLUMNS} VALUES (?,?,?,?,?){_LATEST}"


def _derived_rows(messages: Sequence[TelemetryMessage]) -> tuple[list[_Row], list[_Owned]]:
    """Each message's observations as rows: plain for messages without an id; for the
    others, each row with its message's place among the batch's messages with an id."""
    plain: list[_Row] = []
    owned: list[_Owned] = []
    ordinal = -1
    for m in messages:
        if m.message_id is not None:
            ordinal += 1
        values = observation_values(m)
        if not values:
            continue
        account, device, ts = m.account_id, m.device_id, to_us(m.enqueued_at)
        if m.message_id is None:
            plain += [(account, device, metric, ts, value) for metric, value in values]
        else:
            owned += [((account, device, metric, ts, value), ordinal) for metric, value in values]
    return plain, owned


def _given_rows(
    messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
) -> tuple[list[_Row], list[_Owned]]:
    """Given observations as rows: owned by a message of the batch with an id that has
    their entity and time (they are its observations; the last such message), else plain."""
    owners: dict[tuple[str, int], int | None] = {}
    ordinal = -1
    for m in messages:
        if m.message_id is not None:
            ordinal += 1
        owners[(m.device_id, to_us(m.enqueued_at))] = None if m.message_id is None else ordinal
    plain: list[_Row] = []
    owned: list[_Owned] = []
    for o in observations:
        row = (o.account_id, o.entity_id, o.metric, to_us(o.ts), o.value)
        owner = owners.get((o.entity_id, row[3]))
        if owner is None:
            plain.append(row)
        else:
            owned.append((row, owner))
    return plain, owned


def _observation_steps(
    plain: list[_Row], owned: list[_Owned], *, by_key: bool = True
) -> list[Step]:
    """Observations of new messages only: a redelivered duplicate adds none.

    Rows of messages with an id go as `landed` steps: the driver writes only those whose
    message's insert (the unit's first step) stored a row. The latest value per (entity,
    metric) is upserted once per batch for plain rows, per row for the others.

    `by_key`: the rows go in entity order (a stable sort: one entity's rows keep their
    order, so a message's fields stay together and equal times keep their order). Each
    entity's rows then follow one another into its end of `ix_observations` (entity, time,
    metric) and its leaf of `latest_observations`, instead of a batch visiting every
    entity's leaves once per message (`bench/store_rows.py`).
    """
    if by_key:
        plain.sort(key=_BY_KEY)
        owned.sort(key=_owned_key)
    steps = []
    if plain:
        newest: dict[tuple[str, str], _Row] = {}
        for row in plain:
            key = (row[1], row[2])
            prior = newest.get(key)
            if prior is None or row[3] >= prior[3]:
                newest[key] = row
        steps += [
            Step("many", _INSERT_PLAIN, plain),
            Step("many", _UPSERT_PLAIN, list(newest.values())),
        ]
    if owned:
        steps += [Step("landed", _INSERT_PLAIN, owned), Step("landed", _UPSERT_PLAIN, owned)]
    return steps


def append_steps(
    messages: Sequence[TelemetryMessage],
    observations: Sequence[Observation] | None = None,
    *,
    by_key: bool = True,
) -> list[Step]:
    """The write unit of `SqlTelemetryStore.append`: the first step's result is
    each message with an id's row count (1: it landed), in order. (`by_key=False`: the
    observation rows in message order, as before; for bench/store_rows.py's reference.)"""
    with_id: list[TelemetryMessage] = []
    without_id: list[TelemetryMessage] = []
    for m in messages:
        (without_id if m.message_id is None else with_id).append(m)
    steps = [
        Step("each", _INSERT_TELEMETRY, [telemetry_params(m) for m in with_id]),
        Step("many", _INSERT_TELEMETRY, [telemetry_params(m) for m in without_id]),
    ]
    if observations is None:
        plain, owned = _derived_rows(messages)
    else:
        plain, owned = _given_rows(messages, observations)
    if plain or owned:
        steps += _observation_steps(plain, owned, by_key=by_key)
    return steps


class SqlTelemetryStore(SqlArea):
    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        """One write unit for the whole batch.

        Messages without an id are always new: one executemany. Messages with an id may be
        redeliveries: inserted one by one (ON CONFLICT DO NOTHING) to learn which landed.
        Observations (None: each message's own, as rows straight from its body) of a message
        with an id are written only if that message landed.
        """
        result = await self._write(*append_steps(messages, observations))
        landed = iter(bool(n) for n in result[0])
        return [True if m.message_id is None else next(landed) for m in messages]

    async def query(self, query: TelemetryQuery) -> Page[TelemetryMessage]:
        account = account_term(query.device_id)
        sql = f"SELECT id, {TELEMETRY_COLUMNS} FROM telemetry WHERE {account} = ?"
        return await self._page(
            sql, [query.account_id], query, "enqueued_at", 5, lambda r: as_telemetry(r[1:])
        )

    async def latest(self, account_id: str, entity_id: str) -> dict[str, Observation]:
        rows = await self.db.fetch_all(
            "SELECT metric, ts, value FROM latest_observations "
            "WHERE account_id = ? AND entity_id = ?",
            (account_id, entity_id),
        )
        return {
            r[0]: Observation(account_id, entity_id, r[0], from_us(r[1]) or 0.0, r[2]) for r in rows
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
        sql = (
            "SELECT ts, value FROM observations WHERE account_id = ? AND entity_id = ? "
            "AND metric = ?"
        )
        params: list[Any] = [account_id, entity_id, metric]
        if since is not None:
            sql += " AND ts >= ?"
            params.append(to_us(since))
        if until is not None:
            sql += " AND ts <= ?"
            params.append(to_us(until))
        rows = await self.db.fetch_all(
            sql + " ORDER BY ts DESC LIMIT ?", [*params, limit], bulk=True
        )
        return [
            Observation(account_id, entity_id, metric, from_us(r[0]) or 0.0, r[1]) for r in rows
        ]

    async def stream_observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
        affine: tuple[float, float, float] | None = None,
    ) -> AsyncIterator[list[tuple[int, float]]]:
        """Keyset pages on the (entity, ts, metric) index, in its order (no sort), the rows
        as the driver returns them (times in integer microseconds, as stored).

        With `affine`, SQLite converts the values (IEEE double arithmetic in the
        expression's order, overflowing to infinity as Python does): in the reader thread,
        without the GIL, instead of three Python float operations a row in the event loop.
        PostgreSQL raises on a float overflow, so there the rows are converted here.

        Observations have no unique key, so a page never ends inside a run of equal times:
        the rows sharing its last time are read whole (one more read by that time) and the
        next page starts after it.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        low, high = range_us(since, until)
        value, factors = "value", []
        in_sql = affine is not None and self.db.dialect == "sqlite"
        if in_sql and affine is not None:
            value, factors = "(value * ? + ?) / ?", [float(f) for f in affine]
        head = (
            f"SELECT ts, {value} FROM observations WHERE account_id = ? AND entity_id = ? "
            "AND metric = ? AND "
        )
        page = head + "ts >= ? AND ts <= ? ORDER BY ts LIMIT ?"
        at = head + "ts = ?"
        key = [*factors, account_id, entity_id, metric]
        while True:
            rows = await self.db.fetch_all(page, [*key, low, high, batch_rows], bulk=True)
            is_full = len(rows) == batch_rows
            if is_full:
                last = rows[-1][0]
                cut = len(rows) - 1
                while cut and rows[cut - 1][0] == last:
                    cut -= 1
                rows = rows[:cut] + await self.db.fetch_all(at, [*key, last], bulk=True)
                low = last + 1
            if rows and affine is not None and not in_sql:
                rows = convert_rows(rows, affine)
            if rows:
                yield rows
            if not is_full:
                return

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        """An account's telemetry and observations older than `before`; returns the number
        of messages deleted. The latest value of each metric stays.

        Observations go entity by entity, each on its range of `ix_observations`: the
        account's entities are those of its latest values (every stored observation
        upserts one), and only entities with rows to delete are visited. No index orders
        the account's observations by time (one would cost every observation an entry, for
        the purge alone).
        """
        cut = to_us(before)
        count = await self._delete_batches(
            "telemetry", "enqueued_at", "account_id = ? AND {ts} < ?", [account_id, cut], batch_rows
        )
        entities = await self.db.fetch_all(
            "SELECT DISTINCT entity_id FROM latest_observations l WHERE account_id = ? AND "
            "EXISTS (SELECT 1 FROM observations o WHERE o.entity_id = l.entity_id AND "
            "o.ts < ? AND o.account_id = ?)",
            [account_id, cut, account_id],
            bulk=True,
        )
        for (entity,) in entities:
            await self._delete_batches(
                "observations",
                "ts",
                "entity_id = ? AND account_id = ? AND {ts} < ?",
                [entity, account_id, cut],
                batch_rows,
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
        """A device's telemetry in [since, until] (a device id includes its modules), with
        its observations; a latest value in the range gives way to the newest one left.
        Returns the number of messages deleted."""
        low, high = range_us(since, until)
        where = f"{account_term(device_id)} = ? AND device_id = ? AND {{ts}} >= ? AND {{ts}} <= ?"
        count = 0
        for entity in await self._entities("telemetry", device_id):
            count += await self._delete_batches(
                "telemetry", "enqueued_at", where, [account_id, entity, low, high], batch_rows
            )
        sql, params = device_filter(
            "SELECT entity_id, metric, ts FROM latest_observations WHERE account_id = ?",
            [account_id],
            "entity_id",
            device_id,
        )
        latest = await self.db.fetch_all(sql, params)
        # Each entity's range of ix_observations (entity, ts, metric) once, every metric.
        for entity in dict.fromkeys(row[0] for row in latest):
            await self._delete_batches(
                "observations",
                "ts",
                f"{account_term(device_id)} = ? AND entity_id = ? AND {{ts}} >= ? AND {{ts}} <= ?",
                [account_id, entity, low, high],
                batch_rows,
            )
        for entity, metric, latest_us in latest:
            if low <= latest_us <= high:
                await self._write(
                    Step(
                        "exec",
                        "DELETE FROM latest_observations WHERE entity_id = ? AND metric = ? "
                        "AND ts >= ? AND ts <= ?",
                        (entity, metric, low, high),
                    ),
                    Step(
                        "exec",
                        "INSERT INTO latest_observations (account_id, entity_id, metric, ts, "
                        "value) SELECT account_id, entity_id, metric, ts, value FROM "
                        "observations WHERE account_id = ? AND entity_id = ? AND metric = ? "
                        "ORDER BY ts DESC LIMIT 1 ON CONFLICT (entity_id, metric) DO UPDATE "
                        "SET ts = excluded.ts, value = excluded.value "
                        "WHERE excluded.ts >= latest_observations.ts",
                        (account_id, entity, metric),
                    ),
                )
        return count
