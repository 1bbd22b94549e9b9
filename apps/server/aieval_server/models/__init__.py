"""SQLAlchemy tables. The database is the source of truth for every evaluation's state."""

from .tables import (
    TERMINAL_STATUSES,
    Dataset,
    Evaluation,
    EvaluationDataset,
    EvaluationModel,
    Model,
    Score,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Dataset",
    "Evaluation",
    "EvaluationDataset",
    "EvaluationModel",
    "Model",
    "Score",
]
