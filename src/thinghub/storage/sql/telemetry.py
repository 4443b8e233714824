"""Telemetry in SQL: messages (unique per device and message id), observations and the
latest value per metric; newest-first pages; retention and per-device deletes in batches."""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from operator import itemgetter
from typing import Any

import orjson

from thinghub.domain.telemetry import Observation, TelemetryMessage, observation_object
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

__all__ = [
    "UPSERT_LATEST_ROWS",
    "SqlTelemetryStore",
    "append_steps",
    "newest_per_metric",
    "set_text",
    "sets_of",
    "value_sql",
]

_Row = tuple[Any, ...]  # an observation set: (account_id, entity_id, ts, vals)
_Owned = tuple[_Row, int]  # a set of a message with an id, and that message's place
_BY_KEY = itemgetter(1)  # a row's entity_id


def _owned_key(item: _Owned) -> Any:
    return item[0][1]  # the row's entity_id


_APPEND_TELEMETRY = f"INSERT INTO telemetry ({TELEMETRY_COLUMNS}) VALUES ({','.join('?' * 14)})"
# A message with an id may be a redelivery: its insert does nothing then (row count 0).
# Messages without one are always new (the unique index covers rows with an id only).
_INSERT_TELEMETRY = f"{_APPEND_TELEMETRY} ON CONFLICT DO NOTHING"
_INSERT_SET = "INSERT INTO observation_sets (account_id, entity_id, ts, vals) VALUES (?,?,?,?)"
# Each of a set's values upserts its latest value (json_each walks the set's object; `WHERE
# true` tells SQLite's parser the SELECT ends before ON CONFLICT). In a batch's order: on equal
# times the later set wins.
_LATEST = (
    " WHERE true ON CONFLICT (entity_id, metric) DO UPDATE SET ts = excluded.ts, "
    "value = excluded.value WHERE excluded.ts >= latest_observations.ts"
)
_LATEST_INTO = "INSERT INTO latest_observations (account_id, entity_id, metric, ts, value) "
_UPSERT_LATEST = {
    "sqlite": f"{_LATEST_INTO}SELECT ?, ?, key, ?, value FROM json_each(?){_LATEST}",
    "postgresql": f"{_LATEST_INTO}SELECT ?, ?, key, ?, value::float8 FROM "
    f"jsonb_each_text(CAST(? AS jsonb)){_LATEST}",
}
# Latest values given as rows (account_id, entity_id, metric, ts, value), one per key.
UPSERT_LATEST_ROWS = f"{_LATEST_INTO}VALUES (?,?,?,?,?){_LATEST.removeprefix(' WHERE true')}"
# SQLite: the sets of a batch upsert in statements of up to this many sets each (4 parameters a
# set, within SQLite's historic 999): one statement per 249 sets, not one per set.
_SETS_PER_UPSERT = 249


@functools.lru_cache(maxsize=32)
def _upsert_sets_sql(sets: int) -> str:
    """SQLite: the latest values of `sets` sets, in their order, in one statement."""
    rows = ",".join(["(?,?,?,?)"] * sets)
    return (
        f"{_LATEST_INTO}SELECT s.column1, s.column2, j.key, s.column3, j.value "
        f"FROM (VALUES {rows}) AS s, json_each(s.column4) AS j{_LATEST}"
    )


def _upsert_latest_steps(sets: list[_Row], dialect: str) -> list[Step]:
    if dialect != "sqlite":
        return [Step("many", _UPSERT_LATEST[dialect], sets)]
    steps = []
    for start in range(0, len(sets), _SETS_PER_UPSERT):
        chunk = sets[start : start + _SETS_PER_UPSERT]
        flat = list(itertools.chain.from_iterable(chunk))
        steps.append(Step("exec", _upsert_sets_sql(len(chunk)), flat))
    return steps


