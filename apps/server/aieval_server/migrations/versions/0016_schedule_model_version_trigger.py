"""schedules run on a new model version (issue 12, continuous evaluation)

schedules.trigger: "cron" (every schedule so far) or "new_model_version" (enums.ScheduleTrigger): a run whenever an
OpenAI-compatible endpoint among the schedule's models serves another version of its model. model_version: what the
endpoints served when last asked (canonical JSON, compared as text by the compare-and-set that submits the run);
version_checked_at: when they were last asked (what the tick claims). cron becomes optional: a "new model version"
schedule may have none.

Revision ID: 0016
Revises: 0015
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    with op.batch_alter_table("schedules", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("trigger", sa.String(length=20), nullable=False, server_default="cron"))
        batch_op.add_column(sa.Column("model_version", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("version_checked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column("cron", existing_type=sa.String(length=120), nullable=True)


def downgrade() -> None:
    # A schedule without a cron cannot be one of 0015: it goes, with its runs kept as ordinary evaluations.
    op.execute("UPDATE evaluations SET schedule_id = NULL WHERE schedule_id IN "
               "(SELECT id FROM schedules WHERE cron IS NULL)")
    op.execute("DELETE FROM schedules WHERE cron IS NULL")
    with op.batch_alter_table("schedules", **KEEP_IDS) as batch_op:
        batch_op.alter_column("cron", existing_type=sa.String(length=120), nullable=False)
        for name in ("version_checked_at", "model_version", "trigger"):
            batch_op.drop_column(name)
