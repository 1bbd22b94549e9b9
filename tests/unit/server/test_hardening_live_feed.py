"""The live feed (WebSockets) reads the database once per watched thing per process, however many sockets
watch it (issue 8, finding 14), and still says what it always said: the current state on connect, each new
revision, the end of an evaluation (1000) and an unknown one (4404)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from sqlalchemy import event, update
from starlette.websockets import WebSocketDisconnect


@pytest.fixture
def add_evaluation(client, settings):
    """Rows written straight into the database, as a worker would write them."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    def add(name: str, status: str = "running") -> int:
        with session_scope(settings.database_url) as session:
            evaluation = Evaluation(name=name, status=status, params={}, queue="local", revision=1,
                                    progress={"stage": "infer", "samples_done": 0})
            session.add(evaluation)
            session.flush()
            return evaluation.id

    return add


@pytest.fixture
def change(settings):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    def write(evaluation_id: int, **values) -> None:
        with session_scope(settings.database_url) as session:
            session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                            .values(revision=Evaluation.revision + 1, **values))

    return write


@pytest.fixture
def statements(client, settings):
    """Counts the SQL statements the app sends to its database (one engine per URL and process)."""
    from aieval_server.db import get_engine

    engine = get_engine(settings.database_url)
    count = [0]
    lock = threading.Lock()

    def counted(*_args):
        with lock:
            count[0] += 1

    event.listen(engine, "before_cursor_execute", counted)

    def during(seconds: float) -> int:
        before = count[0]
        time.sleep(seconds)
        return count[0] - before

    yield during
    event.remove(engine, "before_cursor_execute", counted)


def open_sockets(client, stack: contextlib.ExitStack, evaluation_id: int, pairs: int) -> None:
    """`pairs` list sockets and `pairs` evaluation sockets, each past its first message."""
    for _ in range(pairs):
        on_list = stack.enter_context(client.websocket_connect("/api/v1/evaluations/ws"))
        assert on_list.receive_json()["type"] == "evaluations"
        on_one = stack.enter_context(client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws"))
        assert on_one.receive_json()["type"] == "update"


def test_database_reads_do_not_grow_with_the_number_of_watchers(client, add_evaluation, statements):
    evaluation_id = add_evaluation("watched")
    with contextlib.ExitStack() as stack:
        open_sockets(client, stack, evaluation_id, 1)
        time.sleep(0.5)
        with_two = statements(2.0)
        open_sockets(client, stack, evaluation_id, 9)
        time.sleep(0.5)
        with_twenty = statements(2.0)
    assert with_two > 0, "the watched evaluation and the list are read while someone watches them"
    # One reader per watched thing: 20 sockets on the same two things read what 2 do (each socket polling on
    # its own made this ten times as many).
    assert with_twenty <= 2 * with_two + 10, f"2 sockets: {with_two} statements in 2 s, 20 sockets: {with_twenty}"
    time.sleep(0.5)
    assert statements(1.0) == 0, "nobody watches any more: nothing is read"


def test_list_socket_sends_everything_then_only_what_changed(client, add_evaluation, change):
    first, second = add_evaluation("first"), add_evaluation("second", status="succeeded")
    with client.websocket_connect("/api/v1/evaluations/ws") as socket:
        message = socket.receive_json()
        assert message["type"] == "evaluations"
        assert {item["id"] for item in message["items"]} == {first, second}
        change(first, fraction=0.5)
        message = socket.receive_json()
        assert [(item["id"], item["revision"], item["fraction"]) for item in message["items"]] == [(first, 2, 0.5)]
        # A second socket joining now gets the whole current list, with the change.
        with client.websocket_connect("/api/v1/evaluations/ws") as late:
            items = {item["id"]: item["revision"] for item in late.receive_json()["items"]}
            assert items == {first: 2, second: 1}


def test_evaluation_socket_follows_the_run_and_closes_when_it_is_final(client, add_evaluation, change):
    evaluation_id = add_evaluation("followed")
    with client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws") as socket, \
            client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws") as other:
        for watcher in (socket, other):
            message = watcher.receive_json()
            assert message["type"] == "update" and message["evaluation"]["revision"] == 1
        change(evaluation_id, progress={"stage": "infer", "samples_done": 3})
        for watcher in (socket, other):
            evaluation = watcher.receive_json()["evaluation"]
            assert evaluation["revision"] == 2 and evaluation["progress"]["samples_done"] == 3
        change(evaluation_id, status="succeeded")
        for watcher in (socket, other):
            assert watcher.receive_json()["evaluation"]["status"] == "succeeded"
            with pytest.raises(WebSocketDisconnect) as closed:
                watcher.receive_json()
            assert closed.value.code == 1000
    # Watching a finished evaluation: its state, then the close.
    with client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws") as socket:
        assert socket.receive_json()["evaluation"]["status"] == "succeeded"
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 1000


def test_unknown_evaluation_is_an_error_message_and_close_4404(client):
    with client.websocket_connect("/api/v1/evaluations/424242/ws") as socket:
        message = socket.receive_json()
        assert message == {"type": "error", "detail": "evaluation 424242 does not exist"}
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 4404
