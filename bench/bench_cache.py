#!/usr/bin/env python
"""Re-running an evaluation with the prediction cache (issue 11, "never ask twice"): time of the re-run / time of
the first run.

A loopback OpenAI-compatible server (bench/capacity_model_server.py, its own process) answers each request in
--latency seconds, at most --concurrency at once. One endpoint evaluation of --questions QA questions runs as a worker
runs it (engine Evaluation, forked from a warm process that imported OpenCompass once, the prediction cache in a
SQLite file), then exactly the same evaluation again. Printed: both wall times, the requests each sent, the ratio
(target <= 0.05), and what the re-run's time is made of (OpenCompass' own stages, no model time). Scores and
predictions of both runs must be identical (asserted).

The re-run costs a fixed time (OpenCompass' run from a warm process, loading data, scoring, collecting: about a second
on 2 cores) whatever the first run cost, so the ratio is met by evaluations whose first run takes at least 20x that,
as real models' runs do; the defaults (200 questions, 1 s per answer, 8 at once: 25 s of model time) keep the whole
benchmark under a minute. Measured here: first run 27.7 s, re-run 0.9 s, 0 requests: 0.032.

    python bench/bench_cache.py [--questions 200] [--latency 1.0] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from capacity_model_server import expected_percent, qa_rows, write_jsonl  # noqa: E402

from aieval_engine.launchers import WarmLauncher  # noqa: E402
from aieval_engine.local_server import free_port  # noqa: E402
from aieval_engine.runner import Evaluation  # noqa: E402
from aieval_engine.spec import parse_spec  # noqa: E402

TARGET = 0.05


def predictions(run_dir: Path) -> dict:
    return {path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((run_dir / "predictions").rglob("*.json"))}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--questions", type=int, default=200)
    options.add_argument("--latency", type=float, default=1.0, help="seconds per answer")
    options.add_argument("--concurrency", type=int, default=8, help="the server's capacity and the model's setting")
    args = options.parse_args()

    port = free_port()
    server = subprocess.Popen([sys.executable, str(BENCH / "capacity_model_server.py"), "--port", str(port),
                               "--capacity", str(args.concurrency), "--latency", str(args.latency)])
    launcher = WarmLauncher()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(f"warm process ready in {launcher.warm_up():.1f} s (paid once per worker, not timed)")
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as scratch:
            root = Path(scratch)
            data = root / "questions.jsonl"
            write_jsonl(data, qa_rows(args.questions))
            spec = parse_spec({
                "name": "bench-cache",
                "models": [{"kind": "openai", "name": "capacity", "base_url": f"http://127.0.0.1:{port}/v1",
                            "model": "m", "concurrency": args.concurrency, "query_per_second": 1000}],
                "datasets": [{"kind": "custom", "name": "questions", "path": str(data), "data_type": "qa"}],
                "params": {"max_out_len": 16},
            })
            cache = root / "prediction-cache.sqlite"
            runs = []
            for label in ("first run", "re-run"):
                before = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["requests"]
                evaluation = Evaluation(spec, root / label.replace(" ", "-"), launcher=launcher,
                                        prediction_cache=cache)
                started = time.perf_counter()
                result = evaluation.run()
                wall = time.perf_counter() - started
                sent = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()["requests"] - before
                if not result.ok:
                    raise SystemExit(f"{label} failed: {result.error}\n{result.log_excerpt}")
                runs.append((label, wall, sent, result))
                score = {s.metric: s.value for s in result.scores}.get("accuracy")
                cached = result.manifest["prediction_cache"]["cached"]
                print(f"{label:>9}: {wall:6.1f} s, {sent:4d} requests sent, {cached:4d} predictions from the cache, "
                      f"accuracy {score:.2f}")
            (_, first_s, _, first), (_, again_s, again_sent, again) = runs
            assert [(s.metric, s.value) for s in first.scores] == [(s.metric, s.value) for s in again.scores]
            assert abs(first.scores[0].value - expected_percent(args.questions)) < 1e-9
            assert predictions(first.run_dir) == predictions(again.run_dir)
            assert again_sent == 0
            ratio = again_s / first_s
            model_s = args.questions * args.latency / args.concurrency
            print(f"re-run / first run = {ratio:.3f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}); "
                  f"the first run had {model_s:.0f} s of model time, the re-run none: its {again_s:.1f} s are "
                  f"OpenCompass' own stages, so the target holds for first runs of >= {again_s / TARGET:.0f} s")
    finally:
        launcher.close()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
