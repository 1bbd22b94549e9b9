"""Notifications: a user's channels, `notify` (the one way anything sends one), and delivery with retries.

- Channels belong to a user (the local user with sign-in off) and hear about that user's evaluations. The URL and the
  signing secret are encrypted like model API keys (keyring.py); the API shows a hint of the URL and whether a secret
  is set, never either of them, and neither ever appears in a log line or a delivery's error.
- `notify(session, evaluation, event, details)` writes one delivery per enabled channel subscribed to the event, in
  the caller's transaction; the deliveries are sent once that transaction commits, in a background thread each, so
  whoever calls it (the worker recording an outcome, a gate) never waits for a receiver.
  `outcome_recorded` is what the worker calls after writing an evaluation's final status (services/run_recorder.py).
- Each attempt goes through the outbound policy (aieval_engine/netpolicy.py: the receiver's name is resolved and every
  address checked when connecting, redirects not followed), like a model's URL. A receiver that answers 5xx, 408,
  425, 429 or cannot be reached is tried again after `DeliveryRetries.wait_after`; another refusal ends it at once.
- A delivery's row is the truth: every attempt is claimed by one conditional UPDATE of its attempt count, so a
  process that dies between attempts leaves a pending row whose next attempt is overdue, and the worker's sweeper
  (`resume_overdue`) takes it up; two takers never send the same attempt twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event as orm_events
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aieval_engine.netpolicy import OutboundPolicyError, check_url_form, guarded_client, literal_address

from .. import keyring
from ..config import Settings, get_settings
from ..db import session_scope
from ..enums import (
    SIGNED_NOTIFICATION_KINDS,
    AuditAction,
    AuditTarget,
    DeliveryStatus,
    EvaluationStatus,
    NotificationEvent,
    NotificationKind,
)
from ..models import Evaluation, NotificationChannel, NotificationDelivery, Score
from ..schemas.notifications import ChannelCreate, ChannelRead, ChannelTestResult, ChannelUpdate, DeliveryRead
from . import access, audit
from . import notification_formats as formats
from .accounts import Caller
from .errors import Invalid, NotFound
from .evaluations import utcnow

log = logging.getLogger(__name__)

# The event an evaluation's final status is; a cancelled one is not announced (someone asked for it).
EVENT_OF_STATUS = {
    EvaluationStatus.succeeded: NotificationEvent.evaluation_succeeded,
    EvaluationStatus.failed: NotificationEvent.evaluation_failed,
    EvaluationStatus.timeout: NotificationEvent.evaluation_failed,
}
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
SCORES_IN_MESSAGE = 20  # the webhook's summary; the detail page has them all
ERROR_IN_MESSAGE = 500
# A pending delivery whose next attempt is this much overdue has lost its thread (its process ended): the sweeper
# takes it up. Also how long past an attempt's timeout a claim holds before it counts as lost.
OVERDUE_AFTER_S = 30.0
MAX_CHANNELS_PER_USER = 50
HINT_TAIL = 4

# httpx logs every request's URL at INFO, and a chat robot's URL carries its access token: no such line while this
# thread sends a notification (a filter on httpx's own logger, which is where those lines are made).
_sending_notification: ContextVar[bool] = ContextVar("aieval_sending_notification", default=False)


class _WithoutNotificationRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _sending_notification.get()


logging.getLogger("httpx").addFilter(_WithoutNotificationRequests())


# ---- the retry policy -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryRetries:
    """`attempts` tries of one notification, waiting `first_wait_s`, then `factor` times longer after each failure
    (at most `max_wait_s`). Exponential, unlike db/outages.py's linear steps: a receiver that is down is usually down
    for a while, and a chat service's rate limit wants us to back off."""

    attempts: int
    first_wait_s: float
    max_wait_s: float
    factor: float = 4.0

    def wait_after(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1, 2, ...)."""
        return min(self.first_wait_s * self.factor ** (failures - 1), self.max_wait_s)

    @classmethod
    def of(cls, settings: Settings) -> DeliveryRetries:
        return cls(settings.notification_attempts, settings.notification_retry_wait_s,
                   settings.notification_retry_max_wait_s)


# ---- channels -----------------------------------------------------------------------------------------------------
def url_hint(url: str) -> str:
    """Enough of a URL to recognise it, not enough to use it: a chat robot's token is in its path or query."""
    parsed = httpx.URL(url)
    rest = url.split(parsed.netloc.decode("ascii"), 1)[-1].lstrip("/")
    tail = rest[-HINT_TAIL:] if len(rest) >= 4 * HINT_TAIL else ""
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}/…{tail}"


