#!/usr/bin/env python
"""Scale-out benchmark (issue 11): one evaluation of several local checkpoints on 1 worker, then on 2.

A real API process and real worker processes with one slot each and one torch thread each (OMP_NUM_THREADS=1):
the job (--models tiny random checkpoints × one multiple-choice file of --rows rows) runs as one part per
checkpoint (services/fanout.py), on the `local` queue. The same job is submitted twice, first with one worker
running, then with two; each worker's OpenCompass is warm before the job is sent. Printed: wall time of each (from
submit to the job's end, as a user waits), the speed-up, and whether scores and per-sample predictions are
identical.

    python bench/bench_fanout.py                        # SQLite + the directory broker (the embedded default)
    python bench/bench_fanout.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/bench \\
        --broker-url redis://127.0.0.1:6379/0           # the production set-up (an empty database)

Target: speed-up >= 1.8 on 2 workers, identical results. On a machine with fewer free cores than workers the
parts share the cores and the speed-up says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from processes import BenchFailure, platform_env, start, start_api, stop, wait_for


def start_workers(count: int, env: dict[str, str], work: Path, round_name: str) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        log = work / f"worker-{round_name}-{index}.log"
        workers.append(start([sys.executable, "apps/server/start_celery_worker.py", "--queues", "local",
                              "--concurrency", "1", "--name", f"bench{index}-{uuid.uuid4().hex[:6]}@%h"], env, log))
    def warm(worker: subprocess.Popen, log: Path) -> bool:
        """Ready for messages, with OpenCompass imported once (what every job after a worker's first finds)."""
        text = log.read_text(errors="replace")
        return ("ready." in text and "OpenCompass warm in" in text) or worker.poll() is not None

    for index, worker in enumerate(workers):
        log = work / f"worker-{round_name}-{index}.log"
        wait_for(lambda worker=worker, log=log: warm(worker, log), 180, f"worker {index}")
        if worker.poll() is not None:
            raise BenchFailure(f"worker {index} exited: {log.read_text(errors='replace')[-3000:]}")
    return workers


def run_job(client: httpx.Client, body: dict, name: str) -> tuple[float, dict, list]:
    started = time.monotonic()
    response = client.post("/evaluations", json={**body, "name": name})
    assert response.status_code == 201, response.text
    evaluation_id = response.json()["id"]
    detail = wait_for(lambda: (lambda d: d if d["status"] not in ("queued", "running") else None)(
        client.get(f"/evaluations/{evaluation_id}").json()), 3600, f"job {name}", interval=0.5)
    wall = time.monotonic() - started
    if detail["status"] != "succeeded":
        raise BenchFailure(f"job {name} ended {detail['status']}: {detail['error']}")
    export = client.get(f"/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"})
    rows = sorted((r["model"], r["dataset"], r["index"], json.dumps(r["prediction"]), r["correct"])
                  for r in map(json.loads, export.text.splitlines()))
    return wall, detail, rows


def measure(args: argparse.Namespace, work: Path) -> None:
    from aieval_engine.tiny_model import build_tiny_model

    models = [build_tiny_model(work / "models" / f"tiny-{i}", seed=i) for i in range(args.models)]
    env = platform_env(work, AIEVAL_MODEL_ROOTS=json.dumps([str(work / "models")]),
                       OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one torch thread per worker
    if args.db_url:
        env["AIEVAL_DB_URL"] = args.db_url
    if args.broker_url:
        env["AIEVAL_BROKER_URL"] = env["AIEVAL_REDIS_URL"] = args.broker_url
    api, base = start_api(env, work)
    client = httpx.Client(base_url=f"{base}/api/v1", timeout=60)
    workers: list[subprocess.Popen] = []
    try:
        model_ids = []
        for path in models:
            response = client.post("/models", json={"name": path.name, "kind": "huggingface", "path": str(path),
                                                    "options": {"max_out_len": 16, "batch_size": 4}})
            assert response.status_code == 201, response.text
            model_ids.append(response.json()["id"])
        rows = "".join(json.dumps({"question": f"Is {i} even?", "A": "yes", "B": "no", "answer": "A" if i % 2 == 0
                                   else "B"}) + "\n" for i in range(args.rows)).encode()
        dataset = client.post("/datasets", files={"file": ("even.jsonl", rows)})
        assert dataset.status_code in (200, 201), dataset.text
        body = {"model_ids": model_ids, "dataset_ids": [dataset.json()["dataset"]["id"]]}

        results, load = {}, {}
        for count in (1, 2):
            workers = start_workers(count, env, work, f"{count}w")
            load[count] = os.getloadavg()[0]
            results[count] = run_job(client, body, f"{count} worker(s)")
            for worker in workers:
                stop(worker)
            workers = []
        (one, detail_one, rows_one), (two, detail_two, rows_two) = results[1], results[2]
        scores = [[(s["model"], s["dataset"], s["metric"], s["value"]) for s in d["scores"]]
                  for d in (detail_one, detail_two)]
        print(f"{args.models} tiny local checkpoints x {args.rows} rows, one part per checkpoint, one slot and one "
              "torch thread per worker:")
        for count, wall, detail in ((1, one, detail_one), (2, two, detail_two)):
            parts = detail["progress"]["parts"]
            busy = sum(part["elapsed_s"] or 0.0 for part in parts)
            workers_used = len({part["worker"].rsplit(":", 1)[0] for part in parts})
            print(f"  {count} worker(s): {wall:6.1f} s; {len(parts)} parts on {workers_used} worker(s), their runs "
                  f"add up to {busy:.1f} s (overlap {busy / wall:.2f}); load average {load[count]:.1f} on "
                  f"{os.cpu_count()} cores before the job")
        print(f"  speed-up on 2 workers: {one / two:.2f}x (target >= 1.8x; needs 2 free cores)")
        print(f"  scores identical: {scores[0] == scores[1]}; per-sample predictions identical: {rows_one == rows_two} "
              f"({len(rows_one)} samples)")
        if scores[0] != scores[1] or rows_one != rows_two:
            raise BenchFailure("the two runs differ")
    finally:
        for worker in workers:
            stop(worker)
        client.close()
        stop(api)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--models", type=int, default=4, help="local checkpoints in the job (one part each)")
    options.add_argument("--rows", type=int, default=1000, help="rows of the multiple-choice file (enough that "
                         "inference, not a run's fixed cost, dominates each part)")
    options.add_argument("--db-url", default="", help="an empty database (default: SQLite in a temporary dir)")
    options.add_argument("--broker-url", default="", help="Redis (default: the directory broker)")
    args = options.parse_args()
    with tempfile.TemporaryDirectory(prefix="aieval-bench-fanout-") as work:
        measure(args, Path(work))


if __name__ == "__main__":
    main()
