"""Restarts in the middle of an evaluation lose no job and leave none stuck: Redis (broker and pub/sub) stopped
and started again, PostgreSQL restarted, the API process killed and started again. And RabbitMQ as the broker.

Every service that is restarted here is a private instance (private_services.py): the machine's shared
PostgreSQL and Redis are never touched. One worker with one slot, so a second job really waits in the broker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest
from private_services import PrivatePostgres, PrivateRedis, RabbitVhost, rabbitmq_reachable
from server_it_helpers import Stack, mcq_rows, migrate, model_roots_env, production_env, wait_until

# Long enough to restart something part-way: after the first third at least 320 rows are left, several seconds of
# inference on the tiny model even on a fast idle machine (96 rows once took under 3 s there), while on a loaded CI
# machine progress may advance by dozens of rows between two polls.
ROWS = 480
LONG = {"params": {"max_out_len": 32}}
SHORT = {"params": {"max_out_len": 8, "limit": 4}}


# ---- services and stack -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def private(tmp_path_factory):
    try:
        postgres = PrivatePostgres()
        redis = PrivateRedis(tmp_path_factory.mktemp("private-redis"))
    except RuntimeError as exc:
        pytest.fail(f"cannot start a private service: {exc}", pytrace=False)
    try:
        try:
            postgres.start()
            redis.start()
        except RuntimeError as exc:
            pytest.fail(f"cannot start a private service: {exc}", pytrace=False)
        yield postgres, redis
    finally:
        redis.stop()
        postgres.cleanup()


def start_stack(tmp_path_factory, name: str, db_url: str, broker_url: str, redis_url: str, model_root: Path) -> Stack:
    data_dir = tmp_path_factory.mktemp(f"{name}-data")
    # A heartbeat missed during a restart must not look like a dead worker (the killed-worker case is in
    # test_production_stack.py): the production default, not the 5 s used there.
    env = production_env(data_dir, db_url, broker_url, redis_url, AIEVAL_STALE_AFTER_S="15", **model_roots_env(model_root))
    migrate(env)
    stack = Stack(env, tmp_path_factory.mktemp(f"{name}-logs"))
    stack.data_dir = data_dir
    try:
        stack.start_api()
        stack.start_worker(concurrency=1)
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, private, tiny_models):
    postgres, redis = private
    stack = start_stack(tmp_path_factory, "restarts", postgres.create_database(), redis.url, redis.url,
                        tiny_models[0].parent)
    try:
        yield stack
    finally:
        stack.stop()


def workload(stack, tiny_models) -> tuple[dict, dict]:
    """Bodies of a long and a short evaluation of one tiny model on one MCQ set."""
    model = stack.register_model("tiny", tiny_models[1], batch_size=2, max_out_len=32)
    dataset = stack.upload_dataset("even.jsonl", mcq_rows(ROWS))
    base = {"model_ids": [model["id"]], "dataset_ids": [dataset["id"]]}
    return {**base, **LONG, "name": "long"}, {**base, **SHORT, "name": "short"}


@pytest.fixture(scope="module")
def bodies(stack, tiny_models):
    return workload(stack, tiny_models)


@pytest.fixture(scope="module")
def reference(stack, bodies):
    """The long evaluation run once undisturbed: the scores every interrupted run must reproduce."""
    started = time.monotonic()
    detail = stack.finished(stack.submit({**bodies[0], "name": "reference"}))
    assert detail["status"] == "succeeded", detail["error"]
    detail["wall_s"] = time.monotonic() - started
    print(f"reference run: {detail['wall_s']:.1f} s")
    return detail


@pytest.fixture(autouse=True)
def jobs_finished_afterwards(request):
    """A failing test must not leave its jobs running into the next one (which checks that none is left)."""
    yield
    if "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        try:
            wait_until(lambda: not unfinished_jobs(stack.env["AIEVAL_DB_URL"]), 240, what="the test's jobs to end")
        except (AssertionError, TimeoutError, psycopg.Error):
            pass  # reported by the test itself


# ---- checks -----------------------------------------------------------------------------------
def scores(detail: dict) -> list[tuple]:
    return [(s["model"], s["dataset"], s["metric"], s["value"]) for s in detail["scores"]]


def part_way(stack, evaluation_id: int) -> dict:
    """Wait until the run has made some samples, but not a third of them."""
    return stack.wait_for(
        evaluation_id, lambda d: 0 < (d["progress"] or {}).get("samples_done", 0) < ROWS // 3, 120,
        "the run to be part-way")


def received_messages(listener, quiet_s: float = 1.0) -> list[dict]:
    """Every message the pub/sub listener holds (get_message answers None for the subscribe confirmation too,
    so read until nothing more comes for `quiet_s`)."""
    messages, deadline = [], time.monotonic() + quiet_s
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.2)
        if message is not None:
            messages.append(message)
            deadline = time.monotonic() + quiet_s
    return messages


def unfinished_jobs(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url.replace("+psycopg", ""), connect_timeout=10) as db:
        return db.execute("SELECT id, status FROM evaluations WHERE status IN ('queued', 'running')").fetchall()


def still_running(stack, evaluation_id: int) -> dict:
    """The restart is over while the run is still going (else the test proves nothing)."""
    detail = stack.client.get(f"/evaluations/{evaluation_id}").json()
    assert detail["status"] == "running", f"the run ended before the restart was over: {detail['status']}"
    assert detail["progress"]["samples_done"] < ROWS
    return detail


def assert_like_reference(stack, evaluation_id: int, reference: dict, attempts: int = 1) -> dict:
    detail = stack.finished(evaluation_id, timeout=180)
    assert detail["status"] == "succeeded", detail["error"]
    assert scores(detail) == scores(reference)
    assert detail["progress"]["samples_done"] == ROWS and detail["progress"]["fraction"] == 1.0
    assert detail["attempts"] == attempts, "the restart should not have made the worker give the job up"
    return detail


def assert_followed_to_the_end(watch, what: str) -> None:
    code = watch.wait_closed(60)
    assert code == 1000, f"{what}: socket ended with {code} ({watch.error}); statuses {watch.statuses()}"
    assert watch.statuses()[-1] == "succeeded", watch.statuses()


# ---- the tests --------------------------------------------------------------------------------
def test_redis_restart_mid_run_loses_no_job(stack, private, bodies, reference):
    _, redis = private
    long_body, short_body = bodies
    evaluation_id = stack.submit(long_body)
    before = stack.watch(evaluation_id)
    part_way(stack, evaluation_id)
    # The only worker slot is busy: this job's message waits in Redis, and the restart will lose it.
    waiting_id = stack.submit({**short_body, "name": "waiting in the broker"})
    prefix = stack.env["AIEVAL_KEY_PREFIX"].encode()
    assert redis.client().llen(prefix + b"local") == 1

    started = time.monotonic()
    redis.stop()
    try:
        # Submitting while the broker is down: accepted (the database is the truth), sent once it is back.
        sent_while_down = stack.submit({**short_body, "name": "submitted while Redis is down"})
        assert stack.client.get(f"/evaluations/{sent_while_down}").json()["status"] == "queued"
        time.sleep(1)
    finally:
        redis.start()
    print(f"Redis away for {time.monotonic() - started:.1f} s")
    # Listen on the job's channel ourselves: whatever the worker publishes from now on (progress, log lines, at
    # the latest its final status) proves its publisher reconnected, however little of the run is left.
    listener = redis.client().pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"{prefix.decode()}aieval:evaluation:{evaluation_id}")
    still_running(stack, evaluation_id)
    after = stack.watch(evaluation_id)

    assert_like_reference(stack, evaluation_id, reference)
    assert_followed_to_the_end(after, "a socket opened after the restart")
    published = received_messages(listener)
    listener.close()
    assert published, "the worker's live-event publisher reconnected to Redis after the restart"
    assert_followed_to_the_end(before, "a socket open across the restart")
    # The API's own broker connection recovered too: a job submitted now is sent and runs.
    submitted_after = stack.submit({**short_body, "name": "submitted after the restart"})
    # Both earlier messages were lost (or never sent); without a resend they would wait resend_queued_after_s
    # (10 min) in "queued".
    for job in (waiting_id, sent_while_down, submitted_after):
        detail = stack.finished(job, timeout=120)
        assert detail["status"] == "succeeded", detail["error"]
    assert unfinished_jobs(stack.env["AIEVAL_DB_URL"]) == []


def test_postgres_restart_mid_run_loses_no_job(stack, private, bodies, reference):
    postgres, _ = private
    evaluation_id = stack.submit(bodies[0])
    before = stack.watch(evaluation_id)
    part_way(stack, evaluation_id)

    started = time.monotonic()
    postgres.stop(mode="fast")  # pg_ctl restart -m fast, with the server away for a moment in between
    try:
        assert stack.client.get("/health").status_code == 500
        time.sleep(2)
    finally:
        postgres.start()
    print(f"PostgreSQL away for {time.monotonic() - started:.1f} s")
    wait_until(lambda: stack.client.get("/health").status_code == 200, 20, what="the API to reach the database again")
    still_running(stack, evaluation_id)
    after = stack.watch(evaluation_id)

    assert_like_reference(stack, evaluation_id, reference)
    assert_followed_to_the_end(after, "a socket opened after the restart")
    assert_followed_to_the_end(before, "a socket open across the restart")
    assert unfinished_jobs(stack.env["AIEVAL_DB_URL"]) == []


def test_api_killed_and_restarted_mid_run(stack, bodies, reference):
    evaluation_id = stack.submit(bodies[0])
    before = stack.watch(evaluation_id)
    part_way(stack, evaluation_id)

    started = time.monotonic()
    stack.restart_api()  # SIGKILL, then a new process on the same port
    print(f"API away for {time.monotonic() - started:.1f} s")
    assert before.wait_closed(10) not in (None, 1000), "the socket to the killed API must have dropped"
    still_running(stack, evaluation_id)
    after = stack.watch(evaluation_id)

    assert_like_reference(stack, evaluation_id, reference)
    assert_followed_to_the_end(after, "a socket to the restarted API")
    assert unfinished_jobs(stack.env["AIEVAL_DB_URL"]) == []


# ---- RabbitMQ ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rabbit_stack(tmp_path_factory, private, tiny_models):
    problem = rabbitmq_reachable()
    vhost = RabbitVhost()
    problem = problem or vhost.create()
    if problem:
        message = f"RabbitMQ is not usable: {problem}. Start it: rabbitmq-server -detached (scripts/ensure_services.sh)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    postgres, redis = private
    try:
        # Its own database, so the Redis-broker stack's sweeper never sends these jobs through Redis.
        stack = start_stack(tmp_path_factory, "rabbit", postgres.create_database(), vhost.url, redis.url,
                            tiny_models[0].parent)
        try:
            stack.vhost = vhost
            yield stack
        finally:
            stack.stop()
    finally:
        vhost.delete()


def test_rabbitmq_broker_runs_an_evaluation(rabbit_stack, tiny_models):
    stack = rabbit_stack
    assert stack.client.get("/health").json()["broker"] == "amqp"
    _, short_body = workload(stack, tiny_models)
    evaluation_id = stack.submit(short_body)
    watch = stack.watch(evaluation_id)
    detail = stack.finished(evaluation_id, timeout=180)
    assert detail["status"] == "succeeded", detail["error"]
    assert [s["metric"] for s in detail["scores"]] == ["accuracy"] and detail["progress"]["samples_done"] == 4
    assert_followed_to_the_end(watch, "the evaluation's socket")
    assert unfinished_jobs(stack.env["AIEVAL_DB_URL"]) == []
    # The job went through the vhost's queue, not anywhere else.
    queues = stack.vhost._ctl("list_queues", "-p", stack.vhost.name, "name", "messages")
    assert "local" in queues.stdout, queues.stdout + queues.stderr
