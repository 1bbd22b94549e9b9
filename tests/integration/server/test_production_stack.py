"""The production set-up: PostgreSQL + Redis (broker and pub/sub) + S3 (moto_server), separate API and worker
processes started by the seed's scripts, driven over HTTP and WebSocket."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import uuid
import zipfile
from pathlib import Path

import boto3
import psycopg
import pytest
from cryptography.fernet import Fernet
from fake_openai import FakeChatEndpoint
from server_it_helpers import (
    PYTHON,
    REPO,
    Stack,
    files_containing,
    mcq_rows,
    model_roots_env,
    processes_in,
    qa_rows,
    wait_until,
)
from websockets.sync.client import connect

BUCKET = f"aieval-it-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_url, redis_url, s3_endpoint, tiny_models):
    data_dir = tmp_path_factory.mktemp("prod-data")
    env = {
        "AIEVAL_ENV": "prod",
        "AIEVAL_DATA_DIR": str(data_dir),
        "AIEVAL_DB_URL": postgres_url,
        "AIEVAL_BROKER_URL": redis_url,
        "AIEVAL_REDIS_URL": redis_url,
        "AIEVAL_KEY_PREFIX": f"it-{uuid.uuid4().hex[:8]}:",
        "AIEVAL_STORAGE": "s3",
        "AIEVAL_S3_ENDPOINT_URL": s3_endpoint,
        "AIEVAL_S3_BUCKET": BUCKET,
        "AIEVAL_S3_ACCESS_KEY_ID": "testing",
        "AIEVAL_S3_SECRET_ACCESS_KEY": "testing",
        "AIEVAL_SECRET_KEY": Fernet.generate_key().decode(),
        "AIEVAL_CHECK_MODEL_PATHS": "true",
        "AIEVAL_HEARTBEAT_INTERVAL_S": "1",
        "AIEVAL_STALE_AFTER_S": "5",
        "AIEVAL_SWEEP_INTERVAL_S": "1",
        "AIEVAL_CHECKPOINT_INTERVAL_S": "1",
        # The fake model endpoints listen on loopback, which production refuses unless an administrator lists it.
        "AIEVAL_OUTBOUND_ALLOW_NETWORKS": '["127.0.0.1/32"]',
        **model_roots_env(tiny_models[0].parent),
    }
    # Production does not migrate on start: the script does it, as an operator would.
    migrate = subprocess.run([PYTHON, "scripts/migrate_db.py"], cwd=REPO, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    assert "upgraded" in migrate.stdout and "postgres@" not in migrate.stdout
    stack = Stack(env, tmp_path_factory.mktemp("prod-logs"))
    stack.data_dir = data_dir
    # The two workers stand for two machines: they share the database, broker and S3, not a disk.
    stack.worker_dirs = [data_dir, tmp_path_factory.mktemp("prod-data-second-machine")]
    try:
        stack.start_api()
        for worker_dir in stack.worker_dirs:
            stack.start_worker(data_dir=worker_dir)
        yield stack
    finally:
        stack.stop()


def job_dir_of(stack, evaluation: dict) -> Path:
    """The job directory on the "machine" (the worker's data dir) that runs or ran the evaluation."""
    pid = int(evaluation["worker"].split(":")[1])
    index = next(i for i, worker in enumerate(stack.workers) if worker.pid == pid)
    return stack.worker_dirs[index] / "jobs" / str(evaluation["id"])


def s3_keys(stack, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=stack.env["AIEVAL_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def watch(stack, evaluation_id: int, timeout: float = 240) -> list[dict]:
    """Every WebSocket message for one evaluation until the server closes the socket at the end."""
    messages = []
    url = stack.url.replace("http://", "ws://") + f"/api/v1/evaluations/{evaluation_id}/ws"
    with connect(url, open_timeout=10, close_timeout=5, additional_headers=stack.auth_headers) as socket:
        deadline_socket = socket
        while True:
            try:
                messages.append(json.loads(deadline_socket.recv(timeout=timeout)))
            except Exception as exc:  # ConnectionClosedOK ends the stream
                if type(exc).__name__.startswith("ConnectionClosed"):
                    return messages
                raise


def test_register_upload_evaluate_watch_results_export_compare(stack, tiny_models):
    tiny_a, tiny_b = tiny_models
    model_a = stack.register_model("tiny-a", tiny_a)
    model_b = stack.register_model("tiny-b", tiny_b)
    mcq = stack.upload_dataset("even.jsonl", mcq_rows(12))
    qa = stack.upload_dataset("sums.csv", b"question,answer\n" + b"".join(f"{i}+{i}?,{2 * i}\n".encode() for i in range(6)),
                scorer="contains")
    assert s3_keys(stack, f"datasets/{mcq['sha256']}")  # uploads live in S3

    created = stack.client.post("/evaluations", json={
        "name": "tiny-a on two sets", "model_ids": [model_a["id"]], "dataset_ids": [mcq["id"], qa["id"]],
        "params": {"limit": 6, "max_out_len": 8}})
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]
    messages = watch(stack, evaluation_id)
    statuses = [m["evaluation"]["status"] for m in messages if m["type"] == "update"]
    assert statuses[-1] == "succeeded", messages[-1]
    assert "running" in statuses
    progress = [m["evaluation"]["progress"] for m in messages if m["type"] == "update" and m["evaluation"]["progress"]]
    assert any(p.get("pairs") for p in progress)
    assert any(m["type"] == "log" for m in messages)  # log lines arrive through Redis pub/sub

    detail = stack.client.get(f"/evaluations/{evaluation_id}").json()
    assert detail["status"] == "succeeded" and detail["attempts"] == 1 and detail["duration_s"] > 0
    assert detail["manifest"]["opencompass"] and detail["progress"]["fraction"] == 1.0
    scores = {(s["dataset"], s["metric"]): s["value"] for s in detail["scores"]}
    assert set(scores) == {("even", "accuracy"), ("sums", "accuracy")}
    assert stack.client.get(f"/evaluations/{evaluation_id}/results").json() == detail["scores"]

    samples = stack.client.get(f"/evaluations/{evaluation_id}/samples", params={"dataset": "even", "page_size": 4}).json()
    assert samples["total"] == 6 and len(samples["items"]) == 4
    correct = stack.client.get(f"/evaluations/{evaluation_id}/samples", params={"dataset": "even", "correct": True}).json()
    assert correct["total"] == round(scores[("even", "accuracy")] * 6 / 100)
    found = stack.client.get(f"/evaluations/{evaluation_id}/samples", params={"q": "Is 3 even"}).json()
    assert found["total"] == 1 and found["items"][0]["index"] == 4  # the fourth row; indexes count from 1

    log = stack.client.get(f"/evaluations/{evaluation_id}/logs", params={"tail": 20}).text
    assert 0 < len(log.splitlines()) <= 20
    assert "attachment" in stack.client.get(f"/evaluations/{evaluation_id}/logs", params={"download": True}).headers["content-disposition"]
    csv_text = stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "csv"}).text
    # what the score rests on first; then its fingerprint and speed columns (test_hardening_exports has the rest)
    assert csv_text.splitlines()[0].startswith("evaluation_id,model,dataset,metric,value,n,correct,scorer,ci_low,ci_high,")
    assert len(csv_text.splitlines()) == 3
    markdown = stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "md"}).text
    assert "| even | accuracy |" in markdown
    exported = stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "json"}).json()
    assert exported["scores"] == detail["scores"]
    archive = zipfile.ZipFile(io.BytesIO(stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "zip"}).content))
    names = archive.namelist()
    assert {"evaluation.json", "scores.csv", "report.md", "artifacts/run.log", "artifacts/manifest.json"} <= set(names)
    assert any("/predictions/" in n for n in names) and any("/results/" in n for n in names)
    assert s3_keys(stack, f"evaluations/{evaluation_id}/")
    secret_free = "".join(archive.read(n).decode(errors="replace") for n in names if n.endswith((".py", ".json")))
    assert stack.env["AIEVAL_SECRET_KEY"] not in secret_free

    other = stack.client.post("/evaluations", json={
        "name": "tiny-b", "model_ids": [model_b["id"]], "dataset_ids": [mcq["id"]], "params": {"limit": 6, "max_out_len": 8}})
    other_id = other.json()["id"]
    assert stack.finished(other_id)["status"] == "succeeded"
    table = stack.client.get("/compare", params={"model_ids": [model_a["id"], model_b["id"]]}).json()
    assert [d["name"] for d in table["datasets"]] == ["even"]  # the only dataset both models ran
    cell_a = table["cells"][str(model_a["id"])][str(mcq["id"])]
    cell_b = table["cells"][str(model_b["id"])][str(mcq["id"])]
    assert (cell_a["evaluation_id"], cell_a["value"]) == (evaluation_id, scores[("even", "accuracy")])
    assert cell_b["evaluation_id"] == other_id
    board = stack.client.get("/leaderboard").json()
    assert {m["id"] for m in board["models"]} == {model_a["id"], model_b["id"]}
    listed = stack.client.get("/evaluations", params={"model_id": model_b["id"]}).json()
    assert [e["id"] for e in listed["items"]] == [other_id]


