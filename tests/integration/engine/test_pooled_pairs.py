"""Issue 11: the (model x dataset) pairs of a job on the request pool run at once (oc_infer_task.PooledInferTask),
under one concurrency limit per model server, against a real loopback endpoint whose answers hash the exact request:
- requests of different pairs are in flight together: pairs smaller than the limit fill it together (one after
  another, each pair alone stays below it), and the peak in flight never passes the one limit shared by all pairs;
- every pair's predictions are byte-identical to the `opencompass` CLI's, which infers the pairs one after another
  with OpenCompass' own GenInferencer on the stock config;
- with several workers the pooled pairs still make one task, run as its own process (LocalRunner's normal mode)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint

from aieval_engine import workdir
from aieval_engine.config_builder import build_config
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow

LATENCY_S = 0.2
LIMIT = 8  # concurrency of every model: the first pair's settings make the server's one limiter
QUESTION = re.compile(r"Set (\d+) question (\d+):")


def write_sets(folder: Path, sets: int, questions: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(sets):
        path = folder / f"set{number}.jsonl"
        path.write_text("".join(json.dumps({"question": f"Set {number} question {i}: what is {i} plus {number}?",
                                            "answer": str(i + number)}) + "\n" for i in range(questions)),
                        encoding="utf-8")
        paths.append(path)
    return paths


def pooled_spec(url: str, sets: list[Path], models: list[str], workers: int = 1):
    return parse_spec({
        "models": [{"kind": "openai", "name": name, "base_url": url, "model": name, "concurrency": LIMIT,
                    "query_per_second": 1000, "retries": 2} for name in models],
        "datasets": [{"kind": "custom", "name": path.stem, "path": str(path), "scorer": "contains"} for path in sets],
        "params": {"max_out_len": 16, "workers": workers},
    })


def pair_timelines(endpoint: BodyHashEndpoint) -> dict[tuple[str, str], list[float]]:
    """Arrival times of the answered requests, per (model, dataset) pair."""
    timelines: dict[tuple[str, str], list[float]] = {}
    with endpoint.lock:
        for body, (arrived, question, status) in zip(endpoint.bodies, endpoint.arrivals, strict=True):
            if status == 200:
                dataset = f"set{QUESTION.search(question).group(1)}"
                timelines.setdefault((body["model"], dataset), []).append(arrived)
    return timelines


def test_pairs_run_at_once_under_one_limit_per_server_and_predict_what_the_cli_predicts(tmp_path, warm_launcher):
    sets = write_sets(tmp_path / "data", 3, 6)  # 6 questions: a pair alone never has LIMIT requests in flight
    endpoint = BodyHashEndpoint(latency_s=LATENCY_S)
    try:
        spec = pooled_spec(endpoint.url, sets, ["model-x", "model-y"])
        result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher).run(poll_interval=0.1)
        assert result.ok, result.error
        assert len(result.pairs) == 6
        run_log = (tmp_path / "job" / "run.log").read_text(errors="replace")
        assert "Inferring 6 (model, dataset) pairs at once" in run_log

        # One limit for the server, reached only by pairs in flight together, and shared by both models and all six
        # pairs (each with a limiter of its own, 36 could be in flight).
        assert endpoint.peak_in_flight == LIMIT
        timelines = pair_timelines(endpoint)
        assert sorted(len(times) for times in timelines.values()) == [6] * 6
        # A pair's requests are in flight from its first arrival until its last answer (arrival + latency).
        spans = {pair: (min(times), max(times) + LATENCY_S) for pair, times in timelines.items()}
        for pair, (start, end) in spans.items():
            assert any(other != pair and other_start < end and start < other_end
                       for other, (other_start, other_end) in spans.items()), (pair, spans)

        stock = build_config(spec, tmp_path / "stock", quick_pipeline=False).path
        cli_dir = tmp_path / "cli"
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "opencompass"), str(stock), "--debug", "-w", str(cli_dir)],
            cwd=stock.parent, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        (cli_run,) = [p for p in cli_dir.iterdir() if p.is_dir()]
        for pair in result.pairs:
            ours = workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_bytes()
            theirs = workdir.predictions_file(cli_run, pair.model_abbr, pair.dataset_abbr).read_bytes()
            assert ours == theirs and len(json.loads(ours)) == 6, (pair.model_abbr, pair.dataset_abbr)
    finally:
        endpoint.close()


def test_with_several_workers_the_pooled_pairs_are_one_task_in_a_process_of_their_own(tmp_path, warm_launcher):
    # 20 > NumWorkerPartitioner's min_task_size: it would split each set in two, and run the three buckets of shards
    # in three processes, each with a limiter of its own.
    sets = write_sets(tmp_path / "data", 2, 20)
    endpoint = BodyHashEndpoint(latency_s=LATENCY_S)
    try:
        result = Evaluation(pooled_spec(endpoint.url, sets, ["model-z"], workers=3), tmp_path / "job",
                            launcher=warm_launcher).run()
        assert result.ok, result.error
        assert endpoint.peak_in_flight == LIMIT
        assert sorted(len(times) for times in pair_timelines(endpoint).values()) == [20, 20]
        # One infer task (its log is named after its first pair), no shards: predictions are whole files.
        infer_logs = list((result.run_dir / "logs" / "infer").rglob("*.out"))
        assert len(infer_logs) == 1, infer_logs
        assert "Inferring 2 (model, dataset) pairs at once" in infer_logs[0].read_text(errors="replace")
        for pair in result.pairs:
            assert workdir.prediction_shards(result.run_dir, pair.model_abbr, pair.dataset_abbr) == [
                workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr)]
            assert pair.ok
    finally:
        endpoint.close()


def test_a_failing_pair_fails_the_run_with_its_cause_and_the_other_pairs_keep_their_predictions(tmp_path, warm_launcher):
    sets = write_sets(tmp_path / "data", 2, 6)
    endpoint = BodyHashEndpoint(latency_s=0.05)
    endpoint.fail_questions.add("Set 0 question 3: what is 3 plus 0?")  # answered 400: fails for good
    try:
        spec = pooled_spec(endpoint.url, sets, ["model-w"])
        result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher).run()
        assert not result.ok
        assert "Calling OpenAI API failed" in result.error, result.error
        run_dir = workdir.latest_run_dir(tmp_path / "job")
        assert not workdir.predictions_file(run_dir, "model-w", "set0").exists()
        # The other pair ran to its end at the same time, and keeps its predictions for a resume.
        assert len(json.loads(workdir.predictions_file(run_dir, "model-w", "set1").read_text())) == 6
    finally:
        endpoint.close()
