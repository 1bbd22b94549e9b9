"""Time to first request of a cold `aieval run` of an endpoint evaluation (issue 11: target < 3 s).

A loopback OpenAI-compatible server records when its first chat request arrives; the clock starts just before
`aieval run SPEC --json` is started as a fresh process (its own Python: interpreter start-up, the CLI's imports,
the spec, the config, the OpenCompass child and its imports all count; the command starts that child first, so its
imports overlap the rest: launchers.ColdLauncher.prestart). The run's own wall time is printed too; medians over the
rounds are reported. Where the time goes: docs/BENCHMARKS.md.

    python bench/bench_cold_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_openai import FakeChatEndpoint  # noqa: E402 (the tests' loopback endpoint)

TARGET_S = 3.0
QUESTIONS = 20


def one_round(folder: Path) -> tuple[float, float, int]:
    """(seconds to the first request, seconds of the whole run, exit code) of one cold `aieval run`."""
    endpoint = FakeChatEndpoint("42")  # notes when each request arrives
    try:
        data = folder / "qa.jsonl"
        data.write_text("".join(json.dumps({"question": f"What is {n} times 3?", "answer": str(3 * n)}) + "\n"
                                for n in range(QUESTIONS)), encoding="utf-8")
        spec = folder / "spec.json"  # JSON is YAML
        spec.write_text(json.dumps({
            "name": "cold-start",
            "models": [{"kind": "openai", "name": "fake", "base_url": endpoint.url, "model": "m",
                        "concurrency": 8, "query_per_second": 1000, "retries": 2}],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(data), "scorer": "contains"}],
            "params": {"max_out_len": 8},
        }), encoding="utf-8")
        aieval = str(Path(sys.executable).parent / "aieval")
        env = {**os.environ, "AIEVAL_DATA_DIR": str(folder / "data")}
        started = time.monotonic()
        finished = subprocess.run([aieval, "run", str(spec), "--json"], env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if not endpoint.arrivals:
            sys.stderr.write(finished.stdout[-3000:] + finished.stderr[-3000:])
            raise SystemExit("the run sent no request")
        return endpoint.arrivals[0] - started, wall, finished.returncode
    finally:
        endpoint.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    firsts: list[float] = []
    walls: list[float] = []
    for index in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="aieval-cold-") as scratch:
            first, wall, code = one_round(Path(scratch))
        firsts.append(first)
        walls.append(wall)
        print(f"round {index + 1}: first request after {first:.2f} s, run {wall:.2f} s (exit {code})", flush=True)
    median = statistics.median(firsts)
    print(f"cold `aieval run`, endpoint model, {QUESTIONS} questions, median of {args.rounds} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): first request after {median:.2f} s, "
          f"whole run {statistics.median(walls):.2f} s; target < {TARGET_S:g} s: {'met' if median < TARGET_S else 'NOT met'}")

if __name__ == "__main__":
    main()