def _check_url(settings: Settings, url: str) -> list[str]:
    """What is wrong with a receiver's URL, found without any DNS lookup (names are checked at every connection)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        return [f"url: not a URL ({exc})"]
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return ["url: must be an http:// or https:// address with a host, e.g. https://open.feishu.cn/open-apis/bot/v2/hook/…"]
    try:
        check_url_form(url)
    except OutboundPolicyError as exc:
        return [f"url: {exc}"]
    literal = literal_address(parsed.host)
    reason = settings.outbound_policy.refusal(literal) if literal is not None else None
    if reason:
        return [f"url: refused by the outbound policy: {literal} is {reason}"]
    return []


def _check_secret(kind: NotificationKind, secret: str | None) -> list[str]:
    if secret and kind not in SIGNED_NOTIFICATION_KINDS:
        return [f"secret: {kind.value} messages are not signed (the URL itself is the secret); leave it empty"]
    return []


def _owner_clause(caller_or_owner_id: int | None):
    if caller_or_owner_id is None:
        return NotificationChannel.owner_id.is_(None)
    return NotificationChannel.owner_id == caller_or_owner_id


def to_read(channel: NotificationChannel) -> ChannelRead:
    return ChannelRead(id=channel.id, name=channel.name, kind=channel.kind, url_hint=channel.url_hint,
                       secret_set=channel.secret_encrypted is not None,
                       events=[e for e in channel.events or [] if e in NotificationEvent.__members__],
                       enabled=channel.enabled, created_at=channel.created_at, updated_at=channel.updated_at)


def list_channels(session: Session, caller: Caller) -> list[NotificationChannel]:
    """The caller's own channels (administrators' too: a channel tells its owner about the owner's evaluations)."""
    return list(session.scalars(select(NotificationChannel).where(_owner_clause(caller.user_id))
                                .order_by(NotificationChannel.name, NotificationChannel.id)))


def get_channel(session: Session, caller: Caller, channel_id: int) -> NotificationChannel:
    """The channel if it is the caller's (or the caller administers); NotFound otherwise, as if there were none."""
    channel = session.get(NotificationChannel, channel_id)
    if channel is None or not (caller.is_admin or channel.owner_id == caller.user_id):
        raise NotFound(f"notification channel {channel_id} does not exist")
    return channel


def create_channel(session: Session, settings: Settings, body: ChannelCreate, caller: Caller) -> NotificationChannel:
    access.require_member(caller)
    secret = body.secret.get_secret_value() if body.secret is not None else ""
    problems = _check_url(settings, body.url) + _check_secret(body.kind, secret)
    if problems:
        raise Invalid("this notification channel cannot be saved", problems)
    count = len(list_channels(session, caller))
    if count >= MAX_CHANNELS_PER_USER:
        raise Invalid(f"you have {count} notification channels, the most one user may have; delete one first")
    channel = NotificationChannel(owner_id=caller.user_id, name=body.name, kind=body.kind.value,
                                  url_encrypted=keyring.encrypt(settings, body.url), url_hint=url_hint(body.url),
                                  secret_encrypted=keyring.encrypt(settings, secret) if secret else None,
                                  events=[e.value for e in body.events], enabled=body.enabled)
    session.add(channel)
    session.flush()
    audit.record(session, caller, AuditAction.created, AuditTarget.notification_channel, channel.id, channel.name,
                 {"kind": channel.kind, "events": channel.events})
    return channel


def update_channel(session: Session, settings: Settings, channel_id: int, body: ChannelUpdate,
                   caller: Caller) -> NotificationChannel:
    channel = get_channel(session, caller, channel_id)
    kind = body.kind or NotificationKind(channel.kind)
    secret = body.secret.get_secret_value() if body.secret is not None else ""
    problems = _check_url(settings, body.url) if body.url is not None else []
    keeps_secret = channel.secret_encrypted is not None and not body.clear_secret
    problems += _check_secret(kind, secret or ("(stored)" if keeps_secret else ""))
    if problems:
        raise Invalid("this notification channel cannot be saved", problems)
    if body.name is not None:
        channel.name = body.name
    channel.kind = kind.value
    if body.url is not None:
        channel.url_encrypted, channel.url_hint = keyring.encrypt(settings, body.url), url_hint(body.url)
    if body.clear_secret:
        channel.secret_encrypted = None
    if secret:
        channel.secret_encrypted = keyring.encrypt(settings, secret)
    if body.events is not None:
        channel.events = [e.value for e in body.events]
    if body.enabled is not None:
        channel.enabled = body.enabled
    channel.updated_at = utcnow()
    session.flush()
    audit.record(session, caller, AuditAction.updated, AuditTarget.notification_channel, channel.id, channel.name,
                 {"fields": sorted(body.model_fields_set)})  # which fields, never their values
    return channel


