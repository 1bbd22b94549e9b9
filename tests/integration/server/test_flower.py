"""Celery Flower, started with the command docs/OPERATIONS.md gives, against the tests' Redis broker: it connects,
serves its pages, and stops on SIGTERM."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from server_it_helpers import PYTHON, REPO, free_port, wait_until


def test_flower_starts_against_the_broker_and_serves_its_pages(redis_url, tmp_path):
    if importlib.util.find_spec("flower") is None:
        pytest.fail("Flower is not installed: pip install -e '.[dev]' (or '.[monitoring]')", pytrace=False)
    port = free_port()
    env = {"AIEVAL_BROKER_URL": redis_url, "AIEVAL_KEY_PREFIX": f"it-{uuid.uuid4().hex[:8]}:",
           "AIEVAL_DATA_DIR": str(tmp_path / "data"), "PATH": str(Path(PYTHON).parent)}
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        flower = subprocess.Popen(
            [str(Path(PYTHON).with_name("celery")), "-A", "aieval_server.celery_app:celery_app", "flower",
             f"--port={port}", "--address=127.0.0.1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def serving():
        if flower.poll() is not None:
            raise AssertionError(f"Flower exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{url}/healthcheck", timeout=5).text == "OK"
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, 90, what="Flower to serve")
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "Flower" in page.text
        for page in ("/workers", "/tasks"):
            answer = httpx.get(url + page, timeout=30)
            assert answer.status_code == 200, (page, answer.text[:500])
        # its JSON API is closed unless FLOWER_UNAUTHENTICATED_API is set (or --basic-auth/--auth): Flower's default
        assert httpx.get(url + "/api/workers", timeout=30).status_code == 401
        assert "Connected to" in log_path.read_text(errors="replace")  # it reached the broker
    finally:
        flower.send_signal(signal.SIGTERM)
        try:
            flower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait(timeout=10)
    assert flower.returncode is not None
