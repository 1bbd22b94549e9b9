"""evaluation parts: a job fanned out over the worker pool (issue 11, scale-out)

A job with several local checkpoints runs as parts, one engine run each in its own sub-directory of the job
(services/fanout.py): a row per part holds who runs it and how it went, with the same claim, heartbeat and
process-group columns as an evaluation, so a worker killed mid-part loses only that part. The evaluation itself
keeps the job's status, aggregated progress and, once every part is done, the merged results.

Revision ID: 0013
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_parts",
        sa.Column("evaluation_id", sa.Integer(), sa.ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("queue", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("run_pgid", sa.Integer(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("log_tail", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("evaluation_parts")
