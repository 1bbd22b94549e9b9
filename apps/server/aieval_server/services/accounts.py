"""Accounts and sign-in (issue 9): users, password hashing, sessions and the sign-in rate limit.

- Passwords are hashed with argon2id (argon2-cffi's PasswordHasher and its default parameters); a hash made with
  older parameters is replaced at the next successful sign-in.
- A session token is 32 random bytes (secrets); the client keeps it in the `aieval_session` cookie, the database
  keeps its SHA-256 (sessions.id). Looking a session up is one query by primary key, and its result is kept in
  a short per-process cache (Settings.session_cache_ttl_s): a revocation in this process removes it at once,
  other API processes notice within the cache's lifetime.
- Failed sign-ins are counted per account and per client address in a sliding window, in memory: with several
  API processes each process counts on its own.

With AIEVAL_AUTH_ENABLED off every caller is LOCAL_CALLER, the single local user of the embedded default."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..enums import TokenScope, UserRole
from ..models import AuthSession, User
from ..models.tables import utcnow
from .errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthorized

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing cost grows with length; nobody types more
USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
USERNAME_RULE = ("1 to 64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit "
                 "(upper-case letters are taken as lower-case)")
WRONG_CREDENTIALS = "wrong username or password"
LAST_SEEN_PRECISION = timedelta(minutes=1)

_hasher = PasswordHasher()  # argon2id
# Verified against when the username is unknown, so that an unknown name takes as long as a wrong password.
_UNKNOWN_USER_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Caller:
    """Who makes a request: a signed-in user or, with sign-in off, the local user. `role` is what later
    increments check permissions against; `session_id`/`csrf_token` belong to the session that signed in."""

    user_id: int | None
    username: str
    display_name: str
    role: UserRole
    is_local: bool = False
    session_id: str | None = None  # sha256 of the token, never the token
    csrf_token: str | None = None
    expires_at: datetime | None = None
    # Set when a personal API token signed the request in (services/tokens.py): what the token may do.
    token_id: int | None = None
    token_scope: TokenScope | None = None
    sso: bool = False  # the account signs in through single sign-on: it has no password to change

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.admin


LOCAL_CALLER = Caller(user_id=None, username="local", display_name="Local user", role=UserRole.admin,
                      is_local=True)
# The server itself, for what it does at start (the demo model and datasets): owned by the installation.
SYSTEM_CALLER = Caller(user_id=None, username="system", display_name="System", role=UserRole.admin)


# ---- usernames and passwords --------------------------------------------------------------------------------
def normalize_username(value: str) -> str:
    return value.strip().lower()


def check_username(value: str) -> str:
    username = normalize_username(value)
    if not USERNAME.fullmatch(username):
        raise Invalid(f"the username must be {USERNAME_RULE}", [f"username: must be {USERNAME_RULE}"])
    return username


def check_password(password: str, field: str = "password") -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        problem = f"{field}: must be at least {MIN_PASSWORD_LENGTH} characters long"
        raise Invalid(f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters", [problem])
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Invalid(f"the password is too long: use at most {MAX_PASSWORD_LENGTH} characters",
                      [f"{field}: must be at most {MAX_PASSWORD_LENGTH} characters long"])
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- users ----------------------------------------------------------------------------------------------------
def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def create_user(session: Session, username: str, password: str, role: UserRole = UserRole.member,
                display_name: str | None = None) -> User:
    username = check_username(username)
    password_hash = hash_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"the username {username!r} is taken")
    user = User(username=username, display_name=(display_name or "").strip() or username,
                password_hash=password_hash, role=UserRole(role).value, disabled=False)
    session.add(user)
    session.flush()
    return user


def _active_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)
                          .where(User.role == UserRole.admin.value, User.disabled.is_(False))) or 0


def update_user(session: Session, user_id: int, *, role: UserRole | None = None, disabled: bool | None = None,
                password: str | None = None, display_name: str | None = None) -> User:
    """An administrator's change. Disabling, demoting or a new password signs the user out everywhere."""
    user = get_user(session, user_id)
    stays_admin = (role or user.role) == UserRole.admin and not (disabled if disabled is not None else user.disabled)
    if user.role == UserRole.admin and not user.disabled and not stays_admin and _active_admins(session) <= 1:
        raise Conflict("this is the last active administrator: make another user admin first")
    sign_out = False
    if password is not None:
        user.password_hash = hash_password(password)
        sign_out = True
    if role is not None and role.value != user.role:
        user.role = role.value
        sign_out = sign_out or role is not UserRole.admin
    if disabled is not None and disabled != user.disabled:
        user.disabled = disabled
        sign_out = sign_out or disabled
    if display_name is not None:
        user.display_name = display_name.strip() or user.username
    user.updated_at = utcnow()
    if sign_out:
        revoke_user_sessions(session, user.id)
    session.flush()
    SESSION_CACHE.forget_user(user.id)  # a role or name change shows at once in this process
    return user


def change_own_password(session: Session, caller: Caller, current_password: str, new_password: str) -> None:
    user = get_user(session, caller.user_id)
    if not _verify(user.password_hash, current_password):
        raise Forbidden("the current password is wrong", ["current_password: wrong password"])
    user.password_hash = hash_password(new_password)
    user.updated_at = utcnow()
    revoke_user_sessions(session, user.id, keep=caller.session_id)


def has_admin(settings: Settings) -> bool:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(User.id).where(User.role == UserRole.admin.value,
                                                    User.disabled.is_(False)).limit(1)) is not None


