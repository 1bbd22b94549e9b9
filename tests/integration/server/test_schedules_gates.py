"""Continuous evaluation on the production set-up (issue 12): PostgreSQL, Redis, the API, a real Celery worker running
real OpenCompass against a loopback endpoint, and two real Celery beats.

A baseline is run with `aieval submit` while the endpoint answers every question right; then the endpoint answers
wrong. A schedule that falls due is fired by two beats ticking at once and submitted exactly once; its run is gated
against the baseline by the paired test and fails ("no significant drop"), with the reason on the run, and a webhook
receiver on loopback gets the signed gate_failed notification. `aieval submit --schedule` of the same spec exits 4
with the gate's reasons."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from server_it_helpers import PYTHON, REPO, Stack, wait_until
from sqlalchemy import create_engine, text
from webhook_receiver import WebhookReceiver

ROWS = 12  # every answer "A": all right, then all wrong; McNemar's p = 2 * 0.5**12 ≈ 0.0005
SECRET = "whsec-gate-secret-7"


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def stack(worker_stack):
    return worker_stack("schedules", AIEVAL_SCHEDULE_TICK_S="1")


def write_spec(folder: Path, endpoint_url: str, tokenizer: Path) -> Path:
    data = folder / "all_a.jsonl"
    data.write_text("".join(json.dumps({"question": f"Question {i}: pick A.", "A": "yes", "B": "no", "answer": "A"})
                            + "\n" for i in range(ROWS)))
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "nightly gate", "models": [{"kind": "openai", "name": "gate endpoint", "base_url": endpoint_url,
                                            "model": "m", "tokenizer_path": str(tokenizer), "query_per_second": 100}],
        "datasets": [{"kind": "custom", "name": "all a", "path": str(data), "data_type": "mcq"}],
        # Every run asks the endpoint: the cache would give tonight's run last week's answers.
        "params": {"max_out_len": 4, "prediction_cache": False}}))
    return spec


def run_submit(stack: Stack, spec: Path, token: str, home: Path, *extra: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIEVAL_")}
    return subprocess.run([PYTHON, "-m", "aieval_engine.cli", "submit", str(spec), "--server", stack.url,
                           "--poll-interval", "0.3", *extra],
                          env={**clean, "HOME": str(home), "COLUMNS": "200", "AIEVAL_TOKEN": token}, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def start_beat(stack: Stack, index: int) -> subprocess.Popen:
    log = open(stack.logs / f"beat{index}.log", "ab")
    return subprocess.Popen([PYTHON, "-m", "celery", "-A", "aieval_server.celery_app:celery_app", "beat",
                             "--loglevel", "INFO"], env=stack.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_a_due_schedule_runs_once_under_two_beats_and_its_gate_fails_on_a_drop(stack, endpoint, tiny_models,
                                                                               receiver, tmp_path):
    token = stack.client.post("/tokens", json={"name": "ci", "scope": "run"}).json()["token"]
    spec = write_spec(tmp_path, endpoint.url, tiny_models[0])
    home = tmp_path / "home"
    home.mkdir()

    baseline_run = run_submit(stack, spec, token, home, "--json")
    assert baseline_run.returncode == 0, baseline_run.stdout + baseline_run.stderr
    baseline = stack.client.get(f"/evaluations/{json.loads(baseline_run.stdout)['evaluation_id']}").json()
    assert [s["value"] for s in baseline["scores"] if s["metric"] == "accuracy"] == [100.0]

    schedule = stack.client.post("/schedules", json={
        "name": "nightly", "cron": "0 3 * * *", "timezone": "Asia/Shanghai",
        "request": {"model_ids": [m["id"] for m in baseline["models"]],
                    "dataset_ids": [d["id"] for d in baseline["datasets"]], "params": baseline["params"]},
        "gate_rules": [{"kind": "no_significant_drop", "alpha": 0.05},
                       {"kind": "min_score", "dataset": "all a", "threshold": 50}]})
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]
    assert stack.client.put(f"/schedules/{schedule_id}/baseline",
                            json={"evaluation_id": baseline["id"]}).status_code == 200

    channel = stack.client.post("/notification-channels", json={
        "name": "gate hook", "kind": "webhook", "url": receiver.url(), "secret": SECRET, "events": ["gate_failed"]})
    assert channel.status_code == 201, channel.text

    endpoint.answer = "B"  # tonight's model got worse
    beats = [start_beat(stack, 0), start_beat(stack, 1)]
    try:
        wait_until(lambda: all("beat: Starting..." in stack.read_log(f"beat{i}.log") for i in (0, 1)), 60,
                   what="both beats to start")
        engine = create_engine(stack.env["AIEVAL_DB_URL"])
        with engine.begin() as connection:  # falls due now; both beats tick every second
            connection.execute(text("UPDATE schedules SET next_run_at = now() - interval '1 minute' WHERE id = :id"),
                               {"id": schedule_id})
        fired = wait_until(lambda: stack.client.get(f"/schedules/{schedule_id}").json()["last_evaluation_id"], 60,
                           what="the schedule to fire")
        time.sleep(3)  # a few more ticks of both beats: nothing more is submitted
        with engine.connect() as connection:
            runs = connection.execute(text("SELECT id, owner_id FROM evaluations WHERE schedule_id = :id"),
                                      {"id": schedule_id}).all()
        engine.dispose()
        assert [run.id for run in runs] == [fired]
        assert runs[0].owner_id == baseline["owner"]["id"]  # the schedule's owner
    finally:
        for beat in beats:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=30)

    run = stack.wait_for(fired, lambda d: d["status"] != "queued" and d["status"] != "running"
                         and (d["status"] != "succeeded" or d["gate"] is not None), 240, "the run and its gate")
    assert run["status"] == "succeeded", run.get("error")
    assert run["gate_status"] == "failed" and run["gate"]["baseline_evaluation_id"] == baseline["id"]
    drop, minimum = run["gate"]["rules"]
    assert drop["status"] == "failed"
    assert drop["reasons"][0].startswith("gate endpoint / all a: 100.00 points worse than baseline #")
    assert minimum["status"] == "failed" and minimum["reasons"] == ["gate endpoint / all a / accuracy: 0.00 < 50"]
    wait_until(lambda: receiver.count() >= 1, 60, what="the gate_failed notification")
    (hook,) = receiver.received
    signed = hook.headers["x-aieval-timestamp"].encode() + b"." + hook.body
    assert hook.headers["x-aieval-signature"] == "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    message = json.loads(hook.body)
    assert message["event"] == "gate_failed" and message["evaluation"]["id"] == fired
    assert message["details"]["status"] == "failed" and "worse than baseline" in message["details"]["summary"]

    listed = stack.client.get("/evaluations", params={"q": "nightly"}).json()["items"]
    assert {e["id"]: e["gate_status"] for e in listed}[fired] == "failed"
    shown = stack.client.get(f"/schedules/{schedule_id}").json()
    assert shown["last_gate_status"] == "failed"
    assert datetime.fromisoformat(shown["next_run_at"]) > datetime.fromisoformat(run["created_at"])  # tomorrow 03:00

    gated = run_submit(stack, spec, token, home, "--schedule", str(schedule_id))
    assert gated.returncode == 4, gated.stdout + gated.stderr
    assert "gate failed" in gated.stdout and "points worse than baseline" in gated.stdout
