"""Accounts and sign-in over real sockets (uvicorn on 127.0.0.1, SQLite): login, logout, /me, cookies, CSRF,
expiry, revocation, the sign-in rate limit, admin-only account management, and every API operation closed to
anonymous callers when sign-in is on."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
import websockets.sync.client as ws_client
from pydantic import SecretStr
from signed_in import sign_in
from threaded_server import uvicorn_in_thread
from websockets.exceptions import InvalidStatus

ADMIN, ADMIN_PASSWORD = "root", "correct horse battery"
EXEMPT = {("GET", "/api/v1/health"), ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/register"),
          ("GET", "/api/v1/auth/sso"), ("GET", "/api/v1/auth/sso/login"), ("GET", "/api/v1/auth/sso/callback")}


@pytest.fixture
def auth_settings(settings):
    return settings.model_copy(update={
        "auth_enabled": True, "initial_admin_username": ADMIN,
        "initial_admin_password": SecretStr(ADMIN_PASSWORD),
        "login_failures_per_account": 3, "login_failures_per_address": 6,
    })


@pytest.fixture
def serve():
    """serve(settings) -> base URL of that app on a real socket (stopped at the end of the test)."""
    from contextlib import ExitStack

    from aieval_server.main import create_app

    with ExitStack() as stack:
        def start(settings):
            app = create_app(settings)
            server = stack.enter_context(uvicorn_in_thread(app))
            return app, f"http://127.0.0.1:{server.config.port}"

        yield start


@pytest.fixture
def server(serve, auth_settings):
    return serve(auth_settings)


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30)


def test_sign_in_me_and_sign_out(server):
    _app, base = server
    with client(base) as browser:
        assert browser.get("/api/v1/auth/me").json() == {"detail": "sign in first", "problems": []}
        response = browser.post("/api/v1/auth/login", json={"username": "ROOT", "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        state = response.json()
        assert state["auth_enabled"] is True and state["csrf_token"]
        assert state["user"] == {"id": 1, "username": ADMIN, "display_name": ADMIN, "role": "admin",
                                 "is_local": False, "sso": False}
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("aieval_session=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= flags and "secure" not in flags  # plain http here
        token = browser.cookies["aieval_session"]
        assert token not in response.text  # the token is only in the cookie
        assert browser.get("/api/v1/auth/me").json() == state
        assert browser.get("/api/v1/models").status_code == 200

        refused = browser.post("/api/v1/auth/logout")  # no CSRF token
        assert refused.status_code == 403
        assert refused.json()["detail"] == "missing or wrong CSRF token; reload the page"
        out = browser.post("/api/v1/auth/logout", headers={"X-CSRF-Token": state["csrf_token"]})
        assert out.status_code == 204
        assert 'aieval_session=""' in out.headers["set-cookie"] or "max-age=0" in out.headers["set-cookie"].lower()
    # the old cookie is revoked on the server, not only forgotten by the browser
    with client(base) as stolen:
        stolen.cookies.set("aieval_session", token)
        assert stolen.get("/api/v1/auth/me").status_code == 401
        assert stolen.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_session_token_stored_hashed(server, auth_settings):
    _app, base = server
    with client(base) as browser:
        sign_in(browser, ADMIN, ADMIN_PASSWORD)
        token = browser.cookies["aieval_session"]
    with sqlite3.connect(auth_settings.data_dir / "aieval.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM sessions")]
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM users")]
        users_sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()[0]
    assert token not in ids and len(ids) == 1 and len(ids[0]) == 64
    assert hashes[0].startswith("$argon2id$") and ADMIN_PASSWORD not in hashes[0]
    assert "AUTOINCREMENT" in users_sql  # user ids are never reused


def test_wrong_password_unknown_user_and_disabled_account_get_the_same_answer(server):
    _app, base = server
    with client(base) as admin, client(base) as anonymous:
        sign_in(admin, ADMIN, ADMIN_PASSWORD)
        created = admin.post("/api/v1/users", json={"username": "Bob", "password": "bob's long password",
                                                    "role": "member"})
        assert created.status_code == 201, created.text
        assert created.json()["username"] == "bob"
        assert admin.patch(f"/api/v1/users/{created.json()['id']}", json={"disabled": True}).status_code == 200
        answers = [anonymous.post("/api/v1/auth/login", json=body) for body in (
            {"username": ADMIN, "password": "not the password"},
            {"username": "nobody", "password": ADMIN_PASSWORD},
            {"username": "bob", "password": "bob's long password"},
        )]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert {a.text for a in answers} == {'{"detail":"wrong username or password","problems":[]}'}


def test_csrf_token_required_for_cookie_requests_and_not_for_bearer(server):
    _app, base = server
    with client(base) as browser:
        state = sign_in(browser, ADMIN, ADMIN_PASSWORD)
        token = browser.cookies["aieval_session"]
        body = {"name": "m", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}
        del browser.headers["X-CSRF-Token"]
        assert browser.post("/api/v1/models", json=body).status_code == 403
        assert browser.post("/api/v1/models", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert browser.get("/api/v1/models").json() == []  # reads need no token; nothing was created
        assert browser.post("/api/v1/models", json=body,
                            headers={"X-CSRF-Token": state["csrf_token"]}).status_code == 201
    with client(base) as script:
        made = script.post("/api/v1/models", json={**body, "name": "m2"}, headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text


@pytest.mark.parametrize("cache_ttl_s", [5.0, 0.0], ids=["cached", "database"])
def test_session_expires(serve, auth_settings, cache_ttl_s):
    _app, base = serve(auth_settings.model_copy(update={"session_ttl_s": 1.5, "session_cache_ttl_s": cache_ttl_s}))
    with client(base) as browser:
        sign_in(browser, ADMIN, ADMIN_PASSWORD)
        assert browser.get("/api/v1/auth/me").status_code == 200
        time.sleep(1.7)
        assert browser.get("/api/v1/auth/me").status_code == 401


def test_password_change_signs_out_the_other_sessions(server):
    _app, base = server
    with client(base) as first, client(base) as second:
        sign_in(first, ADMIN, ADMIN_PASSWORD)
        sign_in(second, ADMIN, ADMIN_PASSWORD)
        new = "a brand new passphrase"
        wrong = first.post("/api/v1/auth/password", json={"current_password": "nope", "new_password": new})
        assert wrong.status_code == 403
        short = first.post("/api/v1/auth/password", json={"current_password": ADMIN_PASSWORD,
                                                           "new_password": "short"})
        assert short.status_code == 422 and "12 characters" in short.json()["detail"]
        assert second.get("/api/v1/auth/me").status_code == 200
        done = first.post("/api/v1/auth/password", json={"current_password": ADMIN_PASSWORD, "new_password": new})
        assert done.status_code == 204
        assert first.get("/api/v1/auth/me").status_code == 200  # this session stays
        assert second.get("/api/v1/auth/me").status_code == 401  # the other one is out at once
    with client(base) as again:
        assert again.post("/api/v1/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}).status_code == 401
        sign_in(again, ADMIN, new)


def test_sign_in_rate_limited_per_account_and_per_address(server):
    _app, base = server
    with client(base) as attacker:
        for _ in range(3):
            assert attacker.post("/api/v1/auth/login", json={"username": ADMIN, "password": "guess guess guess"}
                                 ).status_code == 401
        limited = attacker.post("/api/v1/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert limited.status_code == 429  # even the right password: the account is locked for the window
        assert 1 <= int(limited.headers["Retry-After"]) <= 900
        assert "too many failed sign-ins" in limited.json()["detail"]
        for name in ("a1", "a2", "a3"):  # other names, same address: 6 failures in all
            assert attacker.post("/api/v1/auth/login", json={"username": name, "password": "x" * 12}
                                 ).status_code == 401
        assert attacker.post("/api/v1/auth/login", json={"username": "a4", "password": "x" * 12}).status_code == 429


def test_every_api_operation_needs_a_session(server):
    app, base = server
    app.openapi_schema = None
    operations = [(method.upper(), path) for path, item in app.openapi()["paths"].items()
                  if path.startswith("/api/") for method in item]
    checked = 0
    with client(base) as anonymous:
        anonymous.cookies.set("aieval_session", "made-up")
        for method, path in operations:
            url = path
            while "{" in url:
                start = url.index("{")
                url = url[:start] + "1" + url[url.index("}") + 1:]
            response = anonymous.request(method, url)
            if (method, path) in EXEMPT:
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code, response.text)
            assert response.json() == {"detail": "sign in first", "problems": []}
            checked += 1
    assert checked == len(operations) - len(EXEMPT) and checked >= 34, checked


def test_websockets_refused_without_a_session(server):
    _app, base = server
    ws_base = base.replace("http://", "ws://")
    for path in ("/api/v1/evaluations/ws", "/api/v1/evaluations/1/ws"):
        with pytest.raises(InvalidStatus) as refused:
            ws_client.connect(ws_base + path, open_timeout=10).close()
        assert refused.value.response.status_code == 403
    with client(base) as browser:
        sign_in(browser, ADMIN, ADMIN_PASSWORD)
        cookie = f"aieval_session={browser.cookies['aieval_session']}"
    with ws_client.connect(ws_base + "/api/v1/evaluations/ws", additional_headers={"Cookie": cookie},
                           open_timeout=10) as socket:  # accepted (the handshake answered 101)
        assert socket.protocol.state.name == "OPEN"


def test_user_management_is_for_administrators(server):
    _app, base = server
    with client(base) as admin, client(base) as member:
        sign_in(admin, ADMIN, ADMIN_PASSWORD)
        short = admin.post("/api/v1/users", json={"username": "eve", "password": "short", "role": "member"})
        assert short.status_code == 422 and "at least 12 characters" in short.json()["detail"]
        bad_name = admin.post("/api/v1/users", json={"username": "no spaces", "password": "x" * 12, "role": "member"})
        assert bad_name.status_code == 422
        eve = admin.post("/api/v1/users", json={"username": "eve", "password": "eve's long password",
                                                "role": "member", "display_name": "Eve"}).json()
        assert admin.post("/api/v1/users", json={"username": "EVE", "password": "x" * 12, "role": "viewer"}
                          ).status_code == 409
        state = sign_in(member, "eve", "eve's long password")
        assert state["user"]["role"] == "member" and state["user"]["display_name"] == "Eve"
        assert member.get("/api/v1/users").status_code == 403
        assert member.post("/api/v1/users", json={"username": "x", "password": "x" * 12, "role": "admin"}
                           ).status_code == 403
        assert member.patch(f"/api/v1/users/{eve['id']}", json={"role": "admin"}).status_code == 403
        assert [u["username"] for u in admin.get("/api/v1/users").json()] == [ADMIN, "eve"]
        assert admin.patch("/api/v1/users/1", json={"role": "member"}).status_code == 409  # the last admin
        promoted = admin.patch(f"/api/v1/users/{eve['id']}", json={"role": "admin"})
        assert promoted.json()["role"] == "admin"
        assert member.get("/api/v1/auth/me").json()["user"]["role"] == "admin"  # at once, cache or not
        assert admin.patch(f"/api/v1/users/{eve['id']}", json={"disabled": True}).status_code == 200
        assert member.get("/api/v1/auth/me").status_code == 401
        assert admin.patch("/api/v1/users/999", json={"disabled": True}).status_code == 404


def test_sign_in_off_is_the_local_user(client):
    me = client.get("/api/v1/auth/me")
    assert me.json() == {"user": {"id": None, "username": "local", "display_name": "Local user", "role": "admin",
                                  "is_local": True, "sso": False}, "auth_enabled": False, "csrf_token": None}
    assert client.post("/api/v1/auth/login", json={"username": "a", "password": "b"}).status_code == 409
    assert client.get("/api/v1/users").json() == []
    assert client.post("/api/v1/auth/logout").status_code == 204