def delete_channel(session: Session, channel_id: int, caller: Caller) -> None:
    channel = get_channel(session, caller, channel_id)
    audit.record(session, caller, AuditAction.deleted, AuditTarget.notification_channel, channel.id, channel.name)
    session.delete(channel)  # its delivery log goes with it (ON DELETE CASCADE)
    session.flush()


def list_deliveries(session: Session, caller: Caller, channel_id: int | None = None,
                    limit: int = 50) -> list[DeliveryRead]:
    """The newest deliveries to the caller's channels (one channel's when `channel_id` is given)."""
    query = (select(NotificationDelivery, NotificationChannel.name).join(NotificationChannel)
             .order_by(NotificationDelivery.id.desc()).limit(limit))
    if channel_id is not None:
        get_channel(session, caller, channel_id)
        query = query.where(NotificationDelivery.channel_id == channel_id)
    else:
        query = query.where(_owner_clause(caller.user_id))
    return [DeliveryRead(
        id=row.id, channel_id=row.channel_id, channel_name=name, evaluation_id=row.evaluation_id,
        evaluation_name=((row.payload or {}).get("evaluation") or {}).get("name"), event=row.event, status=row.status,
        attempts=row.attempts, last_error=row.last_error, response_status=row.response_status,
        created_at=row.created_at, last_attempt_at=row.last_attempt_at,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.pending else None,
        finished_at=row.finished_at) for row, name in session.execute(query)]


# ---- notify: the one entry point ----------------------------------------------------------------------------------
def evaluation_url(settings: Settings, evaluation_id: int) -> str:
    return f"{(settings.public_url or DEFAULT_PUBLIC_URL).rstrip('/')}/evaluations/{evaluation_id}"


def message(settings: Settings, session: Session, evaluation: Evaluation, event: NotificationEvent,
            details: dict[str, Any] | None) -> dict[str, Any]:
    """The message every channel gets for this event (notification_formats renders it per kind)."""
    scores = list(session.scalars(select(Score).where(Score.evaluation_id == evaluation.id).order_by(Score.id)))
    error = evaluation.error[:ERROR_IN_MESSAGE] if evaluation.error else None
    return {
        "event": event.value,
        "evaluation": {
            "id": evaluation.id, "name": evaluation.name, "status": evaluation.status,
            "url": evaluation_url(settings, evaluation.id), "error": error,
            "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
            "scores": [{"model": s.model_name, "dataset": s.dataset_name, "metric": s.metric, "value": s.value}
                       for s in scores[:SCORES_IN_MESSAGE]],
            "scores_total": len(scores),
        },
        # Whatever the caller passed, as JSON (a gate's verdict: {"summary": "...", ...}).
        "details": json.loads(json.dumps(details, default=str)) if details else None,
    }


def notify(session: Session, evaluation: Evaluation, event: NotificationEvent | str,
           details: dict[str, Any] | None = None, *, settings: Settings | None = None) -> list[int]:
    """Tell the evaluation owner's channels subscribed to `event` about it. Writes the deliveries in `session` (the
    caller commits); they are sent after that commit, in the background. Returns the deliveries' ids.

    `details` travels with the message (a dict of JSON values; a "summary" string is shown in chat messages): the
    gate code passes its verdict with NotificationEvent.gate_failed."""
    event = NotificationEvent(event)
    settings = settings or get_settings()
    channels = [channel for channel in session.scalars(
        select(NotificationChannel).where(_owner_clause(evaluation.owner_id), NotificationChannel.enabled.is_(True))
        .order_by(NotificationChannel.id)) if event.value in (channel.events or [])]
    if not channels:
        return []
    payload = message(settings, session, evaluation, event, details)
    now = utcnow()
    rows = [NotificationDelivery(channel_id=channel.id, evaluation_id=evaluation.id, event=event.value,
                                 payload=payload, status=DeliveryStatus.pending.value, attempts=0,
                                 next_attempt_at=now, created_at=now) for channel in channels]
    session.add_all(rows)
    session.flush()
    ids = [row.id for row in rows]
    orm_events.listen(session, "after_commit", lambda _session: start_delivery(settings, ids), once=True)
    return ids


