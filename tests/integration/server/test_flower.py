"""Celery Flower, started with the command docs/OPERATIONS.md gives (with --basic-auth), against the tests' Redis broker
and a real worker on PostgreSQL: it connects, serves its pages, lists the tasks the worker ran (workers send task
events, celery_app.py), keeps its JSON API closed without credentials, and stops on SIGTERM."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from server_it_helpers import PYTHON, REPO, Stack, free_port, migrate, production_env, wait_until

from aieval_server.celery_app import TICK_SCHEDULES

CELERY = str(Path(PYTHON).with_name("celery"))
APP = "aieval_server.celery_app:celery_app"
FLOWER_USER = ("it-flower", uuid.uuid4().hex)


def test_flower_starts_against_the_broker_and_lists_the_tasks_workers_ran(redis_url, own_postgres_url, tmp_path):
    if importlib.util.find_spec("flower") is None:
        pytest.fail("Flower is not installed: pip install -e '.[dev]' (or '.[monitoring]')", pytrace=False)
    port = free_port()
    env = production_env(tmp_path / "data", own_postgres_url, redis_url, redis_url)
    migrate(env)
    stack = Stack(env, tmp_path)  # the worker; Flower gets the same settings (broker, key prefix)
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        flower = subprocess.Popen(
            [CELERY, "-A", APP, "flower", f"--port={port}", "--address=127.0.0.1",
             f"--basic-auth={':'.join(FLOWER_USER)}"],
            cwd=REPO, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def serving():
        if flower.poll() is not None:
            raise AssertionError(f"Flower exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{url}/healthcheck", timeout=5).text == "OK"
        except httpx.HTTPError:
            return False

    def ticks_listed() -> list[dict]:
        tasks = httpx.get(url + "/api/tasks", auth=FLOWER_USER, timeout=30)
        assert tasks.status_code == 200, tasks.text[:500]
        return [task for task in tasks.json().values() if task.get("name") == TICK_SCHEDULES]

    try:
        wait_until(serving, 90, what="Flower to serve")
        page = httpx.get(url + "/", auth=FLOWER_USER, timeout=30)
        assert page.status_code == 200 and "Flower" in page.text
        for page in ("/workers", "/tasks"):
            answer = httpx.get(url + page, auth=FLOWER_USER, timeout=30)
            assert answer.status_code == 200, (page, answer.text[:500])
        # its JSON API and pages are closed without the credentials (Flower's API is even without --basic-auth,
        # unless FLOWER_UNAUTHENTICATED_API is set)
        assert httpx.get(url + "/api/workers", timeout=30).status_code == 401
        assert "Connected to" in log_path.read_text(errors="replace")  # it reached the broker
        assert ticks_listed() == []

        worker = stack.start_worker(concurrency=1)
        # A task for the worker, sent as an operator would (the schedules' tick: quick, harmless). Flower sees only
        # the events sent while it listens: sent again until one is listed, in case the first came too early.
        for _ in range(4):
            sent = subprocess.run([CELERY, "-A", APP, "call", TICK_SCHEDULES], cwd=REPO, env=stack.env,
                                  capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr[-2000:]
            try:
                listed = wait_until(lambda: [t for t in ticks_listed() if t.get("state") == "SUCCESS"], 15,
                                    what="Flower to list the tick as succeeded")
                break
            except AssertionError:
                continue
        else:
            raise AssertionError(f"Flower listed no succeeded {TICK_SCHEDULES}: {ticks_listed()}\n"
                                 f"{stack.read_log('worker0.log')[-3000:]}")
        assert worker.poll() is None
        task = listed[0]
        assert task["worker"].startswith("w0-") and task["received"] and task["started"] and task["succeeded"]
    finally:
        stack.stop()
        flower.send_signal(signal.SIGTERM)
        try:
            flower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(timeout=10)
    assert flower.returncode is not None
