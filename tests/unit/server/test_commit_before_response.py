"""A write is committed before its response leaves the server.

FastAPI runs the exit code of a `yield` dependency after the response by default; a client that saves and then
immediately reloads (the models page does exactly that) could read the old row. Over a real socket, with every
commit slowed down, a read right after a write must see it."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session
from threaded_server import uvicorn_in_thread


@pytest.fixture
def live_url(settings):
    from aieval_server.main import create_app

    with uvicorn_in_thread(create_app(settings)) as server:
        yield f"http://127.0.0.1:{server.config.port}/api/v1"


@pytest.fixture
def slow_commits():
    def linger(session):
        time.sleep(0.5)

    event.listen(Session, "before_commit", linger)
    yield
    event.remove(Session, "before_commit", linger)


def test_a_saved_model_is_in_the_very_next_list(slow_commits, live_url):  # the server stops before the listener goes
    with httpx.Client(base_url=live_url, timeout=30) as client:
        created = client.post("/models", json={"name": "first", "kind": "openai",
                                               "base_url": "http://127.0.0.1:18999/v1", "model": "m"})
        assert created.status_code == 201, created.text
        assert [m["name"] for m in client.get("/models").json()] == ["first"]

        renamed = client.patch(f"/models/{created.json()['id']}", json={"name": "renamed"})
        assert renamed.status_code == 200, renamed.text
        assert [m["name"] for m in client.get("/models").json()] == ["renamed"]