def outcome_recorded(settings: Settings, evaluation_id: int, status: str) -> list[int]:
    """What the worker calls once an evaluation's final status is written (services/run_recorder.py). Never raises:
    the outcome is recorded whatever happens here."""
    try:
        event = EVENT_OF_STATUS.get(EvaluationStatus(status))
        if event is None:
            return []
        with session_scope(settings.database_url) as session:
            evaluation = session.get(Evaluation, evaluation_id)
            return notify(session, evaluation, event, settings=settings) if evaluation is not None else []
    except Exception as exc:  # a notification never costs an evaluation its outcome
        log.warning("evaluation %s: notifications not queued (%s: %s)", evaluation_id, type(exc).__name__, exc)
        return []


# ---- sending ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    retryable: bool
    status_code: int | None = None
    response: str | None = None
    error: str | None = None
    latency_ms: float | None = None


def _redact(text: str | None, *secrets: str | None) -> str | None:
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text


def send_once(settings: Settings, kind: str, url: str, secret: str | None, payload: dict[str, Any],
              delivery_id: int | None) -> AttemptResult:
    """One POST to the receiver, through the outbound policy; what it answered. Errors name the URL's hint only."""
    request = formats.build_request(kind, url, secret, payload, delivery_id, now=time.time())
    hint = url_hint(url)
    query = httpx.URL(url).query.decode()
    started = time.perf_counter()
    quiet = _sending_notification.set(True)
    try:
        check_url_form(request.url)
        with guarded_client(settings.outbound_policy, timeout=settings.notification_timeout_s) as client:
            response = client.post(request.url, content=request.body, headers=request.headers)
    except OutboundPolicyError as exc:
        return AttemptResult(False, False, error=_redact(f"{exc} (tried {hint})", url, query, secret))
    except httpx.HTTPError as exc:
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"{type(exc).__name__}: {exc}"
        return AttemptResult(False, True, error=_redact(f"{what} (tried {hint})", url, query, secret))
    finally:
        _sending_notification.reset(quiet)
    latency = (time.perf_counter() - started) * 1000
    verdict = formats.judge_answer(kind, response.status_code, response.text)
    return AttemptResult(verdict.ok, verdict.retryable, response.status_code,
                         _redact(response.text.strip()[:500], url, query, secret) or None,
                         _redact(verdict.error, url, query, secret), latency)


def start_delivery(settings: Settings, delivery_ids: list[int]) -> None:
    """Send these deliveries in the background, a thread each (a slow receiver holds up no other)."""
    for delivery_id in delivery_ids:
        threading.Thread(target=_deliver_logged, args=(settings, delivery_id), daemon=True,
                         name=f"notification-{delivery_id}").start()


def _deliver_logged(settings: Settings, delivery_id: int) -> None:
    try:
        deliver(settings, delivery_id)
    except Exception as exc:  # e.g. the database went away: the sweeper takes the delivery up once it is overdue
        log.warning("notification delivery %s interrupted (%s: %s)", delivery_id, type(exc).__name__, exc)


def deliver(settings: Settings, delivery_id: int) -> str | None:
    """Every remaining attempt of one delivery, waiting between them; its final status (None: another process took
    it over, or there is nothing to send)."""
    retries = DeliveryRetries.of(settings)
    while True:
        claimed = _claim(settings, delivery_id)
        if claimed is None:
            return None
        attempt, outcome = claimed
        status, wait = _record(settings, delivery_id, attempt, outcome, retries)
        if wait is None:
            return status
        time.sleep(wait)


