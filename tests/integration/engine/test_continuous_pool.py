"""Issue 11: the continuous request pool (oc_pool.ContinuousGenInferencer) against a real loopback endpoint whose
answers hash the exact request, so any difference in what is sent shows in the predictions:
- predictions byte-identical to OpenCompass' own GenInferencer, in process and through the platform vs the
  `opencompass` CLI on the stock pipeline;
- the pool keeps C requests in flight all the time (no batch tails);
- tmp_<name>.jsonl grows in index order during the run, and a run killed mid-way resumes sending only what is missing;
- refusals (429 + Retry-After) above the server's capacity are waited out and retried, none lost."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from body_hash_openai import BodyHashEndpoint
from pool_inference import PREDICTIONS, infer, model_for, write_questions

from aieval_engine import workdir
from aieval_engine.config_builder import build_config
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[2]


def stock_predictions(data: Path, url: str, out: Path, concurrency: int) -> bytes:
    infer(data, model_for(url, concurrency), out, concurrency, kind="stock")
    return (out / PREDICTIONS).read_bytes()


def uneven_latency(question: str) -> float:
    """0.05 to 0.35 s, by question: a batch waits for its slowest answer, a continuous pool does not."""
    number = int(question.split(":")[0].split()[-1])
    return 0.05 + 0.1 * (number * 7 % 4)


def test_the_pool_predicts_what_gen_inferencer_predicts_with_c_requests_always_in_flight(tmp_path):
    data = write_questions(tmp_path / "q.jsonl", 64)
    endpoint = BodyHashEndpoint(latency_s=uneven_latency)
    try:
        infer(data, model_for(endpoint.url, 8), tmp_path / "pool", 8)
        pool_arrivals = list(endpoint.in_flight_at_arrival)
        assert endpoint.peak_in_flight == 8
        endpoint.in_flight_at_arrival.clear()
        stock = stock_predictions(data, endpoint.url, tmp_path / "stock", 8)
        stock_arrivals = list(endpoint.in_flight_at_arrival)
        # Past the start and before the end, each request of the pool arrives as others leave: the server never
        # empties. Each of GenInferencer's batches starts from an empty server (3.5 others in flight on average).
        assert min(pool_arrivals[8:-8]) >= 2 and statistics.mean(pool_arrivals[8:-8]) >= 5, pool_arrivals
        assert stock_arrivals[8:-8].count(0) >= 5 and statistics.mean(stock_arrivals[8:-8]) <= 4, stock_arrivals
        assert (tmp_path / "pool" / PREDICTIONS).read_bytes() == stock
        assert len(json.loads(stock)) == 64
        assert not (tmp_path / "pool" / "tmp_questions.jsonl").exists()
    finally:
        endpoint.close()


def tmp_indices(path: Path) -> list[int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [int(json.loads(line)["idx"]) for line in lines if line.strip() and line.endswith("}")]


def test_progress_is_written_in_order_and_a_killed_run_resumes_with_only_the_missing_requests(tmp_path):
    data = write_questions(tmp_path / "q.jsonl", 60)
    endpoint = BodyHashEndpoint(latency_s=0.2)
    out = tmp_path / "pool"
    tmp_file = out / "tmp_questions.jsonl"
    try:
        child = subprocess.Popen(
            [sys.executable, str(TESTS / "pool_inference.py"), str(data), endpoint.url, str(out), "4", "continuous"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        snapshots: list[list[int]] = []
        deadline = time.monotonic() + 120
        while len(snapshots[-1] if snapshots else []) < 20:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the tmp file did not grow"
            snapshots.append(tmp_indices(tmp_file))
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for indices in snapshots:
            assert indices == list(range(len(indices)))  # always a contiguous prefix, in index order
        assert len({len(s) for s in snapshots if s}) >= 4  # it grew request by request, not once at the end
        kept = tmp_indices(tmp_file)
        assert 20 <= len(kept) < 60

        answered_before = set(endpoint.questions_answered())
        infer(data, model_for(endpoint.url, 4), out, 4)  # OpenCompass' resume: from len(tmp results)
        resent = endpoint.questions_answered()[len(answered_before):]
        questions = [json.loads(line)["question"] for line in data.read_text(encoding="utf-8").splitlines()]
        assert sorted(resent) == sorted(questions[len(kept):])  # only what the tmp file did not hold
        assert (out / PREDICTIONS).read_bytes() == stock_predictions(data, endpoint.url, tmp_path / "stock", 4)
    finally:
        endpoint.close()


def test_refusals_above_capacity_are_waited_out_and_none_is_lost(tmp_path):
    data = write_questions(tmp_path / "q.jsonl", 30)
    endpoint = BodyHashEndpoint(latency_s=0.1, refuse_above=4, retry_after="0.25")
    try:
        model = model_for(endpoint.url, 8, retry=3)
        infer(data, model, tmp_path / "pool", 8)
        refused = [(t, q) for t, q, s in endpoint.arrivals if s == 429]
        assert refused, "the pool never went above the server's capacity"
        for refused_at, question in refused:
            later = [t for t, q, s in endpoint.arrivals if q == question and t > refused_at]
            assert later and later[0] - refused_at >= 0.25  # Retry-After honoured
        assert sorted(endpoint.questions_answered()) == sorted(set(endpoint.questions_answered()))  # each once
        endpoint.refuse_above = None
        assert (tmp_path / "pool" / PREDICTIONS).read_bytes() == stock_predictions(
            data, endpoint.url, tmp_path / "stock", 8)
    finally:
        endpoint.close()


def test_the_platform_with_the_pool_predicts_what_the_opencompass_cli_predicts_on_the_stock_config(
        tmp_path, warm_launcher):
    data = write_questions(tmp_path / "data" / "q.jsonl", 24)
    endpoint = BodyHashEndpoint(latency_s=0.05)
    try:
        spec = parse_spec({
            "models": [{"kind": "openai", "name": "hashing", "base_url": endpoint.url, "model": "m",
                        "concurrency": 6, "query_per_second": 1000, "retries": 2}],
            "datasets": [{"kind": "custom", "name": "questions", "path": str(data), "scorer": "contains"}],
            "params": {"max_out_len": 24},
        })
        result = Evaluation(spec, tmp_path / "job", launcher=warm_launcher).run()
        assert result.ok, result.error
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "job").rglob("*.log"))
        assert "continuous pool" in logs  # the platform's run went through the pool
        assert endpoint.peak_in_flight == 6

        stock = build_config(spec, tmp_path / "stock", quick_pipeline=False).path
        cli_dir = tmp_path / "cli"
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "opencompass"), str(stock), "--debug", "-w", str(cli_dir)],
            cwd=stock.parent, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        assert "continuous pool" not in completed.stdout + completed.stderr
        (cli_run,) = [p for p in cli_dir.iterdir() if p.is_dir()]
        pair = result.pairs[0]
        ours = workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_bytes()
        theirs = workdir.predictions_file(cli_run, pair.model_abbr, pair.dataset_abbr).read_bytes()
        assert ours == theirs and len(json.loads(ours)) == 24
    finally:
        endpoint.close()


def test_with_no_concurrency_set_the_pool_adapts_to_a_refusing_server_and_loses_nothing(tmp_path):
    # request_pool as config_builder writes it for a spec without concurrency: the adaptive limiter (concurrency.py).
    data = write_questions(tmp_path / "q.jsonl", 120)
    endpoint = BodyHashEndpoint(latency_s=0.1, refuse_above=12, retry_after="0.2")
    try:
        model = model_for(endpoint.url, 64, retry=3,
                          request_pool={"concurrency": None, "max_concurrency": 64, "query_per_second": None})
        infer(data, model, tmp_path / "pool", 64)
        answered = endpoint.questions_answered()
        assert len(answered) == len(set(answered)) == 120
        assert endpoint.peak_in_flight == 12  # it grew to the server's capacity (from 8) and not beyond
        endpoint.refuse_above = None
        assert (tmp_path / "pool" / PREDICTIONS).read_bytes() == stock_predictions(
            data, endpoint.url, tmp_path / "stock", 8)
    finally:
        endpoint.close()


def test_the_pool_runs_where_the_calling_thread_already_runs_an_event_loop(tmp_path):
    # OpenCompass calls inferencers synchronously; a caller inside a running loop (a notebook; the e2e tests' browser
    # driver, which is how this was found) must not get "asyncio.run() cannot be called from a running event loop".
    import asyncio

    data = write_questions(tmp_path / "q.jsonl", 12)
    endpoint = BodyHashEndpoint(latency_s=0.02)
    try:
        async def inside_a_loop() -> None:
            infer(data, model_for(endpoint.url, 4), tmp_path / "pool", 4)

        asyncio.run(inside_a_loop())
        assert (tmp_path / "pool" / PREDICTIONS).read_bytes() == stock_predictions(
            data, endpoint.url, tmp_path / "stock", 4)
    finally:
        endpoint.close()
