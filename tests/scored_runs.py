"""Scored evaluations for the server's tests of what a score carries (provenance, fingerprint, speed): models and
datasets registered through the API, an evaluation submitted through it and run by a real worker (real
OpenCompass, `services.runs.run_evaluation`), the colour datasets a fixed answer is scored on, and a database left
at an older migration with scores in it, for the migrations that add score columns."""

from __future__ import annotations

import json

from sqlalchemy import Engine, create_engine, text

# An endpoint that always answers ANSWER: "contains" finds 5 of the 8 COLOURS in it (62.5 %), 3 of the first 6
# (50 %); "exact" matches 1 of the 4 PHRASES (25 %).
ANSWER = "red green blue yellow purple"
COLOURS = ["red", "black", "green", "white", "blue", "orange", "yellow", "purple"]
PHRASES = [ANSWER, "red green", "blue", "red green blue yellow"]


def colour_questions(answers: list[str]) -> bytes:
    """A JSON Lines dataset: "Name colour i" answered by answers[i]."""
    return "".join(json.dumps({"question": f"Name colour {i}", "answer": a}) + "\n"
                   for i, a in enumerate(answers)).encode()


def upload_dataset(client, filename: str, body: bytes, scorer: str) -> int:
    """Upload a dataset file scored by `scorer`; its id."""
    response = client.post("/api/v1/datasets", files={"file": (filename, body)}, data={"scorer": scorer})
    assert response.status_code in (200, 201), response.text
    return response.json()["dataset"]["id"]


def register_endpoint_model(client, name: str, url: str, **options) -> int:
    """Register an OpenAI-compatible model at `url` (model "m", `options` as given); its id."""
    body = {"name": name, "kind": "openai", "base_url": url, "model": "m"}
    if options:
        body["options"] = options
    created = client.post("/api/v1/models", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def run_on_worker(client, settings, model_ids: list[int], dataset_ids: list[int], params: dict | None = None) -> int:
    """Submit an evaluation through the API and run it as a worker does, to success; its id."""
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    body = {"model_ids": model_ids, "dataset_ids": dataset_ids}
    if params is not None:
        body["params"] = params
    created = client.post("/api/v1/evaluations", json=body)
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]
    assert run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher()) == "succeeded"
    return evaluation_id


def database_with_a_deleted_score(url: str, revision: str, extra_columns: dict[str, str] | None = None) -> Engine:
    """A database migrated to `revision` holding one finished evaluation and its score (id 1, value 50.0, plus
    `extra_columns` as SQL literals); score id 2 was stored and deleted, so a migration that copies the scores table
    must keep AUTOINCREMENT for id 2 not to be handed out again. The caller disposes of the engine."""
    from aieval_server.db.migrate import upgrade

    upgrade(url, revision)
    engine = create_engine(url)
    names = "".join(f", {name}" for name in extra_columns or {})
    values = "".join(f", {value}" for value in (extra_columns or {}).values())
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO evaluations (id, name, status, queue, params, created_at, attempts, "
                                "cancel_requested, artifacts_stored, revision, visibility, priority) VALUES "
                                "(1, 'old', 'succeeded', 'local', '{}', '2026-01-01', 1, 0, 0, 1, 'shared', 0)"))
        for score_id in (1, 2):
            connection.execute(text("INSERT INTO scores (id, evaluation_id, model_name, dataset_name, model_abbr, "
                                    f"dataset_abbr, metric, value{names}) VALUES ({score_id}, 1, 'm', 'd', 'm', 'd', "
                                    f"'acc', 50.0{values})"))
        connection.execute(text("DELETE FROM scores WHERE id = 2"))
    return engine