def ensure_initial_admin(settings: Settings) -> User | None:
    """AIEVAL_INITIAL_ADMIN_USERNAME/PASSWORD: create that admin when there is no admin yet (safe when several
    processes start together: the loser of the race finds the winner's row)."""
    if not settings.initial_admin_username or settings.initial_admin_password is None:
        return None
    password = settings.initial_admin_password.get_secret_value()
    with session_scope(settings.database_url) as session:
        if session.scalar(select(User.id).where(User.role == UserRole.admin.value)) is not None:
            return None
        try:
            user = create_user(session, settings.initial_admin_username, password, UserRole.admin)
        except Conflict:
            return None  # the name exists (not as admin): left as it is
        log.info("created the initial administrator %r (AIEVAL_INITIAL_ADMIN_USERNAME)", user.username)
        return user


# ---- sessions -------------------------------------------------------------------------------------------------
@dataclass
class NewSession:
    token: str  # for the cookie only
    caller: Caller


def authenticate(session: Session, username: str, password: str) -> User:
    """The user with this password; the same Unauthorized for an unknown name, a wrong password and a disabled
    account (and about the same time: an unknown name is verified against a dummy hash)."""
    user = session.scalar(select(User).where(User.username == normalize_username(username)))
    if user is None:
        _verify(_UNKNOWN_USER_HASH, password)
        raise Unauthorized(WRONG_CREDENTIALS)
    if not _verify(user.password_hash, password) or user.disabled:
        raise Unauthorized(WRONG_CREDENTIALS)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def start_session(session: Session, user: User, settings: Settings) -> NewSession:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = AuthSession(id=token_hash(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32), created_at=now,
                      expires_at=now + timedelta(seconds=settings.session_ttl_s), last_seen_at=now)
    session.add(row)
    session.flush()
    return NewSession(token, _caller(row, user))


def _caller(row: AuthSession, user: User) -> Caller:
    return Caller(user_id=user.id, username=user.username, display_name=user.display_name,
                  role=UserRole(user.role), session_id=row.id, csrf_token=row.csrf_token, expires_at=row.expires_at,
                  sso=user.oidc_subject is not None)


def revoke_session(session: Session, session_id: str) -> None:
    session.execute(update(AuthSession).where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    SESSION_CACHE.forget_where(lambda key, _caller: key == session_id)


def revoke_user_sessions(session: Session, user_id: int, keep: str | None = None) -> None:
    statement = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        statement = statement.where(AuthSession.id != keep)
    session.execute(statement.values(revoked_at=utcnow()))
    SESSION_CACHE.forget_user(user_id, keep=keep)


def cached_session(settings: Settings, token: str) -> Caller | None:
    """The caller from this process' session cache (no database), or None: not cached or expired."""
    cached = SESSION_CACHE.get(token_hash(token), settings.session_cache_ttl_s)
    return cached if cached is not None and cached.expires_at > utcnow() else None


def lookup_session(settings: Settings, token: str) -> Caller | None:
    """The caller a session token belongs to, or None (unknown, expired, revoked, disabled user). One query by
    primary key (sessions joined with users) per cache miss."""
    cached = cached_session(settings, token)
    if cached is not None:
        return cached
    session_id = token_hash(token)
    now = utcnow()
    with session_scope(settings.database_url) as session:
        found = session.execute(
            select(AuthSession, User).join(User, User.id == AuthSession.user_id)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None), AuthSession.expires_at > now,
                   User.disabled.is_(False))
        ).first()
        if found is None:
            return None
        row, user = found
        caller = _caller(row, user)
        if now - row.last_seen_at > LAST_SEEN_PRECISION:  # a write at most once a minute per session
            row.last_seen_at = now
    SESSION_CACHE.put(caller.session_id, caller)
    return caller


class CallerCache:
    """Looked-up callers of this process for a few seconds (see the module docstring), keyed by the SHA-256 of the
    secret that signed them in: one for sessions, one for personal API tokens (services/tokens.py)."""

    def __init__(self):
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, ttl_s: float) -> Caller | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > ttl_s:
            return None
        return entry[1]

    def put(self, key: str, caller: Caller) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # stale entries of expired caches: start over rather than grow
                self._entries.clear()
            self._entries[key] = (time.monotonic(), caller)

    def forget_where(self, matches: Callable[[str, Caller], bool]) -> None:
        with self._lock:
            for key, (_, caller) in list(self._entries.items()):
                if matches(key, caller):
                    del self._entries[key]

    def forget_user(self, user_id: int, keep: str | None = None) -> None:
        """After a change to the account (disabled, role, name, password): looked up again (`keep`: that one key)."""
        self.forget_where(lambda key, caller: caller.user_id == user_id and key != keep)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


SESSION_CACHE = CallerCache()


# ---- sign-in rate limit ---------------------------------------------------------------------------------------
class LoginThrottle:
    """Failed sign-ins in a sliding window, per account and per client address (in memory, per process)."""

    def __init__(self, settings: Settings):
        self.window_s = settings.login_failure_window_s
        self.limits = {"account": settings.login_failures_per_account,
                       "address": settings.login_failures_per_address}
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, app_state, settings: Settings) -> LoginThrottle:
        throttle = getattr(app_state, "login_throttle", None)
        if throttle is None:
            throttle = app_state.login_throttle = cls(settings)
        return throttle

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def check(self, username: str, address: str) -> None:
        """RateLimited (429, with the seconds until the next attempt is allowed) when either limit is reached."""
        now = time.monotonic()
        with self._lock:
            for key in (("account", normalize_username(username)), ("address", address)):
                failures = self._recent(key, now)
                if len(failures) >= self.limits[key[0]]:
                    retry_after = max(1, math.ceil(failures[-self.limits[key[0]]] + self.window_s - now))
                    raise RateLimited(f"too many failed sign-ins for this {key[0]}; try again in {retry_after} s",
                                      retry_after)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("account", normalize_username(username)), ("address", address)):
                self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # many distinct names or addresses: drop the idle ones
                for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[key]

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("account", normalize_username(username)), None)
