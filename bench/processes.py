"""What the benchmarks that run the platform's own processes share: starting, stopping and waiting for them, the
environment of a throwaway platform, and its API started and answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from aieval_engine.local_server import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from waiting import wait_until  # noqa: E402  (tests/ is not a package)


class BenchFailure(SystemExit):
    """A benchmark cannot go on: its message is printed and the script exits non-zero, unless a caller catches it
    to report one missing row (bench_throughput.py)."""


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process of its own group (stop() ends it with its children), output appended to `log`."""
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 60) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """The first truthy value of `predicate()`, polled every `interval` s (the tests' one way of waiting,
    tests/waiting.py); BenchFailure after `timeout` s."""
    try:
        return wait_until(predicate, timeout, interval=interval, what=what)
    except AssertionError as timed_out:
        raise BenchFailure(str(timed_out)) from None


def platform_env(work: Path, **settings: str) -> dict[str, str]:
    """A throwaway platform in `work`: SQLite and the directory broker unless `settings` say otherwise, no demo
    model, loopback model servers allowed, its own Redis key prefix."""
    return {**os.environ, "AIEVAL_ENV": "dev", "AIEVAL_DATA_DIR": str(work / "data"), "AIEVAL_REGISTER_DEMO": "false",
            "AIEVAL_PREPARE_DEMO_MODEL": "false", "AIEVAL_OUTBOUND_ALLOW_LOOPBACK": "true",
            "AIEVAL_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:", **settings}


def start_api(env: dict[str, str], work: Path, *argv: str) -> tuple[subprocess.Popen, str]:
    """The platform's API on a free loopback port, once its health route answers: (the process, its base URL)."""
    port = free_port(18000, 18999)
    log = work / "api.log"
    api = start([sys.executable, "apps/server/start_fastapi_server.py", "--host", "127.0.0.1", "--port", str(port),
                 *argv], env, log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if api.poll() is not None:
            raise BenchFailure(f"the API exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "the API")
    except BaseException:
        stop(api)
        raise
    return api, base


def start_worker(env: dict[str, str], log: Path, *argv: str, ready: str = "ready.") -> subprocess.Popen:
    """A Celery worker of the platform (apps/server/start_celery_worker.py), once `ready` is in its log."""
    worker = start([sys.executable, "apps/server/start_celery_worker.py", *argv], env, log)
    wait_for(lambda: ready in log.read_text(errors="replace") or worker.poll() is not None, 240, f"the worker ({log.name})")
    if worker.poll() is not None:
        raise BenchFailure(f"the worker exited: {log.read_text(errors='replace')[-3000:]}")
    return worker
