"""One big evaluation over many workers (issue 11, scale-out): a job of two local checkpoints runs as two parts on
two real worker processes (one slot each; PostgreSQL, Redis as the broker, the real engine with tiny models).

- Its scores and per-sample predictions equal the same job run whole (fan-out turned off on the worker).
- Cancel stops every part: no OpenCompass process is left and the job ends cancelled.
- A worker killed in the middle of its part: only that part runs again (resuming from its predictions), on the
  worker left, and the job still equals the unsplit run.
- One checkpoint with two datasets: its large dataset runs as two shards, the small one as a part of its own, and
  the merged job equals that checkpoint's share of the unsplit run."""

from __future__ import annotations

import json
import os
import signal
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from server_it_helpers import (
    PG_ADMIN_URL,
    Stack,
    mcq_rows,
    migrate,
    model_roots_env,
    processes_in,
    production_env,
    qa_rows,
    wait_until,
)

ROWS = 240  # long enough to kill or cancel a part part-way on a fast machine (see test_restarts.py)


@pytest.fixture(scope="module")
def database():
    name = f"aieval_fanout_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, database, redis_url, tiny_models):
    data_dir = tmp_path_factory.mktemp("fanout-data")
    env = production_env(data_dir, database, redis_url, redis_url, **model_roots_env(tiny_models[0].parent))
    migrate(env)
    stack = Stack(env, tmp_path_factory.mktemp("fanout-logs"))
    stack.data_dir = data_dir
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def body(stack, tiny_models) -> dict:
    models = [stack.register_model(f"tiny-{i}", path, batch_size=4, max_out_len=16) for i, path in enumerate(tiny_models)]
    datasets = [stack.upload_dataset("even.jsonl", mcq_rows(ROWS)), stack.upload_dataset("sums.jsonl", qa_rows(12))]
    return {"model_ids": [m["id"] for m in models], "dataset_ids": [d["id"] for d in datasets]}


def stop_worker(worker) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


@pytest.fixture(scope="module")
def reference(stack, body) -> dict:
    """The job run whole, by a worker with fan-out turned off: what the parts together must give."""
    stack.env["AIEVAL_FANOUT"] = "false"
    worker = stack.start_worker(concurrency=1)
    del stack.env["AIEVAL_FANOUT"]
    try:
        evaluation_id = stack.submit({**body, "name": "whole"})
        detail = stack.finished(evaluation_id, timeout=600)
    finally:
        stop_worker(worker)
    assert detail["status"] == "succeeded", detail["error"]
    assert parts(stack, evaluation_id) == []
    return {"detail": detail, "samples": samples(stack, evaluation_id)}


# Up to 3 local parts of at least 80 rows: the two-checkpoint job stays one part per checkpoint (3 // 2), a
# one-checkpoint job of 240 + 12 rows becomes three (services/fanout.split).
CUT = {"AIEVAL_FANOUT_MAX_PARTS": "3", "AIEVAL_FANOUT_PART_ROWS": "80"}


@pytest.fixture(scope="module")
def two_workers(stack, reference):
    stack.env.update(CUT)
    try:
        return [stack.start_worker(concurrency=1), stack.start_worker(concurrency=1)]
    finally:
        for name in CUT:
            del stack.env[name]


# ---- reading what happened ----------------------------------------------------------------------
def parts(stack, evaluation_id: int) -> list[dict]:
    with psycopg.connect(stack.env["AIEVAL_DB_URL"].replace("+psycopg", ""), connect_timeout=10,
                         row_factory=dict_row) as db:
        return db.execute("SELECT position, models, queue, status, worker, attempts, progress FROM evaluation_parts "
                          "WHERE evaluation_id = %s ORDER BY position", (evaluation_id,)).fetchall()


def scores(detail: dict) -> list[tuple]:
    return [(s["model"], s["dataset"], s["metric"], s["value"], s["n"], s["correct"]) for s in detail["scores"]]


def samples(stack, evaluation_id: int) -> list[tuple]:
    response = stack.client.get(f"/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"})
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines() if line]
    return sorted((r["model"], r["dataset"], r["index"], json.dumps(r["prediction"]), r["correct"]) for r in rows)


def worker_pid(token: str) -> int:
    return int(token.split(":")[1])


def both_parts_running(stack, evaluation_id: int) -> list[dict]:
    def check():
        found = parts(stack, evaluation_id)
        running = [p for p in found if p["status"] == "running" and (p["progress"] or {}).get("samples_done", 0) > 0]
        return found if len(running) == 2 else None

    return wait_until(check, 240, interval=0.3, what="both parts to be running with some predictions made")


