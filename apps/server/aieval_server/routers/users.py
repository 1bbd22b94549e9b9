"""Account management, for administrators only (services/accounts.py). Every change goes to the audit log: which
fields changed and their new values, never a password (only that it was set)."""

from __future__ import annotations

from fastapi import APIRouter

from ..enums import AuditAction, AuditTarget
from ..models import User
from ..models.tables import utcnow
from ..schemas.api import UserCreate, UserRead, UserUpdate
from ..schemas.ids import DatabaseId
from ..services import accounts, audit, tokens
from .deps import AdminUser, SessionDep

router = APIRouter(tags=["users"], responses={403: {"description": "only administrators may do this"}})

BACK_TO_DEFAULT = -1  # UserUpdate's quota value for "the installation's default" (NULL in the table)
QUOTA_FIELDS = ("max_active_evaluations", "max_stored_bytes")


def user_read(user: User) -> UserRead:
    return UserRead(id=user.id, username=user.username, display_name=user.display_name, role=user.role,
                    disabled=user.disabled, sso=user.oidc_subject is not None,
                    max_active_evaluations=user.max_active_evaluations, max_stored_bytes=user.max_stored_bytes,
                    created_at=user.created_at, updated_at=user.updated_at)


def _audited_fields(user: User) -> dict:
    return {"role": user.role, "disabled": user.disabled, "display_name": user.display_name,
            **{field: getattr(user, field) for field in QUOTA_FIELDS}}


@router.get("/users")
def list_users(_admin: AdminUser, session: SessionDep) -> list[UserRead]:
    return [user_read(user) for user in accounts.list_users(session)]


@router.post("/users", status_code=201)
def create_user(body: UserCreate, admin: AdminUser, session: SessionDep) -> UserRead:
    """A new account; the password must be at least 12 characters long."""
    user = accounts.create_user(session, body.username, body.password, body.role, body.display_name)
    audit.record(session, admin, AuditAction.created, AuditTarget.user, user.id, user.username, {"role": user.role})
    return user_read(user)


@router.patch("/users/{user_id}")
def update_user(user_id: DatabaseId, body: UserUpdate, admin: AdminUser, session: SessionDep) -> UserRead:
    """Change role, name, password, quotas or disable the account. Disabling, a new password or losing the admin
    role signs the user out everywhere (the user's API tokens stop working while the account is disabled). The
    last active administrator cannot be disabled or demoted (409)."""
    before = _audited_fields(accounts.get_user(session, user_id))
    user = accounts.update_user(session, user_id, role=body.role, disabled=body.disabled, password=body.password,
                                display_name=body.display_name)
    for field in QUOTA_FIELDS:
        value = getattr(body, field)
        if value is not None:
            setattr(user, field, None if value == BACK_TO_DEFAULT else value)
            user.updated_at = utcnow()
    tokens.TOKEN_CACHE.forget_user(user.id)  # disabled, or a new role or name: at once in this process
    detail = audit.changed_fields(before, _audited_fields(user))
    if body.password is not None:
        detail["password"] = "set"  # that it changed, never the password
    if detail:
        audit.record(session, admin, AuditAction.updated, AuditTarget.user, user.id, user.username, detail)
    session.flush()
    return user_read(user)
