#!/usr/bin/env python
"""Fair queueing benchmark (issue 9): how long another user's job waits behind one user's long queue.

A real API process and a real worker process with ONE slot (sign-in on). Alice queues --jobs evaluations; once her
first one runs, Bob submits one. Printed: Bob's wait (from his submit to his job's start), how many jobs started
before his, and what first-come-first-served would have cost him (Alice's queued jobs × the measured job time).
The jobs are small evaluations of a local fake OpenAI endpoint (loopback), so the figure is about scheduling, not
inference.

    python bench/bench_fairness.py                      # SQLite + the directory broker (the embedded default)
    python bench/bench_fairness.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        --broker-url redis://127.0.0.1:6379/0           # the production set-up (an empty database)

Target: Bob's job is the next to start after the one running when he submitted (0 jobs ahead of him).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import httpx
from processes import REPO, platform_env, start_api, start_worker, stop, wait_for

sys.path.insert(0, str(REPO / "tests"))
from fake_openai import FakeChatEndpoint  # noqa: E402  (tests/ is not a package)
from signed_in import sign_in  # noqa: E402

ADMIN, ADMIN_PASSWORD = "bench-admin", "bench-admin-password"
PASSWORD = "bench-user-password"
ROWS = b"".join(json.dumps({"question": f"Is {i} even?", "A": "yes", "B": "no",
                            "answer": "A" if i % 2 == 0 else "B"}).encode() + b"\n" for i in range(4))











def member(base: str, admin: httpx.Client, username: str) -> httpx.Client:
    created = admin.post("/users", json={"username": username, "password": PASSWORD, "role": "member"})
    assert created.status_code == 201, created.text
    client = httpx.Client(base_url=base, timeout=60)
    sign_in(client, username, PASSWORD)
    client.base_url = base + "/api/v1"
    return client


def evaluation_body(client: httpx.Client, endpoint: FakeChatEndpoint, tokenizer: Path, owner: str) -> dict:
    model = client.post("/models", json={"name": f"fake-{owner}", "kind": "openai", "base_url": endpoint.url,
                                          "model": "always-a", "options": {"tokenizer_path": str(tokenizer),
                                                                           "query_per_second": 100}})
    assert model.status_code == 201, model.text
    dataset = client.post("/datasets", files={"file": (f"even-{owner}.jsonl", ROWS)})
    assert dataset.status_code in (200, 201), dataset.text
    return {"model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]],
            "params": {"max_out_len": 8, "limit": 2}}


def submit(client: httpx.Client, body: dict, name: str) -> int:
    response = client.post("/evaluations", json={**body, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def detail(client: httpx.Client, evaluation_id: int) -> dict:
    return client.get(f"/evaluations/{evaluation_id}").json()


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def measure(args: argparse.Namespace, work: Path) -> None:
    from aieval_engine.tiny_model import build_tiny_model

    tokenizer = build_tiny_model(work / "models" / "tiny")
    env = platform_env(work, AIEVAL_AUTH_ENABLED="true", AIEVAL_INITIAL_ADMIN_USERNAME=ADMIN,
                       AIEVAL_INITIAL_ADMIN_PASSWORD=ADMIN_PASSWORD,
                       AIEVAL_MODEL_ROOTS=json.dumps([str(work / "models")]),
                       # Alice may queue all her jobs (the default limit is 20 active evaluations).
                       AIEVAL_DEFAULT_MAX_ACTIVE_EVALUATIONS=str(args.jobs + 1))
    if args.db_url:
        env["AIEVAL_DB_URL"] = args.db_url
    if args.broker_url:
        env["AIEVAL_BROKER_URL"] = env["AIEVAL_REDIS_URL"] = args.broker_url
    endpoint = FakeChatEndpoint(answer="A")  # before the API's port is chosen: it takes a free port too
    api, base = start_api(env, work)
    worker = None
    try:
        admin = httpx.Client(base_url=base, timeout=60)
        sign_in(admin, ADMIN, ADMIN_PASSWORD)
        admin.base_url = base + "/api/v1"
        worker = start_worker(env, work / "worker.log", "--queues", "api,local", "--concurrency", "1")
        alice, bob = member(base, admin, "alice"), member(base, admin, "bob")
        alice_body = evaluation_body(alice, endpoint, tokenizer, "alice")
        bob_body = evaluation_body(bob, endpoint, tokenizer, "bob")

        alice_jobs = [submit(alice, alice_body, f"alice {i}") for i in range(args.jobs)]
        wait_for(lambda: detail(alice, alice_jobs[0])["status"] == "running", 120, "Alice's first job to start")
        bob_job = submit(bob, bob_body, "bob")
        wait_for(lambda: detail(bob, bob_job)["status"] != "queued", 600, "Bob's job to start")
        bob_detail = detail(bob, bob_job)
        alice_details = [detail(alice, job) for job in alice_jobs]
        first = alice_details[0]
        for job in alice_jobs:  # the figure is taken: the rest of Alice's queue need not run
            alice.post(f"/evaluations/{job}/cancel")
        wait_for(lambda: detail(bob, bob_job)["status"] not in ("queued", "running"), 120, "Bob's job to finish")

        submitted, started = at(bob_detail["created_at"]), at(bob_detail["started_at"])
        ahead = [d for d in alice_details if d["started_at"] and submitted <= at(d["started_at"]) < started]
        running = [d for d in alice_details if d["started_at"] and at(d["started_at"]) < submitted]
        queued_behind = sum(1 for d in alice_details if not d["started_at"] or at(d["started_at"]) > started)
        job_s = ((at(first["finished_at"]) - at(first["started_at"])).total_seconds()
                 if first.get("finished_at") else float("nan"))
        print(f"one worker slot, Alice queued {args.jobs} jobs, then Bob submitted 1:")
        print(f"  Bob's wait: {(started - submitted).total_seconds():.1f} s; jobs started before his after he "
              f"submitted: {len(ahead)}; running when he submitted: {len(running)}")
        print(f"  first-come-first-served would have put {queued_behind} of Alice's queued jobs ahead of him "
              f"(about {queued_behind * job_s:.0f} s at {job_s:.1f} s per job)")
    finally:
        endpoint.close()
        if worker is not None:
            stop(worker)
        stop(api)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--jobs", type=int, default=20, help="Alice's queued jobs")
    options.add_argument("--db-url", default="", help="an empty database (default: SQLite in a temporary dir)")
    options.add_argument("--broker-url", default="", help="Redis (default: the directory broker)")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="aieval-bench-fairness-") as work:
        measure(args, Path(work))


if __name__ == "__main__":
    main()
