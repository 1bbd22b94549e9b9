"""Per-user quotas (issue 9): how many evaluations one account may have queued or running at once, and how many
bytes of datasets it may store.

A user's own limit (users.max_active_evaluations / users.max_stored_bytes) wins; NULL there means the
installation's default (Settings.default_max_active_evaluations / default_max_stored_bytes); 0 means no limit.
Administrators and the local user of the embedded default have no limit.

The checks count in the caller's transaction. On PostgreSQL the user's row is locked first, so two requests of the
same user are counted one after the other and cannot both take the last free place; SQLite has one writer at a
time, which keeps the overshoot to requests that counted before either committed (at most a handful)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..enums import ACTIVE
from ..models import Dataset, Evaluation, User
from .accounts import Caller
from .errors import Forbidden, RateLimited

# A 429's Retry-After: an evaluation takes minutes, asking again every minute is often enough.
SUBMIT_RETRY_AFTER_S = 60
ASK_TO_RAISE = "ask an administrator to raise it"


def effective_limits(settings: Settings, user: User | None) -> tuple[int | None, int | None]:
    """(max active evaluations, max stored bytes) for `user`; None means no limit."""

    def limit(own: int | None, default: int) -> int | None:
        value = default if own is None else own
        return value if value > 0 else None

    if user is None:
        return (limit(None, settings.default_max_active_evaluations),
                limit(None, settings.default_max_stored_bytes))
    return (limit(user.max_active_evaluations, settings.default_max_active_evaluations),
            limit(user.max_stored_bytes, settings.default_max_stored_bytes))


def active_evaluations(session: Session, user_id: int) -> int:
    """Evaluations the user owns that are queued or running."""
    return session.scalar(select(func.count()).select_from(Evaluation).where(
        Evaluation.owner_id == user_id, Evaluation.status.in_([status.value for status in ACTIVE]))) or 0


def stored_bytes(session: Session, user_id: int) -> int:
    """Bytes of the datasets the user owns (as uploaded)."""
    return session.scalar(select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.owner_id == user_id)) or 0


def _limited_user(session: Session, caller: Caller) -> User | None:
    """The caller's account, locked for this transaction on PostgreSQL; None when no limit applies."""
    if caller.is_local or caller.is_admin or caller.user_id is None:
        return None
    return session.scalar(select(User).where(User.id == caller.user_id).with_for_update())


def check_can_submit(session: Session, settings: Settings, caller: Caller) -> None:
    """Refuse (429) a new or retried evaluation while the caller already has their most at once."""
    user = _limited_user(session, caller)
    if user is None:
        return
    max_active, _ = effective_limits(settings, user)
    if max_active is None:
        return
    active = active_evaluations(session, user.id)
    if active >= max_active:
        raise RateLimited(
            f"you already have {active} evaluations queued or running, the most your account may have at once "
            f"(limit of active evaluations: {max_active}); wait until one finishes, cancel one, or {ASK_TO_RAISE}",
            retry_after_s=SUBMIT_RETRY_AFTER_S)


def check_storage(session: Session, settings: Settings, caller: Caller, incoming_bytes: int) -> None:
    """Refuse (403) storing `incoming_bytes` more when it would take the caller's datasets over their limit."""
    user = _limited_user(session, caller)
    if user is None:
        return
    _, max_bytes = effective_limits(settings, user)
    if max_bytes is None:
        return
    stored = stored_bytes(session, user.id)
    if stored + incoming_bytes > max_bytes:
        raise Forbidden(
            f"this file ({size_text(incoming_bytes)}) would bring your datasets to {size_text(stored + incoming_bytes)}, "
            f"over your storage limit of {size_text(max_bytes)} (you store {size_text(stored)} now); delete datasets "
            f"you no longer need, or {ASK_TO_RAISE}")


def size_text(count: int) -> str:
    """Bytes for a person: 1536 -> "1.5 KiB"."""
    if count < 1024:
        return f"{count} bytes"
    units = ("KiB", "MiB", "GiB", "TiB")
    value, unit = count / 1024, 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {units[unit]}"
