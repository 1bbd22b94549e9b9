"""Issue 12's "/metrics is scraped in a test and shows the run", on the production set-up: PostgreSQL, Redis, the API
and a real Celery worker in separate processes (both record into the data dir's metrics directory), real OpenCompass
asking a loopback endpoint. Prometheus' own parser reads the scrape, which it gets as a scraper does: over HTTP with
the bearer token of AIEVAL_METRICS_TOKEN."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_it_helpers import Stack, mcq_rows

ROWS = 6
SCRAPER_TOKEN = "it-scraper-token-5f2a9c"
MODEL_KEY = "sk-never-in-a-label-41d7"



@pytest.fixture
def stack(worker_stack):
    return worker_stack("metrics", AIEVAL_METRICS_TOKEN=SCRAPER_TOKEN)


def scrape(stack: Stack, token: str | None = SCRAPER_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{stack.url}/metrics", headers=headers, timeout=30)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_the_scrape_shows_the_run(stack, endpoint, tiny_models):
    model = stack.client.post("/models", json={
        "name": "fake endpoint", "kind": "openai", "base_url": endpoint.url, "model": "always-the-same",
        "api_key": MODEL_KEY, "options": {"tokenizer_path": str(tiny_models[0]), "query_per_second": 100}})
    assert model.status_code == 201, model.text
    dataset = stack.upload_dataset("even.jsonl", mcq_rows(ROWS))
    before = parse(scrape(stack).text)
    assert value(before, "aieval_evaluations", state="succeeded") == 0
    assert value(before, "aieval_evaluation_duration_seconds_count", outcome="succeeded") is None

    evaluation_id = stack.submit({"name": "scraped", "model_ids": [model.json()["id"]],
                                  "dataset_ids": [dataset["id"]], "params": {"max_out_len": 8}})
    detail = stack.finished(evaluation_id)
    assert detail["status"] == "succeeded", detail.get("error") or detail.get("log_excerpt")
    assert len(endpoint.bodies) == ROWS

    response = scrape(stack)
    assert response.status_code == 200, response.text
    text = response.text
    samples = parse(text)
    # evaluations by state and the queues, from the database
    assert value(samples, "aieval_evaluations", state="succeeded") == 1
    assert value(samples, "aieval_evaluations", state="queued") == value(samples, "aieval_evaluations",
                                                                          state="running") == 0
    assert value(samples, "aieval_queue_depth", queue="api") == 0
    assert value(samples, "aieval_database_up") == 1
    # recorded by the worker process: the attempt's duration, the endpoint's requests, the samples scored
    assert value(samples, "aieval_evaluation_duration_seconds_count", outcome="succeeded") == 1
    assert value(samples, "aieval_evaluation_duration_seconds_sum", outcome="succeeded") > 0
    assert value(samples, "aieval_model_request_duration_seconds_count", model="fake endpoint") == ROWS
    assert value(samples, "aieval_model_request_duration_seconds_bucket", model="fake endpoint", le="+Inf") == ROWS
    assert value(samples, "aieval_model_request_duration_seconds_sum", model="fake endpoint") > 0
    assert value(samples, "aieval_model_time_to_first_token_seconds_count", model="fake endpoint") == ROWS  # streamed
    assert value(samples, "aieval_samples_scored_total", model="fake endpoint") == ROWS
    assert value(samples, "aieval_model_request_retries_total", model="fake endpoint") is None  # none retried
    assert value(samples, "aieval_model_failed_tasks_total", model="fake endpoint") is None
    # recorded by the API process: request latency by route template
    assert value(samples, "aieval_http_request_duration_seconds_count", method="POST", route="/api/v1/evaluations",
                 status="201") == 1
    assert value(samples, "aieval_http_request_duration_seconds_count", method="GET",
                 route="/api/v1/evaluations/{evaluation_id}", status="200") >= 1
    assert f"/api/v1/evaluations/{evaluation_id}\"" not in text  # an id never becomes a label
    # the worker's liveness, by its Celery name
    beats = {dict(labels)["worker"]: beat for (name, labels), beat in samples.items()
             if name == "aieval_worker_heartbeat_timestamp_seconds"}
    assert [worker for worker in beats if worker.startswith("w0-")], beats
    assert all(time.time() - beat < 120 for beat in beats.values()), beats
    # nothing secret or personal in a label: no key, no endpoint URL, no user name
    assert MODEL_KEY not in text and endpoint.url not in text and "it-admin" not in text

    assert scrape(stack, token=None).status_code == 401
    assert scrape(stack, token="not-the-token").status_code == 401
