"""score speed: latency and tokens per answer of each result of an endpoint model (issue 10)

`speed` is the summary of the per-sample records (aieval_engine.sample_metrics.summarize): samples with a record,
latency p50/p95/mean, time-to-first-token p50/p95 (null until requests stream), mean prompt and completion tokens,
total tokens, retries. One value per model x dataset, repeated on each metric's row like the other provenance.
Nullable: scores stored before this revision, and results of local models, have none.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("speed", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores", **KEEP_IDS) as batch_op:
        batch_op.drop_column("speed")
