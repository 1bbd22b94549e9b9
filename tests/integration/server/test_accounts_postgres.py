"""The core sign-in flow on PostgreSQL, over real sockets: the first admin from the settings, sign-in, CSRF,
account management, password change revoking the other sessions, sign-out."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import SecretStr
from signed_in import sign_in
from sqlalchemy import create_engine, text
from threaded_server import uvicorn_in_thread

ADMIN, PASSWORD = "pg-admin", "pg admin password"


@pytest.fixture
def base_url(postgres_url, tmp_path, monkeypatch):
    from aieval_server.config import Settings
    from aieval_server.main import create_app

    schema = f"accounts_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(data_dir=tmp_path / "data", db_url=f"{postgres_url}?options=-csearch_path%3D{schema}",
                        register_demo=False, web_dist=tmp_path / "no-web", auth_enabled=True,
                        initial_admin_username=ADMIN, initial_admin_password=SecretStr(PASSWORD))
    try:
        with uvicorn_in_thread(create_app(settings)) as server:
            yield f"http://127.0.0.1:{server.config.port}"
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    with create_engine(postgres_url).connect() as check:  # the schema is gone with its sessions
        assert check.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}).scalar() == 0


def test_sign_in_flow_on_postgresql(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as admin, httpx.Client(base_url=base_url, timeout=30) as other:
        assert admin.get("/api/v1/models").status_code == 401
        wrong = admin.post("/api/v1/auth/login", json={"username": ADMIN, "password": "wrong password!"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong username or password"
        state = sign_in(admin, ADMIN.upper(), PASSWORD)
        assert state["user"]["username"] == ADMIN and state["user"]["role"] == "admin"
        assert admin.get("/api/v1/auth/me").json()["csrf_token"] == state["csrf_token"]

        created = admin.post("/api/v1/users", json={"username": "Carol", "password": "carol's password",
                                                    "role": "viewer"})
        assert created.status_code == 201, created.text
        assert admin.post("/api/v1/users", json={"username": "carol", "password": "x" * 12, "role": "viewer"}
                          ).status_code == 409  # case-insensitive
        viewer = sign_in(other, "carol", "carol's password")
        assert viewer["user"]["role"] == "viewer"
        assert other.get("/api/v1/users").status_code == 403

        second = httpx.Client(base_url=base_url, timeout=30)
        sign_in(second, ADMIN, PASSWORD)
        no_csrf = admin.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "n" * 12},
                             headers={"X-CSRF-Token": ""})
        assert no_csrf.status_code == 403
        changed = admin.post("/api/v1/auth/password", json={"current_password": PASSWORD,
                                                             "new_password": "new pg admin password"})
        assert changed.status_code == 204
        assert second.get("/api/v1/auth/me").status_code == 401 and admin.get("/api/v1/auth/me").status_code == 200
        second.close()

        assert admin.patch(f"/api/v1/users/{created.json()['id']}", json={"disabled": True}).status_code == 200
        assert other.get("/api/v1/auth/me").status_code == 401
        assert admin.post("/api/v1/auth/logout").status_code == 204
        assert admin.get("/api/v1/auth/me").status_code == 401
