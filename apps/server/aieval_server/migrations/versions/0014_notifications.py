"""notification channels and their delivery log (issue 12)

A user's channels (a generic webhook or a Feishu/Lark, DingTalk, WeCom or Slack robot), with the URL and the signing
secret encrypted like model API keys, and one row per notification sent to a channel: its message, status, attempts
and the last error, so the user sees whether it arrived (services/notifications.py).

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("url_encrypted", sa.Text(), nullable=False),
        sa.Column("url_hint", sa.String(length=300), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_notification_channels_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_channels")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("notification_channels") as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_channels_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("evaluation_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=30), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["notification_channels.id"],
                                name=op.f("fk_notification_deliveries_channel_id_notification_channels"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("notification_deliveries") as batch_op:
        batch_op.create_index(batch_op.f("ix_notification_deliveries_channel_id"), ["channel_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_notification_deliveries_evaluation_id"), ["evaluation_id"],
                              unique=False)
        batch_op.create_index("ix_notification_deliveries_status_next", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_table("notification_deliveries")
    op.drop_table("notification_channels")
