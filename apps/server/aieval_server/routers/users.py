"""Account management, for administrators only (services/accounts.py)."""

from __future__ import annotations

from fastapi import APIRouter

from ..schemas.api import UserCreate, UserRead, UserUpdate
from ..schemas.ids import DatabaseId
from ..services import accounts
from .deps import AdminUser, SessionDep

router = APIRouter(tags=["users"], responses={403: {"description": "only administrators may do this"}})


@router.get("/users")
def list_users(_admin: AdminUser, session: SessionDep) -> list[UserRead]:
    return [UserRead.model_validate(user, from_attributes=True) for user in accounts.list_users(session)]


@router.post("/users", status_code=201)
def create_user(body: UserCreate, _admin: AdminUser, session: SessionDep) -> UserRead:
    """A new account; the password must be at least 12 characters long."""
    user = accounts.create_user(session, body.username, body.password, body.role, body.display_name)
    return UserRead.model_validate(user, from_attributes=True)


@router.patch("/users/{user_id}")
def update_user(user_id: DatabaseId, body: UserUpdate, _admin: AdminUser, session: SessionDep) -> UserRead:
    """Change role, name, password or disable the account. Disabling, a new password or losing the admin role
    signs the user out everywhere. The last active administrator cannot be disabled or demoted (409)."""
    user = accounts.update_user(session, user_id, role=body.role, disabled=body.disabled, password=body.password,
                                display_name=body.display_name)
    return UserRead.model_validate(user, from_attributes=True)
