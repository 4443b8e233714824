"""Queries, retention and per-account token ids.

- Telemetry and events get an index on (account_id, time, id): an unfiltered `limit=1000`
  listing walks it newest first and stops after 1,001 rows, where it used to read (and sort)
  every row of the account (issue 7: minutes on a large database). The retention purge and
  `observations` (account_id, ts) use the same order to delete the oldest rows in batches.
  All three indexes grow at their right-hand end only (time increases), so they cost ingest
  about one hot page per account.
- `accounts.retention`: the account's own retention days per kind of data, as JSON text
  (`{"telemetry": 7, "events": 30}`; NULL = the server's defaults), so a new kind (device
  files) needs no migration.
- `api_tokens` is keyed by (account_id, id): token ids are per account, so creating a token
  under an id another account uses is no longer a 409 that tells the id exists there
  (issue 11). The table is rebuilt (SQLite cannot change a primary key in place).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()
_TOKEN_COLUMNS = (
    "id, account_id, secret_hash, role, label, face, face_role, created_at, expires_at, project"
)


def _token_table(name: str, key_name: str, *key: str) -> None:
    op.create_table(
        name,
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("label", sa.Text(), nullable=False, server_default=""),
        sa.Column("face", sa.String(32), nullable=False, server_default="st"),
        sa.Column("face_role", sa.String(64)),
        sa.Column("created_at", US, nullable=False),
        sa.Column("expires_at", US),
        sa.Column("project", sa.String(160)),
        sa.PrimaryKeyConstraint(*key, name=key_name),
    )


def _rebuild_tokens(key_name: str, *key: str) -> None:
    # The key's name stays unique on PostgreSQL while both tables exist.
    _token_table("api_tokens_new", key_name, *key)
    op.execute(
        f"INSERT INTO api_tokens_new ({_TOKEN_COLUMNS}) SELECT {_TOKEN_COLUMNS} FROM api_tokens"
    )
    op.drop_table("api_tokens")  # and its indexes
    op.rename_table("api_tokens_new", "api_tokens")
    op.create_index("ux_api_tokens_hash", "api_tokens", ["secret_hash"], unique=True)


def upgrade() -> None:
    op.create_index("ix_telemetry_account", "telemetry", ["account_id", "enqueued_at", "id"])
    op.create_index("ix_events_account", "events", ["account_id", "ts", "id"])
    op.create_index("ix_observations_account", "observations", ["account_id", "ts"])
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("retention", sa.Text()))
    _rebuild_tokens("pk_api_tokens_account_id", "account_id", "id")


def downgrade() -> None:
    _rebuild_tokens("api_tokens_pkey", "id")
    op.create_index("ix_api_tokens_account_id", "api_tokens", ["account_id"])
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("retention")
    op.drop_index("ix_observations_account", table_name="observations")
    op.drop_index("ix_events_account", table_name="events")
    op.drop_index("ix_telemetry_account", table_name="telemetry")
