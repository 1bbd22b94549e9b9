"""A schedule on the new_model_version trigger, on the production set-up: PostgreSQL, Redis, the API, a real Celery
worker and two real Celery beats looking at a loopback OpenAI-compatible endpoint every second. The first look only
records the served version; while it stays the same nothing runs; once the endpoint serves another version (another
`created` and `root`, as a vLLM restarted on a new checkpoint), exactly one run is submitted, and it runs."""

from __future__ import annotations

import os
import signal
import time

import pytest
from server_it_helpers import mcq_rows, wait_until
from sqlalchemy import create_engine, text
from test_schedules_gates import start_beat

KEY = "sk-watched-endpoint-key-5e0b"


@pytest.fixture
def stack(worker_stack):
    return worker_stack("versions", AIEVAL_SCHEDULE_TICK_S="1", AIEVAL_SCHEDULE_VERSION_CHECK_S="1")


def runs_of(engine, schedule_id: int) -> list[int]:
    with engine.connect() as connection:
        return [row.id for row in connection.execute(
            text("SELECT id FROM evaluations WHERE schedule_id = :id ORDER BY id"), {"id": schedule_id})]


def test_a_new_served_version_submits_exactly_one_run_under_two_beats(stack, endpoint, tiny_models):
    endpoint.served_models = [{"id": "watched", "object": "model", "created": 1700000000, "owned_by": "vllm",
                               "root": "/ckpt/v1", "max_model_len": 2048}]
    model = stack.client.post("/models", json={
        "name": "watched endpoint", "kind": "openai", "base_url": endpoint.url, "model": "watched", "api_key": KEY,
        "options": {"tokenizer_path": str(tiny_models[0]), "query_per_second": 100}})
    assert model.status_code == 201, model.text
    dataset = stack.upload_dataset("even.jsonl", mcq_rows(2))
    schedule = stack.client.post("/schedules", json={
        "name": "on new versions", "trigger": "new_model_version",
        "request": {"model_ids": [model.json()["id"]], "dataset_ids": [dataset["id"]],
                    "params": {"max_out_len": 4, "prediction_cache": False}}})
    assert schedule.status_code == 201, schedule.text
    schedule_id = schedule.json()["id"]

    def shown():
        return stack.client.get(f"/schedules/{schedule_id}").json()

    engine = create_engine(stack.env["AIEVAL_DB_URL"])
    beats = [start_beat(stack, 0), start_beat(stack, 1)]
    try:
        recorded = wait_until(lambda: shown()["model_version"], 60, what="the first look at the endpoint")
        assert '"root":"/ckpt/v1"' in recorded
        looks = len(endpoint.listing_authorizations)
        time.sleep(3)  # a few more looks by both beats: the same version, no run
        assert len(endpoint.listing_authorizations) > looks
        assert set(endpoint.listing_authorizations) == {f"Bearer {KEY}"}
        assert runs_of(engine, schedule_id) == [] and shown()["last_error"] is None

        endpoint.served_models = [{**endpoint.served_models[0], "created": 1700050000, "root": "/ckpt/v2"}]
        fired = wait_until(lambda: shown()["last_evaluation_id"], 60, what="a run of the new version")
        time.sleep(3)  # more looks by both beats: the new version is the recorded one, nothing more is submitted
        assert runs_of(engine, schedule_id) == [fired]
        assert '"root":"/ckpt/v2"' in shown()["model_version"]
    finally:
        for beat in beats:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=30)
        engine.dispose()

    run = stack.finished(fired)
    assert run["status"] == "succeeded", run.get("error")
    assert endpoint.authorizations and set(endpoint.authorizations) == {f"Bearer {KEY}"}
    for log_name in ("beat0.log", "beat1.log", "worker0.log", "api.log"):
        assert KEY not in stack.read_log(log_name), log_name
