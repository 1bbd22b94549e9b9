"""score provenance: samples scored, right answers, scorer and 95 % confidence interval of each score (issue 10)

All nullable: scores stored before this revision have none of them.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}
COLUMNS = (
    ("n", sa.Integer()),
    ("correct", sa.Integer()),
    ("scorer", sa.String(length=200)),
    ("ci_low", sa.Float()),
    ("ci_high", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        for name, column_type in COLUMNS:
            batch_op.add_column(sa.Column(name, column_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
