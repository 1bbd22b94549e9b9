"""Personal API tokens on PostgreSQL across two API processes sharing one database: a token made on one works on
the other, and revoking it (or disabling its owner) on one is refused by the other within the session cache's
lifetime (AIEVAL_SESSION_CACHE_TTL_S), while the first refuses it at once. The audit log records it all, and
deleting a user deletes the user's tokens."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from server_it_helpers import PYTHON, REPO, Stack, sign_in, wait_until
from sqlalchemy import create_engine, text

CACHE_TTL_S = 1.0
MEMBER, MEMBER_PASSWORD = "ci-owner", "ci owner password"


@pytest.fixture
def two_api_processes(tmp_path, own_postgres_url):
    env = {"AIEVAL_DATA_DIR": str(tmp_path / "data"), "AIEVAL_DB_URL": own_postgres_url,
           "AIEVAL_AUTH_ENABLED": "true", "AIEVAL_SESSION_CACHE_TTL_S": str(CACHE_TTL_S),
           "AIEVAL_REGISTER_DEMO": "false", "AIEVAL_PREPARE_DEMO_MODEL": "false"}
    stacks = []
    try:
        for name in ("a", "b"):  # one after the other: the first one migrates the database
            logs = tmp_path / f"logs-{name}"
            logs.mkdir()
            stack = Stack(env, logs)
            stacks.append(stack)
            stack.start_api()
        yield stacks
    finally:
        for stack in stacks:
            stack.stop()


def submit_with_token(server_url: str, token: str, folder: Path) -> subprocess.CompletedProcess:
    """`aieval submit --no-wait` as a CI job runs it: the personal token in AIEVAL_TOKEN, nothing else."""
    (folder / "questions.jsonl").write_text(json.dumps({"question": "2 + 2 = ?", "answer": "4"}) + "\n")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "ci gate", "params": {"limit": 1, "max_out_len": 4},
        "models": [{"kind": "openai", "name": "ci endpoint", "base_url": "http://127.0.0.1:18999/v1", "model": "m"}],
        "datasets": [{"kind": "custom", "name": "ci questions", "path": "questions.jsonl", "scorer": "contains"}]}))
    home = folder / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIEVAL_")}
    return subprocess.run([PYTHON, "-m", "aieval_engine.cli", "submit", str(spec), "--server", server_url,
                           "--no-wait", "--json"], env={**clean, "HOME": str(home), "AIEVAL_TOKEN": token},
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def refused_within(client: httpx.Client, path: str, limit_s: float) -> float:
    started = time.monotonic()
    wait_until(lambda: client.get(path).status_code == 401, limit_s, interval=0.05,
               what=f"{client.base_url}{path} to refuse the token")
    return time.monotonic() - started


def test_token_auth_and_revocation_across_two_api_processes(two_api_processes, own_postgres_url, tmp_path):
    a, b = two_api_processes
    made = a.client.post("/users", json={"username": MEMBER, "password": MEMBER_PASSWORD, "role": "member"})
    assert made.status_code == 201, made.text
    member_id = made.json()["id"]
    with httpx.Client(base_url=a.url, timeout=30) as member_on_a:
        sign_in(member_on_a, MEMBER, MEMBER_PASSWORD)
        first = member_on_a.post("/api/v1/tokens", json={"name": "pipeline", "scope": "run"}).json()
        second = member_on_a.post("/api/v1/tokens", json={"name": "nightly", "scope": "read",
                                                          "expires_in_days": 7}).json()
        assert first["token"].startswith("aiev_") and second["expires_at"] is not None
        with (httpx.Client(base_url=a.url + "/api/v1", headers={"Authorization": f"Bearer {first['token']}"},
                           timeout=30) as token_on_a,
              httpx.Client(base_url=b.url + "/api/v1", headers={"Authorization": f"Bearer {first['token']}"},
                           timeout=30) as token_on_b,
              httpx.Client(base_url=b.url + "/api/v1", headers={"Authorization": f"Bearer {second['token']}"},
                           timeout=30) as read_token_on_b):
            assert token_on_b.get("/auth/me").json()["user"]["username"] == MEMBER
            assert token_on_a.get("/auth/me").status_code == 200
            created = token_on_b.post("/models", json={"name": "made-by-ci", "kind": "openai",
                                                       "base_url": "http://127.0.0.1:18999/v1", "model": "m"})
            assert created.status_code == 201, created.text
            assert read_token_on_b.get("/models").status_code == 200
            assert read_token_on_b.delete(f"/models/{created.json()['id']}").status_code == 403
            assert token_on_b.get("/tokens").status_code == 403
            submitted = submit_with_token(b.url, first["token"], tmp_path)
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            assert first["token"] not in submitted.stdout + submitted.stderr
            evaluation = token_on_a.get(f"/evaluations/{json.loads(submitted.stdout.splitlines()[-1])['evaluation_id']}")
            assert evaluation.status_code == 200 and evaluation.json()["status"] == "queued"
            read_only = submit_with_token(b.url, second["token"], tmp_path)
            assert read_only.returncode != 0 and "scope read" in read_only.stdout + read_only.stderr

            # Revoked on A: A refuses at once, B (which has the token cached) within the cache's lifetime.
            assert token_on_b.get("/auth/me").status_code == 200
            assert member_on_a.delete(f"/api/v1/tokens/{first['id']}").status_code == 204
            assert token_on_a.get("/auth/me").status_code == 401
            waited = refused_within(token_on_b, "/auth/me", CACHE_TTL_S + 2)
            print(f"process B refused the revoked token after {waited:.2f} s (cache TTL {CACHE_TTL_S} s)")

            # The owner disabled on A: B refuses the other token within the cache's lifetime too.
            assert read_token_on_b.get("/auth/me").status_code == 200
            assert a.client.patch(f"/users/{member_id}", json={"disabled": True}).status_code == 200
            refused_within(read_token_on_b, "/auth/me", CACHE_TTL_S + 2)
            assert read_token_on_b.get("/models").json()["detail"].startswith("this API token is not valid")

    listed = a.client.get("/audit", params={"target_type": "token"}).json()
    assert [(e["action"], e["target_name"], e["actor_name"]) for e in reversed(listed["items"])] == [
        ("created", "pipeline", MEMBER), ("created", "nightly", MEMBER), ("revoked", "pipeline", MEMBER)]
    assert all(e["address"] == "127.0.0.1" for e in listed["items"])
    assert listed["items"][-1]["detail"] == {"scope": "run", "expires_at": None}

    engine = create_engine(own_postgres_url)
    try:
        with engine.begin() as connection:
            hashes = connection.execute(text("SELECT token_hash, last_used_at FROM api_tokens ORDER BY id")).all()
            assert len(hashes) == 2 and all(len(h) == 64 and last_used is not None for h, last_used in hashes)
            assert first["token"] not in str(hashes)
            connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": member_id})
            assert connection.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 0
            # the audit events stay, their actor's id cleared (names are kept)
            assert connection.execute(text("SELECT count(*) FROM audit_events WHERE actor_name = :n AND "
                                           "actor_id IS NULL"), {"n": MEMBER}).scalar() >= 4
    finally:
        engine.dispose()
