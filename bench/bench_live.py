#!/usr/bin/env python
"""Live feed benchmark: many idle WebSocket watchers on one API process, then changes to one evaluation.

Half the sockets watch the evaluation list (/evaluations/ws), half one running evaluation
(/evaluations/{id}/ws): real WebSockets over loopback against a real uvicorn API process. Prints

- the API process' CPU (CPU seconds per wall second, from /proc/<pid>/stat) with no watcher and with all of
  them connected and idle;
- the event lag: from the moment the evaluation's row changes in the database (and, with --redis-url, the
  change is published as a worker would publish it) until every socket has received the new revision.

    python bench/bench_live.py                                  # embedded default: SQLite, database polling
    python bench/bench_live.py --redis-url redis://127.0.0.1:6379/0

Target (issue 8): lag < 1 s with 500 watchers, idle watchers about free.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from aieval_engine.local_server import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import percentile, seed_database  # noqa: E402  (bench/ is not a package)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_load(pid: int, seconds: float) -> float:
    """CPU seconds the process used per wall second over the next `seconds`."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def add_watched_evaluation(url: str) -> int:
    """A running evaluation, as a worker would leave it between two progress events."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.models.tables import utcnow

    with session_scope(url) as session:
        evaluation = Evaluation(name="watched", status="running", params={}, queue="local", revision=1,
                                started_at=utcnow(), progress={"stage": "infer", "samples_done": 0, "fraction": 0.0})
        session.add(evaluation)
        session.flush()
        return evaluation.id


def change(url: str, evaluation_id: int, publisher) -> int:
    """One progress step of the watched evaluation, written (and published) the way the worker does it;
    returns the new revision."""
    from sqlalchemy import select, update

    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(url) as session:
        revision = session.scalar(select(Evaluation.revision).where(Evaluation.id == evaluation_id)) + 1
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(
            revision=revision, progress={"stage": "infer", "samples_done": revision, "fraction": revision / 1000}))
    publisher.publish(evaluation_id, {"type": "progress", "status": "running"})
    return revision


class Watcher:
    """One socket; remembers when it first saw each revision of the watched evaluation."""

    def __init__(self, url: str, evaluation_id: int):
        self.url, self.evaluation_id = url, evaluation_id
        self.seen_at: dict[int, float] = {}
        self.connected = asyncio.Event()
        self.socket = None

    def _revision(self, message: dict) -> int | None:
        if message.get("type") == "update":
            return message["evaluation"]["revision"]
        if message.get("type") == "evaluations":
            for item in message["items"]:
                if item["id"] == self.evaluation_id:
                    return item["revision"]
        return None

    async def run(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url, open_timeout=300, max_size=None) as socket:
            self.socket = socket
            async for raw in socket:
                now = time.perf_counter()
                revision = self._revision(json.loads(raw))
                if revision is not None:
                    self.seen_at.setdefault(revision, now)
                    self.connected.set()


async def measure(ws_base: str, url: str, pid: int, evaluation_id: int, publisher, args) -> dict:
    watchers = [Watcher(f"{ws_base}/evaluations/ws" if n % 2 == 0 else f"{ws_base}/evaluations/{evaluation_id}/ws",
                        evaluation_id) for n in range(args.watchers)]
    began = time.perf_counter()
    tasks = []
    for start in range(0, len(watchers), 50):  # in batches, as a crowd of browsers would arrive
        tasks += [asyncio.create_task(w.run()) for w in watchers[start : start + 50]]
        await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 600)
    figures = {"connect_s": time.perf_counter() - began}
    await asyncio.sleep(2)
    figures["idle_cpu"] = await asyncio.to_thread(cpu_load, pid, args.idle_seconds)
    lags = []
    for _ in range(args.changes):
        changed_at = time.perf_counter()
        revision = await asyncio.to_thread(change, url, evaluation_id, publisher)
        deadline = changed_at + args.lag_timeout
        while time.perf_counter() < deadline and not all(revision in w.seen_at for w in watchers):
            await asyncio.sleep(0.005)
        received = [w.seen_at.get(revision, float("inf")) - changed_at for w in watchers]
        lags.append((statistics.median(received), percentile(received, 99), max(received)))
        await asyncio.sleep(1.0)
    figures["lags"] = lags
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchers", type=int, default=500, help="sockets (half on the list, half on one evaluation)")
    parser.add_argument("--evaluations", type=int, default=60, help="evaluations in the database")
    parser.add_argument("--changes", type=int, default=5, help="progress steps of the watched evaluation")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long idle CPU is measured")
    parser.add_argument("--lag-timeout", type=float, default=60.0)
    parser.add_argument("--redis-url", default="", help="pub/sub for live events (default: database polling)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="aieval-bench-live-"))
    env = {**os.environ, "AIEVAL_DATA_DIR": str(data_dir), "AIEVAL_REGISTER_DEMO": "false", "AIEVAL_ENV": "dev",
           "AIEVAL_DB_URL": "", "AIEVAL_REDIS_URL": args.redis_url, "AIEVAL_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIEVAL_")})
    from aieval_server.config import get_settings
    from aieval_server.services.events import Publisher

    settings = get_settings()
    seed_database(settings.database_url, args.evaluations, data_dir / "no-model")
    evaluation_id = add_watched_evaluation(settings.database_url)
    publisher = Publisher(settings)

    port = free_port(18000, 18999)
    base = f"http://127.0.0.1:{port}/api/v1"
    logs = open(data_dir / "api.log", "wb")
    api = subprocess.Popen([sys.executable, "apps/server/start_fastapi_server.py", "--host", "127.0.0.1",
                            "--port", str(port), "--no-access-log"], cwd=REPO, env=env, stdout=logs,
                           stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise SystemExit(f"the API did not start: {(data_dir / 'api.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(1)
        no_watchers = cpu_load(api.pid, args.idle_seconds)
        figures = asyncio.run(measure(base.replace("http://", "ws://"), settings.database_url, api.pid,
                                      evaluation_id, publisher, args))
    finally:
        api.terminate()
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
        logs.close()

    events = "Redis pub/sub" if args.redis_url else "database polling"
    print(f"\nlive feed, {args.watchers} watchers ({args.watchers - args.watchers // 2} on the list, "
          f"{args.watchers // 2} on one evaluation), SQLite, {events}, one API process")
    rows = [("all sockets open and served", f"{figures['connect_s']:.1f} s"),
            ("API CPU, no watcher", f"{no_watchers:.3f} CPU s per s"),
            (f"API CPU, {args.watchers} idle watchers", f"{figures['idle_cpu']:.3f} CPU s per s")]
    for label, value in rows:
        print(f"  {label + ':':<36}{value}")
    print("  change -> received on every socket (median / p99 / all, per change):")
    for median, p99, worst in figures["lags"]:
        print(f"    {median:.3f} / {p99:.3f} / {worst:.3f} s")
    on_all = [worst for _, _, worst in figures["lags"]]
    print(f"  lag to all sockets: median step {statistics.median(on_all):.3f} s, worst step {max(on_all):.3f} s "
          "(target < 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
