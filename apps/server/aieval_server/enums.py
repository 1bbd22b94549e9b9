"""The server's vocabularies, defined once. The OpenAPI schema carries them as enums, so the web UI's generated
client has the same names and its compiler notices when one is added here."""

from __future__ import annotations

from enum import Enum


class EvaluationStatus(str, Enum):
    """Where an evaluation is: waiting (queued), on a worker (running), or finished (succeeded, failed, cancelled,
    timeout: stopped after its params.timeout_s)."""

    # Member names equal their values: a member compares, hashes and is stored exactly like its plain string.

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"

    def __str__(self) -> str:  # "queued", not "EvaluationStatus.queued", in messages and f-strings
        return self.value

    __format__ = str.__format__


# Nothing changes any more without a request (retry); the live feeds stop following such a job.
TERMINAL: frozenset[EvaluationStatus] = frozenset({
    EvaluationStatus.succeeded, EvaluationStatus.failed, EvaluationStatus.cancelled, EvaluationStatus.timeout,
})
# Waiting for or held by a worker: cancel applies, delete does not (a running job is cancelled first).
ACTIVE: frozenset[EvaluationStatus] = frozenset(EvaluationStatus) - TERMINAL
CANCELLABLE: frozenset[EvaluationStatus] = ACTIVE
# Finished without a full result: queued again, its worker resumes from the predictions already made. A
# succeeded job is not retried (its results would be replaced by the same ones).
RETRYABLE: frozenset[EvaluationStatus] = frozenset({
    EvaluationStatus.failed, EvaluationStatus.cancelled, EvaluationStatus.timeout,
})


class UserRole(str, Enum):
    """What an account may do. admin: everything, including managing accounts; member: work with models,
    datasets and evaluations; viewer: read shared work only (services/access.py)."""

    admin = "admin"
    member = "member"
    viewer = "viewer"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Visibility(str, Enum):
    """Who may read a model, dataset or evaluation: its owner (and administrators) only, or every signed-in user.
    Changing or deleting it stays with its owner and administrators either way (services/access.py)."""

    private = "private"
    shared = "shared"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class TokenScope(str, Enum):
    """What a personal API token may do. read: GET requests only; run: everything its owner's role allows except
    managing accounts and tokens (a leaked CI token cannot mint more tokens or change a password)."""

    read = "read"
    run = "run"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class AuditAction(str, Enum):
    """What an audit event records (services/audit.py). The target says on what: model, dataset, evaluation,
    user, token or session."""

    created = "created"
    updated = "updated"
    deleted = "deleted"
    submitted = "submitted"
    cancelled = "cancelled"
    retried = "retried"
    signed_in = "signed_in"
    signed_out = "signed_out"
    sign_in_failed = "sign_in_failed"
    password_changed = "password_changed"
    revoked = "revoked"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class AuditTarget(str, Enum):
    model = "model"
    dataset = "dataset"
    evaluation = "evaluation"
    user = "user"
    token = "token"
    session = "session"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
