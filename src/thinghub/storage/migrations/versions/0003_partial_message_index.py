"""The redelivery index holds only messages that carry an id.

Telemetry without a message id (most of it) never conflicts, yet every row put an entry in
`ux_telemetry_message` at its device's place: one more B-tree page dirtied per device per
group commit. A partial index (`WHERE message_id IS NOT NULL`, on SQLite and PostgreSQL)
keeps dedupe by (device, message id) and skips those entries: ~25-40% more telemetry rows per
second on SQLite in bench/. `ON CONFLICT DO NOTHING` (no target) still sees it, and
`message_id = ?` lookups imply the index's condition, so they still use it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WITH_ID = sa.text("message_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ux_telemetry_message", table_name="telemetry")
    op.create_index(
        "ux_telemetry_message",
        "telemetry",
        ["device_id", "message_id"],
        unique=True,
        sqlite_where=_WITH_ID,
        postgresql_where=_WITH_ID,
    )


def downgrade() -> None:
    op.drop_index("ux_telemetry_message", table_name="telemetry")
    op.create_index("ux_telemetry_message", "telemetry", ["device_id", "message_id"], unique=True)