def set_text(values: dict[str, float]) -> str:
    """A set's `vals`: its metrics' float values as a JSON object (the shortest text of each
    double, which reads back as the same double)."""
    return orjson.dumps(values).decode()


def newest_per_metric(rows: Iterable[_Row]) -> list[_Row]:
    """Observation rows (account, entity, metric, ts, value): one per (entity, metric), the
    newest, the later one on equal times; in (entity, metric) order (PostgreSQL upserts them
    in that order, so concurrent batches lock rows in one order)."""
    newest: dict[tuple[str, str], _Row] = {}
    for row in rows:
        key = (row[1], row[2])
        prior = newest.get(key)
        if prior is None or row[3] >= prior[3]:
            newest[key] = row
    return [newest[key] for key in sorted(newest)]


def value_sql(dialect: str, metric: str) -> tuple[str, str]:
    """SQL for `metric`'s value in a set's `vals` (NULL when the set has none), and its one
    parameter.

    SQLite addresses a key with a quoted path label (`$."name"`), which takes a name as
    stored: without `"` (the label's end), `\\` or control characters (stored escaped); any
    other name is looked up among the object's keys with json_each. PostgreSQL takes the
    key itself.
    """
    if dialect == "postgresql":
        return "(vals ->> CAST(? AS text))::float8", metric
    if '"' in metric or "\\" in metric or any(ch < " " for ch in metric):
        return "(SELECT value FROM json_each(vals) WHERE key = ?)", metric
    return "vals ->> ?", f'$."{metric}"'


def _derived_rows(
    messages: Sequence[TelemetryMessage],
) -> tuple[list[_Row], list[_Owned], list[_Row]]:
    """Each message's observations as a set: plain for messages without an id; for the
    others, with its message's place among the batch's messages with an id. And the plain
    sets the latest values need (see _newest_sets)."""
    plain: list[_Row] = []
    owned: list[_Owned] = []
    # Per entity: its newest plain set so far (an index into plain) and that set's metrics;
    # None once two of its sets differ in metrics or go back in time.
    newest: dict[str, tuple[int, Any] | None] = {}
    ordinal = -1
    for m in messages:
        if m.message_id is not None:
            ordinal += 1
        values = observation_object(m)
        if not values:
            continue
        us = round(m.enqueued_at * 1_000_000)  # _rows.to_us, inline
        row = (m.account_id, m.device_id, us, set_text(values))
        if m.message_id is None:
            entity = m.device_id
            keys = values.keys()
            if entity not in newest:
                newest[entity] = (len(plain), keys)
            elif (prior := newest[entity]) is not None:
                same = keys == prior[1] and us >= plain[prior[0]][2]
                newest[entity] = (len(plain), keys) if same else None
            plain.append(row)
        else:
            owned.append((row, ordinal))
    return plain, owned, _newest_sets(plain, newest)


def _newest_sets(plain: list[_Row], newest: dict[str, tuple[int, Any] | None]) -> list[_Row]:
    """The plain sets whose values the latest values need: of an entity whose sets in the
    batch all hold the same metrics, in time order, only the last (it has the newest value of
    each); of any other entity, every set (each upserts what is newer)."""
    if len(newest) == len(plain):
        return plain  # one set per entity
    mixed = {entity for entity, last in newest.items() if last is None}
    latest = [plain[last[0]] for last in newest.values() if last is not None]
    if mixed:
        latest += [row for row in plain if row[1] in mixed]
    return latest


def _given_rows(
    messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
) -> tuple[list[_Row], list[_Owned]]:
    """Given observations as sets, one per run of observations with the same account,
    entity and time (a metric seen again starts another). A set is owned by a message of
    the batch with an id that has its entity and time (they are its observations; the last
    such message), else plain."""
    owners: dict[tuple[str, int], int | None] = {}
    ordinal = -1
    for m in messages:
        if m.message_id is not None:
            ordinal += 1
        owners[(m.device_id, to_us(m.enqueued_at))] = None if m.message_id is None else ordinal
    plain: list[_Row] = []
    owned: list[_Owned] = []
    rows = ((o.account_id, o.entity_id, o.metric, to_us(o.ts), o.value) for o in observations)
    for row in sets_of(rows):
        owner = owners.get((row[1], row[2]))
        if owner is None:
            plain.append(row)
        else:
            owned.append((row, owner))
    return plain, owned


