"""The server's vocabularies, defined once. The OpenAPI schema carries them as enums, so the web UI's generated
client has the same names and its compiler notices when one is added here."""

from __future__ import annotations

from enum import StrEnum


class EvaluationStatus(StrEnum):
    """Where an evaluation is: waiting (queued), on a worker (running), or finished (succeeded, failed, cancelled,
    timeout: stopped after its params.timeout_s)."""

    # StrEnum: a member compares, hashes, prints and is stored exactly like its plain string (member names equal
    # their values).

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"


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


class UserRole(StrEnum):
    """What an account may do. admin: everything, including managing accounts; member: work with models,
    datasets and evaluations; viewer: read shared work only (services/access.py)."""

    admin = "admin"
    member = "member"
    viewer = "viewer"


class Visibility(StrEnum):
    """Who may read a model, dataset or evaluation: its owner (and administrators) only, or every signed-in user.
    Changing or deleting it stays with its owner and administrators either way (services/access.py)."""

    private = "private"
    shared = "shared"


class TokenScope(StrEnum):
    """What a personal API token may do. read: GET requests only; run: everything its owner's role allows except
    managing accounts and tokens (a leaked CI token cannot mint more tokens or change a password)."""

    read = "read"
    run = "run"


class AuditAction(StrEnum):
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


class AuditTarget(StrEnum):
    model = "model"
    dataset = "dataset"
    evaluation = "evaluation"
    user = "user"
    token = "token"
    session = "session"


class SsoErrorCode(StrEnum):
    """Why a single sign-on did not sign anyone in: the `sso_error` the sign-in page receives and explains."""

    off = "off"  # single sign-on is not configured on this server
    unreachable = "unreachable"  # the provider could not be reached or answered nonsense
    denied = "denied"  # the person (or the provider) refused the sign-in
    provider = "provider"  # the provider answered the authorization request with another error
    expired = "expired"  # no flow cookie, or older than FLOW_TTL_S
    state = "state"  # the flow cookie or the state does not match: a forged or mixed-up callback
    token = "token"  # the code exchange failed
    id_token = "id_token"  # the ID token is invalid (signature, issuer, audience, expiry, nonce)
    disabled = "disabled"  # the account is disabled
