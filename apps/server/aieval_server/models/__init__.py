"""SQLAlchemy tables. The database is the source of truth for every evaluation's state."""

from .tables import (
    AuthSession,
    Dataset,
    Evaluation,
    EvaluationDataset,
    EvaluationModel,
    Model,
    Score,
    User,
)

__all__ = [
    "AuthSession",
    "Dataset",
    "Evaluation",
    "EvaluationDataset",
    "EvaluationModel",
    "Model",
    "Score",
    "User",
]
