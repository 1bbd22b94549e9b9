"""Personal API tokens (services/tokens.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ..enums import TokenScope


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, description="what the token is for, e.g. 'CI of repo X'")
    scope: TokenScope = Field(description="read: GET requests only; run: everything your role allows, except "
                                          "managing tokens, accounts and passwords")
    expires_in_days: int | None = Field(default=None, ge=1, le=366, description="null: never expires")


class TokenRead(BaseModel):
    """A token as listed: never the token itself (only its first characters, `prefix`)."""

    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    scope: TokenScope
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="to within a minute")
    revoked_at: datetime | None
    active: bool = Field(description="neither revoked nor expired")


class TokenCreated(TokenRead):
    token: str = Field(description="the token: shown this once, store it now (it cannot be shown again)")