# ---- tests ----------------------------------------------------------------------------------------
def test_parts_on_two_workers_equal_the_whole_run(stack, body, reference, two_workers):
    evaluation_id = stack.submit({**body, "name": "fanned out"})
    detail = stack.finished(evaluation_id, timeout=600)
    assert detail["status"] == "succeeded", detail["error"]
    found = parts(stack, evaluation_id)
    assert [(p["models"], p["queue"], p["status"]) for p in found] == [
        ({"models": ["tiny-0"], "datasets": None, "shard": None}, "local", "succeeded"),
        ({"models": ["tiny-1"], "datasets": None, "shard": None}, "local", "succeeded")]
    assert scores(detail) == scores(reference["detail"])
    assert samples(stack, evaluation_id) == reference["samples"]
    # the job's progress is its parts' added up
    assert detail["progress"]["samples_done"] == reference["detail"]["progress"]["samples_done"] == 2 * (ROWS + 12)
    assert detail["progress"]["fraction"] == 1.0
    assert {(p["model_abbr"], p["dataset_abbr"]) for p in detail["pairs"]} == {
        (p["model_abbr"], p["dataset_abbr"]) for p in reference["detail"]["pairs"]}


def test_one_checkpoint_runs_as_shards_and_dataset_parts_equal_to_the_whole_run(stack, body, reference, two_workers):
    evaluation_id = stack.submit({**body, "model_ids": body["model_ids"][:1], "name": "one checkpoint, cut"})
    detail = stack.finished(evaluation_id, timeout=600)
    assert detail["status"] == "succeeded", detail["error"]
    found = parts(stack, evaluation_id)
    assert [(p["models"]["datasets"], p["models"]["shard"], p["queue"], p["status"]) for p in found] == [
        ([0], {"dataset": 0, "index": 0, "start": 0, "stop": ROWS // 2}, "local", "succeeded"),
        ([0], {"dataset": 0, "index": 1, "start": ROWS // 2, "stop": ROWS}, "local", "succeeded"),
        ([1], None, "local", "succeeded")]
    tiny_0 = [row for row in scores(reference["detail"]) if row[0] == "tiny-0"]
    assert scores(detail) == tiny_0 and len(tiny_0) >= 2
    assert samples(stack, evaluation_id) == [row for row in reference["samples"] if row[0] == "tiny-0"]
    assert detail["progress"]["samples_done"] == ROWS + 12 and detail["progress"]["fraction"] == 1.0
    # the shards' pairs add up into the dataset's pair, as the unsplit run has it
    assert sorted((p["model_abbr"], p["dataset_abbr"], p["ok"]) for p in detail["pairs"]) == sorted(
        (p["model_abbr"], p["dataset_abbr"], p["ok"]) for p in reference["detail"]["pairs"] if p["model"] == "tiny-0")


def test_cancel_stops_every_part(stack, body, two_workers):
    evaluation_id = stack.submit({**body, "name": "cancelled"})
    both_parts_running(stack, evaluation_id)
    response = stack.client.post(f"/evaluations/{evaluation_id}/cancel")
    assert response.status_code == 200, response.text
    detail = stack.finished(evaluation_id, timeout=120)
    assert detail["status"] == "cancelled"
    assert [p["status"] for p in parts(stack, evaluation_id)] == ["cancelled", "cancelled"]
    job_dir = stack.data_dir / "jobs" / str(evaluation_id)
    wait_until(lambda: not processes_in(job_dir), 30, what="no OpenCompass process left in the job's directory")


def test_a_killed_worker_reruns_only_its_part(stack, body, reference, two_workers):
    evaluation_id = stack.submit({**body, "name": "killed"})
    running = both_parts_running(stack, evaluation_id)
    by_pid = {worker_pid(p["worker"]): p for p in running}  # a worker's threads run its parts: its own pid
    victim = next(w for w in two_workers if w.pid in by_pid)
    killed = by_pid[victim.pid]
    os.killpg(victim.pid, signal.SIGKILL)  # the worker; its OpenCompass run, in a session of its own, lives on
    victim.wait(timeout=30)
    detail = stack.finished(evaluation_id, timeout=600)
    assert detail["status"] == "succeeded", detail["error"]
    after = {p["position"]: p for p in parts(stack, evaluation_id)}
    assert after[killed["position"]]["attempts"] == 2  # run again, by the worker left
    assert [p["attempts"] for pos, p in after.items() if pos != killed["position"]] == [1]  # not run again
    assert scores(detail) == scores(reference["detail"])
    assert samples(stack, evaluation_id) == reference["samples"]
    assert not processes_in(stack.data_dir / "jobs" / str(evaluation_id)), "the dead worker's run was not stopped"
