"""Per-user quotas (services/quotas.py) on a real (SQLite) database: active evaluations and stored bytes."""

from __future__ import annotations

import pytest

GIB = 1024**3


@pytest.fixture
def db(client, settings):
    """The app's schema on SQLite (the client fixture creates it)."""
    return settings


def _user(settings, name: str, role: str = "member", **limits):
    from aieval_server.db import session_scope
    from aieval_server.enums import UserRole
    from aieval_server.models import User
    from aieval_server.services.accounts import Caller

    with session_scope(settings.database_url) as session:
        user = User(username=name, display_name=name, password_hash="", role=role, **limits)
        session.add(user)
        session.flush()
        return Caller(user_id=user.id, username=name, display_name=name, role=UserRole(role))


def _evaluations(settings, owner, *statuses: str) -> None:
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        session.add_all([Evaluation(name="e", params={}, status=status, owner_id=owner.user_id) for status in statuses])


def _dataset(settings, owner, size_bytes: int | None) -> None:
    from aieval_server.db import session_scope
    from aieval_server.models import Dataset

    with session_scope(settings.database_url) as session:
        number = session.query(Dataset).count()
        session.add(Dataset(name=f"d{number}", kind="custom", sha256=f"{number:064x}", size_bytes=size_bytes,
                            owner_id=owner.user_id))


def _check_submit(settings, caller) -> None:
    from aieval_server.db import session_scope
    from aieval_server.services import quotas

    with session_scope(settings.database_url) as session:
        quotas.check_can_submit(session, settings, caller)


def _check_storage(settings, caller, incoming: int) -> None:
    from aieval_server.db import session_scope
    from aieval_server.services import quotas

    with session_scope(settings.database_url) as session:
        quotas.check_storage(session, settings, caller, incoming)


def test_effective_limits_own_value_then_default_and_zero_is_no_limit(db):
    from aieval_server.models import User
    from aieval_server.services.quotas import effective_limits

    assert effective_limits(db, None) == (20, 10 * GIB)
    assert effective_limits(db, User(max_active_evaluations=3, max_stored_bytes=None)) == (3, 10 * GIB)
    assert effective_limits(db, User(max_active_evaluations=0, max_stored_bytes=5)) == (None, 5)
    unlimited = db.model_copy(update={"default_max_active_evaluations": 0, "default_max_stored_bytes": 0})
    assert effective_limits(unlimited, User()) == (None, None)


def test_a_member_at_the_active_limit_is_refused_with_429_until_one_finishes(db):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.errors import RateLimited

    alice = _user(db, "alice", max_active_evaluations=2)
    bob = _user(db, "bob")
    _evaluations(db, alice, "running", "succeeded", "failed", "cancelled")
    _evaluations(db, bob, *["queued"] * 5)  # other users' jobs do not count
    _check_submit(db, alice)  # one active of two
    _evaluations(db, alice, "queued")
    with pytest.raises(RateLimited) as refused:
        _check_submit(db, alice)
    assert refused.value.status_code == 429 and refused.value.retry_after_s == 60
    message = refused.value.message
    assert "2 evaluations queued or running" in message and "limit of active evaluations: 2" in message
    assert "ask an administrator to raise it" in message
    with session_scope(db.database_url) as session:
        session.query(Evaluation).filter_by(owner_id=alice.user_id, status="running").update({"status": "succeeded"})
    _check_submit(db, alice)


def test_the_installation_default_applies_and_administrators_and_the_local_user_have_no_limit(db):
    from aieval_server.services.accounts import LOCAL_CALLER
    from aieval_server.services.errors import RateLimited

    settings = db.model_copy(update={"default_max_active_evaluations": 1})
    carol = _user(db, "carol")
    root = _user(db, "root", role="admin", max_active_evaluations=1)
    _evaluations(db, carol, "queued")
    _evaluations(db, root, "queued", "running")
    with pytest.raises(RateLimited):
        _check_submit(settings, carol)
    _check_submit(settings, root)
    _check_submit(settings, LOCAL_CALLER)
    _check_submit(settings.model_copy(update={"default_max_active_evaluations": 0}), carol)


