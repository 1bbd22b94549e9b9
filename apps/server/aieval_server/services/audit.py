"""The audit log (issue 9): who created, ran, cancelled, changed and deleted what, who signed in and out, and
when. Read by administrators (GET /api/v1/audit, routers/audit.py).

`record` adds the event to the caller's own transaction: it is stored exactly when the change it describes is,
and a refused request leaves no event of a change that did not happen. Names are copied into the event, so it
still reads right after its actor or target is deleted. `detail` holds which fields changed and their new plain
values, never a password, token or other secret.

The client address comes from the `request_address` context variable, which routers/deps.py sets for every API
request (the routes run in a copy of the request's context, so it is visible there)."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..enums import AuditAction, AuditTarget
from ..models import AuditEvent
from .accounts import Caller

request_address: ContextVar[str | None] = ContextVar("audit_request_address", default=None)

# Column widths of audit_events (models/tables.AuditEvent): longer names are cut, not refused, so that a long
# username tried at the sign-in form is still recorded.
ACTOR_NAME_LENGTH = 64
TARGET_NAME_LENGTH = 200
ADDRESS_LENGTH = 64


def record(session: Session, caller: Caller, action: AuditAction, target: AuditTarget, target_id: int | None,
           target_name: str | None = None, detail: dict | None = None) -> None:
    """An event done by `caller`, in the caller's transaction (no commit here)."""
    record_as(session, caller.user_id, caller.username, action, target, target_id, target_name, detail)


def record_as(session: Session, actor_id: int | None, actor_name: str, action: AuditAction, target: AuditTarget,
              target_id: int | None, target_name: str | None = None, detail: dict | None = None) -> None:
    """`record` for an actor that is no signed-in caller: a failed sign-in (the username that was tried, no id),
    a new account registering itself, the `aieval create-admin` command."""
    address = request_address.get()
    session.add(AuditEvent(
        actor_id=actor_id, actor_name=actor_name[:ACTOR_NAME_LENGTH], action=AuditAction(action).value,
        target_type=AuditTarget(target).value, target_id=target_id,
        target_name=target_name[:TARGET_NAME_LENGTH] if target_name is not None else None, detail=detail or None,
        address=address[:ADDRESS_LENGTH] if address else None))


def list_events(session: Session, *, actor_id: int | None = None, action: AuditAction | None = None,
                target_type: AuditTarget | None = None, target_id: int | None = None, since: datetime | None = None,
                until: datetime | None = None, page: int = 1, page_size: int = 50) -> tuple[list[AuditEvent], int]:
    """One page of events, newest first, and how many match. `since` is inclusive, `until` exclusive."""
    conditions = []
    if actor_id is not None:
        conditions.append(AuditEvent.actor_id == actor_id)
    if action is not None:
        conditions.append(AuditEvent.action == AuditAction(action).value)
    if target_type is not None:
        conditions.append(AuditEvent.target_type == AuditTarget(target_type).value)
    if target_id is not None:
        conditions.append(AuditEvent.target_id == target_id)
    if since is not None:
        conditions.append(AuditEvent.at >= since)
    if until is not None:
        conditions.append(AuditEvent.at < until)
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
    # id breaks ties: events of one transaction share a timestamp on a coarse clock.
    rows = session.scalars(select(AuditEvent).where(*conditions).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                           .offset((page - 1) * page_size).limit(page_size))
    return list(rows), total


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """{field: new value} for the fields whose value differs (for an `updated` event's detail)."""
    return {field: value for field, value in after.items() if before.get(field) != value}
