"""The audit log (services/audit.py, GET /api/v1/audit) on SQLite: what the account routes record, that no
secret gets into it, that a refused change leaves no event, the administrators-only reader with its filters
and pages, and `aieval create-admin --reset`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from signed_in import sign_in
from sqlalchemy import select

ADMIN, ADMIN_PASSWORD = "root", "correct horse battery"
MEMBER_PASSWORD = "member password 1"
AIEVAL = str(Path(sys.executable).parent / "aieval")


@pytest.fixture
def auth_settings(settings):
    return settings.model_copy(update={
        "auth_enabled": True, "initial_admin_username": ADMIN, "initial_admin_password": SecretStr(ADMIN_PASSWORD),
        "self_registration": True,
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


def events(admin, **query) -> list[dict]:
    response = admin.get("/api/v1/audit", params={"page_size": 200, **query})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def summary(items: list[dict]) -> list[tuple]:
    """(actor, action, target type, target name), oldest first."""
    return [(e["actor_name"], e["action"], e["target_type"], e["target_name"]) for e in reversed(items)]


def test_the_account_routes_record_who_did_what_and_never_a_secret(app, admin):
    made = admin.post("/api/v1/users", json={"username": "Mia", "password": MEMBER_PASSWORD, "role": "member"})
    assert made.status_code == 201
    mia_id = made.json()["id"]
    assert admin.patch(f"/api/v1/users/{mia_id}", json={"role": "viewer", "display_name": "Mia M.",
                                                       "password": "a new password for mia"}).status_code == 200
    assert admin.patch(f"/api/v1/users/{mia_id}", json={"role": "member", "max_active_evaluations": 3}
                       ).status_code == 200
    with TestClient(app) as browser:
        wrong = browser.post("/api/v1/auth/login", json={"username": "mia", "password": "not her password"})
        assert wrong.status_code == 401
        ghost = browser.post("/api/v1/auth/login", json={"username": "Nobody-" + "x" * 150, "password": "whatever"})
        assert ghost.status_code == 401
        sign_in(browser, "mia", "a new password for mia")
        token = browser.post("/api/v1/tokens", json={"name": "mia's CI", "scope": "run"}).json()
        assert browser.delete(f"/api/v1/tokens/{token['id']}").status_code == 204
        assert browser.post("/api/v1/auth/password", json={"current_password": "a new password for mia",
                                                           "new_password": "mia's third password"}).status_code == 204
        assert browser.post("/api/v1/auth/logout").status_code == 204
        registered = browser.post("/api/v1/auth/register", json={"username": "self-made",
                                                                  "password": "self-made password"})
        assert registered.status_code == 201
    items = events(admin)
    assert summary(items) == [
        (ADMIN, "signed_in", "session", None),
        (ADMIN, "created", "user", "mia"),
        (ADMIN, "updated", "user", "mia"),
        (ADMIN, "updated", "user", "mia"),
        ("mia", "sign_in_failed", "session", None),
        ("nobody-" + "x" * 57, "sign_in_failed", "session", None),  # the name as tried, cut to the column
        ("mia", "signed_in", "session", None),
        ("mia", "created", "token", "mia's CI"),
        ("mia", "revoked", "token", "mia's CI"),
        ("mia", "password_changed", "user", "mia"),
        ("mia", "signed_out", "session", None),
        ("self-made", "created", "user", "self-made"),
    ]
    by_action = {(e["action"], e["target_type"], e["actor_name"]): e for e in items}
    failed = by_action[("sign_in_failed", "session", "mia")]
    assert failed["actor_id"] is None and failed["address"] == "testclient"
    assert by_action[("signed_in", "session", "mia")]["actor_id"] == mia_id
    updates = [e for e in reversed(items) if e["action"] == "updated"]
    assert updates[0]["detail"] == {"role": "viewer", "display_name": "Mia M.", "password": "set"}
    assert updates[0]["target_id"] == mia_id
    assert updates[1]["detail"] == {"role": "member", "max_active_evaluations": 3}
    assert by_action[("created", "user", ADMIN)]["detail"] == {"role": "member"}
    assert by_action[("created", "token", "mia")]["detail"] == {"scope": "run", "expires_at": None}
    assert by_action[("created", "user", "self-made")]["detail"] == {"role": "member", "self_registered": True}
    everything = json.dumps(items)
    for secret in (MEMBER_PASSWORD, "a new password for mia", "mia's third password", "not her password",
                   "self-made password", token["token"]):
        assert secret not in everything


def test_a_refused_change_leaves_no_event(admin):
    before = len(events(admin))
    assert admin.post("/api/v1/users", json={"username": ADMIN, "password": "x" * 12, "role": "member"}
                      ).status_code == 409
    assert admin.patch("/api/v1/users/1", json={"disabled": True}).status_code == 409  # the last admin
    assert admin.patch("/api/v1/users/1", json={"display_name": ADMIN}).status_code == 200  # nothing changed
    assert len(events(admin)) == before


def test_only_administrators_read_the_log_with_filters_and_pages(app, admin):
    made = admin.post("/api/v1/users", json={"username": "vic", "password": MEMBER_PASSWORD, "role": "viewer"})
    vic_id = made.json()["id"]
    for name in ("a", "b", "c"):
        assert admin.patch(f"/api/v1/users/{vic_id}", json={"display_name": name}).status_code == 200
    with TestClient(app) as anonymous:
        assert anonymous.get("/api/v1/audit").status_code == 401
        sign_in(anonymous, "vic", MEMBER_PASSWORD)
        refused = anonymous.get("/api/v1/audit")
        assert refused.status_code == 403 and refused.json()["detail"] == "only administrators may do this"
    updates = events(admin, action="updated")
    assert [e["detail"]["display_name"] for e in updates] == ["c", "b", "a"]  # newest first
    assert len(events(admin, target_type="user", target_id=vic_id)) == 4
    assert {e["actor_name"] for e in events(admin, actor_id=vic_id)} == {"vic"}  # vic's sign-in
    first_page = admin.get("/api/v1/audit", params={"page_size": 2, "page": 1}).json()
    second_page = admin.get("/api/v1/audit", params={"page_size": 2, "page": 2}).json()
    assert first_page["total"] == second_page["total"] == 6 and first_page["page_size"] == 2
    assert [e["id"] for e in first_page["items"] + second_page["items"]] == [e["id"] for e in events(admin)[:4]]
    newest = datetime.fromisoformat(events(admin)[0]["at"])
    assert len(events(admin, since=newest.isoformat())) == 1
    assert len(events(admin, until=newest.isoformat())) == 5
    assert events(admin, since=(newest + timedelta(seconds=1)).astimezone(timezone.utc).replace(tzinfo=None)
                  .isoformat()) == []  # a time without a zone is UTC
    for query, where in (({"page_size": 201}, "page_size"), ({"action": "exploded"}, "action"),
                         ({"since": "yesterday"}, "since"), ({"actor_id": 0}, "actor_id")):
        bad = admin.get("/api/v1/audit", params=query)
        assert bad.status_code == 422 and bad.json()["problems"][0].startswith(f"query.{where}"), bad.text


def test_record_adds_to_the_callers_transaction_with_the_request_address(auth_settings, app):
    from aieval_server.db import session_scope
    from aieval_server.enums import AuditAction, AuditTarget
    from aieval_server.models import AuditEvent
    from aieval_server.services import audit
    from aieval_server.services.accounts import LOCAL_CALLER

    with TestClient(app):  # the database is prepared
        pass
    with pytest.raises(RuntimeError), session_scope(auth_settings.database_url) as session:
        audit.record(session, LOCAL_CALLER, AuditAction.deleted, AuditTarget.model, 7, "gone")
        raise RuntimeError("the change failed")
    token = audit.request_address.set("192.0.2.7")
    try:
        with session_scope(auth_settings.database_url) as session:
            audit.record(session, LOCAL_CALLER, AuditAction.deleted, AuditTarget.model, 7, "gone", {"files": 2})
    finally:
        audit.request_address.reset(token)
    with session_scope(auth_settings.database_url) as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.target_type == "model")).all()
        assert [(r.actor_id, r.actor_name, r.action, r.target_id, r.target_name, r.detail, r.address)
                for r in rows] == [(None, "local", "deleted", 7, "gone", {"files": 2}, "192.0.2.7")]


# ---- aieval create-admin --reset --------------------------------------------------------------------------------
def run_aieval(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    environment = {**os.environ, "AIEVAL_ENV": "dev", "AIEVAL_DATA_DIR": str(data_dir)}
    environment.pop("AIEVAL_AUTH_ENABLED", None)
    return subprocess.run([AIEVAL, *args], input=stdin, env=environment, capture_output=True, text=True, timeout=120)


def test_create_admin_reset_lets_a_locked_out_team_back_in(auth_settings):
    from aieval_server.db import session_scope
    from aieval_server.main import create_app
    from aieval_server.models import AuditEvent

    # No session cache: this process sees the command's sign-out at once, as one would after the cache's seconds.
    app = create_app(auth_settings.model_copy(update={"session_cache_ttl_s": 0.0}))
    admin = TestClient(app).__enter__()
    sign_in(admin, ADMIN, ADMIN_PASSWORD)
    made = admin.post("/api/v1/users", json={"username": "ops", "password": MEMBER_PASSWORD, "role": "member"})
    ops_id = made.json()["id"]
    data_dir = auth_settings.data_dir
    unknown = run_aieval(data_dir, "create-admin", "nobody", "--reset", "--password-stdin", stdin="a long password\n")
    assert unknown.returncode == 1 and "there is no user 'nobody'; leave out --reset" in unknown.stderr
    member = run_aieval(data_dir, "create-admin", "ops", "--reset", "--password-stdin", stdin="a long password\n")
    assert member.returncode == 1 and "'ops' is a member; add --promote" in member.stderr, member.stderr
    taken = run_aieval(data_dir, "create-admin", "ops", "--password-stdin", stdin="a long password\n")
    assert taken.returncode == 1 and "add --reset" in taken.stderr
    assert run_aieval(data_dir, "create-admin", "ops", "--promote", "--password-stdin",
                      stdin="a long password\n").returncode == 2

    reset = run_aieval(data_dir, "create-admin", ADMIN.upper(), "--reset", "--password-stdin",
                       stdin="the recovered password\n")
    assert reset.returncode == 0, reset.stderr
    assert f"set a new password for the administrator {ADMIN!r}" in reset.stdout
    assert "the recovered password" not in reset.stdout + reset.stderr
    assert admin.get("/api/v1/auth/me").status_code == 401  # signed out everywhere
    sign_in(admin, ADMIN, "the recovered password")

    assert admin.patch(f"/api/v1/users/{ops_id}", json={"disabled": True}).status_code == 200
    promoted = run_aieval(data_dir, "create-admin", "ops", "--reset", "--promote", "--password-stdin",
                          stdin="ops admin password\n")
    assert promoted.returncode == 0, promoted.stderr
    with TestClient(app) as ops:
        assert sign_in(ops, "ops", "ops admin password")["user"]["role"] == "admin"
    with session_scope(auth_settings.database_url) as session:
        by_cli = session.scalars(select(AuditEvent).where(AuditEvent.actor_name == "aieval create-admin")
                                 .order_by(AuditEvent.id)).all()
        assert [(e.target_name, e.detail) for e in by_cli] == [
            (ADMIN, {"password": "set"}),
            ("ops", {"role": "admin", "disabled": False, "password": "set"}),
        ]
    admin.__exit__(None, None, None)