def test_endpoint_model_key_reaches_only_the_endpoint(stack, tiny_models):
    secret = f"sk-it-{uuid.uuid4().hex}"
    endpoint = FakeChatEndpoint(answer="A")
    try:
        created = stack.client.post("/models", json={
            "name": "fake endpoint", "kind": "openai", "base_url": endpoint.url, "model": "always-a", "api_key": secret,
            "options": {"tokenizer_path": str(tiny_models[0]), "query_per_second": 100}})
        assert created.status_code == 201, created.text
        model = created.json()
        assert model["api_key_hint"] == "…" + secret[-4:]
        probe = stack.client.post(f"/models/{model['id']}/test").json()
        assert probe["ok"] is True and probe["reply"] == "A" and probe["latency_ms"] > 0, probe
        dataset = stack.upload_dataset("even-12.jsonl", mcq_rows(12))
        evaluation = stack.client.post("/evaluations", json={
            "name": "endpoint", "model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": {"max_out_len": 8}})
        assert evaluation.json()["queue"] == "api"
        detail = stack.finished(evaluation.json()["id"])
        assert detail["status"] == "succeeded", detail["error"]
        # Always answering A is right on the six even-numbered questions.
        assert [(s["metric"], s["value"]) for s in detail["scores"]] == [("accuracy", 50.0)]
        assert len(endpoint.authorizations) >= 13 and set(endpoint.authorizations) == {f"Bearer {secret}"}
    finally:
        endpoint.close()
    assert secret not in json.dumps(detail)
    for data_dir in stack.worker_dirs:
        assert files_containing(data_dir, secret) == []  # job dirs, caches, secret-free configs
    assert files_containing(stack.logs, secret) == []  # API and worker logs
    archive = zipfile.ZipFile(io.BytesIO(stack.client.get(f"/evaluations/{detail['id']}/export", params={"format": "zip"}).content))
    assert [n for n in archive.namelist() if secret.encode() in archive.read(n)] == []
    with psycopg.connect(stack.env["AIEVAL_DB_URL"].replace("+psycopg", "")) as db:
        for table in ("models", "evaluations", "scores", "datasets"):
            rows = db.execute(f"SELECT row_to_json(t)::text FROM {table} t").fetchall()
            assert not [r for r in rows if secret in r[0]], table  # encrypted at rest


