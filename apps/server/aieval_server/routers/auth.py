"""Sign-in, sign-out, who am I, own password (services/accounts.py; docs/SECURITY.md "Accounts and sign-in").

`public` holds the one route that needs no session (POST /auth/login); `router`'s routes are behind the caller
dependency that main.create_app puts on every API router (GET /auth/me answers 401 "sign in first" without a
session, which is what the UI asks to decide whether to show the sign-in page)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from ..schemas.api import AuthState, CallerRead, LoginRequest, PasswordChange
from ..services import accounts
from ..services.accounts import Caller
from ..services.errors import Conflict
from .deps import SESSION_COOKIE, CurrentUser, SessionDep, SettingsDep, session_token

public = APIRouter(tags=["auth"])
router = APIRouter(tags=["auth"])


def auth_state(caller: Caller, auth_enabled: bool) -> AuthState:
    user = CallerRead(id=caller.user_id, username=caller.username, display_name=caller.display_name,
                      role=caller.role, is_local=caller.is_local)
    return AuthState(user=user, auth_enabled=auth_enabled, csrf_token=caller.csrf_token)


@public.post("/auth/login", responses={401: {"description": "wrong username or password"},
                                       429: {"description": "too many failed sign-ins (see Retry-After)"}})
def login(body: LoginRequest, request: Request, response: Response, session: SessionDep,
          settings: SettingsDep) -> AuthState:
    """Sign in: sets the `aieval_session` cookie (HttpOnly, SameSite=Lax, Secure over https) and returns the
    CSRF token to send as X-CSRF-Token. Wrong password, unknown user and disabled account get the same 401."""
    if not settings.auth_enabled:
        raise Conflict("sign-in is off on this server (AIEVAL_AUTH_ENABLED=false): no need to sign in")
    throttle = accounts.LoginThrottle.of(request.app.state, settings)
    address = request.client.host if request.client else "unknown"
    try:
        throttle.check(body.username, address)
    except accounts.RateLimited as exc:
        raise HTTPException(429, exc.message, headers={"Retry-After": str(exc.retry_after_s)}) from None
    try:
        user = accounts.authenticate(session, body.username, body.password)
    except accounts.Unauthorized:
        throttle.failed(body.username, address)
        raise
    throttle.succeeded(body.username)
    new = accounts.start_session(session, user, settings)
    response.set_cookie(SESSION_COOKIE, new.token, max_age=int(settings.session_ttl_s), path="/", httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return auth_state(new.caller, True)


@router.get("/auth/me", responses={401: {"description": "sign-in is on and this request has no valid session"}})
def me(caller: CurrentUser, settings: SettingsDep) -> AuthState:
    """Who is signed in, whether sign-in is on, and the CSRF token of this session."""
    return auth_state(caller, settings.auth_enabled)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, caller: CurrentUser, session: SessionDep) -> Response:
    """Sign out: the session is revoked on the server and the cookie cleared."""
    if caller.session_id is not None:
        accounts.revoke_session(session, caller.session_id)
    response = Response(status_code=204)
    if session_token(request)[1]:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                               secure=request.url.scheme == "https")
    return response


@router.post("/auth/password", status_code=204)
def change_password(body: PasswordChange, caller: CurrentUser, session: SessionDep) -> Response:
    """Change your own password; your other sessions (other browsers, the CLI) are signed out."""
    if caller.is_local:
        raise Conflict("sign-in is off on this server (AIEVAL_AUTH_ENABLED=false): the local user has no password")
    accounts.change_own_password(session, caller, body.current_password, body.new_password)
    return Response(status_code=204)
