"""Who may see and change what: the one access policy for models, datasets and evaluations (issue 9).

- Administrators may read and change everything.
- Everyone signed in may read what is shared, and their own private things.
- Changing, deleting, cancelling and retrying is for the owner (members) and administrators. Viewers change
  nothing and create nothing.
- Rows without an owner (made with sign-in off, the demo, built-in benchmark configs) belong to the installation:
  readable as their visibility says, changed by administrators only.

Something a caller may not read answers 404, exactly as if it did not exist (ids of private work are not
revealed); something readable that the caller may not change answers 403."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, false, or_, true

from ..enums import UserRole, Visibility
from ..models.tables import Owned
from .accounts import Caller
from .errors import Forbidden, NotFound

# "mine": what the caller owns; "all": everything the caller may read.
ListScope = Literal["mine", "all"]
VIEWERS_READ_ONLY = "viewers may only read shared work; ask an administrator for the member role"

OwnedRow = TypeVar("OwnedRow", bound=Owned)


def may_read(caller: Caller, owner_id: int | None, visibility: str) -> bool:
    return (caller.is_admin or visibility == Visibility.shared.value
            or (owner_id is not None and owner_id == caller.user_id))


def may_change(caller: Caller, owner_id: int | None) -> bool:
    if caller.is_admin:
        return True
    return caller.role is UserRole.member and owner_id is not None and owner_id == caller.user_id


def can_read(caller: Caller, row: Owned) -> bool:
    return may_read(caller, row.owner_id, row.visibility)


def can_change(caller: Caller, row: Owned) -> bool:
    return may_change(caller, row.owner_id)


def readable(caller: Caller, row: OwnedRow | None, label: str, row_id: int) -> OwnedRow:
    """The row if the caller may read it; NotFound otherwise (also when there is no such row)."""
    if row is None or not can_read(caller, row):
        raise NotFound(f"{label} {row_id} does not exist")
    return row


def changeable(caller: Caller, row: OwnedRow | None, label: str, row_id: int) -> OwnedRow:
    """The row if the caller may change it; NotFound when it may not even read it, Forbidden otherwise."""
    readable(caller, row, label, row_id)
    if not can_change(caller, row):
        if caller.role is UserRole.viewer:
            raise Forbidden(VIEWERS_READ_ONLY)
        raise Forbidden(f"only the owner of {label} {row_id} or an administrator may change it")
    return row


def require_member(caller: Caller) -> None:
    """Creating anything (and starting runs) needs the member or admin role."""
    if caller.role is UserRole.viewer:
        raise Forbidden(VIEWERS_READ_ONLY)


def readable_clause(caller: Caller, table: type[Owned], scope: ListScope = "all") -> ColumnElement[bool]:
    """The SQL condition for the rows of `table` a list shows this caller."""
    if scope == "mine":
        return table.owner_id == caller.user_id if caller.user_id is not None else table.owner_id.is_(None)
    if caller.is_admin:
        return true()
    mine = table.owner_id == caller.user_id if caller.user_id is not None else false()
    return or_(table.visibility == Visibility.shared.value, mine)


def ownership(caller: Caller, visibility: Visibility | None, default: Visibility) -> dict[str, Any]:
    """Column values for a row the caller creates. Without an account (sign-in off) the row belongs to the
    installation and is shared unless the request says otherwise: once sign-in is turned on, what the team made
    before stays visible to it (as migration 0005 keeps older rows)."""
    if caller.user_id is None:
        default = Visibility.shared
    return {"owner_id": caller.user_id, "visibility": (visibility or default).value}


def owned_fields(caller: Caller, row: Owned) -> dict[str, Any]:
    """The OwnedRead fields of a row as this caller sees them."""
    owner = row.owner
    return {
        "owner": None if owner is None else {"id": owner.id, "username": owner.username,
                                             "display_name": owner.display_name},
        "visibility": row.visibility,
        "can_change": can_change(caller, row),
    }


def as_seen_by(caller: Caller, item: dict[str, Any]) -> dict[str, Any] | None:
    """A serialized OwnedRead (e.g. a summary in the live feed, read once for every socket) as this caller sees
    it: None when the caller may not read it, else with `can_change` for this caller."""
    owner_id = item["owner"]["id"] if item.get("owner") else None
    if not may_read(caller, owner_id, item["visibility"]):
        return None
    return {**item, "can_change": may_change(caller, owner_id)}
