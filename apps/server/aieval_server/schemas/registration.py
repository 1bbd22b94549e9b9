"""Self-registration (POST /auth/register, only with AIEVAL_SELF_REGISTRATION)."""

from __future__ import annotations

from pydantic import Field

from .api import WithPasswords


class RegistrationRequest(WithPasswords):
    username: str = Field(max_length=200, description="stored lower-case; letters, digits, '.', '_', '-'")
    password: str = Field(max_length=1024, description="at least 12 characters")
    display_name: str | None = Field(default=None, max_length=200)
