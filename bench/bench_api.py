#!/usr/bin/env python
"""API benchmark: latency of `list` and `show` with 10,000 evaluations in the database under a steady
200 requests/s, and the delay from submitting an evaluation to its first progress event on the WebSocket.

    python bench/bench_api.py                     # embedded default: SQLite, directory broker
    python bench/bench_api.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test --broker-url redis://127.0.0.1:6379/0

Targets (issue 3): p99 < 50 ms at 200 requests/s on a 2-core machine; first event <= 2 s. Issue 9: the same with
sign-in on (the default here; --no-auth for comparison): every request carries a member's personal API token, and a
third of the evaluations are another user's private ones, so lists run with the access filter a member gets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from aieval_engine.local_server import free_port

REPO = Path(__file__).resolve().parents[1]


def seed_database(url: str, count: int, tiny_model: Path) -> None:
    """Insert `count` finished evaluations with links, progress and scores, as a busy installation would have."""
    from sqlalchemy import insert

    from aieval_server.db import session_scope
    from aieval_server.db.migrate import upgrade
    from aieval_server.models import (
        Dataset,
        Evaluation,
        EvaluationDataset,
        EvaluationModel,
        Model,
        Score,
        User,
    )

    upgrade(url)
    rng = random.Random(0)
    now = datetime.now(timezone.utc)
    with session_scope(url) as session:
        models = [Model(name=f"model-{i}", kind="huggingface", settings={"path": str(tiny_model)}) for i in range(20)]
        datasets = [Dataset(name=f"dataset-{i}", kind="custom", columns=["question", "answer"], rows=100,
                            sha256=uuid.uuid4().hex + uuid.uuid4().hex, storage_key=f"datasets/x{i}.jsonl",
                            file_format="jsonl", data_type="qa") for i in range(10)]
        # Every third evaluation is this user's private work: members must never see it, and lists filter it out.
        other = User(username="bench-other", display_name="Other", password_hash="", role="member", disabled=False)
        session.add_all([*models, *datasets, other])
        session.flush()
        model_ids, dataset_ids = [m.id for m in models], [d.id for d in datasets]
        evaluations, links_m, links_d, scores = [], [], [], []
        statuses = ["succeeded"] * 7 + ["failed", "cancelled", "queued"]
        start_id = 1_000_000
        for n in range(count):
            evaluation_id = start_id + n
            created = now - timedelta(minutes=count - n)
            status = rng.choice(statuses)
            chosen_models = rng.sample(model_ids, 2)
            chosen_sets = rng.sample(dataset_ids, 2)
            pairs = [{"model": f"model-{m}", "model_abbr": f"m{m}", "dataset": f"dataset-{d}", "dataset_abbr": f"d{d}",
                      "state": "evaluated", "done": 100, "total": 100} for m in chosen_models for d in chosen_sets]
            evaluations.append({
                "id": evaluation_id, "name": f"nightly run {n}", "status": status, "params": {"limit": 100},
                "queue": "local", "created_at": created, "started_at": created, "revision": 7, "attempts": 1,
                "finished_at": None if status == "queued" else created + timedelta(seconds=90),
                "cancel_requested": False, "artifacts_stored": False, "priority": 0,
                "owner_id": other.id if n % 3 == 0 else None, "visibility": "private" if n % 3 == 0 else "shared",
                "progress": {"kind": "progress", "stage": "summarize", "samples_done": 400, "samples_total": 400,
                             "pairs_done": 4, "pairs_total": 4, "fraction": 1.0, "pairs": pairs, "elapsed_s": 90.0},
            })
            links_m += [{"evaluation_id": evaluation_id, "model_id": m, "position": i} for i, m in enumerate(chosen_models)]
            links_d += [{"evaluation_id": evaluation_id, "dataset_id": d, "position": i} for i, d in enumerate(chosen_sets)]
            if status == "succeeded":
                scores += [{"evaluation_id": evaluation_id, "model_id": m, "dataset_id": d, "model_name": f"model-{m}",
                            "dataset_name": f"dataset-{d}", "model_abbr": f"m{m}", "dataset_abbr": f"d{d}",
                            "metric": "accuracy", "value": rng.uniform(0, 100)} for m in chosen_models for d in chosen_sets]
        for table, rows in ((Evaluation, evaluations), (EvaluationModel, links_m), (EvaluationDataset, links_d), (Score, scores)):
            for start in range(0, len(rows), 2000):
                session.execute(insert(table), rows[start : start + 2000])
    # A database that grew over months has planner statistics (autovacuum); a bulk load has none yet.
    from sqlalchemy import text

    from aieval_server.db.session import get_engine

    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class _Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost far less CPU than the server it
    measures (both share this machine's two cores; httpx costs about as much per request as the API)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]):
        self.host, self.port = host, port
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status


async def steady_load(base: str, rate: float, seconds: float, ids: list[int], model_ids: list[int],
                      headers: dict[str, str], connections: int = 64) -> dict[str, list[float]]:
    """Open-loop load: requests start on schedule whether or not earlier ones finished (no coordinated
    omission); a request waiting for a free connection counts that wait in its latency."""
    url = httpx.URL(base)
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(_Connection(url.host, url.port, headers))
    latencies: dict[str, list[float]] = {"list": [], "show": []}
    errors = 0
    rng = random.Random(1)

    async def one(kind: str, target: str) -> None:
        nonlocal errors
        started = time.perf_counter()
        connection = await pool.get()
        try:
            if await connection.get(target) != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            connection.writer = None
        finally:
            pool.put_nowait(connection)
        latencies[kind].append((time.perf_counter() - started) * 1000)

    prefix = url.path.rstrip("/")
    tasks = []
    begin = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if n % 2 == 0:
            query = rng.choice(["", "?status=succeeded", f"?model_id={rng.choice(model_ids)}", "?q=run%2012",
                                f"?page={rng.randint(1, 50)}"])
            tasks.append(asyncio.create_task(one("list", f"{prefix}/evaluations{query}")))
        else:
            tasks.append(asyncio.create_task(one("show", f"{prefix}/evaluations/{rng.choice(ids)}")))
    await asyncio.gather(*tasks)
    latencies["_meta"] = [total / (time.perf_counter() - begin), errors]
    return latencies


def first_event_latency(base: str, ws_base: str, model_id: int, dataset_id: int, runs: int,
                        headers: dict[str, str]) -> list[tuple[float, float]]:
    """(seconds to the first WebSocket update showing the job running, seconds to the first update with samples)."""
    from websockets.sync.client import connect

    results = []
    with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
        for _ in range(runs):
            started = time.perf_counter()
            evaluation_id = client.post("/evaluations", json={
                "name": "latency probe", "model_ids": [model_id], "dataset_ids": [dataset_id],
                "params": {"limit": 8, "max_out_len": 8}}).json()["id"]
            first_running = first_samples = None
            with connect(f"{ws_base}/evaluations/{evaluation_id}/ws", open_timeout=10, additional_headers=headers) as ws:
                while first_samples is None:
                    try:
                        message = json.loads(ws.recv(timeout=120))
                    except Exception:
                        break
                    if message["type"] != "update":
                        continue
                    evaluation = message["evaluation"]
                    now = time.perf_counter() - started
                    if first_running is None and evaluation["status"] == "running":
                        first_running = now
                    if (evaluation["progress"] or {}).get("samples_done") or evaluation["status"] == "succeeded":
                        first_samples = now
            results.append((first_running or float("nan"), first_samples or float("nan")))
            time.sleep(1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (half list, half show)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db-url", default="", help="default: SQLite in a temporary data dir; for PostgreSQL the "
                        "bench creates a database of its own on that server and drops it afterwards")
    parser.add_argument("--broker-url", default="", help="default: the directory broker")
    parser.add_argument("--redis-url", default="", help="pub/sub for live events (default: database polling)")
    parser.add_argument("--first-event-runs", type=int, default=3)
    parser.add_argument("--api-processes", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--auth", action=argparse.BooleanOptionalAction, default=True,
                        help="sign-in on, requests with a member's personal API token (default: on)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="aieval-bench-api-"))
    with private_database(args.db_url) as db_url:
        args.db_url = db_url
        return run(args, data_dir)


@contextlib.contextmanager
def private_database(url: str):
    """A fresh PostgreSQL database beside the one named in `url` (dropped afterwards), or `url` unchanged."""
    if not url.startswith("postgresql"):
        yield url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"aieval_bench_{uuid.uuid4().hex[:8]}"
    admin_url = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def member_token_headers(base: str, admin_password: str) -> dict[str, str]:
    """An administrator makes a member account; the member makes a personal API token (scope run) and sends it."""
    password = uuid.uuid4().hex
    with httpx.Client(base_url=base, timeout=30) as admin:
        state = admin.post("/auth/login", json={"username": "bench-admin", "password": admin_password}).json()
        admin.headers["X-CSRF-Token"] = state["csrf_token"]
        created = admin.post("/users", json={"username": "bench-member", "password": password, "role": "member"})
        created.raise_for_status()
    with httpx.Client(base_url=base, timeout=30) as member:
        state = member.post("/auth/login", json={"username": "bench-member", "password": password}).json()
        member.headers["X-CSRF-Token"] = state["csrf_token"]
        token = member.post("/tokens", json={"name": "bench", "scope": "run"})
        token.raise_for_status()
    return {"Authorization": f"Bearer {token.json()['token']}"}


def run(args, data_dir: Path) -> int:
    from aieval_engine.tiny_model import build_tiny_model

    env = {**os.environ, "AIEVAL_DATA_DIR": str(data_dir), "AIEVAL_REGISTER_DEMO": "false", "AIEVAL_ENV": "dev",
           "AIEVAL_DB_URL": args.db_url, "AIEVAL_BROKER_URL": args.broker_url, "AIEVAL_REDIS_URL": args.redis_url,
           "AIEVAL_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:6]}:"}
    admin_password = uuid.uuid4().hex
    if args.auth:
        env |= {"AIEVAL_AUTH_ENABLED": "true", "AIEVAL_INITIAL_ADMIN_USERNAME": "bench-admin",
                "AIEVAL_INITIAL_ADMIN_PASSWORD": admin_password}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIEVAL_")})
    from aieval_server.config import get_settings

    settings = get_settings()
    tiny = build_tiny_model(data_dir / "models" / "tiny")  # under the default model root, <data dir>/models
    began = time.perf_counter()
    seed_database(settings.database_url, args.evaluations, tiny)
    print(f"seeded {args.evaluations} evaluations into {settings.database_url.split(':')[0]} in {time.perf_counter() - began:.1f} s")

    port = free_port(18000, 18999)
    base = f"http://127.0.0.1:{port}/api/v1"
    logs = open(data_dir / "bench.log", "wb")
    api = subprocess.Popen([sys.executable, "apps/server/start_fastapi_server.py", "--host", "127.0.0.1", "--port", str(port),
                            "--workers", str(args.api_processes), "--no-access-log"],
                           cwd=REPO, env=env, stdout=logs, stderr=subprocess.STDOUT)
    worker_log = data_dir / "worker.log"
    worker = subprocess.Popen([sys.executable, "apps/server/start_celery_worker.py", "--concurrency", "1"],
                              cwd=REPO, env=env, stdout=open(worker_log, "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = member_token_headers(base, admin_password) if args.auth else {}
        with httpx.Client(base_url=base, headers=headers) as client:
            ids = [e["id"] for e in client.get("/evaluations", params={"page_size": 200}).json()["items"]]
            # Shared ones only (see seed_database): a member's show of another's private one is a 404.
            ids += [i for i in range(1_000_000, 1_000_000 + args.evaluations, 37) if (i - 1_000_000) % 3]
            model_ids = [m["id"] for m in client.get("/models").json()]
            for _ in range(50):  # warm connections and caches
                client.get("/evaluations")
                client.get(f"/evaluations/{ids[0]}")

        # The worker imports OpenCompass once at start (a core for ~10 s): measure the API, not the warm-up.
        deadline = time.monotonic() + 180
        while "OpenCompass warm in" not in worker_log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        latencies = asyncio.run(steady_load(base, args.rate, args.seconds, ids, model_ids, headers))
        achieved, errors = latencies.pop("_meta")
        print(f"\nsteady load: {achieved:.0f} requests/s for {args.seconds:.0f} s, {int(errors)} errors, "
              f"{args.api_processes} API process(es), sign-in {'on (member, personal API token)' if args.auth else 'off'}")
        print(f"{'endpoint':<28}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for kind, label in (("list", "GET /evaluations (page)"), ("show", "GET /evaluations/{id}")):
            values = latencies[kind]
            print(f"{label:<28}{len(values):>6}{statistics.median(values):>10.1f}{percentile(values, 99):>10.1f}{max(values):>10.1f}")

        with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
            model_id = client.post("/models", json={"name": "bench-tiny", "kind": "huggingface", "path": str(tiny)}).json()["id"]
            content = "".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in range(8)).encode()
            dataset_id = client.post("/datasets", files={"file": ("probe.jsonl", content)}).json()["dataset"]["id"]
        # The worker imports OpenCompass once on start; the first probe pays what is left of that.
        ws_base = base.replace("http://", "ws://")
        first_event_latency(base, ws_base, model_id, dataset_id, 1, headers)
        probes = first_event_latency(base, ws_base, model_id, dataset_id, args.first_event_runs, headers)
        print("\nsubmit -> first WebSocket event showing the job running (warm worker):")
        print("  " + ", ".join(f"{a:.2f} s" for a, _ in probes) + f"   (median {statistics.median(a for a, _ in probes):.2f} s)")
        print("submit -> first event with samples done:")
        print("  " + ", ".join(f"{b:.2f} s" for _, b in probes) + f"   (median {statistics.median(b for _, b in probes):.2f} s)")
    finally:
        for process in (worker, api):
            process.terminate()
        for process in (worker, api):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
