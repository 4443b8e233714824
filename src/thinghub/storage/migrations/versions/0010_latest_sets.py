"""Latest values as a device's newest set: `latest_sets`.

Every telemetry message upserted one `latest_observations` row per numeric field (entity,
metric): a batch from 1,000 devices of five numbers each wrote 5,000 rows, a fifth to a
third of the SQLite writer's cost per message (docs/performance.md). `latest_sets` holds one
row per entity: its newest observation set (ts, vals) and that set's metric names (`keys`, a
JSON array, compared as text). A device that sends the same metrics every time then updates
one row a batch. When a set with other metrics replaces it, the old set's values move to
`latest_observations` first (only then), so no metric's latest value is lost.

The latest value of a metric is the newer of its `latest_observations` row and the
`latest_sets` row, if that set holds it (on equal times, the set's). SQLite's writer keeps
`latest_sets`; PostgreSQL's, where several nodes write, keeps upserting `latest_observations`
per metric in key order and leaves it empty, which reads the same.

The downgrade moves each set's values into `latest_observations` (where newer) and drops
the table.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "latest_sets",
        sa.Column("entity_id", sa.String(260), nullable=False),
        sa.Column("account_id", sa.String(160), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("vals", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entity_id"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        spill = (
            "SELECT l.account_id, l.entity_id, j.key, l.ts, j.value::float8 "
            "FROM latest_sets l, jsonb_each_text(CAST(l.vals AS jsonb)) j"
        )
    else:
        spill = (
            "SELECT l.account_id, l.entity_id, j.key, l.ts, j.value "
            "FROM latest_sets l, json_each(l.vals) j WHERE true"
        )
    op.execute(
        "INSERT INTO latest_observations (account_id, entity_id, metric, ts, value) "
        f"{spill} ON CONFLICT (entity_id, metric) DO UPDATE SET ts = excluded.ts, "
        "value = excluded.value WHERE excluded.ts >= latest_observations.ts"
    )
    op.drop_table("latest_sets")