def sets_of(rows: Iterable[tuple[str, str, str, int, float]]) -> list[_Row]:
    """Observation rows (account, entity, metric, ts, value) as sets (account, entity, ts,
    vals): one per run of rows with the same account, entity and time (a metric seen again
    starts another, so no value is lost)."""
    sets: list[_Row] = []
    key: tuple[str, str, int] | None = None
    values: dict[str, float] = {}
    for account, entity, metric, ts, value in rows:
        if (account, entity, ts) != key or metric in values:
            if key is not None:
                sets.append((*key, set_text(values)))
            key, values = (account, entity, ts), {}
        values[metric] = float(value)
    if key is not None:
        sets.append((*key, set_text(values)))
    return sets


def _observation_steps(
    plain: list[_Row],
    owned: list[_Owned],
    *,
    latest: list[_Row] | None = None,
    by_key: bool = True,
    dialect: str = "sqlite",
) -> list[Step]:
    """Observation sets of new messages only: a redelivered duplicate adds none.

    Sets of messages with an id go as `landed` steps: the driver writes only those whose
    message's insert (the unit's first step) stored a row. Each set upserts the latest value
    of each of its metrics (SQLite: many sets a statement, the sets' objects walked by
    json_each in SQL); of the plain sets, only those of `latest` when given (None: all).

    `by_key`: the sets go in entity order (a stable sort: one entity's sets keep their order,
    so equal times keep their order). Each entity's sets then follow one another into its end
    of `ix_observation_sets` (entity, time) and its leaf of `latest_observations`, instead of
    a batch visiting every entity's leaves once per message (`bench/store_rows.py`).
    """
    if by_key:
        plain.sort(key=_BY_KEY)
        owned.sort(key=_owned_key)
    steps = []
    if plain:
        upserted = plain if latest is None else latest
        steps += [Step("append", _INSERT_SET, plain), *_upsert_latest_steps(upserted, dialect)]
    if owned:
        upsert = _UPSERT_LATEST[dialect]
        steps += [Step("landed", _INSERT_SET, owned), Step("landed", upsert, owned)]
    return steps


