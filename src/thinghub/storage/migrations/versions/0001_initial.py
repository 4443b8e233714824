"""The initial schema: accounts, principals, projects, devices, twins, telemetry, events,
commands, C2D messages, MQTT sessions and documents.

Times are BIGINT microseconds since the epoch; JSON is TEXT; flags are INTEGER 0/1, so the
same SQL runs on SQLite and PostgreSQL.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("id_scope", sa.String(32), nullable=False, unique=True),
        sa.Column("created_at", US, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("username", sa.String(200), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", US, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", ID, primary_key=True),
        sa.Column("account_id", ID, nullable=False, index=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("label", sa.Text(), nullable=False, server_default=""),
        sa.Column("face", sa.String(32), nullable=False, server_default="st"),
        sa.Column("face_role", sa.String(64)),
        sa.Column("created_at", US, nullable=False),
        sa.Column("expires_at", US),
    )
    op.create_index("ux_api_tokens_hash", "api_tokens", ["secret_hash"], unique=True)
    op.create_table(
        "projects",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("name", ID, primary_key=True),
        sa.Column("created_at", US, nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("project", ID, primary_key=True),
        sa.Column("name", ID, primary_key=True),
        sa.Column("created_at", US, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(260), primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("primary_key", sa.Text(), nullable=False),
        sa.Column("secondary_key", sa.Text(), nullable=False),
        sa.Column("project", ID),
        sa.Column("deployment", ID),
        sa.Column("parent_id", sa.String(260)),
        sa.Column("module_id", ID),
        sa.Column("enabled", sa.Integer(), nullable=False),
        sa.Column("simulated", sa.Integer(), nullable=False),
        sa.Column("provisioned", sa.Integer(), nullable=False),
        sa.Column("template", sa.Text()),
        sa.Column("model_id", sa.Text()),
        sa.Column("connection_state", sa.String(16), nullable=False),
        sa.Column("last_activity_at", US),
        sa.Column("created_by", sa.Text()),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("updated_at", US, nullable=False),
    )
    op.create_index("ix_devices_scope", "devices", ["account_id", "project", "deployment"])
    op.create_index("ix_devices_parent", "devices", ["parent_id"])
    op.create_table(
        "twins",
        sa.Column("device_id", sa.String(260), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("desired", sa.Text(), nullable=False),
        sa.Column("reported", sa.Text(), nullable=False),
    )
    op.create_table(
        "telemetry",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("device_id", sa.String(260), nullable=False),
        sa.Column("project", ID),
        sa.Column("deployment", ID),
        sa.Column("enqueued_at", US, nullable=False),
        sa.Column("body", sa.Text()),
        sa.Column("raw", sa.LargeBinary()),
        sa.Column("properties", sa.Text()),
        sa.Column("message_id", sa.String(256)),
        sa.Column("correlation_id", sa.String(256)),
        sa.Column("content_type", sa.String(128)),
        sa.Column("content_encoding", sa.String(64)),
        sa.Column("component", sa.String(128)),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_telemetry_scope", "telemetry", ["account_id", "project", "deployment", "enqueued_at"]
    )
    op.create_index("ix_telemetry_device", "telemetry", ["device_id", "enqueued_at"])
    # A redelivered QoS 1 message (same message id) is stored once.
    op.create_index("ux_telemetry_message", "telemetry", ["device_id", "message_id"], unique=True)
    op.create_table(
        "observations",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("entity_id", sa.String(260), nullable=False),
        sa.Column("metric", sa.String(256), nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
    )
    op.create_index("ix_observations", "observations", ["entity_id", "metric", "ts"])
    op.create_table(
        "latest_observations",
        sa.Column("entity_id", sa.String(260), primary_key=True),
        sa.Column("metric", sa.String(256), primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("device_id", sa.String(260), nullable=False),
        sa.Column("project", ID),
        sa.Column("deployment", ID),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("ts", US, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    op.create_index("ix_events_scope", "events", ["account_id", "project", "deployment", "ts"])
    op.create_index("ix_events_device", "events", ["device_id", "ts"])
    op.create_table(
        "commands",
        sa.Column("id", ID, primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("device_id", sa.String(260), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text()),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("expires_at", US, nullable=False),
        sa.Column("response_timeout_s", sa.Float(precision=53), nullable=False),
        sa.Column("completed_at", US),
        sa.Column("response_code", sa.Integer()),
        sa.Column("result", sa.Text()),
    )
    op.create_index("ix_commands_device", "commands", ["device_id", "status"])
    op.create_table(
        "c2d_messages",
        sa.Column("id", ID, primary_key=True),
        sa.Column("device_id", sa.String(260), nullable=False, index=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("expires_at", US, nullable=False),
    )
    op.create_table(
        "mqtt_sessions",
        sa.Column("client_id", sa.String(300), primary_key=True),
        sa.Column("subscriptions", sa.Text(), nullable=False),
        sa.Column("updated_at", US, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", US, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "documents",
        "mqtt_sessions",
        "c2d_messages",
        "commands",
        "events",
        "latest_observations",
        "observations",
        "telemetry",
        "twins",
        "devices",
        "deployments",
        "projects",
        "api_tokens",
        "users",
        "accounts",
    ):
        op.drop_table(table)
