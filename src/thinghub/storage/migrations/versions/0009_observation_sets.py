"""Observations stored as one row per message: `observation_sets`.

`observations` held one row per numeric field of a message (account, entity, metric, time,
value), each with an entry in `ix_observations`: a message of five numbers wrote ten B-tree
entries, most of the writer's cost per message (`bench/store_rows.py`). `observation_sets`
holds one row per message and entity: (account_id, entity_id, ts, vals), `vals` a JSON object
of the message's numeric fields ({metric: value}, every value a float), with one index
(entity_id, ts) that covers the columns reads need (on PostgreSQL the others INCLUDEd). One
metric's values are read from it in time order with the JSON operators (SQLite `->>`,
PostgreSQL `jsonb ->>`); a set without the metric is skipped.

`vals` is TEXT on SQLite (JSON text) and JSONB on PostgreSQL. `latest_observations` is
unchanged.

The upgrade moves every observation: the rows of one (account, entity, time) become one set,
except that a metric seen twice at the same time (two messages in the same microsecond) goes
into another set, so no value is lost. Each value is written as the shortest text that reads
back as the same double: on SQLite by Python's JSON encoder (SQLite's own number-to-text
formatting keeps 15 digits), on PostgreSQL by jsonb_object_agg. The downgrade splits the
sets back into rows.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()
BATCH = 10_000  # rows moved per INSERT


def _sets(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Observation rows ordered by (account, entity, ts) as sets."""
    key: tuple[str, str, int] | None = None
    vals: dict[str, float] = {}
    for account, entity, metric, ts, value in rows:
        if (account, entity, ts) != key or metric in vals:
            if key is not None:
                yield _set_row(key, vals)
            key, vals = (account, entity, ts), {}
        vals[metric] = float(value)
    if key is not None:
        yield _set_row(key, vals)


def _set_row(key: tuple[str, str, int], vals: dict[str, float]) -> dict[str, Any]:
    return {"a": key[0], "e": key[1], "t": key[2], "v": orjson.dumps(vals).decode()}


def _batched(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "observation_sets",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("entity_id", sa.String(260), nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("vals", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    )
    if bind.dialect.name == "postgresql":
        # jsonb_object_agg writes a double as its shortest exact text (PostgreSQL 12+).
        op.execute(
            "INSERT INTO observation_sets (account_id, entity_id, ts, vals) "
            "SELECT account_id, entity_id, ts, jsonb_object_agg(metric, value) FROM "
            "(SELECT *, row_number() OVER (PARTITION BY account_id, entity_id, ts, metric) "
            "AS n FROM observations) AS o GROUP BY account_id, entity_id, ts, n"
        )
    else:
        rows = bind.execution_options(yield_per=BATCH).execute(  # streamed, not all in memory
            sa.text(
                "SELECT account_id, entity_id, metric, ts, value FROM observations "
                "ORDER BY account_id, entity_id, ts, rowid"
            )
        )
        insert = sa.text(
            "INSERT INTO observation_sets (account_id, entity_id, ts, vals) VALUES (:a, :e, :t, :v)"
        )
        for batch in _batched(_sets(rows)):
            bind.execute(insert, batch)
    # Covering: one entity's sets are read in time order from the index alone, without a
    # table lookup per set (the table interleaves every device's sets as they arrive).
    if bind.dialect.name == "postgresql":
        op.create_index(
            "ix_observation_sets",
            "observation_sets",
            ["entity_id", "ts"],
            postgresql_include=["account_id", "vals"],
        )
    else:
        op.create_index(
            "ix_observation_sets", "observation_sets", ["entity_id", "ts", "account_id", "vals"]
        )
    op.drop_table("observations")


def downgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "observations",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("entity_id", sa.String(260), nullable=False),
        sa.Column("metric", sa.String(256), nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
    )
    each = "jsonb_each_text(vals)" if is_pg else "json_each(vals)"
    value = "CAST(j.value AS float8)" if is_pg else "j.value"
    op.execute(
        "INSERT INTO observations (account_id, entity_id, metric, ts, value) "
        f"SELECT s.account_id, s.entity_id, j.key, s.ts, {value} FROM observation_sets AS s, "
        f"{each} AS j"
    )
    op.create_index(
        "ix_observations", "observations", ["entity_id", "ts", "metric", "value", "account_id"]
    )
    op.drop_table("observation_sets")
