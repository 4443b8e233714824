"""Fewer B-trees and fewer B-tree leaves written per stored observation.

- `ix_observations` becomes (entity_id, ts, metric, value, account_id), was (entity_id,
  metric, ts). A commit of messages from D devices with M numeric fields each dirtied D x M
  leaves of the old index (each (entity, metric) has its own end of the index, where new
  times go), and writing each dirty page to the WAL is most of a commit's cost; ordered by
  time within the entity, one message's fields sit together and a commit dirties about D
  leaves. The index covers every column a read of observations needs, so reads no longer
  visit the table: one metric's rows of an entity are read in time order as before, stepping
  over the entity's other metrics' entries (cheap for a few metrics; see
  docs/performance.md for the cost at many).
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

`observations` stays a rowid table (its rows are appended, a few pages a commit): a WITHOUT
ROWID table clustered on the index's key needs a tiebreak column (observations have no unique
key: equal times are kept), and measured no cheaper per message (`bench/store_rows.py`).

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


_BY_METRIC = ["entity_id", "metric", "ts"]
_BY_TIME = ["entity_id", "ts", "metric", "value", "account_id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_latest(with_rowid=False)
    op.create_index("ix_latest_observations_account", "latest_observations", ["account_id"])
    op.drop_index("ix_observations_account", table_name="observations")
    op.drop_index("ix_observations", table_name="observations")
    op.create_index("ix_observations", "observations", _BY_TIME)


def downgrade() -> None:
    op.drop_index("ix_observations", table_name="observations")
    op.create_index("ix_observations", "observations", _BY_METRIC)
    op.create_index("ix_observations_account", "observations", ["account_id", "ts"])
    op.drop_index("ix_latest_observations_account", table_name="latest_observations")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_latest(with_rowid=True)
