"""The audit log (services/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ..enums import AuditAction, AuditTarget


class AuditEventRead(BaseModel):
    id: int
    at: datetime
    actor_id: int | None = Field(description="null: no account (a failed sign-in, the local user, the CLI) or "
                                             "the account was deleted")
    actor_name: str = Field(description="the actor's username when it acted (for a failed sign-in: the name "
                                        "that was tried)")
    action: AuditAction
    target_type: AuditTarget
    target_id: int | None
    target_name: str | None
    detail: dict[str, Any] | None = Field(description="e.g. which fields changed and their new values; never "
                                                      "a secret")
    address: str | None = Field(description="the client's address, as the API process saw it")
