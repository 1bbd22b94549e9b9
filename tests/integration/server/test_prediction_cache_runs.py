"""Issue 11, "never ask twice", on the production set-up: PostgreSQL, Redis, the API and a real Celery worker process
running real OpenCompass against a loopback endpoint that records every request it gets.

The same endpoint evaluation runs twice: the second sends the endpoint nothing, has the first one's predictions and
scores, and its manifest says every prediction came from the cache. The endpoint's answer changes between the runs,
so a prediction that was asked again would show. A third run with the cache turned off sends every prompt and gets
the new answers."""

from __future__ import annotations

import json

import pytest
from server_it_helpers import Stack, mcq_rows

ROWS = 6



@pytest.fixture
def stack(worker_stack):
    return worker_stack("cache")


def run(stack: Stack, body: dict, name: str) -> dict:
    evaluation_id = stack.submit({**body, "name": name})
    detail = stack.finished(evaluation_id)
    assert detail["status"] == "succeeded", detail.get("error") or detail.get("log_excerpt")
    return detail


def predictions(stack: Stack, detail: dict) -> list[str]:
    samples = stack.client.get(f"/evaluations/{detail['id']}/samples", params={"page_size": 50}).json()["items"]
    return [s["prediction"] for s in sorted(samples, key=lambda s: s["index"])]


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def scores(detail: dict) -> list[tuple[str, str, float, int]]:
    return sorted((s["dataset"], s["metric"], s["value"], s["n"]) for s in detail["scores"])


def test_a_rerun_asks_the_model_nothing_and_the_manifest_says_so(stack, endpoint, tiny_models):
    model = stack.client.post("/models", json={
        "name": "fake endpoint", "kind": "openai", "base_url": endpoint.url, "model": "always-the-same",
        "options": {"tokenizer_path": str(tiny_models[0]), "query_per_second": 100}})
    assert model.status_code == 201, model.text
    dataset = stack.upload_dataset("even.jsonl", mcq_rows(ROWS))
    body = {"model_ids": [model.json()["id"]], "dataset_ids": [dataset["id"]], "params": {"max_out_len": 8}}

    first = run(stack, body, "first")
    assert len(endpoint.bodies) == ROWS
    assert first["manifest"]["prediction_cache"] == {"enabled": True, "cached": 0, "pairs": []}
    assert predictions(stack, first) == ["A"] * ROWS
    assert [(metric, value) for _, metric, value, _ in scores(first)] == [("accuracy", 50.0)]  # the even rows

    endpoint.answer = "B"  # anything asked again from now on answers differently
    second = run(stack, body, "second")
    assert len(endpoint.bodies) == ROWS  # not one request more
    assert predictions(stack, second) == predictions(stack, first)
    assert scores(second) == scores(first)
    (model_abbr,) = [m["abbr"] for m in second["manifest"]["models"]]
    (pair,) = second["manifest"]["prediction_cache"]["pairs"]
    assert pair["model"] == model_abbr and pair["cached"] == ROWS and pair["index_ranges"] == [[0, ROWS - 1]]
    assert second["manifest"]["prediction_cache"]["enabled"] is True
    speed = stack.client.get(f"/evaluations/{second['id']}/samples", params={"page_size": 50}).json()["items"]
    assert all(sample.get("latency_s") is None for sample in speed)  # nothing was measured for a cached answer

    third = run(stack, {**body, "params": {**body["params"], "prediction_cache": False}}, "third")
    assert third["params"]["prediction_cache"] is False
    assert len(endpoint.bodies) == 2 * ROWS  # every prompt sent
    assert predictions(stack, third) == ["B"] * ROWS
    assert third["manifest"]["prediction_cache"] == {"enabled": False, "cached": 0, "pairs": []}
    # the third run's requests are the first run's, word for word: only the cache kept the second from sending them
    assert sorted(map(canonical, endpoint.bodies[ROWS:])) == sorted(map(canonical, endpoint.bodies[:ROWS]))
