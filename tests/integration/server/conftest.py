"""Real services over real connections: PostgreSQL, Redis, an S3 server (moto_server), Celery workers as
subprocesses, the real engine with a tiny model. A service that is not reachable fails the tests loudly."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_openai import FakeChatEndpoint
from server_it_helpers import PYTHON, Stack, free_port, migrate, model_roots_env, production_env, wait_until

PG_ADMIN_URL = os.environ.get("AIEVAL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


# ---- services ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import psycopg

    name = f"aieval_it_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}). Start it: "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", pytrace=False)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def own_postgres_url(postgres_url) -> Iterator[str]:
    """A database of this test's own on the same server, for a test that changes everything it can reach (the API
    fuzzer): what it leaves behind cannot surprise the tests that share `postgres_url`."""
    import psycopg

    name = f"aieval_own_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc}). Start it: redis-server --daemonize yes "
                    "--bind 127.0.0.1 --port 6379", pytrace=False)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    moto = Path(PYTHON).with_name("moto_server")
    if not moto.exists():
        pytest.fail("moto_server is not installed: pip install 'moto[server]'", pytrace=False)
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 30, what="moto_server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    from aieval_engine.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    return build_tiny_model(root / "tiny-a", seed=0), build_tiny_model(root / "tiny-b", seed=1)




# ---- the production stack with one worker, against a loopback endpoint ------------------------------------
@pytest.fixture
def endpoint() -> Iterator[FakeChatEndpoint]:
    """A loopback OpenAI-compatible endpoint that answers "A" to everything and records what it was asked."""
    endpoint = FakeChatEndpoint(answer="A")
    yield endpoint
    endpoint.close()


@pytest.fixture
def worker_stack(tmp_path_factory, own_postgres_url, redis_url, tiny_models):
    """Start the API and one Celery worker on their own PostgreSQL database and Redis (`worker_stack(name, **env)`,
    once per test); stopped at the end of the test. `stack.data_dir` is the platform's data directory."""
    started: list[Stack] = []

    def start(name: str, **extra_env: str) -> Stack:
        data_dir = tmp_path_factory.mktemp(f"{name}-data")
        env = production_env(data_dir, own_postgres_url, redis_url, redis_url, **extra_env,
                             **model_roots_env(tiny_models[0].parent))
        migrate(env)
        stack = Stack(env, tmp_path_factory.mktemp(f"{name}-logs"))
        stack.data_dir = data_dir
        started.append(stack)
        stack.start_api()
        stack.start_worker(concurrency=1)
        return stack

    yield start
    for stack in started:
        stack.stop()
