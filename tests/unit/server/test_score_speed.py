"""Quality and speed side by side (issue 10): a real worker run (real OpenCompass) of two loopback endpoints, one that
reports its token usage and one that sends none, stores each result's speed summary with its score, and the API, the
sample browser, the per-sample export and the reports show it; and migration 0009 adds the column to a database
holding older scores."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scored_runs import database_with_a_deleted_score, register_endpoint_model, run_on_worker, upload_dataset
from sqlalchemy import text
from timed_openai import FLAKY, TimedChatEndpoint, delay_of, first_token_delay_of

ROWS = 5


@pytest.fixture(scope="module")
def endpoints():
    counted, uncounted = TimedChatEndpoint(send_usage=True), TimedChatEndpoint(send_usage=False)
    yield counted, uncounted
    counted.close()
    uncounted.close()


def test_a_run_stores_each_results_speed_and_every_view_shows_it(client, settings, endpoints):
    counted, uncounted = endpoints
    model_ids = [register_endpoint_model(client, name, endpoint.url, concurrency=2, retries=2)
                 for name, endpoint in (("counted", counted), ("uncounted", uncounted))]
    body = "".join(json.dumps({"question": f"What is {n} times 3?", "answer": str(3 * n)}) + "\n"
                   for n in range(1, ROWS + 1))
    dataset_id = upload_dataset(client, "times3.jsonl", body.encode(), "contains")
    evaluation_id = run_on_worker(client, settings, model_ids, [dataset_id])

    samples = client.get(f"/api/v1/evaluations/{evaluation_id}/samples", params={"page_size": 50}).json()["items"]
    assert len(samples) == 2 * ROWS
    for sample in samples:
        n = int(sample["prompt"][-1]["prompt"].split()[2])
        assert delay_of(n) <= sample["latency_s"] < delay_of(n) + 1.5
        assert sample["retries"] == (1 if n == FLAKY else 0)
        # the answers streamed: the first text came first_token_delay_of(n) after the request
        assert first_token_delay_of(n) <= sample["ttft_s"] < min(first_token_delay_of(n) + 1.0, sample["latency_s"])
        if sample["model"] == "counted":
            assert (sample["prompt_tokens"], sample["completion_tokens"]) == (100 + n, n)
        else:
            assert (sample["prompt_tokens"], sample["completion_tokens"]) == (None, None)

    scores = {s["model"]: s for s in client.get(f"/api/v1/evaluations/{evaluation_id}").json()["scores"]}
    for model, score in scores.items():
        latencies = [s["latency_s"] for s in samples if s["model"] == model]
        speed = score["speed"]
        assert speed["samples"] == ROWS and speed["retries"] == 1
        assert speed["latency_p50_s"] == pytest.approx(np.percentile(latencies, 50), abs=1e-9)
        assert speed["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95), abs=1e-9)
        first_tokens = [s["ttft_s"] for s in samples if s["model"] == model]
        assert speed["ttft_p50_s"] == pytest.approx(np.percentile(first_tokens, 50), abs=1e-9)
        assert speed["ttft_p95_s"] == pytest.approx(np.percentile(first_tokens, 95), abs=1e-9)
    assert scores["counted"]["speed"]["total_tokens"] == sum(100 + 2 * n for n in range(1, ROWS + 1))
    assert scores["counted"]["speed"]["completion_tokens_mean"] == pytest.approx(np.mean(range(1, ROWS + 1)))
    assert scores["uncounted"]["speed"]["total_tokens"] is None
    assert scores["uncounted"]["speed"]["completion_tokens_mean"] is None
    results = client.get(f"/api/v1/evaluations/{evaluation_id}/results").json()  # the other query path
    assert {s["model"]: s["speed"] for s in results} == {model: s["speed"] for model, s in scores.items()}

    # Per-sample export: latency and token columns, numbers in CSV, null in JSON lines when not sent.
    exported = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert {"latency_s", "ttft_s", "prompt_tokens", "completion_tokens"} <= set(rows[0])
    by_latency = {(r["model"], int(r["index"])): r for r in rows}
    for sample in samples:
        row = by_latency[(sample["model"], sample["index"])]
        assert float(row["latency_s"]) == pytest.approx(sample["latency_s"])
        assert float(row["ttft_s"]) == pytest.approx(sample["ttft_s"])
        assert row["prompt_tokens"] == ("" if sample["prompt_tokens"] is None else str(sample["prompt_tokens"]))
    lines = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"}).text
    records = [json.loads(line) for line in lines.splitlines()]
    assert sorted((r["model"], r["prompt_tokens"], r["completion_tokens"]) for r in records) == sorted(
        (s["model"], s["prompt_tokens"], s["completion_tokens"]) for s in samples)

    # Reports: the scores CSV's speed columns, the Markdown "Speed" section.
    score_csv = {r["model"]: r for r in csv.DictReader(io.StringIO(
        client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "csv"}).text))}
    assert float(score_csv["counted"]["latency_p50_s"]) == pytest.approx(scores["counted"]["speed"]["latency_p50_s"])
    assert float(score_csv["counted"]["ttft_p50_s"]) == pytest.approx(scores["counted"]["speed"]["ttft_p50_s"])
    assert score_csv["counted"]["total_tokens"] == str(scores["counted"]["speed"]["total_tokens"])
    assert score_csv["uncounted"]["total_tokens"] == ""
    report = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "md"}).text
    assert "## Speed" in report
    assert "| counted | times3 | p50 " in report and " · 3 tokens/answer |" in report  # mean of 1..5 completion tokens


def test_the_speed_text_of_a_report():
    from aieval_server.services.speed import seconds, speed_text

    assert speed_text({"latency_p50_s": 0.523, "latency_p95_s": 0.9, "completion_tokens_mean": 119.6}) == \
        "p50 0.52 s · p95 0.9 s · 120 tokens/answer"
    assert speed_text({"latency_p50_s": 12.34, "latency_p95_s": None, "completion_tokens_mean": None}) == "p50 12.3 s"
    assert speed_text(None) is None and speed_text({"latency_p50_s": None}) is None
    assert seconds(0.004) == "4 ms"


def test_reports_show_the_first_token_when_the_answers_streamed():
    from aieval_server.services.artifacts import SAMPLE_COLUMNS
    from aieval_server.services.speed import SPEED_COLUMNS, markdown_lines, speed_cells, speed_text

    speed = {"latency_p50_s": 0.523, "latency_p95_s": 0.9, "ttft_p50_s": 0.081, "ttft_p95_s": 0.2,
             "completion_tokens_mean": 119.6, "total_tokens": 900, "retries": 0}
    assert speed_text(speed) == "p50 0.52 s · p95 0.9 s · first token p50 0.081 s · 120 tokens/answer"
    assert speed_text({**speed, "ttft_p50_s": None}) == "p50 0.52 s · p95 0.9 s · 120 tokens/answer"
    cells = dict(zip(SPEED_COLUMNS, speed_cells(speed), strict=True))
    assert (cells["ttft_p50_s"], cells["ttft_p95_s"]) == (0.081, 0.2)
    assert SAMPLE_COLUMNS[-4:] == ("latency_s", "ttft_s", "prompt_tokens", "completion_tokens")
    assert any("first token p50 0.081 s" in line for line in markdown_lines([{"model": "m", "dataset": "d",
                                                                              "speed": speed}], str))


def test_migration_0009_adds_a_nullable_speed_and_keeps_ids_never_reused(tmp_path):
    from aieval_server.db.migrate import downgrade, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = database_with_a_deleted_score(url, "0008")
    upgrade(url, "0009")
    with engine.begin() as connection:
        assert [tuple(row) for row in connection.execute(text("SELECT value, speed FROM scores"))] == [(50.0, None)]
        connection.execute(text("INSERT INTO scores (evaluation_id, model_name, dataset_name, model_abbr, "
                                "dataset_abbr, metric, value, speed) VALUES "
                                "(1, 'm', 'd', 'm', 'd', 'acc', 62.5, '{\"samples\": 8}')"))
        assert connection.execute(text("SELECT max(id) FROM scores")).scalar() == 3  # AUTOINCREMENT kept
    downgrade(url, "0008")
    with engine.connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(scores)"))}
        assert "speed" not in columns and "value" in columns
    engine.dispose()
