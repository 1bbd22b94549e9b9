"""budget.py: a cap on requests in flight shared by processes (lock files) and machines (Redis, the real one on
127.0.0.1:6379, under a key prefix of this test run's own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from test_config_builder import HOSTILE, HOSTILE_IDS, assert_inert, assignments

from aieval_engine.budget import FileLockBudget, RedisBudget, open_budget, shown_store
from aieval_engine.config_builder import build_config
from aieval_engine.spec import SpecError, parse_spec

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_key():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); start it: redis-server --daemonize yes")
    prefix = f"test-budget-{uuid.uuid4().hex[:10]}:"
    yield f"{prefix}budget:model:7"
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(params=["redis", "files"])
def store(request, tmp_path, redis_key):
    return (REDIS_URL, redis_key) if request.param == "redis" else (str(tmp_path / "budget"), redis_key)


def most_in_flight(budget, threads: int, rounds: int, hold_s: float = 0.01) -> int:
    """Run `threads` threads that each take a slot `rounds` times; the most slots held at once."""
    lock = threading.Lock()
    in_flight = peak = 0

    def work():
        nonlocal in_flight, peak
        for _ in range(rounds):
            holder = budget.acquire(timeout=30)
            assert holder is not None
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(hold_s)
            with lock:
                in_flight -= 1
            budget.release(holder)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return peak


def test_threads_never_hold_more_than_the_cap(store):
    url, key = store
    assert most_in_flight(open_budget(key, 3, url), threads=8, rounds=6) == 3


def test_separate_budget_objects_on_one_key_share_the_cap(store):
    """Each run opens its own budget object (in its own process); only the key ties them together."""
    url, key = store
    first, second = open_budget(key, 2, url), open_budget(key, 2, url)
    held = [first.acquire(timeout=1), second.acquire(timeout=1)]
    assert all(held)
    assert first.acquire(timeout=0.2) is None and second.acquire(timeout=0.2) is None
    first.release(held[0])
    assert second.acquire(timeout=1) is not None
    # another key is another budget
    assert open_budget(key + "-other", 2, url).acquire(timeout=1) is not None


def test_a_released_slot_wakes_a_waiter_without_waiting_for_a_poll(redis_key):
    budget = RedisBudget(REDIS_URL, redis_key, 1)
    holder = budget.acquire()
    got: list[float] = []

    def wait():
        budget.acquire(timeout=10)
        got.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # the waiter is blocked now
    released = time.monotonic()
    budget.release(holder)
    waiter.join(10)
    assert got and got[0] - released < 0.2


HOLD_AND_DIE = """
import os, signal, sys, time
from aieval_engine.budget import open_budget
budget = open_budget(sys.argv[1], 1, sys.argv[2], lease_s=float(sys.argv[3]))
assert budget.acquire(timeout=10)
print("held", flush=True)
time.sleep(float(sys.argv[4]))
os.kill(os.getpid(), signal.SIGKILL)  # a crash: no release, no cleanup
"""


def hold_in_process(key: str, url: str, lease_s: float, then_die_after_s: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD_AND_DIE, key, url, str(lease_s), str(then_die_after_s)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_holder_keeps_its_slot_beyond_the_lease_and_a_dead_one_frees_it_after_the_lease(redis_key):
    lease_s = 0.6
    budget = RedisBudget(REDIS_URL, redis_key, 1, lease_s=lease_s)
    holder_process = hold_in_process(redis_key, REDIS_URL, lease_s, then_die_after_s=3 * lease_s)
    try:
        # alive for three leases: its background renewal keeps the slot
        assert budget.acquire(timeout=2 * lease_s) is None
        holder_process.wait(10)
        assert holder_process.returncode == -signal.SIGKILL
        died = time.monotonic()
        # dead: nobody renews, and the slot comes free within one lease (plus one wait step)
        assert budget.acquire(timeout=5) is not None
        assert time.monotonic() - died <= lease_s + 0.5
    finally:
        holder_process.kill()


def test_a_dead_holder_of_a_lock_file_slot_frees_it_at_once(tmp_path, redis_key):
    url = str(tmp_path / "budget")
    budget = FileLockBudget(tmp_path / "budget", redis_key, 1)
    holder_process = hold_in_process(redis_key, url, 30, then_die_after_s=0.5)
    try:
        assert budget.acquire(timeout=0.2) is None
        holder_process.wait(10)
        assert budget.acquire(timeout=1) is not None
    finally:
        holder_process.kill()


def test_an_unreachable_redis_is_a_clear_error_naming_the_store_without_its_password(redis_key, unused_port,
                                                                                      monkeypatch):
    import aieval_engine.budget as budget_module

    monkeypatch.setattr(budget_module, "UNREACHABLE_GIVE_UP_S", 0.3)
    budget = RedisBudget(f"redis://:hunter2@127.0.0.1:{unused_port}/0", redis_key, 1)
    with pytest.raises(RuntimeError) as error:
        budget.acquire()
    assert f"redis://127.0.0.1:{unused_port}/0" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert shown_store("redis://user:secret@host:6380/2") == "redis://host:6380/2"


# ---- the spec and the generated config --------------------------------------------------------------------
def spec_with(model: dict, qa_file) -> dict:
    return {"models": [model], "datasets": [{"kind": "custom", "name": "qa", "path": str(qa_file)}]}


@pytest.mark.parametrize("hostile_key", HOSTILE[:12], ids=HOSTILE_IDS[:12])
@pytest.mark.parametrize("kind", ["openai", "dify"])
def test_the_budget_reaches_the_config_as_inert_data(tmp_path, qa_file, openai_model, hostile_key, kind):
    model = openai_model if kind == "openai" else {"kind": "dify", "name": "app", "base_url": "http://127.0.0.1:1/v1"}
    spec = parse_spec(spec_with({**model, "shared_budget": {"key": hostile_key, "max_concurrency": 4}}, qa_file))
    built = build_config(spec, tmp_path / "job")
    assert_inert(built.text, contains=[hostile_key])
    assert assignments(built.text)["models"][0]["shared_budget"] == {"key": hostile_key, "max_concurrency": 4}


def test_a_model_without_a_budget_gets_the_config_it_always_had(tmp_path, qa_file, openai_model):
    built = build_config(parse_spec(spec_with(openai_model, qa_file)), tmp_path / "job")
    assert "shared_budget" not in built.text


@pytest.mark.parametrize("budget, problem", [
    ({"key": "k", "max_concurrency": 0}, "greater than or equal to 1"),
    ({"key": "", "max_concurrency": 2}, "at least 1 character"),
    ({"key": "a\nb", "max_concurrency": 2}, "control characters"),
    ({"key": "k", "max_concurrency": 2, "store": "redis://elsewhere"}, "Extra inputs"),
])
def test_a_bad_budget_is_refused_with_a_reason(qa_file, openai_model, budget, problem):
    with pytest.raises(SpecError) as error:
        parse_spec(spec_with({**openai_model, "shared_budget": budget}, qa_file))
    assert problem in str(error.value)


def test_the_store_of_a_run_reaches_its_process_by_environment_only(tmp_path, qa_file, openai_model):
    """The store (a Redis URL may hold a password) is never written into the job directory."""
    from aieval_engine.budget import BUDGET_STORE_ENV
    from aieval_engine.runner import Evaluation

    started: list[dict] = []

    class RecordingLauncher:
        def start(self, job_dir, argv, env, seed):
            started.append(env)
            raise RuntimeError("not running OpenCompass in a unit test")

    secret_url = "redis://:s3cret@127.0.0.1:6379/0"
    spec = parse_spec(spec_with({**openai_model, "shared_budget": {"key": "k", "max_concurrency": 2}}, qa_file))
    evaluation = Evaluation(spec, tmp_path / "job", launcher=RecordingLauncher(), budget_store=secret_url,
                            environ={})
    with pytest.raises(RuntimeError):
        evaluation.run()
    assert started[0][BUDGET_STORE_ENV] == secret_url
    for path in (tmp_path / "job").rglob("*"):
        if path.is_file():
            assert "s3cret" not in path.read_text(errors="replace"), path
    # without one, the run says where the default store is, so every run of this machine shares it
    default = Evaluation(spec, tmp_path / "job2", launcher=RecordingLauncher(), environ={})
    assert default.budget_store.endswith(os.path.join("aieval", "budget"))
    assert Evaluation(spec, tmp_path / "job3", environ={BUDGET_STORE_ENV: REDIS_URL}).budget_store == REDIS_URL
