#!/usr/bin/env python
"""Throughput against a model server of known capacity (issue 11), every way side by side in one run.

A loopback OpenAI-compatible server (bench/capacity_model_server.py, its own process) answers each request in 0.5 s
and serves at most 64 at once (capacity 128 requests/s). The same QA questions (exact-match scoring; the server
answers a fixed 62 % or so correctly) are evaluated:
  (a) through the platform's server (API + warm Celery worker), the model's concurrency set to 64
  (b) through the platform's server with nothing set (the defaults a user gets)
  (c) `aieval run` (a cold process), concurrency 64
  (d) `opencompass --debug` on the engine's plain config (no project runner shortcuts), concurrency 64
  (e) EvalScope from PyPI in its own venv (.venv-evalscope), --eval-batch-size 64
  (f) a plain asyncio client: httpx.AsyncClient, 64 requests in flight
Printed: wall time, share of capacity (requests/s ÷ 128), the platform/EvalScope throughput ratios, and the score
of each, which must be identical (asserted). Then two workloads through the server:
  - 10 datasets × Q questions × 2 models (concurrency 64 set on both models)
  - a server that answers 429 (Retry-After: 1) above 16 in flight, nothing set: the concurrency it settled at (mean
    in flight over the last 30 % of the run), the share of questions refused more than once, questions lost.
Concurrency 64 comes with query_per_second 1000, i.e. no rate limit of the client's own.

    python bench/bench_throughput.py [--quick] [--skip evalscope,default]

Targets (issue 11): (a) >= 0.9 of capacity and >= 2x EvalScope; (b) >= 0.8; 429 server: settles near 16, < 1 %
retried more than once, none lost; a cold run's first request within 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from aieval_engine.local_server import free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from capacity_model_server import expected_percent, qa_rows, question_text, reference_answer, write_jsonl  # noqa: E402
from processes import BenchFailure, platform_env, start, start_api, start_worker, stop, wait_for  # noqa: E402

VENV_BIN = Path(sys.executable).parent
EVALSCOPE_PYTHON = Path(os.environ.get("AIEVAL_EVALSCOPE_PYTHON", REPO / ".venv-evalscope" / "bin" / "python"))
CAPACITY, LATENCY, REFUSE_ABOVE = 64, 0.5, 16
SET_64 = {"concurrency": 64, "query_per_second": 1000}
TERMINAL = ("succeeded", "failed", "cancelled")
SERVER_64 = "through the platform's server (warm worker), concurrency 64"
NOTHING_SET = "the platform with nothing set (server, warm worker)"


class ModelServer:
    """bench/capacity_model_server.py in its own process (its CPU is not the benchmark's)."""

    def __init__(self, work: Path, *extra: str):
        self.port = free_port(19000, 19999)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = start([sys.executable, str(BENCH / "capacity_model_server.py"), "--port", str(self.port),
                              "--capacity", str(CAPACITY), "--latency", str(LATENCY), *extra],
                             os.environ.copy(), work / f"model-server-{self.port}.log")
        wait_for(self._up, 30, "the capacity model server")

    def _up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/reset", timeout=5)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def close(self) -> None:
        stop(self.process)


# ---- the ways of evaluating ---------------------------------------------------------------------------------------

async def plain_client(url: str, numbers: list[int], in_flight: int = 64) -> float:
    """Exact-match accuracy (%) of the server's answers. One AsyncClient per in-flight slot: a single pool shared by
    64 waiting requests spends most of its CPU in httpcore's pool bookkeeping (quadratic in waiting requests)."""
    pending = list(reversed(numbers))
    correct = 0

    async def worker() -> None:
        nonlocal correct
        async with httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:
            while pending:
                number = pending.pop()
                response = await client.post("/chat/completions", json={
                    "model": "capacity-f", "temperature": 0,
                    "messages": [{"role": "user", "content": question_text(number)}]})
                response.raise_for_status()
                correct += response.json()["choices"][0]["message"]["content"].strip() == reference_answer(number)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return 100.0 * correct / len(numbers)


def engine_spec(url: str, model: str, dataset: Path, settings: dict) -> dict:
    return {"name": f"throughput-{model}",
            "models": [{"kind": "openai", "name": model, "base_url": url, "model": model, **settings}],
            "datasets": [{"kind": "custom", "name": "bench-qa", "path": str(dataset)}]}


def cold_aieval_run(url: str, dataset: Path, work: Path) -> tuple[float, float]:
    import yaml

    spec_file = work / "cold-spec.yaml"
    spec_file.write_text(yaml.safe_dump(engine_spec(url, "capacity-c", dataset, SET_64)))
    env = {**os.environ, "AIEVAL_DATA_DIR": str(work / "cold-data"), "AIEVAL_OUTBOUND_ALLOW_LOOPBACK": "true"}
    started = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "aieval"), "run", str(spec_file), "--json"], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchFailure(f"aieval run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    scores = json.loads(done.stdout)["scores"]
    return wall, float(scores[0]["value"])


def opencompass_debug(url: str, dataset: Path, work: Path) -> tuple[float, float]:
    from aieval_engine.config_builder import build_config
    from aieval_engine.spec import parse_spec

    spec = parse_spec(engine_spec(url, "capacity-d", dataset, SET_64))
    config = build_config(spec, work / "oc-config", quick_pipeline=False).path
    out = work / "oc-out"
    started = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "opencompass"), str(config), "-w", str(out), "--debug"], cwd=work,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "AIEVAL_OUTBOUND_ALLOW_LOOPBACK": "true"},
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    results = list(out.glob("*/results/*/*.json"))
    if done.returncode != 0 or not results:
        raise BenchFailure(f"opencompass failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall, float(json.loads(results[0].read_text())["accuracy"])


def evalscope_run(url: str, rows: list[dict], work: Path) -> tuple[float, float]:
    """EvalScope's general_qa scores with BLEU and ROUGE only; its primary metric, ROUGE-L recall, of a one-word
    answer against a one-word reference is 1 when they are equal and 0 otherwise: exact match."""
    if not (EVALSCOPE_PYTHON.parent / "evalscope").exists():
        raise BenchFailure(f"EvalScope is not installed (no {EVALSCOPE_PYTHON.parent / 'evalscope'}: "
                           "make evalscope-env)")
    data = work / "evalscope-data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / "bench.jsonl", rows)
    out = work / "evalscope-out"
    argv = [str(EVALSCOPE_PYTHON.parent / "evalscope"), "eval", "--model", "capacity-e", "--api-url", url,
            "--api-key", "EMPTY", "--eval-type", "openai_api", "--datasets", "general_qa",
            "--dataset-args", json.dumps({"general_qa": {"local_path": str(data), "subset_list": ["bench"]}}),
            "--eval-batch-size", "64", "--work-dir", str(out), "--no-timestamp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MODELSCOPE_OFFLINE": "1"}
    env.pop("VIRTUAL_ENV", None)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    reports = list(out.glob("reports/*/general_qa.json"))
    if done.returncode != 0 or not reports:
        raise BenchFailure(f"evalscope failed ({done.returncode}):\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    report = json.loads(reports[0].read_text())
    primary = report["primary_metric_identity"]
    metric = next(m for m in report["metrics"] if m["identity"] == primary)
    return wall, 100.0 * float(metric["score"])


class Platform:
    """The platform's API and one Celery worker (its default concurrency), SQLite and the directory broker."""

    def __init__(self, work: Path):
        self.work = work
        self.env = platform_env(work, AIEVAL_AUTH_ENABLED="false")
        self.worker = None
        self.last_span: tuple[float, float] | None = None  # the last evaluation's (submitted, finished), epoch s
        self.api, base = start_api(self.env, work, "--no-access-log")
        self.client = httpx.Client(base_url=f"{base}/api/v1", timeout=60)
        self.worker = start_worker(self.env, work / "worker.log", ready="OpenCompass warm in")

    def model(self, url: str, name: str, options: dict) -> int:
        created = self.client.post("/models", json={"name": name, "kind": "openai", "base_url": url, "model": name,
                                                    "options": options})
        if created.status_code != 201:
            raise BenchFailure(f"model not created: {created.text}")
        return created.json()["id"]

    def dataset(self, name: str, rows: list[dict]) -> int:
        content = "".join(json.dumps(row) + "\n" for row in rows).encode()
        created = self.client.post("/datasets", files={"file": (f"{name}.jsonl", content)})
        if created.status_code not in (200, 201):
            raise BenchFailure(f"dataset not created: {created.text}")
        return created.json()["dataset"]["id"]

    def evaluate(self, model_ids: list[int], dataset_ids: list[int], name: str,
                 timeout: float = 1800) -> tuple[float, list[dict]]:
        """(seconds from submit to finished, by the server's own timestamps; the scores)."""
        created = self.client.post("/evaluations", json={"name": name, "model_ids": model_ids,
                                                         "dataset_ids": dataset_ids, "params": {}})
        if created.status_code != 201:
            raise BenchFailure(f"evaluation not submitted: {created.text}")
        evaluation_id = created.json()["id"]
        detail = wait_for(lambda: (lambda d: d if d["status"] in TERMINAL else None)(
            self.client.get(f"/evaluations/{evaluation_id}").json()), timeout, f"evaluation {name}", 0.5)
        if detail["status"] != "succeeded":
            raise BenchFailure(f"evaluation {name} {detail['status']}: {detail.get('error')}")
        self.last_span = (_at(detail["created_at"]), _at(detail["finished_at"]))
        return self.last_span[1] - self.last_span[0], detail["scores"]

    def close(self) -> None:
        self.client.close()
        if self.worker is not None:
            stop(self.worker)
        stop(self.api)


def _at(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def accuracy(scores: list[dict]) -> float:
    values = [s["value"] for s in scores if s["metric"] == "accuracy"]
    if len(values) != 1:
        raise BenchFailure(f"expected one accuracy, got {scores}")
    return float(values[0])


def phases(span: tuple[float, float], stats: dict, requests: int, rate: float) -> str:
    """Where an evaluation's wall time went, from the platform's own timestamps (submitted, finished) and the model
    server's (first request, last answer): what it cost before and after sending, and how full the server was
    while it was being sent to. This is the cause of any gap to the capacity goal."""
    submitted, finished = span
    first, last = stats["first_request_at"], stats["last_answer_at"]
    if first is None or last is None:
        return "the model server saw no request"
    sending = last - first
    return (f"of {finished - submitted:.1f} s, {first - submitted:.1f} s before the first request (queue, claim, "
            f"config, OpenCompass task start), {sending:.1f} s sending at {requests / sending / rate:.2f} of "
            f"capacity, {finished - last:.1f} s after the last answer (scoring, summary, storing)")


def goal(what: str, value: float | None, target: float, cause: str, higher_is_better: bool = True) -> str:
    if value is None:
        return f"- {what}: not measured"
    met = value >= target if higher_is_better else value <= target
    return f"- {what}: {value:.2f} (target {'>=' if higher_is_better else '<='} {target:g}) " + (
        "MET" if met else f"NOT MET: {cause}")


# ---- the benchmark -------------------------------------------------------------------------------------------------

def measure(args: argparse.Namespace, work: Path) -> int:
    questions = args.questions
    rows = qa_rows(questions)
    dataset_file = work / "bench-qa.jsonl"
    write_jsonl(dataset_file, rows)
    expected = expected_percent(questions)
    rate = CAPACITY / LATENCY
    server = ModelServer(work)
    refusing = ModelServer(work, "--refuse-above", str(REFUSE_ABOVE), "--retry-after", "1")
    platform = None
    table: list[tuple[str, float | None, float | None, str]] = []  # (how, wall, score, note)
    causes: dict[str, str] = {}  # how -> where the time of a row through the platform went

    def row(how: str, run) -> float | None:
        server.reset()
        print(f"  {how} ...", flush=True)
        try:
            wall, score = run()
        except BenchFailure as exc:
            print(f"    failed: {exc}", flush=True)
            table.append((how, None, None, str(exc).splitlines()[0][:200]))
            return None
        stats = server.stats()
        peak = stats["peak"]
        if platform is not None and platform.last_span is not None:  # a row through the platform's server
            causes[how] = phases(platform.last_span, stats, questions, rate)
            platform.last_span = None
        table.append((how, wall, score, f"peak {peak} in flight"))
        print(f"    {wall:.1f} s, score {score:.2f}, peak {peak} in flight", flush=True)
        return wall

    try:
        print(f"{questions} QA questions against a server of {CAPACITY} at once × {LATENCY} s "
              f"(capacity {rate:.0f} requests/s), {os.cpu_count()} cores", flush=True)
        walls: dict[str, float | None] = {}
        walls["plain"] = row("plain asyncio client (httpx, 64 in flight)",
                             lambda: _timed(lambda: asyncio.run(plain_client(server.url, list(range(questions))))))
        platform = Platform(work)
        dataset_id = platform.dataset("bench-qa", rows)
        warm_up = platform.dataset("warm-up", qa_rows(8, first=900_000))
        platform.evaluate([platform.model(server.url, "warm-up", SET_64)], [warm_up], "warm-up")
        platform.last_span = None
        walls["server64"] = row(SERVER_64, lambda: _platform(
            platform, platform.model(server.url, "capacity-a", SET_64), [dataset_id], "a"))
        if "default" not in args.skip:
            walls["default"] = row(NOTHING_SET, lambda: _platform(
                platform, platform.model(server.url, "capacity-b", {}), [dataset_id], "b"))
        walls["cold"] = row("`aieval run` (cold), concurrency 64", lambda: cold_aieval_run(server.url, dataset_file,
                                                                                             work))
        walls["opencompass"] = row("`opencompass --debug`, same settings", lambda: opencompass_debug(
            server.url, dataset_file, work))
        if "evalscope" not in args.skip:
            walls["evalscope"] = row("EvalScope (own venv), batch 64", lambda: evalscope_run(server.url, rows, work))

        print("\n| how | wall | share of capacity | score | note |\n|---|---|---|---|---|")
        for how, wall, score, note in table:
            if wall is None:
                print(f"| {how} | – | – | – | {note} |")
            else:
                print(f"| {how} | {wall:.1f} s | {questions / wall / rate:.2f} | {score:.2f} | {note} |")
        scores = {round(score, 6) for _, wall, score, _ in table if wall is not None}
        print(f"\nscores: {sorted(scores)} (expected {expected:.2f}) — "
              + ("IDENTICAL everywhere" if scores == {round(expected, 6)} else "NOT identical"))
        evalscope = walls.get("evalscope")
        for key, label in (("server64", "server, concurrency 64"), ("default", "server, nothing set")):
            if evalscope and walls.get(key):
                print(f"throughput {label} / EvalScope = {evalscope / walls[key]:.2f}  (target >= 2)")
        failures = int(scores != {round(expected, 6)})

        # Second workload: many pairs through the server.
        per_set = args.pair_questions
        pair_sets = [platform.dataset(f"set-{d}", qa_rows(per_set, first=1000 * (d + 1))) for d in range(10)]
        pair_models = [platform.model(server.url, f"pairs-{m}", SET_64) for m in ("x", "y")]
        server.reset()
        print(f"\n10 datasets × {per_set} questions × 2 models through the server, concurrency 64 each ...",
              flush=True)
        wall, pair_scores = platform.evaluate(pair_models, pair_sets, "pairs")
        requests = 10 * per_set * 2
        pairs_share, pairs_cause = requests / wall / rate, phases(platform.last_span, server.stats(), requests, rate)
        want = sorted(round(expected_percent(per_set, 1000 * (d + 1)), 6) for d in range(10) for _ in range(2))
        got = sorted(round(float(s["value"]), 6) for s in pair_scores if s["metric"] == "accuracy")
        print(f"  {wall:.1f} s for {requests} requests: share of capacity {requests / wall / rate:.2f}; "
              f"peak {server.stats()['peak']} in flight; scores {'identical' if got == want else 'DIFFERENT'} "
              f"to the expected ones")
        failures += int(got != want)

        # Third: a server refusing above 16 in flight, nothing set.
        refusing.reset()
        print(f"\n429 above {REFUSE_ABOVE} in flight (Retry-After: 1), nothing set, {questions} questions ...",
              flush=True)
        wall, refused_scores = platform.evaluate([platform.model(refusing.url, "refused-b", {})], [dataset_id],
                                                 "refused")
        stats = refusing.stats()
        tenths = stats["concurrency_by_tenth"]
        settled = sum(tenths[-3:]) / 3 if tenths else float("nan")
        lost = questions - stats["questions_answered"]
        twice = 100.0 * stats["questions_refused_twice_or_more"] / questions
        print(f"  {wall:.1f} s, share of its capacity ({REFUSE_ABOVE / LATENCY:.0f}/s) "
              f"{questions / wall / (REFUSE_ABOVE / LATENCY):.2f}; settled at {settled:.1f} in flight "
              f"(by tenth: {tenths}); 429s {stats['refused']}; questions refused more than once {twice:.2f} %; "
              f"lost {lost}; score {accuracy(refused_scores):.2f}")
        failures += int(lost != 0 or round(accuracy(refused_scores), 6) != round(expected, 6))

        shares = {key: questions / walls[key] / rate if walls.get(key) else None for key in ("server64", "default")}
        ratio = {key: evalscope / walls[key] if evalscope and walls.get(key) else None for key in ("server64", "default")}
        print("\ngoals (issue 11), from the figures above:")
        print(goal(f"through the server, {questions} questions, concurrency 64: share of capacity",
                   shares["server64"], 0.9, causes.get(SERVER_64, "")))
        print(goal(f"through the server, 10 datasets x {per_set} questions x 2 models: share of capacity",
                   pairs_share, 0.9, pairs_cause))
        print(goal("nothing set: share of capacity", shares["default"], 0.8, causes.get(NOTHING_SET, "")))
        print(goal("throughput / EvalScope's, concurrency 64", ratio["server64"], 2.0, "see the EvalScope row"))
        print(goal("throughput / EvalScope's, nothing set", ratio["default"], 2.0, "see the EvalScope row"))
        print(goal(f"429 above {REFUSE_ABOVE}: questions refused more than once (%)", twice, 1.0,
                   "the limiter backs off too little", higher_is_better=False))
        print(goal(f"429 above {REFUSE_ABOVE}: questions lost", lost, 0, "lost answers", higher_is_better=False))
        print("- a cold `aieval run` sends its first request within 3 s: bench/bench_cold_start.py")
        return 1 if failures else 0
    finally:
        if platform is not None:
            platform.close()
        server.close()
        refusing.close()


def _timed(call) -> tuple[float, float]:
    started = time.perf_counter()
    score = call()
    return time.perf_counter() - started, score


def _platform(platform: Platform, model_id: int, dataset_ids: list[int], name: str) -> tuple[float, float]:
    wall, scores = platform.evaluate([model_id], dataset_ids, name)
    return wall, accuracy(scores)


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--quick", action="store_true", help="200 questions, 12 per dataset in the pairs workload")
    options.add_argument("--questions", type=int, default=None)
    options.add_argument("--skip", default="", help="comma-separated: evalscope, default")
    args = options.parse_args()
    args.questions = args.questions or (200 if args.quick else 1000)
    args.pair_questions = 12 if args.quick else 60
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    work = Path(tempfile.mkdtemp(prefix="aieval-bench-throughput-"))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
