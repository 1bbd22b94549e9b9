"""ownership and visibility, personal API tokens, audit log, quotas, scheduling priority (issue 9)

Models, datasets and evaluations get an owner (NULL: made before sign-in was on, they belong to the installation)
and a visibility (existing rows stay readable by everyone: 'shared'); a file is unique per owner, no longer
across the installation. Models get a shared concurrency cap,
evaluations a queue priority. Users get quota overrides and single sign-on identifiers. New tables: api_tokens
(SHA-256 of each token only) and audit_events.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OWNED = ("models", "datasets", "evaluations")
# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    for table in OWNED:
        with op.batch_alter_table(table, **KEEP_IDS) as batch_op:
            batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("visibility", sa.String(length=10), nullable=False,
                                          server_default="shared"))
            batch_op.create_foreign_key(batch_op.f(f"fk_{table}_owner_id_users"), "users", ["owner_id"], ["id"],
                                        ondelete="SET NULL")
            batch_op.create_index(batch_op.f(f"ix_{table}_owner_id"), ["owner_id"], unique=False)
        with op.batch_alter_table(table, **KEEP_IDS) as batch_op:
            batch_op.alter_column("visibility", server_default=None)
    with op.batch_alter_table("datasets", **KEEP_IDS) as batch_op:
        batch_op.drop_constraint("uq_datasets_sha256", type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_datasets_owner_id"), ["owner_id", "sha256"])
        batch_op.create_index(batch_op.f("ix_datasets_sha256"), ["sha256"], unique=False)
    with op.batch_alter_table("models", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.alter_column("priority", server_default=None)
    with op.batch_alter_table("users", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("oidc_issuer", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("oidc_subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("max_active_evaluations", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_stored_bytes", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_users_oidc_issuer"), ["oidc_issuer", "oidc_subject"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("api_tokens") as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("target_type", sa.String(length=20), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("target_name", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_audit_events_actor_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_actor_id"), ["actor_id"], unique=False)
        batch_op.create_index("ix_audit_events_target", ["target_type", "target_id"], unique=False)


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("api_tokens")
    with op.batch_alter_table("users", **KEEP_IDS) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_oidc_issuer"), type_="unique")
        for column in ("max_stored_bytes", "max_active_evaluations", "oidc_subject", "oidc_issuer"):
            batch_op.drop_column(column)
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.drop_column("priority")
    with op.batch_alter_table("models", **KEEP_IDS) as batch_op:
        batch_op.drop_column("max_concurrency")
    with op.batch_alter_table("datasets", **KEEP_IDS) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_sha256"))
        batch_op.drop_constraint(batch_op.f("uq_datasets_owner_id"), type_="unique")
        batch_op.create_unique_constraint("uq_datasets_sha256", ["sha256"])
    for table in OWNED:
        with op.batch_alter_table(table, **KEEP_IDS) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_owner_id"))
            batch_op.drop_constraint(batch_op.f(f"fk_{table}_owner_id_users"), type_="foreignkey")
            batch_op.drop_column("visibility")
            batch_op.drop_column("owner_id")
