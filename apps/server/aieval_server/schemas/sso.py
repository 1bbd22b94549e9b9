"""Bodies of the single sign-on routes (routers/sso.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SsoState(BaseModel):
    """What the sign-in page needs to offer single sign-on."""

    enabled: bool = Field(description="single sign-on with OpenID Connect is configured and sign-in is on")
    display_name: str = Field(description='the provider\'s name for the button: "Sign in with <display_name>"')
    login_url: str | None = Field(description="where the browser goes to sign in (add ?next=/path to come back "
                                              "to that page); null when single sign-on is off")
