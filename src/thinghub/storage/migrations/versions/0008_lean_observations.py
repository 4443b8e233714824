"""Fewer B-trees written per stored observation.

- `ix_observations_account` (account_id, ts) goes: only the retention purge used it, and the
  purge now deletes each (entity, metric) of the account on `ix_observations` instead, the
  account's keys listed from `latest_observations`. Every stored observation wrote one entry
  in it.
- `latest_observations` gets `ix_latest_observations_account` (account_id), for that listing.
  An upsert that updates a latest value leaves it alone (its columns do not change); only a
  new (entity, metric) adds an entry.
- On SQLite, `latest_observations` becomes a WITHOUT ROWID table clustered on its primary key
  (entity_id, metric): an upsert writes one B-tree, not the table and its key's index. Its
  rows are copied as they are. PostgreSQL has no such tables; there only the indexes change.

`observations` stays a rowid table with `ix_observations`: clustering it on (entity_id,
metric, ts) needs a tiebreak column (observations have no unique key) and measured no
cheaper per message (`bench/store_rows.py`): the scattered leaves of that key, one per
(entity, metric) in a commit, are the cost either way.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()
_COLUMNS = "entity_id, metric, account_id, ts, value"


def _rebuild_latest(*, with_rowid: bool) -> None:
    """SQLite: latest_observations again, with or without rowid, the same rows."""
    op.create_table(
        "latest_observations_new",
        sa.Column("entity_id", sa.String(260), primary_key=True),
        sa.Column("metric", sa.String(256), primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(
        f"INSERT INTO latest_observations_new ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM latest_observations"
    )
    op.drop_table("latest_observations")
    op.rename_table("latest_observations_new", "latest_observations")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_latest(with_rowid=False)
    op.create_index("ix_latest_observations_account", "latest_observations", ["account_id"])
    op.drop_index("ix_observations_account", table_name="observations")


def downgrade() -> None:
    op.create_index("ix_observations_account", "observations", ["account_id", "ts"])
    op.drop_index("ix_latest_observations_account", table_name="latest_observations")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_latest(with_rowid=True)
