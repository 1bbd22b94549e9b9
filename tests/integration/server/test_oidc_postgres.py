"""Single sign-on on PostgreSQL, over real sockets, against the real test OpenID provider (tests/oidc_provider.py):
the account made at the first sign-in is found again, and first sign-ins of one person arriving at the same moment
make exactly one account (the (issuer, subject) unique constraint and the retry in services/oidc.py)."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest
from oidc_provider import CLIENT_ID, CLIENT_SECRET, serve_provider
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from threaded_server import uvicorn_in_thread

SSO = "/api/v1/auth/sso"


@pytest.fixture
def stack(postgres_url, tmp_path, monkeypatch):
    from aieval_server.config import Settings
    from aieval_server.main import create_app

    schema = f"sso_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    db_url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    try:
        with serve_provider() as provider:
            settings = Settings(data_dir=tmp_path / "data", db_url=db_url, register_demo=False,
                                web_dist=tmp_path / "no-web", auth_enabled=True, oidc_issuer=provider.issuer,
                                oidc_client_id=CLIENT_ID, oidc_client_secret=SecretStr(CLIENT_SECRET))
            with uvicorn_in_thread(create_app(settings)) as server:
                yield f"http://127.0.0.1:{server.config.port}", db_url
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def callback_url(client: httpx.Client) -> str:
    """Leave for the provider and come back to just before the callback."""
    to_provider = client.get(f"{SSO}/login", params={"next": "/models"})
    assert to_provider.status_code == 302, to_provider.text
    back = client.get(to_provider.headers["location"])
    assert back.status_code == 302, back.text
    return back.headers["location"]


def sso_accounts(db_url: str) -> list[tuple]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(
                "SELECT username, role, password_hash, oidc_subject FROM users WHERE oidc_subject IS NOT NULL"))]
    finally:
        engine.dispose()


def test_first_sign_ins_at_the_same_moment_make_one_account(stack):
    base, db_url = stack
    browsers = [httpx.Client(base_url=base, timeout=30) for _ in range(4)]
    try:
        callbacks = [callback_url(client) for client in browsers]
        start = threading.Barrier(len(browsers))
        answers: list[httpx.Response | BaseException] = [None] * len(browsers)  # type: ignore[list-item]

        def finish(index: int) -> None:
            start.wait()
            try:
                answers[index] = browsers[index].get(callbacks[index])
            except BaseException as exc:  # reported below
                answers[index] = exc

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(browsers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for answer in answers:
            assert isinstance(answer, httpx.Response), answer
            assert answer.status_code == 302 and answer.headers["location"] == "/models", answer.text
        ids = {client.get("/api/v1/auth/me").json()["user"]["id"] for client in browsers}
        assert len(ids) == 1  # every browser is signed in as the same account
        assert sso_accounts(db_url) == [("alice.example", "member", "", "subject-0001")]

        with httpx.Client(base_url=base, timeout=30) as later:  # and the next sign-in finds it
            assert later.get(callback_url(later)).headers["location"] == "/models"
            assert later.get("/api/v1/auth/me").json()["user"]["id"] in ids
        assert len(sso_accounts(db_url)) == 1
    finally:
        for client in browsers:
            client.close()