def test_cancel_mid_run_stops_every_process_and_retry_resumes(stack, tiny_models):
    model = stack.register_model("tiny-slow", tiny_models[0], batch_size=2, max_out_len=48)
    dataset = stack.upload_dataset("many.jsonl", qa_rows(400))
    evaluation_id = stack.client.post("/evaluations", json={
        "name": "to cancel", "model_ids": [model["id"]], "dataset_ids": [dataset["id"]],
        "params": {"max_out_len": 48}}).json()["id"]
    running = stack.wait_for(evaluation_id, lambda d: (d["progress"] or {}).get("samples_done", 0) > 0, 120, "first samples")
    job_dir = job_dir_of(stack, running)
    assert processes_in(job_dir), "the run should be going"
    # While it runs, the log tail comes from what the worker keeps in the database.
    wait_until(lambda: stack.client.get(f"/evaluations/{evaluation_id}/logs", params={"tail": 5}).text.strip(), 20,
               what="live log lines")
    response = stack.client.post(f"/evaluations/{evaluation_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    detail = stack.wait_for(evaluation_id, lambda d: d["status"] == "cancelled", 30, "the cancellation")
    assert detail["error"] == "cancelled by request"
    done_when_cancelled = detail["progress"]["samples_done"]
    wait_until(lambda: not processes_in(job_dir), 10, what="no process left in the job dir")

    retried = stack.client.post(f"/evaluations/{evaluation_id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    detail = stack.finished(evaluation_id, timeout=300)
    assert detail["status"] == "succeeded" and detail["attempts"] == 2, detail["error"]
    assert detail["progress"]["samples_done"] == 400 > done_when_cancelled
    archive = zipfile.ZipFile(io.BytesIO(stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "zip"}).content))
    assert len({n.split("/")[2] for n in archive.namelist() if n.startswith("artifacts/outputs/")}) == 1  # resumed

    assert stack.client.delete(f"/evaluations/{evaluation_id}").status_code == 204
    assert s3_keys(stack, f"evaluations/{evaluation_id}/") == []
    # Every machine drops its copy: the API at once, the workers on their next sweep.
    wait_until(lambda: not [d for d in stack.worker_dirs if (d / "jobs" / str(evaluation_id)).exists()], 20,
               what="job dirs removed on every worker")
    assert stack.client.get(f"/evaluations/{evaluation_id}").status_code == 404


