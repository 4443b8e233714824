"""The core role `builder`: IoT Central App Builder tokens get it.

Before, the Central face stored an App Builder token as role `operator` with IoT Central's App
Builder role id in `face_role`, and checked template writes with a role table of its own. The
one authorization check (services/authz.py) now reads the core role, and `builder` grants
template writes, so those rows become `builder`. Reading stays tolerant of rows this missed
(domain/roles.py `stored_role`).

Downgrading turns every `builder` token (Central's and any made on /v1) back into `operator`:
the older code knows no other role, and a /v1 builder token then loses template writes.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# IoT Central's App Builder role id, as it was stored (a snapshot: migrations never change).
APP_BUILDER_ID = "344138e9-8de4-4497-8c54-5237e96d6aaf"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE api_tokens SET role = 'builder' "
            "WHERE role = 'operator' AND face = 'central' AND face_role = :builder"
        ).bindparams(builder=APP_BUILDER_ID)
    )


def downgrade() -> None:
    op.execute(sa.text("UPDATE api_tokens SET role = 'operator' WHERE role = 'builder'"))
    op.execute(sa.text("UPDATE users SET role = 'operator' WHERE role = 'builder'"))
