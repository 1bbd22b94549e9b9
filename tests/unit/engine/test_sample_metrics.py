"""sample_metrics.py: the per-prompt records of endpoint models and their summary per result."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from aieval_engine.sample_metrics import (
    METRICS_DIR_ENV,
    Attempt,
    MetricsWriter,
    SampleMetrics,
    percentile,
    prompt_key,
    record_of,
    summarize,
    token_count,
)

TURNS = [{"role": "HUMAN", "prompt": "What is 2 times 3?"}]


@pytest.mark.parametrize("values", [[0.5], [0.3, 0.1], [1, 2, 3, 4, 5], list(np.random.default_rng(7).random(37))])
@pytest.mark.parametrize("q", [0, 5, 50, 95, 100])
def test_percentile_is_numpys_linear_percentile(values, q):
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), abs=1e-12)


def test_prompt_key_counts_roles_and_texts_only():
    assert prompt_key(TURNS) == prompt_key([{**TURNS[0], "input_length": 9}])  # what dump_res_length adds
    assert prompt_key(TURNS) != prompt_key([{"role": "SYSTEM", "prompt": "What is 2 times 3?"}])
    assert prompt_key("text") != prompt_key([{"role": "", "prompt": "text"}])


@pytest.mark.parametrize(("value", "expected"), [(12, 12), (12.0, 12), (0, 0), (-1, None), (1.5, None),
                                                 (True, None), ("12", None), (None, None), (float("nan"), None)])
def test_token_counts_are_taken_only_as_sent(value, expected):
    assert token_count(value) == expected


def test_the_record_is_the_last_successful_attempt_with_every_earlier_request_a_retry():
    attempts = [Attempt(500, 0.01), Attempt(200, 0.4, 10, 3)]
    assert record_of(attempts, requests=3) == {"latency_s": 0.4, "ttft_s": None, "prompt_tokens": 10,
                                               "completion_tokens": 3, "retries": 2}
    assert record_of([Attempt(500, 0.01)], requests=1) is None


def test_records_written_from_many_threads_are_read_back_per_prompt_in_order(tmp_path):
    writer = MetricsWriter("m", {METRICS_DIR_ENV: str(tmp_path)})
    assert not MetricsWriter("m", {}).enabled and not MetricsWriter(None, {METRICS_DIR_ENV: str(tmp_path)}).enabled

    def write(n: int) -> None:
        for i in range(50):
            writer.write([{"role": "HUMAN", "prompt": f"q{n}-{i}"}], {"latency_s": n + i / 100, "ttft_s": None,
                                                                     "prompt_tokens": i, "completion_tokens": n,
                                                                     "retries": 0})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["key"] for line in lines)
    # a prompt asked twice takes its records in order; a third time, and an unknown prompt, get none
    writer.write(TURNS, {"latency_s": 1.0, "prompt_tokens": 5})
    writer.write(TURNS, {"latency_s": 2.0, "prompt_tokens": 6})
    with open(tmp_path / "m.jsonl", "a") as handle:
        handle.write('{"key": "cut off by a cra')
    metrics = SampleMetrics.read(tmp_path / "m.jsonl")
    assert metrics.take([{"role": "HUMAN", "prompt": "q3-7"}]) == {
        "latency_s": 3.07, "ttft_s": None, "prompt_tokens": 7, "completion_tokens": 3, "retries": 0}
    assert [metrics.take(TURNS)["latency_s"] for _ in range(3)] == [1.0, 2.0, None]
    assert metrics.take("never asked") == dict.fromkeys(("latency_s", "ttft_s", "prompt_tokens", "completion_tokens",
                                                         "retries"))
    assert SampleMetrics.read(tmp_path / "missing.jsonl").take(TURNS)["latency_s"] is None


def row(latency, prompt=None, completion=None, retries=0):
    return SimpleNamespace(latency_s=latency, ttft_s=None, prompt_tokens=prompt, completion_tokens=completion,
                           retries=retries)


def test_summary_of_a_result():
    rows = [row(0.2, 100, 10), row(0.4, 120, 30, retries=2), row(1.0, 110, 20), row(None)]
    summary = summarize(rows)
    assert summary == {
        "samples": 3, "latency_p50_s": 0.4, "latency_p95_s": pytest.approx(np.percentile([0.2, 0.4, 1.0], 95)),
        "latency_mean_s": pytest.approx(0.5333333333), "ttft_p50_s": None, "ttft_p95_s": None,
        "prompt_tokens_mean": 110.0, "completion_tokens_mean": 20.0, "total_tokens": 390, "retries": 2}
    # usage from only some answers: means of those, but no total that would look like the whole
    partial = summarize([row(0.2, 100, 10), row(0.3)])
    assert partial["prompt_tokens_mean"] == 100 and partial["total_tokens"] is None
    assert summarize([row(None), row(None)]) is None and summarize([]) is None
