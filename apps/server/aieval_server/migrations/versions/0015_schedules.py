"""schedules, baselines and gates (issue 12, continuous evaluation)

schedules: a saved evaluation request (the body of POST /evaluations) run on a cron expression in a time zone, by its
owner; next_run_at is what the tick claims with a compare-and-set. last_evaluation_id / baseline_evaluation_id are
plain ids (ids are never reused, migration 0003). gate_rules: the rules each run is checked against.
evaluations.schedule_id: the schedule a run belongs to (SET NULL when the schedule is deleted: the run stays an
ordinary evaluation); gate_status / gate: the gate's verdict and its reasons per rule, once the run succeeded.

Revision ID: 0015
Revises: 0014
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_evaluation_id", sa.Integer(), nullable=True),
        sa.Column("baseline_evaluation_id", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gate_rules", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_schedules_owner_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.create_index(batch_op.f("ix_schedules_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index("ix_schedules_enabled_next_run", ["enabled", "next_run_at"], unique=False)
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("schedule_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gate_status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("gate", sa.JSON(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_evaluations_schedule_id_schedules"), "schedules",
                                    ["schedule_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index(batch_op.f("ix_evaluations_schedule_id"), ["schedule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluations_schedule_id"))
        batch_op.drop_constraint(batch_op.f("fk_evaluations_schedule_id_schedules"), type_="foreignkey")
        for name in ("gate", "gate_status", "schedule_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_index("ix_schedules_enabled_next_run")
        batch_op.drop_index(batch_op.f("ix_schedules_owner_id"))
    op.drop_table("schedules")
