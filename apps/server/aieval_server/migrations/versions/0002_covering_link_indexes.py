"""covering indexes for "evaluations of model M / dataset D"

The single-column indexes made SQLite read 1,000 link rows from the table to count one model's evaluations
(2 ms of a 3 ms list request with 10,000 evaluations); (model_id, evaluation_id) answers it from the index.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluation_models") as batch_op:
        batch_op.drop_index("ix_evaluation_models_model_id")
        batch_op.create_index("ix_evaluation_models_model_evaluation", ["model_id", "evaluation_id"], unique=False)
    with op.batch_alter_table("evaluation_datasets") as batch_op:
        batch_op.drop_index("ix_evaluation_datasets_dataset_id")
        batch_op.create_index("ix_evaluation_datasets_dataset_evaluation", ["dataset_id", "evaluation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("evaluation_datasets") as batch_op:
        batch_op.drop_index("ix_evaluation_datasets_dataset_evaluation")
        batch_op.create_index("ix_evaluation_datasets_dataset_id", ["dataset_id"], unique=False)
    with op.batch_alter_table("evaluation_models") as batch_op:
        batch_op.drop_index("ix_evaluation_models_model_evaluation")
        batch_op.create_index("ix_evaluation_models_model_id", ["model_id"], unique=False)
