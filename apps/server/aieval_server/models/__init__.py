"""SQLAlchemy tables. The database is the source of truth for every evaluation's state."""

from .tables import (
    ApiToken,
    AuditEvent,
    AuthSession,
    Dataset,
    Evaluation,
    EvaluationDataset,
    EvaluationModel,
    EvaluationPart,
    Model,
    NotificationChannel,
    NotificationDelivery,
    Schedule,
    Score,
    User,
)

__all__ = [
    "ApiToken",
    "AuditEvent",
    "AuthSession",
    "Dataset",
    "Evaluation",
    "EvaluationDataset",
    "EvaluationModel",
    "EvaluationPart",
    "Model",
    "NotificationChannel",
    "NotificationDelivery",
    "Schedule",
    "Score",
    "User",
]
