"""The web console's sign-in sessions and failed sign-ins, shared by every node.

- `console_sessions`: one row per session, keyed by the SHA-256 of its cookie value (the value
  itself is never stored); `sealed` holds its secrets (CSRF token, access token) encrypted
  with a key derived from the cookie value; `data` the rest (JSON). `ix_console_sessions_user`
  ends a user's sessions; `ix_console_sessions_seen` serves the sweep (idle, oldest first).
- `console_login_failures`: one row per failed sign-in of a key (a user name, a client
  address), counted within a window and swept after it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("user_id", ID),
        sa.Column("created_at", US, nullable=False),
        sa.Column("seen_at", US, nullable=False),
        sa.Column("expires_at", US, nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_console_sessions_user", "console_sessions", ["user_id"])
    op.create_index("ix_console_sessions_seen", "console_sessions", ["seen_at"])
    op.create_table(
        "console_login_failures",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("failed_at", US, primary_key=True),
    )
    op.create_index("ix_console_login_failures_at", "console_login_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_table("console_login_failures")
    op.drop_table("console_sessions")
