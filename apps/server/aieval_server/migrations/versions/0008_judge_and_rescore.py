"""LLM-as-judge and re-scoring (issue 10, "Scoring free-form answers")

evaluations.judge_model_id / judge_prompt_language: the registered model that judges free-form answers (uploaded
question-answer datasets scored "judge", built-in configs OpenCompass scores with a judge) and the language of its
prompt. A model that judges an evaluation cannot be deleted (RESTRICT, like the evaluated models).
evaluations.scorer: the scorer of the evaluation's uploaded question-answer datasets instead of each dataset's own
(set when a finished evaluation is re-scored); NULL: each dataset's own.
evaluations.rescored_from_id: the finished evaluation whose predictions this one scored again (no inference). A plain
id, not a foreign key: ids are never reused (0003), so "re-scored from #N" stays true after #N is deleted.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# SQLite alters a table by copying it: the copy must keep AUTOINCREMENT (ids never reused, migration 0003).
KEEP_IDS = {"table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("judge_model_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("judge_prompt_language", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("scorer", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("rescored_from_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_evaluations_judge_model_id_models"), "models",
                                    ["judge_model_id"], ["id"], ondelete="RESTRICT")
        batch_op.create_index(batch_op.f("ix_evaluations_judge_model_id"), ["judge_model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluations_rescored_from_id"), ["rescored_from_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("evaluations", **KEEP_IDS) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluations_rescored_from_id"))
        batch_op.drop_index(batch_op.f("ix_evaluations_judge_model_id"))
        batch_op.drop_constraint(batch_op.f("fk_evaluations_judge_model_id_models"), type_="foreignkey")
        for name in ("rescored_from_id", "scorer", "judge_prompt_language", "judge_model_id"):
            batch_op.drop_column(name)
