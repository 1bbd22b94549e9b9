"""A real OpenCompass evaluation of a Dify chat app (a local server speaking Dify's chat-messages API that
answers from a table, some answers wrong on purpose), checked against the `opencompass` CLI itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_dify import FakeDify
from test_engine_runs import assert_same_as_cli, run_opencompass_cli

from aieval_engine.dify import EVAL_USER
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow

APP_KEY = "app-INTEGRATION-dify-secret-93b1"
# question -> (reference, what the app answers)
ROWS = {
    "What is the capital of Japan?": ("Tokyo", "Tokyo"),
    "How many legs does a spider have?": ("8", "8"),
    "What colour is a clear daytime sky?": ("blue", "blue"),
    "Which planet is known as the Red Planet?": ("Mars", "Mars"),
    "法国的首都是哪里？": ("巴黎", "巴黎"),
    "What is 12 times 12?": ("144", "The answer is 144."),  # right only for the forgiving scorer
    "Who wrote Hamlet?": ("Shakespeare", "Marlowe"),  # wrong
    "What is the chemical symbol for gold?": ("Au", "Ag"),  # wrong
}
# A Dify variable may be named like a Python keyword; OpenCompass' config dump must not choke on it.
APP_INPUTS = {"lang": "en", "class": "advanced"}
EXACT = 100 * 5 / 8  # exact match: the five verbatim answers
CONTAINS = 100 * 6 / 8  # contains: also "The answer is 144."


def files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_dify_app_scores_match_the_opencompass_cli_and_the_key_stays_in_memory(tmp_path, warm_launcher):
    data = tmp_path / "dify_qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": ref}, ensure_ascii=False) + "\n"
                            for q, (ref, _) in ROWS.items()), encoding="utf-8")
    with FakeDify({q: answer for q, (_, answer) in ROWS.items()}, api_key=APP_KEY) as dify:
        spec = parse_spec({
            "name": "dify-run",
            "models": [{"kind": "dify", "name": "my dify app", "base_url": dify.base_url, "api_key": APP_KEY,
                        "inputs": APP_INPUTS, "concurrency": 4, "query_per_second": 50, "retries": 1}],
            "datasets": [
                {"kind": "custom", "name": "dify-qa exact", "path": str(data)},
                {"kind": "custom", "name": "dify-qa contains", "path": str(data), "scorer": "contains"},
            ],
        })
        job = tmp_path / "job"
        result = Evaluation(spec, job, launcher=warm_launcher, environ={}).run()

        assert result.status == "succeeded", (result.error, result.log_excerpt)
        assert {(s.dataset, s.metric): s.value for s in result.scores} == {
            ("dify-qa exact", "accuracy"): EXACT, ("dify-qa contains", "accuracy"): CONTAINS}
        assert {s.model for s in result.scores} == {"my dify app"}
        # Every sample reached the app once, as a blocking chat-messages call carrying the key as Bearer.
        assert len(dify.requests) == 2 * len(ROWS)
        assert {r["authorization"] for r in dify.requests} == {f"Bearer {APP_KEY}"}
        assert sorted(r["body"]["query"] for r in dify.requests) == sorted(list(ROWS) * 2)
        assert all(r["body"]["response_mode"] == "blocking" and r["body"]["inputs"] == APP_INPUTS
                   and r["body"]["user"] == EVAL_USER for r in dify.requests)
        exact_abbr = next(s.dataset_abbr for s in result.scores if s.dataset == "dify-qa exact")
        model_abbr = result.scores[0].model_abbr
        samples = list(iter_samples(result.run_dir, model_abbr, exact_abbr))
        assert sorted(s.prediction for s in samples) == sorted(answer for _, answer in ROWS.values())
        assert sum(bool(s.correct) for s in samples) == 5
        # Each answer's latency and the app's own token counts are recorded (the fake counts characters).
        assert all(s.prompt_tokens == len(s.prompt[-1]["prompt"]) and s.completion_tokens == len(s.prediction)
                   and s.latency_s is not None and s.retries == 0 for s in samples)

        # The key travelled in memory only: not in the config, logs, predictions, manifest or anything else.
        assert files_containing(job, APP_KEY.encode()) == []
        manifest = json.loads((job / "manifest.json").read_text())
        assert manifest["models"] == [{"abbr": model_abbr, "name": "my dify app", "kind": "dify",
                                       "base_url": dify.base_url + "/"}]

        # The plain OpenCompass CLI on the very same config, given the key the same way, scores the same.
        cli_run = run_opencompass_cli(job / "config.py", tmp_path / "cli", env={"AIEVAL_API_KEY_0": APP_KEY})
        assert len(dify.requests) == 4 * len(ROWS)
        assert files_containing(tmp_path / "cli", APP_KEY.encode()) == []
    assert_same_as_cli(result, cli_run)


def test_a_wrong_dify_key_fails_with_difys_message(tmp_path, warm_launcher):
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    with FakeDify({}, api_key=APP_KEY) as dify:
        spec = parse_spec({
            "models": [{"kind": "dify", "name": "app", "base_url": dify.base_url, "api_key": "app-wrong-key-0000",
                        "retries": 3}],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(data)}],
        })
        result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher, environ={}).run()
        assert len(dify.requests) == 1  # a bad key is not retried
    assert result.status == "failed" and result.scores == []
    assert "app/qa" in result.error
    assert "Calling Dify failed: HTTP 401" in result.error and "unauthorized: Access token is invalid" in result.error
    assert files_containing(tmp_path / "job", b"app-wrong-key-0000") == []
