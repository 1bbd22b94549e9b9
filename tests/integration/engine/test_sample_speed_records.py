"""Issue 10: latency and token counts per sample for endpoint models, recorded inside a real OpenCompass run.

The endpoint is a real loopback HTTP server speaking the OpenAI chat-completions shape. It answers "What is N times
3?" after sleeping a time known per question, and reports a usage known per question, so each sample's record can be
checked exactly (tokens) or within bounds (latency). The answers stream (the pool's requests do), their first text
after a time known per question: the time to first token is checked within bounds too. One question fails once with
HTTP 500 first: its record is the successful attempt's, with one retry. The `opencompass` CLI, which does not stream,
predicts the same."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from timed_openai import FLAKY, TimedChatEndpoint, delay_of, first_token_delay_of

from aieval_engine import workdir
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.sample_metrics import summarize
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow
ROWS = 6


def questions_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "times3.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {n} times 3?", "answer": str(n * 3)}) + "\n"
                            for n in range(1, ROWS + 1)), encoding="utf-8")
    return path


def spec_for(url: str, data: Path, **model_settings):
    return parse_spec({
        "models": [{"kind": "openai", "name": "timed", "base_url": url, "model": "m", "concurrency": 3,
                    "query_per_second": 100, "retries": 2, **model_settings}],
        "datasets": [{"kind": "custom", "name": "times3", "path": str(data), "scorer": "contains"}],
        "params": {"max_out_len": 16},
    })


def number_of(sample) -> int:
    return int(re.search(r"What is (\d+) times 3", json.dumps(sample.prompt)).group(1))


def test_each_sample_gets_its_latency_tokens_and_retries_and_the_predictions_do_not_change(tmp_path, warm_launcher):
    endpoint = TimedChatEndpoint(send_usage=True)
    try:
        result = Evaluation(spec_for(endpoint.url, questions_file(tmp_path / "data")), tmp_path / "job",
                            launcher=warm_launcher).run()
        assert result.ok, result.error
        assert endpoint.requests == ROWS + 1  # one retry
        pair = result.pairs[0]
        samples = list(iter_samples(result.run_dir, pair.model_abbr, pair.dataset_abbr))
        assert sorted(number_of(s) for s in samples) == list(range(1, ROWS + 1))
        for sample in samples:
            n = number_of(sample)
            assert sample.prompt_tokens == 100 + n and sample.completion_tokens == n
            assert delay_of(n) <= sample.latency_s < delay_of(n) + 1.5, (n, sample.latency_s)
            assert sample.retries == (1 if n == FLAKY else 0)
            assert first_token_delay_of(n) <= sample.ttft_s < min(first_token_delay_of(n) + 1.0, sample.latency_s)
            assert sample.correct is True

        latencies = [s.latency_s for s in samples]
        summary = summarize(samples)
        assert summary["samples"] == ROWS
        assert summary["latency_p50_s"] == pytest.approx(np.percentile(latencies, 50), abs=1e-12)
        assert summary["latency_p95_s"] == pytest.approx(np.percentile(latencies, 95), abs=1e-12)
        assert summary["prompt_tokens_mean"] == pytest.approx(100 + np.mean(range(1, ROWS + 1)))
        assert summary["completion_tokens_mean"] == pytest.approx(np.mean(range(1, ROWS + 1)))
        assert summary["total_tokens"] == sum(100 + 2 * n for n in range(1, ROWS + 1))
        assert summary["retries"] == 1
        first_tokens = [s.ttft_s for s in samples]
        assert summary["ttft_p50_s"] == pytest.approx(np.percentile(first_tokens, 50), abs=1e-12)
        assert summary["ttft_p95_s"] == pytest.approx(np.percentile(first_tokens, 95), abs=1e-12)

        # The same config run by the `opencompass` CLI, where nothing is recorded (no records directory is given):
        # byte-identical predictions. The endpoint answers each question the same way, the retry included.
        endpoint.failed_once.discard(FLAKY)
        cli_dir = tmp_path / "cli"
        env = {k: v for k, v in os.environ.items() if k != "AIEVAL_SAMPLE_METRICS_DIR"}
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "opencompass"), str(tmp_path / "job" / "config.py"), "--debug",
             "-w", str(cli_dir)], cwd=tmp_path / "job", capture_output=True, text=True, timeout=600,
            env={**env, "HF_HUB_OFFLINE": "1"})
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        (cli_run,) = [p for p in cli_dir.iterdir() if p.is_dir()]
        assert not (cli_dir / "sample_metrics").exists()
        ours = workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_bytes()
        theirs = workdir.predictions_file(cli_run, pair.model_abbr, pair.dataset_abbr).read_bytes()
        assert ours == theirs
    finally:
        endpoint.close()


@pytest.mark.parametrize("stream", [True, False])
def test_an_endpoint_that_sends_no_usage_gets_latency_and_null_tokens(tmp_path, warm_launcher, stream):
    endpoint = TimedChatEndpoint(send_usage=False)
    try:
        result = Evaluation(spec_for(endpoint.url, questions_file(tmp_path / "data"), stream=stream),
                            tmp_path / "job", launcher=warm_launcher).run()
        assert result.ok, result.error
        pair = result.pairs[0]
        samples = list(iter_samples(result.run_dir, pair.model_abbr, pair.dataset_abbr))
        assert len(samples) == ROWS
        assert all(s.prompt_tokens is None and s.completion_tokens is None for s in samples)
        assert all(s.latency_s is not None and s.latency_s >= delay_of(number_of(s)) for s in samples)
        # streaming turned off (for a server that cannot stream): no first token to time
        assert all((s.ttft_s is not None) == stream for s in samples)
        summary = summarize(samples)
        assert summary["prompt_tokens_mean"] is None and summary["total_tokens"] is None
        assert summary["latency_p50_s"] == pytest.approx(np.percentile([s.latency_s for s in samples], 50))
    finally:
        endpoint.close()
