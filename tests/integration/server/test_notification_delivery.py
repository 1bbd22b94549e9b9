"""Notifications on PostgreSQL, end to end from an evaluation's outcome to a receiver on loopback.

The API runs in-process (sign-in off) on a database of its own; the evaluation is submitted through the API and its
outcome written the way a worker writes it (recovery.claim, then RunRecorder.finish: the one place every final status
passes), without running OpenCompass, so each test takes seconds. Receivers are real HTTP servers on 127.0.0.1 that
answer what they are told: a receiver failing twice gets the notification on the third attempt, signed each time, and
the delivery log says so. Secrets never appear in an API answer, a log line or a delivery's error."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from server_it_helpers import mcq_rows
from waiting import wait_until
from webhook_receiver import WebhookReceiver

A = "/api/v1"
SECRET = "whsec-integration-secret-42"


@pytest.fixture
def settings(tmp_path, own_postgres_url, monkeypatch):
    monkeypatch.setenv("AIEVAL_DATA_DIR", str(tmp_path / "data"))
    from aieval_server.config import Settings

    return Settings(data_dir=tmp_path / "data", db_url=own_postgres_url, register_demo=False, prepare_demo_model=False,
                    web_dist=tmp_path / "no-web", public_url="https://eval.example.com/",
                    trusted_hosts=[*Settings.model_fields["trusted_hosts"].default, "testserver"],
                    # fast retries for the test: 0.2 s, then 0.8 s
                    notification_retry_wait_s=0.2, notification_retry_max_wait_s=2.0, notification_attempts=4)


@pytest.fixture
def client(settings):
    from aieval_server.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def submit(client) -> int:
    model = client.post(f"{A}/models", json={"name": "endpoint", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                            "model": "m"})
    assert model.status_code == 201, model.text
    dataset = client.post(f"{A}/datasets", data={"name": "even"}, files={"file": ("even.jsonl", io.BytesIO(mcq_rows(4)))})
    assert dataset.status_code == 201, dataset.text
    evaluation = client.post(f"{A}/evaluations", json={"name": "nightly", "model_ids": [model.json()["id"]],
                                                      "dataset_ids": [dataset.json()["dataset"]["id"]]})
    assert evaluation.status_code == 201, evaluation.text
    return evaluation.json()["id"]


def finish_as_a_worker(settings, evaluation_id: int, status: str, error: str | None = None) -> None:
    """What a worker does with the job: claim it, then write its outcome (services/run_recorder.py)."""
    from aieval_server.services.events import Publisher
    from aieval_server.services.recovery import claim, worker_token
    from aieval_server.services.run_recorder import RunRecorder

    token = worker_token()
    claimed, _ = claim(settings, evaluation_id, token)
    assert claimed
    scores = [dict(evaluation_id=evaluation_id, model_name="endpoint", dataset_name="even", model_abbr="endpoint",
                   dataset_abbr="even", metric="accuracy", value=75.0)] if status == "succeeded" else []
    RunRecorder(settings, evaluation_id, token, Publisher(settings)).finish(status=status, error=error, scores=scores,
                                                                          extra={})


def deliveries(client, **params) -> list[dict]:
    response = client.get(f"{A}/notification-deliveries", params=params)
    assert response.status_code == 200, response.text
    assert SECRET not in response.text
    return response.json()


def signature_of(received) -> str:
    signed = received.headers["x-aieval-timestamp"].encode() + b"." + received.body
    return "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()


def test_a_receiver_failing_twice_gets_the_signed_outcome_on_the_third_attempt(client, settings, logs):
    receiver = WebhookReceiver([(500, "busy"), (503, "still busy"), (200, "ok")])
    failures_only = WebhookReceiver([(200, "ok")])
    try:
        channel = client.post(f"{A}/notification-channels", json={
            "name": "ci", "kind": "webhook", "url": receiver.url(), "secret": SECRET,
            "events": ["evaluation_succeeded", "evaluation_failed"]})
        assert channel.status_code == 201 and SECRET not in channel.text
        other = client.post(f"{A}/notification-channels", json={
            "name": "alerts", "kind": "feishu", "url": failures_only.url(), "events": ["evaluation_failed"]})
        assert other.status_code == 201
        evaluation_id = submit(client)
        finish_as_a_worker(settings, evaluation_id, "succeeded")

        (delivery,) = wait_until(lambda: [d for d in deliveries(client) if d["status"] != "pending"], 20,
                                 what="the delivery to end")
        assert delivery["status"] == "delivered", delivery
        assert (delivery["attempts"], delivery["response_status"], delivery["last_error"]) == (3, 200, None)
        assert (delivery["event"], delivery["evaluation_id"], delivery["evaluation_name"]) == (
            "evaluation_succeeded", evaluation_id, "nightly")
        assert delivery["channel_id"] == channel.json()["id"]

        assert receiver.count() == 3
        for got in receiver.received:  # every attempt signed over its own timestamp, with the same delivery id
            assert got.headers["x-aieval-signature"] == signature_of(got)
            assert got.headers["x-aieval-delivery"] == str(delivery["id"])
            assert got.headers["x-aieval-event"] == "evaluation_succeeded"
        body = json.loads(receiver.received[-1].body)
        assert body["evaluation"]["id"] == evaluation_id and body["evaluation"]["status"] == "succeeded"
        assert body["evaluation"]["url"] == f"https://eval.example.com/evaluations/{evaluation_id}"
        assert body["evaluation"]["scores"] == [
            {"model": "endpoint", "dataset": "even", "metric": "accuracy", "value": 75.0}]
        assert failures_only.count() == 0  # subscribed to failures only
        assert SECRET not in logs.text
    finally:
        receiver.close()
        failures_only.close()


def test_a_failed_run_and_a_gate_verdict_reach_a_chat_robot_and_a_refusal_is_logged(client, settings, logs):
    robot = WebhookReceiver([(200, '{"code":0,"msg":"success"}')])
    refusing = WebhookReceiver([(404, "no such hook")])
    try:
        client.post(f"{A}/notification-channels", json={"name": "team", "kind": "feishu", "url": robot.url(),
                                                       "secret": SECRET})
        client.post(f"{A}/notification-channels", json={"name": "gone", "kind": "webhook", "url": refusing.url(),
                                                       "events": ["evaluation_failed"]})
        evaluation_id = submit(client)
        finish_as_a_worker(settings, evaluation_id, "failed", error="the endpoint answered HTTP 500")
        ended = wait_until(lambda: (lambda d: d if all(x["status"] != "pending" for x in d) and len(d) == 2 else None)(
            deliveries(client)), 20, what="both deliveries to end")
        by_channel = {d["channel_name"]: d for d in ended}
        assert by_channel["team"]["status"] == "delivered"
        assert (by_channel["gone"]["status"], by_channel["gone"]["attempts"]) == ("failed", 1)  # 404: not retried
        assert "HTTP 404: no such hook" in by_channel["gone"]["last_error"]
        message = json.loads(robot.received[0].body)
        assert message["msg_type"] == "post" and message["timestamp"] and message["sign"]
        texts = [e["text"] for line in message["content"]["post"]["zh_cn"]["content"] for e in line]
        assert "Error: the endpoint answered HTTP 500" in texts

        # The gate code's entry point: notify() in its own transaction, sent once that commits.
        from aieval_server.db import session_scope
        from aieval_server.models import Evaluation
        from aieval_server.services.notifications import notify

        with session_scope(settings.database_url) as session:
            ids = notify(session, session.get(Evaluation, evaluation_id), "gate_failed",
                         {"summary": "even dropped by 12.5 points against the baseline", "passed": False},
                         settings=settings)
        assert len(ids) == 1  # only "team" is subscribed to gate_failed
        wait_until(lambda: robot.count() == 2, 10, what="the gate notification")
        gate = json.loads(robot.received[1].body)
        texts = [e["text"] for line in gate["content"]["post"]["zh_cn"]["content"] for e in line]
        assert gate["content"]["post"]["zh_cn"]["title"] == f"Gate failed: nightly (#{evaluation_id})"
        assert "even dropped by 12.5 points against the baseline" in texts
        assert SECRET not in logs.text
    finally:
        robot.close()
        refusing.close()


def test_a_delivery_left_behind_by_a_dead_process_is_sent_once_by_the_sweeper(client, settings):
    from aieval_server.db import session_scope
    from aieval_server.models import NotificationDelivery
    from aieval_server.services import notifications
    from aieval_server.services.evaluations import utcnow

    receiver = WebhookReceiver([(200, "ok")])
    try:
        channel = client.post(f"{A}/notification-channels", json={"name": "ci", "kind": "webhook",
                                                                  "url": receiver.url(), "secret": SECRET}).json()
        payload = {"event": "evaluation_succeeded", "evaluation": None, "details": None}
        with session_scope(settings.database_url) as session:  # one attempt made, then its process died
            row = NotificationDelivery(channel_id=channel["id"], evaluation_id=None, event="evaluation_succeeded",
                                       payload=payload, status="pending", attempts=1,
                                       next_attempt_at=utcnow() - timedelta(minutes=5), last_error="HTTP 502")
            session.add(row)
            session.flush()
            delivery_id = row.id
        # Two sweepers find it at once: the claim lets one of them send.
        sweeps = [threading.Thread(target=notifications.resume_overdue, args=(settings,)) for _ in range(2)]
        receiver.answering.clear()  # the attempt stays in flight until released
        for sweep in sweeps:
            sweep.start()
        for sweep in sweeps:
            sweep.join()
        wait_until(lambda: receiver.count() == 1, 10, what="the resumed attempt to reach the receiver")
        # A sweeper that comes while it is in flight does not take the next attempt and send it again: neither one
        # that lists it now nor one that listed it just before the claim and goes on to deliver it.
        assert notifications.resume_overdue(settings) == []
        late = threading.Thread(target=notifications.deliver, args=(settings, delivery_id))
        late.start()
        time.sleep(0.5)
        assert receiver.count() == 1
        receiver.answering.set()
        late.join(timeout=30)
        wait_until(lambda: deliveries(client)[0]["status"] == "delivered", 10, what="the resumed delivery")
        (delivery,) = deliveries(client)
        assert (delivery["id"], delivery["attempts"]) == (delivery_id, 2)
        assert receiver.count() == 1
        assert notifications.resume_overdue(settings) == []  # nothing left
    finally:
        receiver.close()