def test_killed_worker_job_is_resumed_by_another_with_the_same_scores(stack, tiny_models):
    model = stack.register_model("tiny-resume", tiny_models[1], batch_size=2, max_out_len=32)
    dataset = stack.upload_dataset("resume.jsonl", mcq_rows(160))
    body = {"model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": {"max_out_len": 32}}
    reference_id = stack.client.post("/evaluations", json={**body, "name": "reference"}).json()["id"]
    reference = stack.finished(reference_id)
    assert reference["status"] == "succeeded"

    evaluation_id = stack.client.post("/evaluations", json={**body, "name": "interrupted"}).json()["id"]
    running = stack.wait_for(evaluation_id, lambda d: 0 < (d["progress"] or {}).get("samples_done", 0) < 120, 120,
                             "the run to be part-way")
    victim_pid = int(running["worker"].split(":")[1])
    victim = next(w for w in stack.workers if w.pid == victim_pid)
    victim_job_dir = job_dir_of(stack, running)
    # The survivor is on "another machine": it can only resume from the checkpoint in S3.
    wait_until(lambda: s3_keys(stack, f"evaluations/{evaluation_id}/outputs/"), 30, what="a first checkpoint")
    os.kill(victim_pid, signal.SIGKILL)
    victim.wait(timeout=10)

    detail = stack.finished(evaluation_id, timeout=300)
    assert detail["status"] == "succeeded", detail["error"]
    assert detail["attempts"] == 2 and int(detail["worker"].split(":")[1]) != victim_pid
    assert [(s["metric"], s["value"]) for s in detail["scores"]] == [(s["metric"], s["value"]) for s in reference["scores"]]
    # Resumed, not restarted: OpenCompass reused the first attempt's run directory and its predictions,
    # fetched from S3 by a worker that had never seen this job.
    archive = zipfile.ZipFile(io.BytesIO(stack.client.get(f"/evaluations/{evaluation_id}/export", params={"format": "zip"}).content))
    run_dirs = {n.split("/")[2] for n in archive.namelist() if n.startswith("artifacts/outputs/")}
    assert len(run_dirs) == 1, run_dirs
    assert job_dir_of(stack, detail) != victim_job_dir
    assert "resuming from" in stack.client.get(f"/evaluations/{evaluation_id}/logs", params={"download": True}).text
    wait_until(lambda: not processes_in(victim_job_dir), 10, what="no orphaned run left")
