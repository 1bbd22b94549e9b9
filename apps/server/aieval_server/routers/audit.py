"""The audit log, for administrators (services/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ..enums import AuditAction, AuditTarget
from ..schemas.api import Page
from ..schemas.audit import AuditEventRead
from ..schemas.ids import DatabaseId, PageNumber
from ..services import audit as service
from .deps import AdminUser, SessionDep

router = APIRouter(tags=["audit"], responses={403: {"description": "only administrators may do this"}})


@router.get("/audit")
def list_audit_events(_admin: AdminUser, session: SessionDep, actor_id: DatabaseId | None = None,
                      action: AuditAction | None = None, target_type: AuditTarget | None = None,
                      target_id: DatabaseId | None = None,
                      since: Annotated[datetime | None, Query(description="from this time on (inclusive)")] = None,
                      until: Annotated[datetime | None, Query(description="before this time (exclusive)")] = None,
                      page: PageNumber = 1, page_size: Annotated[int, Query(ge=1, le=200)] = 50
                      ) -> Page[AuditEventRead]:
    """Who did what to what, and when: newest first. A time without a zone is taken as UTC."""
    rows, total = service.list_events(session, actor_id=actor_id, action=action, target_type=target_type,
                                      target_id=target_id, since=since, until=until, page=page, page_size=page_size)
    return Page[AuditEventRead](items=[AuditEventRead.model_validate(row, from_attributes=True) for row in rows],
                                total=total, page=page, page_size=page_size)
