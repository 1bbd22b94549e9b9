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
    schedule = "schedule"
    data_package = "data_package"
    notification_channel = "notification_channel"  # 20 characters: the width of audit_events.target_type


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


class NotificationKind(StrEnum):
    """Where a notification channel sends (services/notification_formats.py): a generic JSON webhook (HMAC-signed
    when it has a secret), or the incoming-webhook robots of the chat tools teams use."""

    webhook = "webhook"
    feishu = "feishu"  # Feishu / Lark custom bot (optional signature: timestamp and sign in the body)
    dingtalk = "dingtalk"  # DingTalk custom robot (optional signature: timestamp and sign in the query)
    wecom = "wecom"  # WeCom (WeChat Work) group robot: the key is in the URL, no signature
    slack = "slack"  # Slack incoming webhook: the URL is the secret, no signature


# Kinds whose receiver verifies a signature made with the channel's secret; the others take none.
SIGNED_NOTIFICATION_KINDS: frozenset[NotificationKind] = frozenset({
    NotificationKind.webhook, NotificationKind.feishu, NotificationKind.dingtalk,
})


class NotificationEvent(StrEnum):
    """What a channel may be told about (services/notifications.notify)."""

    evaluation_succeeded = "evaluation_succeeded"
    evaluation_failed = "evaluation_failed"  # failed or stopped by its timeout
    gate_failed = "gate_failed"  # a run's gate against its baseline failed (continuous evaluation)
    test = "test"  # "send a test message" from the channel's page; never subscribed to


class DeliveryStatus(StrEnum):
    """Where one notification is: waiting for its next attempt (pending), received (delivered), or given up
    (failed: the receiver refused it, or every attempt failed)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class GateStatus(StrEnum):
    """A scheduled run's gate (services/gates.py): every rule held (passed), one did not (failed), or no rule could be
    checked (not_applicable: no baseline yet, nothing comparable). `aieval submit` exits 4 on failed."""

    passed = "passed"
    failed = "failed"
    not_applicable = "not_applicable"


class ScheduleTrigger(StrEnum):
    """When a schedule runs (services/schedules.py): on its cron expression (cron), or when an OpenAI-compatible
    endpoint among its models serves a new version of its model (new_model_version: GET {base_url}/models looked at
    every `schedule_version_check_s`; a cron is optional then, and runs it too)."""

    cron = "cron"
    new_model_version = "new_model_version"


class ModelVersionChange(StrEnum):
    """What a look at a schedule's endpoints found (services/model_versions.decide): the first version seen (recorded,
    no run), another version than the one recorded (a run), or the same."""

    first_seen = "first_seen"
    changed = "changed"
    unchanged = "unchanged"


class GateRuleKind(StrEnum):
    """What a gate rule checks. no_significant_drop: no dataset is significantly worse than in the baseline (the
    paired test of services/paired.py, Holm-corrected); min_score: a dataset's score is at least a threshold."""

    no_significant_drop = "no_significant_drop"
    min_score = "min_score"


class DataImportState(StrEnum):
    """Where an import of an OpenCompass data package is (services/data_packages.py): waiting for the API process's
    import thread, unpacking, done, or failed (the record says why; an import whose process stopped is failed)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class BenchmarkDataStatus(StrEnum):
    """Whether a built-in benchmark's data is on this server: for all its configs, some of them, or none."""

    ready = "ready"
    partial = "partial"
    missing = "missing"


class DemoModelState(StrEnum):
    """The demo model's checkpoint (GET /health, the UI's "being prepared" notice): converted and runnable (ready),
    being converted by a worker (preparing), not convertible here or its conversion failed (unavailable; the
    worker's log says why), or no demo model on this server (off: register_demo off, or outside the model roots)."""

    ready = "ready"
    preparing = "preparing"
    unavailable = "unavailable"
    off = "off"
