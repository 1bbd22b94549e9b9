"""Fair queueing across users (issue 9) on the production set-up: PostgreSQL, Redis as the broker, the API and a
real worker process with ONE slot. Alice queues six evaluations, then Bob submits one: Bob's runs as soon as the
job running now is done, before Alice's other five. An administrator's job goes before both.

Also: many workers claiming at once on PostgreSQL take every queued job exactly once (SKIP LOCKED + the
compare-and-set claim)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone

import httpx
import psycopg
import pytest
from fake_openai import FakeChatEndpoint
from psycopg.rows import dict_row
from server_it_helpers import Stack, mcq_rows, wait_until
from signed_in import sign_in

ALICE_JOBS = 6
PASSWORD = "fair-queue-password"
FAST = {"max_out_len": 8, "limit": 2}



@pytest.fixture
def stack(worker_stack):
    return worker_stack("fair")


def signed_in_member(stack: Stack, username: str) -> httpx.Client:
    created = stack.client.post("/users", json={"username": username, "password": PASSWORD, "role": "member"})
    assert created.status_code == 201, created.text
    client = httpx.Client(base_url=stack.url, timeout=60)
    sign_in(client, username, PASSWORD)
    client.base_url = stack.url + "/api/v1"  # as stack.client
    return client


def evaluation_body(client: httpx.Client, endpoint: FakeChatEndpoint, tokenizer, owner: str) -> dict:
    """Each user registers their own model and dataset (nothing of theirs depends on sharing)."""
    model = client.post("/models", json={
        "name": f"fake-{owner}", "kind": "openai", "base_url": endpoint.url, "model": "always-a",
        "options": {"tokenizer_path": str(tokenizer), "query_per_second": 100}})
    assert model.status_code == 201, model.text
    dataset = client.post("/datasets", files={"file": (f"even-{owner}.jsonl", mcq_rows(4))})
    assert dataset.status_code in (200, 201), dataset.text
    return {"model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]], "params": FAST}


def submit(client: httpx.Client, body: dict, name: str) -> int:
    response = client.post("/evaluations", json={**body, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def jobs(db_url: str) -> dict[int, dict]:
    with psycopg.connect(db_url.replace("+psycopg", ""), connect_timeout=10, row_factory=dict_row) as db:
        rows = db.execute("SELECT e.id, e.name, e.status, e.created_at, e.started_at, e.priority, u.username AS owner "
                          "FROM evaluations e LEFT JOIN users u ON u.id = e.owner_id").fetchall()
    return {row["id"]: row for row in rows}


def test_another_users_job_runs_before_the_first_users_queue(stack, endpoint, tiny_models):
    alice = signed_in_member(stack, "alice")
    bob = signed_in_member(stack, "bob")
    try:
        alice_body = evaluation_body(alice, endpoint, tiny_models[0], "alice")
        bob_body = evaluation_body(bob, endpoint, tiny_models[0], "bob")
        admin_body = evaluation_body(stack.client, endpoint, tiny_models[0], "admin")
        alice_jobs = [submit(alice, alice_body, f"alice {i}") for i in range(ALICE_JOBS)]
        stack.wait_for(alice_jobs[0], lambda d: d["status"] == "running", 60, "Alice's first job to start")
        bob_job = submit(bob, bob_body, "bob")
        admin_job = submit(stack.client, admin_body, "admin")
        stack.wait_for(bob_job, lambda d: d["status"] != "queued", 120, "Bob's job to start")
        stack.wait_for(admin_job, lambda d: d["status"] != "queued", 120, "the administrator's job to start")
    finally:
        alice.close()
        bob.close()
    # The test is over: the rest of Alice's jobs need not run.
    for job in alice_jobs:
        stack.client.post(f"/evaluations/{job}/cancel")

    state = jobs(stack.env["AIEVAL_DB_URL"])
    assert [state[job]["owner"] for job in (alice_jobs[0], bob_job, admin_job)] == ["alice", "bob", stack.env[
        "AIEVAL_INITIAL_ADMIN_USERNAME"]], "the API must record who submitted each evaluation (owner_id)"
    assert state[admin_job]["priority"] > state[bob_job]["priority"] == 0, "administrators' jobs get a priority"
    bob_submitted = state[bob_job]["created_at"]
    started = sorted((row["started_at"], row["name"]) for row in state.values() if row["started_at"] is not None)
    running_when_bob_came = [name for at, name in started if at < bob_submitted]
    started_after = [name for at, name in started if at >= bob_submitted]
    # One slot: after the job(s) running when Bob submitted (normally Alice's first alone), Bob's and the
    # administrator's jobs go before Alice's next; the administrator's first unless Bob's had already started.
    assert sorted(started_after[:2]) == ["admin", "bob"], started
    if state[admin_job]["created_at"] < state[bob_job]["started_at"]:
        assert started_after[:2] == ["admin", "bob"], started
    waited = state[bob_job]["started_at"] - bob_submitted
    queued_ahead = ALICE_JOBS - len(running_when_bob_came)
    print(f"\nfair queue, one worker slot: Bob's job waited {waited.total_seconds():.1f} s behind "
          f"{len(running_when_bob_came)} running job(s) and the administrator's 1 (priority); Alice's "
          f"{queued_ahead} queued job(s) waited for it (first-come-first-served: {queued_ahead} jobs ahead of Bob)")


# ---- concurrent claims on PostgreSQL ---------------------------------------------------------------
def test_concurrent_claims_take_each_job_once_on_postgres(own_postgres_url):
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from aieval_server.db import Base
    from aieval_server.models import Evaluation, User
    from aieval_server.services import scheduling

    engine = create_engine(own_postgres_url, pool_size=8)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        users = [User(username=f"u{i}-{uuid.uuid4().hex[:6]}", display_name="u", password_hash="") for i in range(3)]
        session.add_all(users)
        session.flush()
        session.add_all([Evaluation(name=f"{user.username}-{n}", params={}, owner_id=user.id, queue="local")
                         for n in range(15) for user in users])
        session.commit()
        owners = {user.id: user.username for user in users}

    def claim(slot: str) -> int | None:
        with Session(engine) as session:
            before = scheduling.claim_fairest(session, "local", {"status": "running", "worker": slot,
                                                                 "started_at": datetime.now(timezone.utc)})
            session.commit()
        return before.id if before is not None else None

    # The same fair order as on SQLite: the first three slots run one job of each user (their first).
    taken: list[int] = [claim("first") for _ in owners]
    with Session(engine) as session:
        first = session.execute(select(Evaluation.owner_id, Evaluation.name).where(Evaluation.id.in_(taken))).all()
    assert sorted(first) == sorted((owner_id, f"{name}-0") for owner_id, name in owners.items())
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker_slot(index: int) -> None:
        start.wait()
        while (evaluation_id := claim(f"slot-{index}")) is not None:
            with lock:
                taken.append(evaluation_id)

    slots = [threading.Thread(target=worker_slot, args=(i,)) for i in range(6)]
    for slot in slots:
        slot.start()
    for slot in slots:
        slot.join(60)
    wait_until(lambda: not any(slot.is_alive() for slot in slots), 5, what="the claiming threads")
    with Session(engine) as session:
        ids = session.scalars(select(Evaluation.id)).all()
        assert session.scalar(select(func.count()).where(Evaluation.status == "queued")) == 0
    assert sorted(taken) == sorted(ids), "every job claimed exactly once"
    engine.dispose()
