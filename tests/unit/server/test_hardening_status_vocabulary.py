"""Issue 8, finding 16: one status vocabulary. The OpenAPI schema carries it as an enum (the web client is generated
from it), an unknown status filter is a 422, and what each status allows (terminal, cancel, retry) is decided by
the server and sent with every evaluation, so the UI keeps no copy of those rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

ALL_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timeout"]
# What each status allows, as the web UI's tests expect the server to send it (their fetch mock reads this file):
# checking the server against it here keeps the UI's mocks from drifting away from the server.
STATUS_FLAGS = json.loads(
    (Path(__file__).parents[3] / "apps/web/src/test/statusFlags.json").read_text(encoding="utf-8"))


def test_the_status_is_an_enum_in_the_openapi_schema(client):
    assert list(STATUS_FLAGS) == ALL_STATUSES
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["EvaluationStatus"]["type"] == "string"
    assert schemas["EvaluationStatus"]["enum"] == ALL_STATUSES
    summary = schemas["EvaluationSummary"]
    assert summary["properties"]["status"] == {"$ref": "#/components/schemas/EvaluationStatus"}
    for flag in ("terminal", "can_cancel", "can_retry"):
        assert summary["properties"][flag]["type"] == "boolean" and flag in summary["required"], flag
    assert "EvaluationDetail" in schemas and "can_retry" in schemas["EvaluationDetail"]["required"]
    status_filter = next(p for p in spec["paths"]["/api/v1/evaluations"]["get"]["parameters"] if p["name"] == "status")
    variants = status_filter["schema"]["anyOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/EvaluationStatus"}} in variants


def test_an_unknown_status_filter_is_a_422_naming_the_known_ones(client):
    response = client.get("/api/v1/evaluations", params={"status": ["failed", "exploded"]})
    assert response.status_code == 422
    body = response.json()
    assert body["problems"] and body["problems"][0].startswith("query.status.1:")
    assert all(f"'{status}'" in body["detail"] for status in ALL_STATUSES)
    for status in ALL_STATUSES:  # every known one is accepted, timeout included
        assert client.get("/api/v1/evaluations", params={"status": status}).status_code == 200, status


@pytest.fixture
def evaluation_in(client, settings):
    """An evaluation put straight into a given status in the database (no worker runs here)."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    model = client.post("/api/v1/models", json={"name": "loopback endpoint", "kind": "openai",
                                                "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    assert model.status_code == 201, model.text
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")})
    assert dataset.status_code == 201, dataset.text

    def make(status: str) -> int:
        created = client.post("/api/v1/evaluations", json={
            "name": f"now {status}", "model_ids": [model.json()["id"]], "dataset_ids": [dataset.json()["dataset"]["id"]]})
        assert created.status_code == 201, created.text
        evaluation_id = created.json()["id"]
        with session_scope(settings.database_url) as session:
            session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(status=status))
            session.commit()
        return evaluation_id

    return make


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_each_status_says_what_it_allows_and_the_actions_agree(client, evaluation_in, status):
    evaluation_id = evaluation_in(status)
    flags = STATUS_FLAGS[status]
    terminal, can_cancel, can_retry = flags["terminal"], flags["can_cancel"], flags["can_retry"]
    shown = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    listed = client.get("/api/v1/evaluations", params={"status": status}).json()["items"]
    assert [item["id"] for item in listed] == [evaluation_id]
    for body in (shown, listed[0]):
        assert body["status"] == status
        assert (body["terminal"], body["can_cancel"], body["can_retry"]) == (terminal, can_cancel, can_retry)
    # The flags are the server's own rules: the action they promise is accepted, the one they deny is a 409.
    retried = client.post(f"/api/v1/evaluations/{evaluation_id}/retry")
    assert retried.status_code == (200 if can_retry else 409), retried.text
    if can_retry:
        assert retried.json()["status"] == "queued" and retried.json()["can_cancel"] is True
    else:
        cancelled = client.post(f"/api/v1/evaluations/{evaluation_id}/cancel")
        assert cancelled.status_code == (200 if can_cancel else 409), cancelled.text


def test_a_timed_out_evaluation_is_final_for_the_live_feed(client, evaluation_in):
    """The evaluation WebSocket closes (1000) once the job is final: a timed-out one must not be followed forever."""
    evaluation_id = evaluation_in("timeout")
    with client.websocket_connect(f"/api/v1/evaluations/{evaluation_id}/ws") as socket:
        first = socket.receive_json()
        assert first["type"] == "update" and first["evaluation"]["status"] == "timeout"
        assert first["evaluation"]["terminal"] is True and first["evaluation"]["can_retry"] is True
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert closed.value.code == 1000