def _claim(settings: Settings, delivery_id: int) -> tuple[int, AttemptResult] | None:
    """Take the next attempt of a pending delivery (one conditional UPDATE) and make it; None when it is not pending
    any more or another process took this attempt."""
    with session_scope(settings.database_url) as session:
        row = session.get(NotificationDelivery, delivery_id)
        if row is None or row.status != DeliveryStatus.pending.value:
            return None
        attempt = row.attempts + 1
        now = utcnow()
        taken = session.execute(
            update(NotificationDelivery)
            # Due, too: a claim moves next_attempt_at past the attempt's timeout, so while one process sends, a
            # sweeper that read the row after that claim cannot take the next attempt and send it a second time.
            .where(NotificationDelivery.id == delivery_id, NotificationDelivery.status == DeliveryStatus.pending.value,
                   NotificationDelivery.attempts == row.attempts, NotificationDelivery.next_attempt_at <= now)
            .values(attempts=attempt, last_attempt_at=now,
                    next_attempt_at=now + timedelta(seconds=settings.notification_timeout_s + OVERDUE_AFTER_S))
            .execution_options(synchronize_session=False)).rowcount
        if not taken:
            return None
        channel, payload = row.channel, row.payload
        kind, enabled, url_encrypted, secret_encrypted = (channel.kind, channel.enabled, channel.url_encrypted,
                                                          channel.secret_encrypted)
    if not enabled:
        return attempt, AttemptResult(False, False, error="the channel was turned off before this was sent")
    try:
        url = keyring.decrypt(settings, url_encrypted)
        secret = keyring.decrypt(settings, secret_encrypted) if secret_encrypted else None
    except keyring.SecretKeyError as exc:
        return attempt, AttemptResult(False, False, error=str(exc))
    return attempt, send_once(settings, kind, url, secret, payload, delivery_id)


def _record(settings: Settings, delivery_id: int, attempt: int, outcome: AttemptResult,
            retries: DeliveryRetries) -> tuple[str, float | None]:
    """Write how the attempt went; (the delivery's status, seconds until its next attempt or None: it is over)."""
    now = utcnow()
    values: dict[str, Any] = {"response_status": outcome.status_code, "last_error": outcome.error}
    wait = None
    if outcome.ok:
        status = DeliveryStatus.delivered
        values.update(last_error=None, finished_at=now, next_attempt_at=None)
    elif outcome.retryable and attempt < retries.attempts:
        status, wait = DeliveryStatus.pending, retries.wait_after(attempt)
        values.update(next_attempt_at=now + timedelta(seconds=wait))
    else:
        status = DeliveryStatus.failed
        values.update(finished_at=now, next_attempt_at=None)
        if outcome.retryable:
            values["last_error"] = f"{outcome.error} (gave up after {attempt} attempts)"
    with session_scope(settings.database_url) as session:
        written = session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == delivery_id, NotificationDelivery.attempts == attempt,
                   NotificationDelivery.status == DeliveryStatus.pending.value)
            .values(status=status.value, **values).execution_options(synchronize_session=False)).rowcount
    if not written:
        return status.value, None  # deleted with its channel, or taken over meanwhile
    if status is DeliveryStatus.failed:
        log.warning("notification delivery %s failed: %s", delivery_id, values["last_error"])
    return status.value, wait


def resume_overdue(settings: Settings, limit: int = 100) -> list[int]:
    """Start the deliveries whose next attempt is overdue: their process ended between two attempts (the worker's
    sweeper calls this). Their claims decide who sends when several sweepers find the same one."""
    cutoff = utcnow() - timedelta(seconds=OVERDUE_AFTER_S)
    with session_scope(settings.database_url) as session:
        overdue = list(session.scalars(
            select(NotificationDelivery.id).where(NotificationDelivery.status == DeliveryStatus.pending.value,
                                                  NotificationDelivery.next_attempt_at < cutoff)
            .order_by(NotificationDelivery.id).limit(limit)))
    start_delivery(settings, overdue)
    return overdue


# ---- the channel's test button ------------------------------------------------------------------------------------
def test_channel(session: Session, settings: Settings, channel_id: int, caller: Caller) -> ChannelTestResult:
    """Send one test message now (not retried) and report the receiver's answer; logged like any delivery."""
    channel = get_channel(session, caller, channel_id)
    kind, name = channel.kind, channel.name
    url = keyring.decrypt(settings, channel.url_encrypted)
    secret = keyring.decrypt(settings, channel.secret_encrypted) if channel.secret_encrypted else None
    payload = {"event": NotificationEvent.test.value, "evaluation": None, "details": {"channel": name}}
    started = utcnow()
    session.close()  # no database connection held while the receiver takes its time
    outcome = send_once(settings, kind, url, secret, payload, None)
    row = NotificationDelivery(
        channel_id=channel_id, evaluation_id=None, event=NotificationEvent.test.value, payload=payload,
        status=(DeliveryStatus.delivered if outcome.ok else DeliveryStatus.failed).value, attempts=1,
        response_status=outcome.status_code, last_error=outcome.error, created_at=started, last_attempt_at=started,
        finished_at=utcnow())
    session.add(row)
    session.flush()
    return ChannelTestResult(ok=outcome.ok, status_code=outcome.status_code, response=outcome.response,
                             error=outcome.error, latency_ms=outcome.latency_ms, delivery_id=row.id)
