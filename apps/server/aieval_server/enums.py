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
    datasets and evaluations; viewer: read only (enforced from the next increment of issue 9 on)."""

    admin = "admin"
    member = "member"
    viewer = "viewer"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__
