"""SQLAlchemy tables. The database is the source of truth for every evaluation's state."""

from .tables import (
    Dataset,
    Evaluation,
    EvaluationDataset,
    EvaluationModel,
    Model,
    Score,
)

__all__ = [
    "Dataset",
    "Evaluation",
    "EvaluationDataset",
    "EvaluationModel",
    "Model",
    "Score",
]
