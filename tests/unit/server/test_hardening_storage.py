"""Storage hygiene (issue 8, finding 10): the data dir is the platform user's alone (0700, database and secret
key 0600, storage and jobs 0700) from the first start, and an id is never given out twice — on SQLite the newest
row's id came back after that row was deleted, so a deleted evaluation's URL showed the next one's data."""

from __future__ import annotations

import json
import os
import stat

import pytest
from fastapi.testclient import TestClient


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("existing", [False, True], ids=["fresh data dir", "data dir left world-readable"])
def test_data_dir_database_key_storage_and_jobs_are_private(settings, existing):
    from aieval_server.main import create_app

    if existing:
        settings.data_dir.mkdir(parents=True)
        os.chmod(settings.data_dir, 0o755)
    with TestClient(create_app(settings)) as client:
        created = client.post("/api/v1/models", json={  # stores an encrypted key: the secret key file exists
            "name": "endpoint", "kind": "openai", "base_url": "http://127.0.0.1:18999/v1", "model": "m",
            "api_key": "sk-test-0123456789abcdef"})
        assert created.status_code == 201, created.text
        data = settings.data_dir
        assert mode(data) == 0o700
        for name in ("aieval.db", "aieval.db-wal", "aieval.db-shm", "secret.key"):
            if name.endswith(("-wal", "-shm")) and not (data / name).exists():
                continue  # SQLite's own files, present while connections are open
            assert mode(data / name) == 0o600, f"{name} is {oct(mode(data / name))}"
        assert mode(settings.local_storage_dir) == 0o700
        assert mode(settings.jobs_dir) == 0o700


def qa_file(tag: str) -> tuple[str, bytes]:
    return f"{tag}.jsonl", (json.dumps({"question": f"{tag}?", "answer": tag}) + "\n").encode()


def test_ids_of_deleted_rows_are_never_given_out_again(client):
    def model(name: str) -> int:
        response = client.post("/api/v1/models", json={
            "name": name, "kind": "openai", "base_url": "http://127.0.0.1:18999/v1", "model": "m"})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def dataset(tag: str) -> int:
        response = client.post("/api/v1/datasets", files={"file": qa_file(tag)})
        assert response.status_code in (200, 201), response.text
        return response.json()["dataset"]["id"]

    def evaluation(model_id: int, dataset_id: int) -> int:
        response = client.post("/api/v1/evaluations", json={"name": "e", "model_ids": [model_id],
                                                             "dataset_ids": [dataset_id]})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    keep_model, keep_set = model("kept"), dataset("kept")
    for kind, make in (("models", lambda: model(f"m{os.urandom(4).hex()}")),
                       ("datasets", lambda: dataset(os.urandom(4).hex())),
                       ("evaluations", lambda: evaluation(keep_model, keep_set))):
        evaluation(keep_model, keep_set)  # an older row stays: only the newest is deleted
        newest = make()
        assert client.delete(f"/api/v1/{kind}/{newest}").status_code == 204
        assert client.get(f"/api/v1/{kind}/{newest}").status_code == 404
        again = make()
        assert again > newest, f"{kind}: id {newest} was given out again after its row was deleted"


def test_score_ids_are_never_reused(client, settings):
    from sqlalchemy import delete

    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Score

    def score(session, evaluation_id: int) -> int:
        row = Score(evaluation_id=evaluation_id, model_name="m", dataset_name="d", model_abbr="m", dataset_abbr="d",
                    metric="accuracy", value=1.0)
        session.add(row)
        session.flush()
        return row.id

    with session_scope(settings.database_url) as session:
        evaluation = Evaluation(name="scores", status="succeeded", params={}, queue="local")
        session.add(evaluation)
        session.flush()
        score(session, evaluation.id)
        newest = score(session, evaluation.id)
        session.execute(delete(Score).where(Score.id == newest))
        assert score(session, evaluation.id) > newest
