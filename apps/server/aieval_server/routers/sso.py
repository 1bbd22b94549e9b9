"""Single sign-on with OpenID Connect (services/oidc.py; docs/SECURITY.md "Single sign-on").

`public`: these routes need no session (they are how one gets a session). The browser navigates to them; apart
from GET /auth/sso they answer with redirects: to the provider, and back to the page the person came from, or to
/sign-in?sso_error=<code> when the sign-in failed (the sign-in page explains the code)."""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..db import session_scope
from ..enums import AuditAction, AuditTarget, SsoErrorCode
from ..schemas.sso import SsoState
from ..services import accounts, audit, oidc
from ..services.oidc import SsoError
from .auth import set_session_cookie
from .deps import SettingsDep, address_dep

log = logging.getLogger(__name__)

public = APIRouter(tags=["auth"], dependencies=[Depends(address_dep)])

FLOW_COOKIE = "aieval_sso_flow"
FLOW_COOKIE_PATH = "/api/v1/auth/sso"
SIGN_IN_PAGE = "/sign-in"


def _flow_cookie_options(request: Request) -> dict:
    # SameSite=Lax: the provider sends the browser back with a top-level GET, which carries Lax cookies.
    return {"path": FLOW_COOKIE_PATH, "httponly": True, "samesite": "lax", "secure": request.url.scheme == "https"}


def _to_sign_in_page(request: Request, code: SsoErrorCode) -> RedirectResponse:
    response = RedirectResponse(f"{SIGN_IN_PAGE}?{urlencode({'sso_error': code.value})}", status_code=302)
    response.delete_cookie(FLOW_COOKIE, **_flow_cookie_options(request))
    return response


@public.get("/auth/sso")
def sso_state(request: Request, settings: SettingsDep) -> SsoState:
    """Whether the sign-in page offers "Sign in with <display_name>", and where that button goes."""
    enabled = oidc.is_enabled(settings)
    return SsoState(enabled=enabled, display_name=settings.oidc_display_name,
                    login_url=request.url_for("sso_login").path if enabled else None)


@public.get("/auth/sso/login", status_code=302, name="sso_login",
            responses={302: {"description": "to the provider's sign-in page, or to /sign-in?sso_error=<code>"},
                       422: {"description": "next is not a path on this site"}})
async def sso_login(request: Request, settings: SettingsDep,
                    next: Annotated[str | None, Query(description="a path on this site to return to")] = None
                    ) -> RedirectResponse:
    """Start a single sign-on: to the provider, with a fresh state, nonce and PKCE challenge kept in a short-lived
    encrypted cookie."""
    next_path = oidc.safe_next(next)
    if not oidc.is_enabled(settings):
        return _to_sign_in_page(request, SsoErrorCode.off)
    provider = oidc.Provider.of(request.app.state, settings)
    try:
        url, flow = await run_in_threadpool(provider.begin, str(request.url_for("sso_callback")), next_path)
    except SsoError as exc:
        log.warning("single sign-on could not start: %s", exc.reason)
        return _to_sign_in_page(request, exc.code)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(FLOW_COOKIE, oidc.seal_flow(settings, flow), max_age=oidc.FLOW_TTL_S,
                        **_flow_cookie_options(request))
    return response


@public.get("/auth/sso/callback", status_code=302, name="sso_callback",
            responses={302: {"description": "signed in: to the page the sign-in began on; otherwise to "
                                            "/sign-in?sso_error=<code>"}})
def sso_callback(request: Request, settings: SettingsDep) -> RedirectResponse:
    """Where the provider sends the browser back: the code is exchanged and the ID token checked, the account is
    found (made at the first sign-in), and a session starts as with a password."""
    if not oidc.is_enabled(settings):
        return _to_sign_in_page(request, SsoErrorCode.off)
    try:
        flow = oidc.open_flow(settings, request.cookies.get(FLOW_COOKIE))
        claims = oidc.Provider.of(request.app.state, settings).finish(flow, dict(request.query_params))
    except SsoError as exc:
        log.warning("single sign-on refused (%s): %s", exc.code, exc.reason)
        return _to_sign_in_page(request, exc.code)
    with session_scope(settings.database_url) as session:
        user, created = oidc.find_or_create_user(session, settings, claims)
        if created:
            audit.record_as(session, user.id, user.username, AuditAction.created, AuditTarget.user, user.id,
                            user.username, {"role": user.role, "single_sign_on": True})
        if user.disabled:
            log.warning("single sign-on refused: the account %r is disabled", user.username)
            audit.record_as(session, user.id, user.username, AuditAction.sign_in_failed, AuditTarget.session, None,
                            None, {"method": "sso", "reason": SsoErrorCode.disabled.value})
            new = None
        else:
            new = accounts.start_session(session, user, settings)
            audit.record(session, new.caller, AuditAction.signed_in, AuditTarget.session, None, None,
                         {"method": "sso"})
    if new is None:
        return _to_sign_in_page(request, SsoErrorCode.disabled)
    response = RedirectResponse(flow.next, status_code=302)
    response.delete_cookie(FLOW_COOKIE, **_flow_cookie_options(request))
    set_session_cookie(response, request, settings, new.token)
    return response
