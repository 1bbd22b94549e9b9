"""Wall time of small endpoint evaluations: the engine vs the plain `opencompass` CLI, side by side.

Each workload (demo MCQ + QA sets against llama.cpp's OpenAI-compatible server on 127.0.0.1) is run by:
  - cli default        `opencompass plain.py`: a hand-written-style config, OpenCompass' default runner
                       (a fresh Python per task)
  - cli --debug        `opencompass plain.py --debug`: every task in one fresh process
  - cli --debug, ours  `opencompass config.py --debug` on the engine's own config (same scores by test)
  - engine cold        one fresh process per evaluation, as `aieval run` does
  - engine warm        forked from a process that imported OpenCompass once, as a worker does
Rounds alternate between the variants so machine noise hits them alike; medians are reported.
Targets (issue 2): engine warm <= 0.1 x cli default and <= 0.3 x cli --debug.

    python bench/bench_engine.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aieval_engine.demo import DEMO_DATA
from aieval_engine.launchers import ColdLauncher, WarmLauncher
from aieval_engine.local_server import MODEL_ALIAS, LlamaServer
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]
OPENCOMPASS = str(Path(sys.executable).parent / "opencompass")


WORKLOADS = {
    # name: (samples per dataset, max output tokens)
    "small (8 samples, 8 tokens)": (4, 8),
    "medium (20 samples, 24 tokens)": (None, 24),
}


def bench_spec(base_url: str, limit: int | None = None, max_out_len: int = 24) -> dict:
    return {
        "name": "bench",
        "models": [{"kind": "openai", "name": "smollm2", "base_url": base_url, "model": MODEL_ALIAS,
                    "concurrency": 4, "query_per_second": 100, "retries": 1}],
        "datasets": [
            {"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")},
            {"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl"), "scorer": "contains"},
        ],
        "params": {"limit": limit, "max_out_len": max_out_len},
    }


def time_cli(config: Path, work: Path, debug: bool) -> float:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    argv = [OPENCOMPASS, str(config), "-w", str(work / "out")] + (["--debug"] if debug else [])
    started = time.perf_counter()
    completed = subprocess.run(argv, cwd=work, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or not list((work / "out").glob("*/results/*/*.json")):
        raise RuntimeError(f"opencompass failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return elapsed


def time_engine(spec, job: Path, launcher) -> float:
    shutil.rmtree(job, ignore_errors=True)
    started = time.perf_counter()
    result = Evaluation(spec, job, launcher=launcher).run()
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"engine run failed: {result.error}")
    return elapsed


def bench_workload(base_url: str, limit, max_out_len, rounds: int, warm: WarmLauncher, scratch: Path) -> dict:
    from aieval_engine.config_builder import build_config

    spec = parse_spec(bench_spec(base_url, limit, max_out_len))
    ours = build_config(spec, scratch / "ours").path
    plain = build_config(spec, scratch / "plain", quick_pipeline=False).path
    times: dict[str, list[float]] = {
        "cli default": [], "cli --debug": [], "cli --debug, ours": [], "engine cold": [], "engine warm": [],
    }
    for round_ in range(rounds):
        times["cli default"].append(time_cli(plain, scratch / "cli-default", debug=False))
        times["cli --debug"].append(time_cli(plain, scratch / "cli-debug", debug=True))
        times["cli --debug, ours"].append(time_cli(ours, scratch / "cli-debug-ours", debug=True))
        times["engine cold"].append(time_engine(spec, scratch / "engine-cold", ColdLauncher()))
        times["engine warm"].append(time_engine(spec, scratch / "engine-warm", warm))
        print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    llama_python = os.environ.get("AIEVAL_LLAMA_PYTHON", str(REPO / ".venv-llama" / "bin" / "python"))
    scratch = Path(tempfile.mkdtemp(prefix="aieval-bench-"))
    results = {}
    try:
        with LlamaServer(llama_python, scratch / "llama.log") as server:
            warm = WarmLauncher()
            warm_up = warm.warm_up()
            for name, (limit, max_out_len) in WORKLOADS.items():
                print(f"{name}:", flush=True)
                results[name] = bench_workload(server.base_url, limit, max_out_len, args.rounds, warm, scratch)
            warm.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nMedian wall time of {args.rounds} rounds on {os.cpu_count()} cores "
          f"(warm fork server start-up, paid once per worker: {warm_up:.1f} s)")
    for name, medians in results.items():
        print(f"\n{name}")
        for variant, value in medians.items():
            print(f"  {variant:<18} {value:7.2f} s")
        warm_time = medians["engine warm"]
        print(f"  ratio engine warm / cli default       = {warm_time / medians['cli default']:.3f}  (target <= 0.1)")
        print(f"  ratio engine warm / cli --debug       = {warm_time / medians['cli --debug']:.3f}  (target <= 0.3)")
        print(f"  ratio engine warm / cli --debug, ours = {warm_time / medians['cli --debug, ours']:.3f}")
        print(f"  ratio engine cold / cli --debug       = {medians['engine cold'] / medians['cli --debug']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
