from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ..db import Base
from ..enums import EvaluationStatus, UserRole, Visibility

# Ids are never given out twice, so a deleted evaluation's URL can never show later data. SQLite would
# otherwise give the newest row's id again once that row is deleted (max(rowid) + 1); AUTOINCREMENT makes it
# remember the largest id ever used. PostgreSQL's sequences never go back. (Migration 0003.)
NEVER_REUSED_IDS = ("models", "datasets", "evaluations", "scores", "users", "api_tokens", "audit_events", "schedules")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Owned:
    """Who owns a row and who may read it (services/access.py). owner_id NULL: made before sign-in was turned on
    (or by the local user of the embedded default): it belongs to the installation, administrators manage it."""

    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
                                                 index=True)
    visibility: Mapped[str] = mapped_column(String(10), default=Visibility.shared.value)  # enums.Visibility

    @declared_attr
    def owner(cls) -> Mapped[User | None]:  # noqa: N805 (SQLAlchemy calls it on the class)
        return relationship("User", foreign_keys=lambda: [cls.owner_id])


class Model(Owned, Base):
    """An evaluation target: an OpenAI-compatible endpoint, a Dify app or a local HF checkpoint."""

    __tablename__ = "models"
    __table_args__ = {"sqlite_autoincrement": True}  # see NEVER_REUSED_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # openai | dify | huggingface
    # Kind-specific settings (base_url, model, path, ...); never holds the API key.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    api_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_key_hint: Mapped[str | None] = mapped_column(String(20), nullable=True)  # e.g. "sk-…9f2a"
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    # Requests in flight to this model server across every job that uses it (NULL: no shared cap).
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Dataset(Owned, Base):
    """A built-in OpenCompass config (by name) or an uploaded file stored content-addressed."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner_id", "sha256"),
        {"sqlite_autoincrement": True},  # see NEVER_REUSED_IDS
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # builtin | custom
    builtin_config: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    # One row per owner and file: the same bytes uploaded by two users are two datasets (each with its own
    # visibility) over one stored file.
    sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    storage_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    file_format: Mapped[str | None] = mapped_column(String(10), nullable=True)  # jsonl | csv
    data_type: Mapped[str | None] = mapped_column(String(10), nullable=True)  # mcq | qa
    scorer: Mapped[str] = mapped_column(String(20), default="exact")
    infer_method: Mapped[str] = mapped_column(String(10), default="gen")
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    original_filename: Mapped[str | None] = mapped_column(String(300), nullable=True)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Evaluation(Owned, Base):
    __tablename__ = "evaluations"
    __table_args__ = (
        Index("ix_evaluations_status_created", "status", "created_at"),
        # Newest-first pages and name search scan this index without reading the (wide) rows.
        Index("ix_evaluations_created_id_name", "created_at", "id", "name"),
        {"sqlite_autoincrement": True},  # see NEVER_REUSED_IDS
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # one of enums.EvaluationStatus
    status: Mapped[str] = mapped_column(String(20), default=EvaluationStatus.queued.value, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    queue: Mapped[str] = mapped_column(String(50), default="local")
    # Higher runs first among queued jobs (administrators' jobs get 1); fair order within (services/scheduling).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The OpenCompass process group of the current attempt, so a successor on the same host can stop it.
    run_pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Last progress event (engine ProgressEvent.to_dict()) and a counter bumped on every change, which
    # pollers and WebSockets use to notice updates.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # Copied out of `progress` so that lists never read the (possibly large) JSON.
    stage: Mapped[str | None] = mapped_column(String(20), nullable=True)
    fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pairs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    run_dir_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    artifacts_stored: Mapped[bool] = mapped_column(Boolean, default=False)
    # LLM-as-judge (migration 0008): the model that judges free-form answers and its prompt's language (auto, en,
    # zh). A judging model cannot be deleted, like an evaluated one.
    judge_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), nullable=True,
                                                       index=True)
    judge_prompt_language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # The scorer of its uploaded question-answer datasets instead of each dataset's own (a re-score); NULL: theirs.
    scorer: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The finished evaluation whose predictions this one scores again without inference. A plain id: ids are never
    # reused, so "re-scored from #N" stays true after #N is deleted.
    rescored_from_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    # Continuous evaluation (services/schedules.py, migration 0015): the schedule whose run this is (or whose baseline
    # and gate rules `aieval submit --schedule` asked for), and its gate's verdict once it succeeded: the status
    # (enums.GateStatus, a plain column so lists show it without reading the JSON) and the result per rule.
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id", ondelete="SET NULL"), nullable=True,
                                                    index=True)
    gate_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    judge_model: Mapped[Model | None] = relationship(foreign_keys=[judge_model_id])
    models: Mapped[list[EvaluationModel]] = relationship(
        back_populates="evaluation", cascade="all, delete-orphan", order_by="EvaluationModel.position"
    )
    datasets: Mapped[list[EvaluationDataset]] = relationship(
        back_populates="evaluation", cascade="all, delete-orphan", order_by="EvaluationDataset.position"
    )
    scores: Mapped[list[Score]] = relationship(back_populates="evaluation", cascade="all, delete-orphan")


class Schedule(Owned, Base):
    """A saved evaluation request run on a cron expression (services/schedules.py, migration 0015). Each run is an
    ordinary evaluation of the schedule's owner, linked by Evaluation.schedule_id; the tick claims a due schedule by
    moving `next_run_at` on with a compare-and-set, so two ticks never submit the same occurrence twice."""

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_enabled_next_run", "enabled", "next_run_at"),
        {"sqlite_autoincrement": True},  # see NEVER_REUSED_IDS
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The body of POST /evaluations (schemas.api.EvaluationCreate, validated with it) that each run submits.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str | None] = mapped_column(String(120), nullable=True)  # NULL: runs on new model versions only
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # an IANA name; the cron is read in it
    trigger: Mapped[str] = mapped_column(String(20), default="cron")  # enums.ScheduleTrigger (migration 0016)
    # The served versions of its endpoint models as last seen (services/model_versions.py: canonical JSON, compared
    # as text by the compare-and-set that submits a run when it changes) and when the endpoints were last asked.
    model_version: Mapped[str | None] = mapped_column(Text, nullable=True)
    version_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # NULL while disabled
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Plain ids, not foreign keys: ids are never reused, so "last run #N" stays true after #N is deleted.
    last_evaluation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    baseline_evaluation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last run could not be submitted
    # [{kind: "no_significant_drop", alpha} | {kind: "min_score", dataset, metric?, threshold}] (schemas.schedules)
    gate_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class EvaluationPart(Base):
    """One part of a job fanned out over the worker pool (services/fanout.py, migration 0013): some of the job's
    models, run as an engine run of their own in `<job dir>/parts/<position>`. Claimed, beaten and recovered like an
    evaluation (the same columns); the evaluation keeps the job's status and, once every part is done, the merged
    results."""

    __tablename__ = "evaluation_parts"
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # What the part runs (fanout.part_what): {"models": display names, "datasets": spec dataset indexes or null for
    # all, "shard": one index range of one dataset or null}; rows written before parts had datasets: the names only.
    models: Mapped[dict[str, Any] | list[str]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(50))  # "local" for a checkpoint, "api" for endpoints
    # queued | running | one of the terminal evaluation statuses
    status: Mapped[str] = mapped_column(String(20), default=EvaluationStatus.queued.value)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_pgid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EvaluationModel(Base):
    __tablename__ = "evaluation_models"
    # "Evaluations of model M" is answered from this index alone (filters, counts, compare).
    __table_args__ = (Index("ix_evaluation_models_model_evaluation", "model_id", "evaluation_id"),)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # The abbreviation OpenCompass used (known after the run starts): joins scores and samples.
    abbr: Mapped[str | None] = mapped_column(String(200), nullable=True)
    evaluation: Mapped[Evaluation] = relationship(back_populates="models")
    model: Mapped[Model] = relationship()


class EvaluationDataset(Base):
    __tablename__ = "evaluation_datasets"
    __table_args__ = (Index("ix_evaluation_datasets_dataset_evaluation", "dataset_id", "evaluation_id"),)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    evaluation: Mapped[Evaluation] = relationship(back_populates="datasets")
    dataset: Mapped[Dataset] = relationship()


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = {"sqlite_autoincrement": True}  # see NEVER_REUSED_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True, index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), nullable=True, index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    dataset_name: Mapped[str] = mapped_column(String(200))
    model_abbr: Mapped[str] = mapped_column(String(200))
    dataset_abbr: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    # What the value rests on (services/provenance.py); NULL for scores stored before migration 0006, and for a
    # value that is not the share of right answers (correct, CI), or whose samples could not be read.
    n: Mapped[int | None] = mapped_column(Integer, nullable=True)  # samples scored
    correct: Mapped[int | None] = mapped_column(Integer, nullable=True)  # right answers, for proportions
    scorer: Mapped[str | None] = mapped_column(String(200), nullable=True)  # "exact", "contains", evaluator class
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)  # 95 % interval, in the value's unit
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Comparability (services/provenance.py, migration 0007): two scores are put side by side only when these
    # match. A short hash of `fingerprint_parts`, the readable settings it covers (data, limit, prompt, scorer,
    # output-length override, OpenCompass version); NULL for scores stored before they were recorded.
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fingerprint_parts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Latency and tokens per answer of the model on this dataset (aieval_engine.sample_metrics.summarize, migration
    # 0009); NULL when not recorded (local models, scores stored before it was recorded).
    speed: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    evaluation: Mapped[Evaluation] = relationship(back_populates="scores")


class User(Base):
    """An account (only used with AIEVAL_AUTH_ENABLED; services/accounts.py)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("oidc_issuer", "oidc_subject"),
        {"sqlite_autoincrement": True},  # see NEVER_REUSED_IDS
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored lower-case (services/accounts.normalize_username), so the unique constraint is case-insensitive.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # argon2id, in the PHC string format (parameters and salt included); never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default=UserRole.member.value)  # one of enums.UserRole
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Accounts made by single sign-on: the provider's issuer and subject ("" password hash: no password sign-in).
    oidc_issuer: Mapped[str | None] = mapped_column(String(500), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Quotas; NULL: the installation's default (Settings.default_max_active_evaluations / _max_stored_bytes).
    max_active_evaluations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuthSession(Base):
    """A signed-in browser (or CLI). The id is the SHA-256 of the random session token; the token itself is only
    in the client's cookie, so a copy of the database signs no one in."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Sent back in X-CSRF-Token by state-changing requests; alone it grants nothing (the session token is needed).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user: Mapped[User] = relationship()


class ApiToken(Base):
    """A personal API token for scripts and CI (services/tokens.py). Only the SHA-256 of the token is kept; the
    token is shown once, when it is made."""

    __tablename__ = "api_tokens"
    __table_args__ = {"sqlite_autoincrement": True}  # see NEVER_REUSED_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token's first characters, shown in lists so a user can tell tokens apart (never enough to use one).
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(10))  # enums.TokenScope
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who did what to what, and when (services/audit.py). Names are copied, so an event still reads right after
    its actor or target is deleted."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_target", "target_type", "target_id"),
        {"sqlite_autoincrement": True},  # see NEVER_REUSED_IDS
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
                                                 index=True)
    actor_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(30))  # enums.AuditAction
    target_type: Mapped[str] = mapped_column(String(20))  # enums.AuditTarget
    target_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class NotificationChannel(Base):
    """Where a user's evaluation outcomes are sent (services/notifications.py, migration 0014): a generic webhook
    or a chat robot. The URL and the signing secret are stored encrypted like model API keys (keyring.py): a chat
    robot's URL carries its access token, so the API shows only `url_hint` and whether a secret is set. owner_id
    NULL: the local user's (sign-in off), like the evaluations it is told about."""

    __tablename__ = "notification_channels"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused, as NEVER_REUSED_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True,
                                                 index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # enums.NotificationKind
    url_encrypted: Mapped[str] = mapped_column(Text)
    url_hint: Mapped[str] = mapped_column(String(300))  # scheme, host and the last characters: "https://h/…k3y"
    secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # enums.NotificationEvent values subscribed to
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class NotificationDelivery(Base):
    """One notification to one channel and how its delivery went, so a user can see whether it arrived. The message
    is built when the event happens (`payload`) and sent as it was then, however often it is retried. The
    evaluation is a plain id (ids are never reused): the log outlives a deleted evaluation."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        # The sweeper's question: which pending deliveries are overdue (services/notifications.resume_overdue).
        Index("ix_notification_deliveries_status_next", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True)
    evaluation_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    event: Mapped[str] = mapped_column(String(30))  # enums.NotificationEvent
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # enums.DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # never holds the URL or the secret
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the receiver's last HTTP status
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    channel: Mapped[NotificationChannel] = relationship()
