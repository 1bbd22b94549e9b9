"""Sign-in, sign-out, self-registration, who am I, own password (services/accounts.py; docs/SECURITY.md "Accounts
and sign-in").

`public` holds the routes that need no session (POST /auth/login, POST /auth/register); `router`'s routes are
behind the caller dependency that main.create_app puts on every API router (GET /auth/me answers 401 "sign in
first" without a session, which is what the UI asks to decide whether to show the sign-in page).

Sign-ins (also failed ones), sign-outs, password changes and registrations go to the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from ..config import Settings
from ..enums import AuditAction, AuditTarget, UserRole
from ..schemas.api import AuthState, CallerRead, LoginRequest, PasswordChange, UserRead
from ..schemas.registration import RegistrationRequest
from ..services import accounts, audit
from ..services.accounts import Caller
from ..services.errors import Conflict, Forbidden, RateLimited, Unauthorized
from .deps import (
    SESSION_COOKIE,
    CurrentUser,
    SessionDep,
    SettingsDep,
    address_dep,
    client_address,
    session_token,
)
from .users import user_read


def set_session_cookie(response: Response, request: Request, settings: Settings, token: str) -> None:
    """The cookie of a new session, for every way of signing in (password here, single sign-on in routers/sso.py)."""
    response.set_cookie(SESSION_COOKIE, token, max_age=int(settings.session_ttl_s), path="/", httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")

public = APIRouter(tags=["auth"], dependencies=[Depends(address_dep)])
router = APIRouter(tags=["auth"])

SIGN_IN_OFF = "sign-in is off on this server (AIEVAL_AUTH_ENABLED=false)"
SELF_REGISTRATION_OFF = "self-registration is off; ask an administrator for an account"


def auth_state(caller: Caller, auth_enabled: bool) -> AuthState:
    user = CallerRead(id=caller.user_id, username=caller.username, display_name=caller.display_name,
                      role=caller.role, is_local=caller.is_local, sso=caller.sso)
    return AuthState(user=user, auth_enabled=auth_enabled, csrf_token=caller.csrf_token)


def _throttle(request: Request, settings) -> tuple[accounts.LoginThrottle, str]:
    return accounts.LoginThrottle.of(request.app.state, settings), client_address(request) or "unknown"


def _check_throttle(throttle: accounts.LoginThrottle, username: str, address: str) -> None:
    try:
        throttle.check(username, address)
    except RateLimited as exc:
        raise HTTPException(429, exc.message, headers={"Retry-After": str(exc.retry_after_s)}) from None


@public.post("/auth/login", responses={401: {"description": "wrong username or password"},
                                       429: {"description": "too many failed sign-ins (see Retry-After)"}})
def login(body: LoginRequest, request: Request, response: Response, session: SessionDep,
          settings: SettingsDep) -> AuthState:
    """Sign in: sets the `aieval_session` cookie (HttpOnly, SameSite=Lax, Secure over https) and returns the
    CSRF token to send as X-CSRF-Token. Wrong password, unknown user and disabled account get the same 401."""
    if not settings.auth_enabled:
        raise Conflict(f"{SIGN_IN_OFF}: no need to sign in")
    throttle, address = _throttle(request, settings)
    _check_throttle(throttle, body.username, address)
    try:
        user = accounts.authenticate(session, body.username, body.password)
    except Unauthorized:
        throttle.failed(body.username, address)
        # The name tried (it may be no account at all); committed before the 401 rolls the request back.
        audit.record_as(session, None, accounts.normalize_username(body.username), AuditAction.sign_in_failed,
                        AuditTarget.session, None)
        session.commit()
        raise
    throttle.succeeded(body.username)
    new = accounts.start_session(session, user, settings)
    audit.record(session, new.caller, AuditAction.signed_in, AuditTarget.session, None, None, {"method": "password"})
    set_session_cookie(response, request, settings, new.token)
    return auth_state(new.caller, True)


@public.post("/auth/register", status_code=201,
             responses={403: {"description": "self-registration is off"},
                        409: {"description": "the username is taken, or sign-in is off"},
                        429: {"description": "too many attempts from this address (see Retry-After)"}})
def register(body: RegistrationRequest, request: Request, session: SessionDep, settings: SettingsDep) -> UserRead:
    """Make yourself a member account, when the administrators allow it (AIEVAL_SELF_REGISTRATION); then sign
    in. Every attempt counts against the sign-in limit of the client's address."""
    if not settings.auth_enabled:
        raise Conflict(f"{SIGN_IN_OFF}: there are no accounts to register")
    if not settings.self_registration:
        raise Forbidden(SELF_REGISTRATION_OFF)
    throttle, address = _throttle(request, settings)
    _check_throttle(throttle, body.username, address)
    # Counted whether it succeeds or not: it bounds both the accounts one address can make and how fast it can
    # probe for taken usernames.
    throttle.failed(body.username, address)
    user = accounts.create_user(session, body.username, body.password, UserRole.member, body.display_name)
    audit.record_as(session, user.id, user.username, AuditAction.created, AuditTarget.user, user.id, user.username,
                    {"role": user.role, "self_registered": True})
    return user_read(user)


@router.get("/auth/me", responses={401: {"description": "sign-in is on and this request has no valid session"}})
def me(caller: CurrentUser, settings: SettingsDep) -> AuthState:
    """Who is signed in, whether sign-in is on, and the CSRF token of this session."""
    return auth_state(caller, settings.auth_enabled)


@router.post("/auth/logout", status_code=204)
def logout(request: Request, caller: CurrentUser, session: SessionDep) -> Response:
    """Sign out: the session is revoked on the server and the cookie cleared."""
    if caller.session_id is not None:
        accounts.revoke_session(session, caller.session_id)
        audit.record(session, caller, AuditAction.signed_out, AuditTarget.session, None)
    response = Response(status_code=204)
    if session_token(request)[1]:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                               secure=request.url.scheme == "https")
    return response


@router.post("/auth/password", status_code=204,
             responses={403: {"description": "the current password is wrong"},
                        429: {"description": "too many wrong passwords for this account (see Retry-After)"}})
def change_password(body: PasswordChange, request: Request, caller: CurrentUser, session: SessionDep,
                    settings: SettingsDep) -> Response:
    """Change your own password; your other sessions (other browsers, the CLI) are signed out. Wrong current
    passwords count against the account's sign-in limit, so a stolen session cannot guess the password."""
    if caller.is_local:
        raise Conflict(f"{SIGN_IN_OFF}: the local user has no password")
    throttle, address = _throttle(request, settings)
    _check_throttle(throttle, caller.username, address)
    try:
        accounts.change_own_password(session, caller, body.current_password, body.new_password)
    except Forbidden:
        throttle.failed(caller.username, address)
        raise
    throttle.succeeded(caller.username)
    audit.record(session, caller, AuditAction.password_changed, AuditTarget.user, caller.user_id, caller.username)
    return Response(status_code=204)