def test_an_upload_over_the_storage_limit_is_refused_with_403(db):
    from aieval_server.services.errors import Forbidden

    dave = _user(db, "dave", max_stored_bytes=3 * 1024 * 1024)
    erin = _user(db, "erin")
    _dataset(db, dave, 2 * 1024 * 1024)
    _dataset(db, dave, None)  # size unknown (older rows): counts as nothing
    _dataset(db, erin, 8 * GIB)  # other users' datasets do not count
    _check_storage(db, dave, 1024 * 1024)  # exactly at the limit
    with pytest.raises(Forbidden) as refused:
        _check_storage(db, dave, 1024 * 1024 + 1)
    assert refused.value.status_code == 403
    message = refused.value.message
    assert "over your storage limit of 3.0 MiB" in message and "you store 2.0 MiB now" in message
    assert "ask an administrator to raise it" in message
    admin = _user(db, "root", role="admin", max_stored_bytes=1)
    _check_storage(db, admin, 5 * GIB)


def test_size_text():
    from aieval_server.services.quotas import size_text

    assert [size_text(n) for n in (0, 1023, 1536, 3 * 1024**2, 10 * GIB, 5 * 1024**5)] == [
        "0 bytes", "1023 bytes", "1.5 KiB", "3.0 MiB", "10.0 GiB", "5120.0 TiB"]


# ---- over HTTP, with sign-in on -------------------------------------------------------------------------------
def test_the_api_answers_429_and_403_with_the_limit_and_how_to_raise_it(settings, tiny_model):
    import httpx
    from pydantic import SecretStr
    from signed_in import sign_in
    from sqlalchemy import update
    from threaded_server import uvicorn_in_thread

    from aieval_server.db import session_scope
    from aieval_server.main import create_app
    from aieval_server.models import User

    auth_settings = settings.model_copy(update={
        "auth_enabled": True, "initial_admin_username": "root", "initial_admin_password": SecretStr("root password 1")})
    with uvicorn_in_thread(create_app(auth_settings)) as server:
        base = f"http://127.0.0.1:{server.config.port}"
        with httpx.Client(base_url=base, timeout=30) as admin, httpx.Client(base_url=base, timeout=30) as mia:
            sign_in(admin, "root", "root password 1")
            created = admin.post("/api/v1/users", json={"username": "mia", "password": "mia's password", "role": "member"})
            assert created.status_code == 201, created.text
            with session_scope(auth_settings.database_url) as session:
                session.execute(update(User).where(User.id == created.json()["id"])
                                .values(max_active_evaluations=1, max_stored_bytes=200))
            sign_in(mia, "mia", "mia's password")
            model = mia.post("/api/v1/models", json={"name": "tiny", "kind": "huggingface", "path": str(tiny_model)})
            assert model.status_code == 201, model.text
            rows = b'{"question": "q?", "A": "a", "B": "b", "answer": "A"}\n'
            dataset = mia.post("/api/v1/datasets", files={"file": ("mcq.jsonl", rows)})
            assert dataset.status_code == 201, dataset.text
            body = {"name": "e", "model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]]}
            assert mia.post("/api/v1/evaluations", json=body).status_code == 201
            refused = mia.post("/api/v1/evaluations", json=body)
            assert refused.status_code == 429, refused.text
            assert "limit of active evaluations: 1" in refused.json()["detail"]
            assert refused.headers.get("Retry-After") == "60"
            assert admin.post("/api/v1/evaluations", json=body).status_code == 201  # administrators: no limit

            too_big = mia.post("/api/v1/datasets", files={"file": ("more.jsonl", rows * 4)})
            assert too_big.status_code == 403, too_big.text
            assert "over your storage limit of 200 bytes" in too_big.json()["detail"]
