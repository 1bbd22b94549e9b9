"""With Redis, an API process holds one subscription for all its live sockets (issue 8, finding 14), not one
per socket, and still forwards log lines and wakes on published changes. Real Redis on 127.0.0.1:6379 (a key
prefix of its own: nothing of another run is received or disturbed)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update


@pytest.fixture
def app_with_redis(tmp_path, redis_url):
    from aieval_server.config import Settings
    from aieval_server.main import create_app

    settings = Settings(data_dir=tmp_path / "data", register_demo=False, web_dist=tmp_path / "no-web",
                        redis_url=redis_url, key_prefix=f"it-{uuid.uuid4().hex[:8]}:",
                        # TestClient's WebSockets send `Host: testserver`.
                        trusted_hosts=[*Settings.model_fields["trusted_hosts"].default, "testserver"])
    with TestClient(create_app(settings)) as client:
        yield client, settings


def test_one_redis_subscription_feeds_every_socket(app_with_redis, redis_url):
    import redis

    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.events import Publisher, channel

    client, settings = app_with_redis
    with session_scope(settings.database_url) as session:
        evaluation = Evaluation(name="watched", status="running", params={}, queue="local", revision=1)
        session.add(evaluation)
        session.flush()
        evaluation_id = evaluation.id
    redis_client = redis.Redis.from_url(redis_url)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws"))
                   for _ in range(10)]
        for socket in sockets:
            assert socket.receive_json()["evaluation"]["revision"] == 1
        log_line = {"evaluation_id": evaluation_id, "type": "log", "lines": ["[aieval] hello"]}
        deadline = time.monotonic() + 10
        while (receivers := redis_client.publish(channel(settings, evaluation_id), json.dumps(log_line))) == 0:
            assert time.monotonic() < deadline, "the API process never subscribed"
            time.sleep(0.2)
        time.sleep(1.0)  # every socket has long been open: a subscription of each would show now
        receivers = redis_client.publish(channel(settings, evaluation_id), json.dumps(log_line))
        assert receivers == 1, f"{receivers} Redis subscriptions for 10 sockets of one process"
        for socket in sockets:
            assert socket.receive_json() == {"type": "log", "lines": ["[aieval] hello"]}

        # A change published as the worker publishes it reaches every socket.
        with session_scope(settings.database_url) as session:
            session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                            .values(revision=2, progress={"stage": "infer", "samples_done": 5}))
        Publisher(settings).publish(evaluation_id, {"type": "progress", "status": "running"})
        for socket in sockets:
            message = socket.receive_json()
            while message["type"] == "log":  # the first publications, while waiting for the subscription
                message = socket.receive_json()
            assert message["evaluation"]["progress"]["samples_done"] == 5
    redis_client.close()
