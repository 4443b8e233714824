"""The Ioto face: products, device registrations (claims) and the records of device files.

- `ioto_products`: id, owning account, name (also the project of its devices), the SHA-256 of
  its product token (unique: the token finds the product), created and revoked times.
- `ioto_registrations`: one row per claim id, claimed or not (domain/claims.py); found by
  the claiming account, in claim id order (`ix_ioto_registrations_account`).
- `device_files`: one row per stored file, keyed by (account, key); the bytes live in the
  blob store under the data directory. The key sorts in UTF-8 byte order, as S3 lists keys:
  SQLite's default BINARY collation does; on PostgreSQL the column gets the "C" collation
  (so does the claim id, so that find pages in one order whatever the server's locale).
  `ix_device_files_modified` serves the retention purge (oldest first per account).

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.String(160)
US = sa.BigInteger()
# Compared and sorted by their bytes on every backend (S3 lists keys in UTF-8 byte order;
# claim ids page in one order whatever the server's locale).
KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
CLAIM_ID = sa.String(160).with_variant(sa.String(160, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ioto_products",
        sa.Column("id", ID, primary_key=True),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("name", ID, nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", US, nullable=False),
        sa.Column("revoked_at", US),
    )
    op.create_index("ux_ioto_products_token", "ioto_products", ["token_hash"], unique=True)
    op.create_index("ix_ioto_products_account", "ioto_products", ["account_id", "created_at"])
    op.create_table(
        "ioto_registrations",
        sa.Column("id", CLAIM_ID, primary_key=True),
        sa.Column("product_id", ID, nullable=False),
        sa.Column("product_account_id", ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("registered_at", US, nullable=False),
        sa.Column("accessed_at", US, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("account_id", ID),
        sa.Column("claimed_at", US),
        sa.Column("test", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(256)),
        sa.Column("checked", sa.String(256)),
        sa.Column("certificate_fingerprint", sa.String(128)),
        sa.Column("provisions", sa.Text(), nullable=False),
    )
    op.create_index("ix_ioto_registrations_account", "ioto_registrations", ["account_id", "id"])
    op.create_table(
        "device_files",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("device_id", ID, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("content_type", sa.String(255)),
        sa.Column("modified_at", US, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "key", name="pk_device_files"),
    )
    op.create_index("ix_device_files_modified", "device_files", ["account_id", "modified_at"])


def downgrade() -> None:
    op.drop_table("device_files")
    op.drop_table("ioto_registrations")
    op.drop_table("ioto_products")
