"""Issue 11, "with no settings at all": through the API and a real Celery worker (PostgreSQL, Redis, real OpenCompass),
an endpoint model registered with nothing about concurrency adapts to its server. The loopback server refuses (429 +
Retry-After) whatever arrives while 24 requests are in flight, above the limiter's starting point (16), so the
evaluation must grow to the server's capacity, back off on refusals, and lose nothing. With the per-model ceiling an
administrator sets (`max_concurrency`, shared through Redis by every job of that model), it never goes above it.
The engine-level test of the same limiter: tests/integration/engine/test_continuous_pool.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint

QUESTIONS = 300
SERVER_LIMIT = 24


@pytest.fixture
def refusing_endpoint():
    endpoint = BodyHashEndpoint(latency_s=0.1, refuse_above=SERVER_LIMIT, retry_after="0.2")
    yield endpoint
    endpoint.close()


@pytest.fixture
def stack(worker_stack):
    return worker_stack("adaptive")


def questions(count: int) -> bytes:
    return "".join(json.dumps({"question": f"Question number {i}?", "answer": str(i)}) + "\n"
                   for i in range(count)).encode()


def evaluate(stack, endpoint, tokenizer: Path, name: str, **model_fields) -> dict:
    model = stack.client.post("/models", json={
        "name": name, "kind": "openai", "base_url": endpoint.url, "model": "refusing",
        "options": {"tokenizer_path": str(tokenizer)}, **model_fields})  # nothing about concurrency or rate
    assert model.status_code == 201, model.text
    dataset = stack.upload_dataset(f"{name}.jsonl", questions(QUESTIONS))
    evaluation_id = stack.submit({"name": name, "model_ids": [model.json()["id"]], "dataset_ids": [dataset["id"]],
                                  "params": {"max_out_len": 8}})
    detail = stack.finished(evaluation_id, timeout=300)
    assert detail["status"] == "succeeded", detail.get("error") or detail.get("log_excerpt")
    return detail


def test_nothing_set_grows_to_the_servers_capacity_backs_off_on_refusals_and_loses_nothing(
        stack, refusing_endpoint, tiny_models):
    detail = evaluate(stack, refusing_endpoint, tiny_models[0], "adapts")
    answered = refusing_endpoint.questions_answered()
    assert len(answered) == len(set(answered)) == QUESTIONS  # every question answered once: none lost, none twice
    assert refusing_endpoint.peak_in_flight == SERVER_LIMIT  # grew past its start (16) to the server's limit
    assert any(score["n"] == QUESTIONS for score in detail["scores"])


def test_the_ceiling_an_administrator_sets_caps_it(stack, refusing_endpoint, tiny_models):
    evaluate(stack, refusing_endpoint, tiny_models[0], "capped", max_concurrency=10)
    answered = refusing_endpoint.questions_answered()
    assert len(answered) == len(set(answered)) == QUESTIONS
    assert refusing_endpoint.peak_in_flight <= 10
