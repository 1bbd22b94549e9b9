"""ids are never reused: AUTOINCREMENT on SQLite

Without it SQLite gives a new row max(rowid) + 1, so deleting the newest evaluation and creating another gave
the new one the deleted one's id (and its URL, bookmarked or shared, showed the later data). AUTOINCREMENT
keeps the largest id ever used in sqlite_sequence. A table gets it only when created, so each table is
recreated (batch mode copies the rows, indexes and constraints). PostgreSQL: nothing to do, its sequences
never go back.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# models.tables.NEVER_REUSED_IDS (migrations do not import the application)
TABLES = ("models", "datasets", "evaluations", "scores")


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
