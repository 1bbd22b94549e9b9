"""Personal API tokens (services/tokens.py) through the API on SQLite: shown once and stored hashed, bearer
sign-in without CSRF, scopes, the routes no token may use, revocation, expiry, a disabled owner, the cache that
spares the database, last_used_at, self-registration and the password-change throttle."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from signed_in import sign_in
from sqlalchemy import event, select, update

ADMIN, ADMIN_PASSWORD = "root", "correct horse battery"
MEMBER, MEMBER_PASSWORD = "dev", "developer password"
TOKEN_NOT_VALID = ("this API token is not valid (unknown, expired or revoked); make a new one on the tokens page, "
                   "or sign in")
READ_ONLY = "this token may only read (scope read); make a token with scope run"
NOT_WITH_A_TOKEN = "API tokens may not manage tokens, accounts or passwords; sign in with your password for that"


@pytest.fixture
def auth_settings(settings):
    return settings.model_copy(update={
        "auth_enabled": True, "initial_admin_username": ADMIN, "initial_admin_password": SecretStr(ADMIN_PASSWORD),
        "login_failures_per_account": 3, "login_failures_per_address": 5,
    })


@pytest.fixture
def app(auth_settings):
    from aieval_server.main import create_app

    return create_app(auth_settings)


@pytest.fixture
def admin(app):
    with TestClient(app) as client:
        sign_in(client, ADMIN, ADMIN_PASSWORD)
        yield client


@pytest.fixture
def member(app, admin):
    """A signed-in member (made by the admin); its id is in member.user_id."""
    created = admin.post("/api/v1/users", json={"username": MEMBER, "password": MEMBER_PASSWORD, "role": "member"})
    assert created.status_code == 201, created.text
    with TestClient(app) as client:
        sign_in(client, MEMBER, MEMBER_PASSWORD)
        client.user_id = created.json()["id"]
        yield client


@pytest.fixture
def bearer(app):
    """bearer(token) -> a client that sends only `Authorization: Bearer <token>` (no cookie, no CSRF token)."""
    clients = []

    def make(token: str) -> TestClient:
        client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def new_token(client, scope: str = "run", name: str = "ci", **extra) -> dict:
    response = client.post("/api/v1/tokens", json={"name": name, "scope": scope, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def db_session(settings):
    from aieval_server.db import session_scope

    return session_scope(settings.database_url)


def forget_cached_tokens():
    from aieval_server.services.tokens import TOKEN_CACHE

    TOKEN_CACHE.clear()


def test_a_token_is_shown_once_and_only_its_hash_is_stored(member, auth_settings):
    from aieval_server.models import ApiToken

    created = new_token(member, "read", name="nightly CI", expires_in_days=30)
    secret = created["token"]
    assert secret.startswith("aiev_") and len(secret) == 5 + 43  # token_urlsafe(32): 43 characters
    assert created["name"] == "nightly CI" and created["scope"] == "read" and created["active"] is True
    assert created["prefix"] == secret[:12] and created["last_used_at"] is None and created["revoked_at"] is None
    listed = member.get("/api/v1/tokens")
    assert listed.status_code == 200 and secret not in listed.text and "token_hash" not in listed.text
    assert [t["id"] for t in listed.json()] == [created["id"]] and "token" not in listed.json()[0]
    with db_session(auth_settings) as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in {row.name, row.prefix, row.token_hash, row.scope}
        assert timedelta(days=29, hours=23) < row.expires_at - row.created_at <= timedelta(days=30)
    raw = (auth_settings.data_dir / "aieval.db").read_bytes()
    wal = auth_settings.data_dir / "aieval.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in raw


def test_a_bearer_token_signs_in_without_cookie_or_csrf_and_a_run_token_changes_things(member, bearer):
    client = bearer(new_token(member, "run")["token"])
    me = client.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["user"]["username"] == MEMBER and me.json()["csrf_token"] is None
    made = client.post("/api/v1/models", json={"name": "via-token", "kind": "openai",
                                               "base_url": "http://127.0.0.1:18999/v1", "model": "m"})
    assert made.status_code == 201, made.text
    assert client.post("/api/v1/auth/logout").status_code == 204  # a token has no session to end: no-op
    assert client.get("/api/v1/auth/me").status_code == 200


def test_a_read_token_only_reads(member, bearer):
    client = bearer(new_token(member, "read")["token"])
    assert client.get("/api/v1/models").status_code == 200
    for method, path, body in (("POST", "/api/v1/models", {"name": "x", "kind": "openai",
                                                          "base_url": "http://127.0.0.1:18999/v1", "model": "m"}),
                               ("POST", "/api/v1/auth/logout", None), ("PATCH", "/api/v1/models/1", {"name": "y"}),
                               ("DELETE", "/api/v1/models/1", None)):
        refused = client.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["detail"] == READ_ONLY
    assert member.get("/api/v1/models").json() == []  # nothing was made


def test_no_token_manages_tokens_accounts_or_passwords(admin, bearer):
    """Even an administrator's run token: a leaked CI token cannot mint more tokens, make accounts or change
    the password."""
    admins_token = new_token(admin, "run")
    client = bearer(admins_token["token"])
    assert client.get("/api/v1/auth/me").json()["user"]["role"] == "admin"
    for method, path, body in (("GET", "/api/v1/tokens", None),
                               ("POST", "/api/v1/tokens", {"name": "more", "scope": "run"}),
                               ("DELETE", f"/api/v1/tokens/{admins_token['id']}", None),
                               ("POST", "/api/v1/auth/password", {"current_password": ADMIN_PASSWORD,
                                                                  "new_password": "taken over password"}),
                               ("GET", "/api/v1/users", None),
                               ("POST", "/api/v1/users", {"username": "evil", "password": "e" * 12, "role": "admin"}),
                               ("PATCH", "/api/v1/users/1", {"disabled": True})):
        refused = client.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["detail"] == NOT_WITH_A_TOKEN
    assert len(admin.get("/api/v1/tokens").json()) == 1
    assert [u["username"] for u in admin.get("/api/v1/users").json()] == [ADMIN]
    sign_in(admin, ADMIN, ADMIN_PASSWORD)  # the password is unchanged
    assert client.get("/api/v1/audit").status_code == 200  # reading the audit log is no account management


def test_revoked_at_once_and_indistinguishable_from_a_random_token(member, admin, bearer):
    token = new_token(member, "run")
    client = bearer(token["token"])
    assert client.get("/api/v1/auth/me").status_code == 200  # cached now
    assert admin.delete(f"/api/v1/tokens/{token['id']}").status_code == 204  # administrators may revoke any
    revoked = client.get("/api/v1/auth/me")
    random = bearer("aiev_" + "A" * 43).get("/api/v1/auth/me")
    assert revoked.status_code == random.status_code == 401
    assert revoked.json() == random.json() == {"detail": TOKEN_NOT_VALID, "problems": []}
    listed = member.get("/api/v1/tokens").json()
    assert listed[0]["active"] is False and listed[0]["revoked_at"] is not None
    assert member.delete(f"/api/v1/tokens/{token['id']}").status_code == 204  # again: nothing changes


def test_only_the_owner_or_an_administrator_revokes(app, member, admin, bearer):
    admins_token = new_token(admin, "read")
    assert member.delete(f"/api/v1/tokens/{admins_token['id']}").json()["detail"] == \
        f"API token {admins_token['id']} not found"
    assert member.delete("/api/v1/tokens/999999").status_code == 404
    assert bearer(admins_token["token"]).get("/api/v1/models").status_code == 200
    own = new_token(member, "read")
    assert member.delete(f"/api/v1/tokens/{own['id']}").status_code == 204
    assert bearer(own["token"]).get("/api/v1/models").status_code == 401


def test_an_expired_token_is_refused_even_from_the_cache(member, bearer, auth_settings):
    from aieval_server.models import ApiToken
    from aieval_server.models.tables import utcnow
    from aieval_server.services import tokens

    token = new_token(member, "read", expires_in_days=1)
    client = bearer(token["token"])
    assert client.get("/api/v1/auth/me").status_code == 200
    with db_session(auth_settings) as session:
        session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    forget_cached_tokens()
    assert client.get("/api/v1/auth/me").json()["detail"] == TOKEN_NOT_VALID
    assert member.get("/api/v1/tokens").json()[0]["active"] is False
    # A cached token whose expiry passes while cached is not used either.
    hashed = hashlib.sha256(token["token"].encode()).hexdigest()
    from dataclasses import replace

    expired_caller = replace(tokens._caller(_row(auth_settings), _owner(auth_settings)),
                             expires_at=utcnow() - timedelta(seconds=1))
    tokens.TOKEN_CACHE.put(hashed, expired_caller)
    assert tokens.cached_token(auth_settings, token["token"]) is None
    assert client.get("/api/v1/auth/me").status_code == 401


def _row(settings):
    from aieval_server.models import ApiToken

    with db_session(settings) as session:
        return session.scalars(select(ApiToken)).one()


def _owner(settings):
    from aieval_server.models import User

    with db_session(settings) as session:
        return session.scalars(select(User).where(User.username == MEMBER)).one()


def test_disabling_the_owner_refuses_the_token_at_once_and_enabling_brings_it_back(member, admin, bearer):
    client = bearer(new_token(member, "run")["token"])
    assert client.get("/api/v1/auth/me").status_code == 200
    assert admin.patch(f"/api/v1/users/{member.user_id}", json={"disabled": True}).status_code == 200
    assert client.get("/api/v1/auth/me").json()["detail"] == TOKEN_NOT_VALID
    assert admin.patch(f"/api/v1/users/{member.user_id}", json={"disabled": False}).status_code == 200
    assert client.get("/api/v1/auth/me").status_code == 200
    assert admin.patch(f"/api/v1/users/{member.user_id}", json={"role": "viewer"}).status_code == 200
    assert client.get("/api/v1/auth/me").json()["user"]["role"] == "viewer"  # a new role shows at once


def test_bad_token_requests_are_refused_with_a_sentence(member, client):
    for body, where in (({"name": "x", "scope": "write"}, "scope"), ({"name": "", "scope": "read"}, "name"),
                        ({"name": "x", "scope": "read", "expires_in_days": 0}, "expires_in_days"),
                        ({"name": "x", "scope": "read", "expires_in_days": 367}, "expires_in_days"),
                        ({"name": "x" * 101, "scope": "read"}, "name")):
        refused = member.post("/api/v1/tokens", json=body)
        assert refused.status_code == 422 and refused.json()["problems"][0].startswith(where), refused.text
    assert new_token(member, "read", expires_in_days=366)["expires_at"] is not None
    # Sign-in off: the local user needs no token.
    off = client.post("/api/v1/tokens", json={"name": "x", "scope": "read"})
    assert off.status_code == 409 and "sign-in is off" in off.json()["detail"]


def test_a_cached_token_check_costs_no_database_statement(member, bearer, auth_settings):
    """The per-request cost: on a cache hit the token check runs no SQL (and no thread hop: see
    routers/deps.caller_dep); /auth/me itself reads nothing from the database."""
    from aieval_server.db.session import get_engine
    from aieval_server.services import tokens

    token = new_token(member, "read")["token"]
    client = bearer(token)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    engine = get_engine(auth_settings.database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert client.get("/api/v1/auth/me").status_code == 200
        assert any("api_tokens" in s for s in statements)  # the miss: the lookup (and last_used_at)
        statements.clear()
        for _ in range(20):
            assert client.get("/api/v1/auth/me").status_code == 200
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)
    started = time.perf_counter()
    for _ in range(10_000):
        assert tokens.cached_token(auth_settings, token) is not None
    per_check_us = (time.perf_counter() - started) / 10_000 * 1e6
    print(f"cached token check: {per_check_us:.1f} µs, 0 SQL statements")
    assert per_check_us < 200


def test_last_used_at_is_written_at_most_once_a_minute(member, bearer, auth_settings):
    from aieval_server.models import ApiToken

    token = new_token(member, "read")
    client = bearer(token["token"])
    assert client.get("/api/v1/auth/me").status_code == 200
    first = _row(auth_settings).last_used_at
    assert first is not None
    forget_cached_tokens()
    assert client.get("/api/v1/auth/me").status_code == 200  # looked up again within the minute
    assert _row(auth_settings).last_used_at == first
    with db_session(auth_settings) as session:
        session.execute(update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
    forget_cached_tokens()
    assert client.get("/api/v1/auth/me").status_code == 200
    assert _row(auth_settings).last_used_at > first
    assert member.get("/api/v1/tokens").json()[0]["last_used_at"] is not None


def test_the_tokens_of_a_deleted_user_go_with_the_user(member, auth_settings):
    from aieval_server.models import ApiToken, User

    new_token(member, "read")
    new_token(member, "run")
    with db_session(auth_settings) as session:
        assert session.scalar(select(ApiToken.id).limit(1)) is not None
        session.delete(session.get(User, member.user_id))
    with db_session(auth_settings) as session:
        assert session.scalars(select(ApiToken)).all() == []


def test_a_session_token_as_bearer_still_works(app, member, bearer):
    """`aieval submit` with AIEVAL_TOKEN set to a session token (the first increment's way) keeps working."""
    session_token = member.cookies["aieval_session"]
    client = bearer(session_token)
    assert client.get("/api/v1/auth/me").json()["user"]["username"] == MEMBER
    assert client.get("/api/v1/tokens").status_code == 200  # a password session, not an API token
    assert bearer("not-a-token").get("/api/v1/auth/me").json()["detail"] == "sign in first"


def test_too_many_active_tokens_are_refused(member, monkeypatch):
    from aieval_server.services import tokens

    monkeypatch.setattr(tokens, "MAX_ACTIVE_TOKENS", 2)
    first = new_token(member)
    new_token(member)
    refused = member.post("/api/v1/tokens", json={"name": "third", "scope": "read"})
    assert refused.status_code == 409 and "most allowed is 2" in refused.json()["detail"]
    assert member.delete(f"/api/v1/tokens/{first['id']}").status_code == 204
    new_token(member)


# ---- self-registration and the password-change throttle -------------------------------------------------------
def test_self_registration_is_off_unless_turned_on(app, auth_settings):
    with TestClient(app) as client:
        refused = client.post("/api/v1/auth/register", json={"username": "newbie", "password": "newbie password"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "self-registration is off; ask an administrator for an account"
        assert client.post("/api/v1/auth/login", json={"username": "newbie", "password": "newbie password"}
                           ).status_code == 401


def test_self_registration_makes_a_member_and_is_rate_limited_per_address(auth_settings):
    from aieval_server.main import create_app

    with TestClient(create_app(auth_settings.model_copy(update={"self_registration": True}))) as client:
        made = client.post("/api/v1/auth/register", json={"username": "Newbie", "password": "newbie password",
                                                          "display_name": "New Bie"})
        assert made.status_code == 201, made.text
        assert made.json()["username"] == "newbie" and made.json()["role"] == "member"
        assert "password" not in made.text
        assert sign_in(client, "newbie", "newbie password")["user"]["role"] == "member"
        taken = client.post("/api/v1/auth/register", json={"username": "newbie", "password": "other password"})
        assert taken.status_code == 409
        short = client.post("/api/v1/auth/register", json={"username": "shorty", "password": "short"})
        assert short.status_code == 422
        # sign-in succeeded once, which forgets that account's failures but not the address': 3 attempts so far
        assert client.post("/api/v1/auth/register", json={"username": "n4", "password": "fourth password"}
                           ).status_code == 201
        assert client.post("/api/v1/auth/register", json={"username": "n5", "password": "fifth password"}
                           ).status_code == 201
        limited = client.post("/api/v1/auth/register", json={"username": "n6", "password": "sixth password"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        assert "too many failed sign-ins for this address" in limited.json()["detail"]


def test_wrong_current_passwords_are_rate_limited_per_account(app, member):
    for _ in range(3):
        wrong = member.post("/api/v1/auth/password", json={"current_password": "guess guess guess",
                                                           "new_password": "new password 1234"})
        assert wrong.status_code == 403
    limited = member.post("/api/v1/auth/password", json={"current_password": MEMBER_PASSWORD,
                                                         "new_password": "new password 1234"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert limited.json()["detail"].startswith("too many failed sign-ins for this account")
    with TestClient(app) as other:  # the same account limit holds for the sign-in form
        assert other.post("/api/v1/auth/login", json={"username": MEMBER, "password": MEMBER_PASSWORD}
                          ).status_code == 429


def test_the_live_websocket_takes_a_read_token_and_refuses_a_bad_one(member, bearer):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused:
        with bearer("aiev_" + "B" * 43).websocket_connect("/api/v1/evaluations/1/ws"):
            pass
    assert (refused.value.code, refused.value.reason) == (1008, TOKEN_NOT_VALID)
    client = bearer(new_token(member, "read")["token"])
    try:  # signed in: what follows is the feed's own answer about evaluation 1 (there is none), not a refusal
        with client.websocket_connect("/api/v1/evaluations/1/ws") as socket:
            socket.receive_text()
    except WebSocketDisconnect as closed:
        assert closed.reason != TOKEN_NOT_VALID and closed.reason != READ_ONLY
