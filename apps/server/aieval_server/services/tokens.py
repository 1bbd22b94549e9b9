"""Personal API tokens for scripts and CI (issue 9; docs/SECURITY.md "Personal API tokens").

- A token is `aiev_` + 32 random bytes (secrets.token_urlsafe), shown once when it is made; the database keeps
  its SHA-256 (api_tokens.token_hash) and its first characters (`prefix`, to tell tokens apart in a list).
- Sent as `Authorization: Bearer aiev_...` (routers/deps.caller_dep). Looking a token up is one query on the
  unique hash joined with its user; the answer is kept in a per-process cache for Settings.session_cache_ttl_s,
  like sessions, so a request with a cached token costs no database round trip. `last_used_at` is written at
  most once a minute per token.
- Revoking, or disabling the user (routers/users.py forgets the user's cached tokens), refuses the token at once
  in this process and within the cache's lifetime in the others.
- Scope `read`: GET/HEAD only; `run`: whatever the owner's role allows. No token may manage tokens, accounts or
  the password (TOKEN_REFUSED_PATHS): a leaked CI token cannot make itself permanent or take the account over."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..enums import AuditAction, AuditTarget, TokenScope, UserRole
from ..models import ApiToken, User
from ..models.tables import utcnow
from . import audit
from .accounts import LAST_SEEN_PRECISION, Caller, CallerCache, token_hash
from .errors import Conflict, NotFound

TOKEN_PREFIX = "aiev_"
SHOWN_PREFIX_LENGTH = 12  # "aiev_" and 7 random characters: enough to tell tokens apart, far from enough to use
MAX_ACTIVE_TOKENS = 100  # per user; a script that makes a token per run should revoke the old ones
# Said for an unknown, expired or revoked token and a disabled owner alike: the answer does not tell whether a
# guessed token exists.
TOKEN_NOT_VALID = ("this API token is not valid (unknown, expired or revoked); make a new one on the tokens page, "
                   "or sign in")
READ_SCOPE_METHODS = frozenset({"GET", "HEAD"})
READ_ONLY = "this token may only read (scope read); make a token with scope run"
# Relative to the API prefix; a path equal to one of these or below it.
TOKEN_REFUSED_PATHS = ("/tokens", "/auth/password", "/users")
NOT_WITH_A_TOKEN = ("API tokens may not manage tokens, accounts or passwords; sign in with your password for "
                    "that")


@dataclass
class NewToken:
    secret: str  # shown once, to its owner, in the answer to POST /tokens
    row: ApiToken


def is_api_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)


def is_active(row: ApiToken, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def _active_clause(now: datetime):
    return ApiToken.revoked_at.is_(None), or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)


# ---- managing tokens ------------------------------------------------------------------------------------------
def _require_account(caller: Caller) -> int:
    if caller.user_id is None:
        raise Conflict("sign-in is off on this server (AIEVAL_AUTH_ENABLED=false): API tokens are not needed")
    return caller.user_id


def list_tokens(session: Session, caller: Caller) -> list[ApiToken]:
    """The caller's own tokens, newest first (revoked and expired ones too, so a user sees what stopped working)."""
    user_id = _require_account(caller)
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id)
                                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))


def create_token(session: Session, caller: Caller, name: str, scope: TokenScope,
                 expires_in_days: int | None) -> NewToken:
    user_id = _require_account(caller)
    now = utcnow()
    active = session.scalar(select(func.count()).select_from(ApiToken)
                            .where(ApiToken.user_id == user_id, *_active_clause(now))) or 0
    if active >= MAX_ACTIVE_TOKENS:
        raise Conflict(f"you have {active} active API tokens, the most allowed is {MAX_ACTIVE_TOKENS}; revoke the "
                       "ones you no longer use")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
    row = ApiToken(user_id=user_id, name=name, token_hash=token_hash(secret), prefix=secret[:SHOWN_PREFIX_LENGTH],
                   scope=TokenScope(scope).value, created_at=now, expires_at=expires_at)
    session.add(row)
    session.flush()
    audit.record(session, caller, AuditAction.created, AuditTarget.token, row.id, row.name,
                 {"scope": row.scope, "expires_at": expires_at.isoformat() if expires_at else None})
    return NewToken(secret, row)


def revoke_token(session: Session, caller: Caller, token_id: int) -> None:
    """Revoke one's own token (administrators: anyone's). Someone else's token answers 404, as if it did not
    exist. Revoking a revoked token changes nothing."""
    user_id = _require_account(caller)
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != user_id and not caller.is_admin):
        raise NotFound(f"API token {token_id} not found")
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    detail = None if row.user_id == user_id else {"owner_id": row.user_id}
    audit.record(session, caller, AuditAction.revoked, AuditTarget.token, row.id, row.name, detail)
    session.flush()
    TOKEN_CACHE.forget_where(lambda _key, caller: caller.token_id == row.id)


# ---- authenticating with a token ------------------------------------------------------------------------------
def _caller(row: ApiToken, user: User) -> Caller:
    return Caller(user_id=user.id, username=user.username, display_name=user.display_name, role=UserRole(user.role),
                  expires_at=row.expires_at, token_id=row.id, token_scope=TokenScope(row.scope))


def cached_token(settings: Settings, secret: str) -> Caller | None:
    """The caller from this process' token cache (no database), or None: not cached, or expired meanwhile."""
    cached = TOKEN_CACHE.get(token_hash(secret), settings.session_cache_ttl_s)
    if cached is None or (cached.expires_at is not None and cached.expires_at <= utcnow()):
        return None
    return cached


def lookup_token(settings: Settings, secret: str) -> Caller | None:
    """The caller a token belongs to, or None (unknown, expired, revoked, disabled user): one query on the unique
    hash per cache miss, and an update of last_used_at at most once a minute."""
    cached = cached_token(settings, secret)
    if cached is not None:
        return cached
    hashed = token_hash(secret)
    now = utcnow()
    with session_scope(settings.database_url) as session:
        found = session.execute(
            select(ApiToken, User).join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == hashed, *_active_clause(now), User.disabled.is_(False))
        ).first()
        if found is None:
            return None
        row, user = found
        caller = _caller(row, user)
        if row.last_used_at is None or now - row.last_used_at > LAST_SEEN_PRECISION:
            row.last_used_at = now
    TOKEN_CACHE.put(hashed, caller)
    return caller


def refusal(caller: Caller, method: str | None, api_path: str) -> str | None:
    """Why a request signed in with an API token may not go ahead (a 403 message), or None. `method` is None
    for a WebSocket (which only reads); `api_path` is the path after the API prefix."""
    if caller.token_id is None:
        return None
    if any(api_path == path or api_path.startswith(path + "/") for path in TOKEN_REFUSED_PATHS):
        return NOT_WITH_A_TOKEN
    if caller.token_scope is TokenScope.read and method is not None and method not in READ_SCOPE_METHODS:
        return READ_ONLY
    return None


# Looked-up tokens, keyed by the token's hash (see the module docstring).
TOKEN_CACHE = CallerCache()
