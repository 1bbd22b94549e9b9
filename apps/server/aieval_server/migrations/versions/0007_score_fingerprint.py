"""score fingerprint: what must match for two scores to be compared side by side (issue 10)

`fingerprint` is a short hash of `fingerprint_parts` (data content, sample limit, prompt/config, scorer, output
length override, OpenCompass version). Both nullable: scores stored before this revision have no fingerprint, and
compare shows them as "settings not recorded".

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}
COLUMNS = (
    ("fingerprint", sa.String(length=64)),
    ("fingerprint_parts", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        for name, column_type in COLUMNS:
            batch_op.add_column(sa.Column(name, column_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
