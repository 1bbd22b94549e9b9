#!/usr/bin/env python
"""Where the fixed part of a server run goes: a timeline of one endpoint evaluation through the platform's server.

The platform (API + warm worker, as bench_throughput.py starts it) evaluates N QA questions (default 1,000) against
the capacity server (64 at once × 0.5 s), the model's concurrency set to 64. While it runs, a watcher thread looks at
the job directory every 10 ms and notes when each file first appears (job config, OpenCompass' run dir, the first
predictions, the results, the summary) and when each line of OpenCompass' log arrives; the capacity server reports
its first request and last answer; the database gives submit, claim and finish. Printed: every event in seconds
from submit, and the run's fixed part (everything that is not the server answering).

    python bench/bench_run_timeline.py [--questions N] [--runs K] [--nothing-set]

Times are file-appearance times seen by a 10 ms poll (±10 ms) and log-line arrival times (OpenCompass' logger
flushes per line).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_throughput import SET_64, TERMINAL, ModelServer, Platform, _at, wait_for  # noqa: E402
from capacity_model_server import qa_rows  # noqa: E402

# (label, how to recognise the path relative to the job directory), in the order they usually appear.
FILES = [
    ("engine wrote config.py", lambda p: p == "config.py"),
    ("OpenCompass run dir created", lambda p: p.startswith("outputs/") and p.count("/") == 1),
    ("OpenCompass dumped its config", lambda p: "/configs/" in p),
    ("first predictions shard (tmp_*.jsonl)", lambda p: "/predictions/" in p and "/tmp_" in p),
    ("predictions final (.json)", lambda p: "/predictions/" in p and p.endswith(".json") and "/tmp_" not in p),
    ("results written", lambda p: "/results/" in p and p.endswith(".json")),
    ("summary written", lambda p: "/summary/" in p),
    ("manifest.json (engine, after exit)", lambda p: p == "manifest.json"),
]


class JobWatcher(threading.Thread):
    def __init__(self, jobs: Path):
        super().__init__(daemon=True)
        self.jobs = jobs
        self.stop = threading.Event()
        self.seen: dict[str, float] = {}
        self.log_lines: list[tuple[float, str]] = []

    def run(self) -> None:
        offset, partial = 0, ""
        while not self.stop.wait(0.01):
            job = next((d for d in self.jobs.iterdir() if d.is_dir()), None) if self.jobs.is_dir() else None
            if job is None:
                continue
            now = time.time()
            try:
                paths = [str(path.relative_to(job)) for path in job.rglob("*")]
            except FileNotFoundError:  # a directory went away while listed (OpenCompass' tmp/, checkpoint copies)
                continue
            for relative in paths:
                if relative.startswith("tmp/"):
                    continue  # the worker's checkpoint copies and OpenCompass' task parameter files
                for label, matches in FILES:
                    if label not in self.seen and matches(relative):
                        self.seen[label] = now
            log = job / "run.log"
            if log.exists():
                with open(log, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
                offset += len(data)
                text = partial + data.decode("utf-8", errors="replace")
                *lines, partial = text.split("\n")
                self.log_lines += [(now, line) for line in lines if line.strip()]


def one_run(platform: Platform, server: ModelServer, model_id: int, dataset_id: int, name: str) -> None:
    jobs = platform.work / "data" / "jobs"
    for stale in jobs.glob("*") if jobs.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)  # the watcher looks at the only job directory there
    server.reset()
    watcher = JobWatcher(jobs)
    watcher.start()
    created = platform.client.post("/evaluations", json={"name": name, "model_ids": [model_id],
                                                         "dataset_ids": [dataset_id], "params": {}})
    evaluation_id = created.json()["id"]
    detail = wait_for(lambda: (lambda d: d if d["status"] in TERMINAL else None)(
        platform.client.get(f"/evaluations/{evaluation_id}").json()), 600, name, 0.05)
    time.sleep(0.1)
    watcher.stop.set()
    watcher.join()
    stats = server.stats()
    submit = _at(detail["created_at"])
    events = [("submit (created_at)", submit), ("claimed (started_at)", _at(detail["started_at"]))]
    events += list(watcher.seen.items())
    events += [("server: first request", stats["first_request_at"]), ("server: last answer", stats["last_answer_at"]),
               ("finished (finished_at)", _at(detail["finished_at"]))]
    interesting = ("Partitioned", "Task ", "time elapsed", "Inferring", "Evaluat", "summar", "fail", "Error",
                   "Loading", "Start")
    events += [(f"log: {line.strip()[:100]}", at) for at, line in watcher.log_lines
               if any(word in line for word in interesting)]
    print(f"\n{name}: {detail['status']}, {stats['answered']} answered, peak {stats['peak']} in flight")
    for label, at in sorted(events, key=lambda e: e[1] or 0):
        print(f"  {at - submit:7.3f} s  {label}" if at else f"     –     {label}")
    serving = stats["last_answer_at"] - stats["first_request_at"]
    total = _at(detail["finished_at"]) - submit
    print(f"  submit → finished {total:.2f} s; first request → last answer {serving:.2f} s; "
          f"fixed part {total - serving:.2f} s (before the first request "
          f"{stats['first_request_at'] - submit:.2f} s, after the last answer "
          f"{_at(detail['finished_at']) - stats['last_answer_at']:.2f} s)")


def main() -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--questions", type=int, default=1000)
    options.add_argument("--runs", type=int, default=2)
    options.add_argument("--nothing-set", action="store_true", help="the model with no concurrency settings")
    args = options.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aieval-bench-timeline-"))
    server = ModelServer(work)
    platform = None
    try:
        platform = Platform(work)
        dataset_id = platform.dataset("bench-qa", qa_rows(args.questions))
        warm_up = platform.dataset("warm-up", qa_rows(8, first=900_000))
        platform.evaluate([platform.model(server.url, "warm-up", SET_64)], [warm_up], "warm-up")
        settings = {} if args.nothing_set else SET_64
        for run in range(args.runs):
            model_id = platform.model(server.url, f"timeline-{run}", settings)  # a new model: no cached answers
            one_run(platform, server, model_id, dataset_id, f"run {run + 1} of {args.runs}")
        print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if platform is not None:
            platform.close()
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