def append_steps(
    messages: Sequence[TelemetryMessage],
    observations: Sequence[Observation] | None = None,
    *,
    by_key: bool = True,
    dialect: str = "sqlite",
) -> list[Step]:
    """The write unit of `SqlTelemetryStore.append`: the first step's result is each message
    with an id's row count (1: it landed), in order. (`by_key=False`: the sets in message
    order.)"""
    with_id: list[TelemetryMessage] = []
    without_id: list[TelemetryMessage] = []
    for m in messages:
        (without_id if m.message_id is None else with_id).append(m)
    steps = [
        Step("each", _INSERT_TELEMETRY, [telemetry_params(m) for m in with_id]),
        Step("append", _APPEND_TELEMETRY, [telemetry_params(m) for m in without_id]),
    ]
    latest = None
    if observations is None:
        plain, owned, latest = _derived_rows(messages)
    else:
        plain, owned = _given_rows(messages, observations)
    if plain or owned:
        steps += _observation_steps(plain, owned, latest=latest, by_key=by_key, dialect=dialect)
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
        result = await self._write(*append_steps(messages, observations, dialect=self.db.dialect))
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
        value, key = value_sql(self.db.dialect, metric)
        sql = (
            f"SELECT ts, {value} FROM observation_sets WHERE account_id = ? "
            f"AND entity_id = ? AND {value} IS NOT NULL"
        )
        params: list[Any] = [key, account_id, entity_id, key]
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
        """Keyset pages of sets on the (entity, ts) index, in its order (no sort): the values
        of the sets with the metric, as (time in integer microseconds as stored, value) rows
        (a page may hold fewer rows than sets, none when no set of it has the metric).

        With `affine`, SQLite converts the values (IEEE double arithmetic in the
        expression's order, overflowing to infinity as Python does): in the reader thread,
        without the GIL, instead of three Python float operations a row in the event loop.
        PostgreSQL raises on a float overflow, so there the rows are converted here.

        Sets have no unique key, so a page never ends inside a run of equal times:
        the rows sharing its last time are read whole (one more read by that time) and the
        next page starts after it.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        low, high = range_us(since, until)
        value, path = value_sql(self.db.dialect, metric)
        selected = value
        factors: list[Any] = [path]
        in_sql = affine is not None and self.db.dialect == "sqlite"
        if in_sql and affine is not None:
            selected = f"({value} * ? + ?) / ?"
            factors = [path, *(float(f) for f in affine)]
        # Every set of the range, the metric's value NULL in a set without it: skipping those
        # here costs less than a second JSON lookup a set in SQL (1,000,000 sets of one
        # metric: 0.64 s against 0.80 s), and a page is then a page of sets.
        head = (
            f"SELECT ts, {selected} FROM observation_sets WHERE account_id = ? "
            "AND entity_id = ? AND "
        )
        page = head + "ts >= ? AND ts <= ? ORDER BY ts LIMIT ?"
        at = head + "ts = ?"
        key = [*factors, account_id, entity_id]
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
            if any(row[1] is None for row in rows):
                rows = [row for row in rows if row[1] is not None]
            if rows and affine is not None and not in_sql:
                rows = convert_rows(rows, affine)
            if rows:
                yield rows
            if not is_full:
                return

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        """An account's telemetry and observations older than `before`; returns the number
        of messages deleted. The latest value of each metric stays.

        Observations go entity by entity, each on its range of `ix_observation_sets`: the
        account's entities are those of its latest values (every stored observation
        upserts one), and only entities with rows to delete are visited. No index orders
        the account's sets by time (one would cost every message an entry, for the purge
        alone).
        """
        cut = to_us(before)
        count = await self._delete_batches(
            "telemetry", "enqueued_at", "account_id = ? AND {ts} < ?", [account_id, cut], batch_rows
        )
        entities = await self.db.fetch_all(
            "SELECT DISTINCT entity_id FROM latest_observations l WHERE account_id = ? AND "
            "EXISTS (SELECT 1 FROM observation_sets o WHERE o.entity_id = l.entity_id AND "
            "o.ts < ? AND o.account_id = ?)",
            [account_id, cut, account_id],
            bulk=True,
        )
        for (entity,) in entities:
            await self._delete_batches(
                "observation_sets",
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
        # Each entity's range of ix_observation_sets (entity, ts) once, every metric.
        for entity in dict.fromkeys(row[0] for row in latest):
            await self._delete_batches(
                "observation_sets",
                "ts",
                f"{account_term(device_id)} = ? AND entity_id = ? AND {{ts}} >= ? AND {{ts}} <= ?",
                [account_id, entity, low, high],
                batch_rows,
            )
        for entity, metric, latest_us in latest:
            if low <= latest_us <= high:
                value, key = value_sql(self.db.dialect, metric)
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
                        f"value) SELECT account_id, entity_id, CAST(? AS text), ts, {value} FROM "
                        f"observation_sets WHERE account_id = ? AND entity_id = ? AND {value} "
                        "IS NOT NULL ORDER BY ts DESC LIMIT 1 ON CONFLICT (entity_id, metric) "
                        "DO UPDATE SET ts = excluded.ts, value = excluded.value "
                        "WHERE excluded.ts >= latest_observations.ts",
                        (metric, key, account_id, entity, key),
                    ),
                )
        return count
