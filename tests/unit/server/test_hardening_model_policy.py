"""Issue 8, findings 1, 2 and the key hint of 10: what a model registered through the API may make a worker do.

1. No model may make the worker read its own environment (`api_key_env`) unless an administrator allowlisted the
   name; a row stored before the rule existed cannot leak either (checked with a real loopback endpoint that
   records the Authorization headers it receives, and a real worker run).
2. Local checkpoints only under the administrator's model roots (symlinks resolved), checked when saved and again
   before each run; remote code off unless an administrator allows it; the connection test reveals nothing about
   folders outside the roots and never runs a checkpoint's code.
10. The key hint shows at most the last 4 characters.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_openai import FakeChatEndpoint
from fastapi.testclient import TestClient
from planted_checkpoint import plant_checkpoint

PROBE_VARIABLE = "AIEVAL_LEAK_PROBE"
PROBE_VALUE = "probe-value-from-the-worker-environment-7d41"
KEY_ENV_REFUSAL = "the server stores keys encrypted: give the key as api_key"


def _insert(server_settings, row_type, **values) -> int:
    """A row written straight into the database, as an older version (without today's checks) left it."""
    from aieval_server.db import session_scope

    with session_scope(server_settings.database_url) as session:
        row = row_type(**values)
        session.add(row)
        session.flush()
        return row.id


def _insert_model(server_settings, **values) -> int:
    from aieval_server.models import Model

    return _insert(server_settings, Model, **values)


def _queued_evaluation(settings, model_id: int, dataset_id: int, queue: str) -> int:
    """An evaluation queued before the upgrade: the worker must check its model again."""
    from aieval_server.models import Evaluation, EvaluationDataset, EvaluationModel

    return _insert(settings, Evaluation, name="queued before the upgrade", status="queued", queue=queue,
                   params={"limit": 2, "max_out_len": 8},
                   models=[EvaluationModel(model_id=model_id, position=0)],
                   datasets=[EvaluationDataset(dataset_id=dataset_id, position=0)])


def _run_on_the_worker(settings, evaluation_id: int) -> str:
    """What the Celery task does with a message: the real worker code and a real (cold) OpenCompass launcher."""
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    return run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher())


def _qa_dataset(client) -> int:
    body = b'{"question": "Say OK", "answer": "OK"}\n{"question": "Say yes", "answer": "yes"}\n'
    response = client.post("/api/v1/datasets", files={"file": ("qa.jsonl", body)})
    assert response.status_code in (200, 201), response.text
    return response.json()["dataset"]["id"]


def _client_with(settings, **changes) -> TestClient:
    from aieval_server.main import create_app

    return TestClient(create_app(settings.model_copy(update=changes)))


# ---- 1. environment exfiltration -----------------------------------------------------------------
def test_the_api_refuses_every_way_of_naming_a_worker_environment_variable(client):
    endpoint = {"name": "ep", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    dify = {"name": "app", "kind": "dify", "base_url": "http://127.0.0.1:9/v1"}
    attempts = [
        {**endpoint, "options": {"api_key_env": "PATH"}},
        {**endpoint, "options": {"api_key_env": "AIEVAL_SECRET_KEY"}},
        {**endpoint, "options": {"api_key_env": "AIEVAL_DB_URL", "concurrency": 2}},
        {**endpoint, "options": {"api_key_env": ""}},
        {**endpoint, "options": {"api_key_env": ["PATH"]}},
        {**endpoint, "api_key": "sk-given-too-0123456789", "options": {"api_key_env": "HOME"}},
        {**dify, "options": {"api_key_env": "AIEVAL_S3_SECRET_ACCESS_KEY"}},
    ]
    for body in attempts:
        response = client.post("/api/v1/models", json=body)
        assert response.status_code == 422, (body, response.text)
        assert KEY_ENV_REFUSAL in response.text, (body, response.text)
    # Other spellings and places are not settings at all.
    for body in [{**endpoint, "options": {"API_KEY_ENV": "PATH"}}, {**endpoint, "options": {"Api_Key_Env": "PATH"}},
                 {**endpoint, "options": {"api_key_env ": "PATH"}}, {**endpoint, "options": {"key_env": "PATH"}},
                 {**endpoint, "api_key_env": "PATH"}, {**dify, "options": {"API_KEY_ENV": "PATH"}}]:
        response = client.post("/api/v1/models", json=body)
        assert response.status_code == 422, (body, response.text)
    assert client.get("/api/v1/models").json() == []

    # Editing an existing model: the same refusal, and the stored settings stay as they were.
    model = client.post("/api/v1/models", json=endpoint).json()
    for patch in [{"options": {"api_key_env": "PATH"}}, {"options": {"api_key_env": "PATH", "timeout": 5}},
                  {"model": "m2", "options": {"api_key_env": "AIEVAL_SECRET_KEY"}},
                  {"options": {"API_KEY_ENV": "PATH"}}, {"api_key_env": "PATH"}]:
        response = client.patch(f"/api/v1/models/{model['id']}", json=patch)
        assert response.status_code == 422, (patch, response.text)
    assert client.get(f"/api/v1/models/{model['id']}").json()["settings"] == model["settings"]


def test_only_names_an_administrator_allowlisted_are_accepted(settings):
    with _client_with(settings, model_key_env_allowlist=["TEAM_OPENAI_KEY"]) as client:
        base = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
        allowed = client.post("/api/v1/models", json={**base, "name": "a", "options": {"api_key_env": "TEAM_OPENAI_KEY"}})
        assert allowed.status_code == 201, allowed.text
        assert allowed.json()["settings"]["api_key_env"] == "TEAM_OPENAI_KEY"
        for name in ("team_openai_key", "PATH", "TEAM_OPENAI_KEY2"):
            refused = client.post("/api/v1/models", json={**base, "name": name, "options": {"api_key_env": name}})
            assert refused.status_code == 422 and KEY_ENV_REFUSAL in refused.text, refused.text


def test_a_stored_model_naming_a_worker_variable_leaks_nothing(client, settings, monkeypatch):
    """A row saved before the rule: neither the connection test, nor a submit, nor a worker run that was already
    queued sends the variable's value to the model's URL."""
    monkeypatch.setenv(PROBE_VARIABLE, PROBE_VALUE)
    endpoint = FakeChatEndpoint("OK")
    try:
        model_id = _insert_model(settings, name="old row", kind="openai",
                                 settings={"base_url": endpoint.url + "/", "model": "m", "api_key_env": PROBE_VARIABLE})
        dataset_id = _qa_dataset(client)
        client.post(f"/api/v1/models/{model_id}/test")

        submitted = client.post("/api/v1/evaluations", json={"model_ids": [model_id], "dataset_ids": [dataset_id]})
        assert submitted.status_code == 422 and KEY_ENV_REFUSAL in submitted.text, submitted.text

        evaluation_id = _queued_evaluation(settings, model_id, dataset_id, "api")
        assert _run_on_the_worker(settings, evaluation_id) == "failed before start"
        detail = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
        assert detail["status"] == "failed" and KEY_ENV_REFUSAL in detail["error"], detail
    finally:
        endpoint.close()
    assert not any(PROBE_VALUE in header for header in endpoint.authorizations), endpoint.authorizations
    job_files = [p for p in settings.jobs_dir.rglob("*") if p.is_file()] if settings.jobs_dir.exists() else []
    assert not any(PROBE_VALUE in p.read_text(errors="replace") for p in job_files)


# ---- 2. local checkpoints and remote code ---------------------------------------------------------
@pytest.fixture
def planted(settings, tmp_path):
    """Planted checkpoints inside and outside the model roots, and a link inside the roots pointing outside."""
    root = settings.data_dir / "models"
    inside = plant_checkpoint(root / "planted_inside", tmp_path / "inside.marker")
    outside = plant_checkpoint(tmp_path / "elsewhere" / "planted_outside", tmp_path / "outside.marker")
    link = root / "link_to_outside"
    link.symlink_to(outside, target_is_directory=True)
    markers = [tmp_path / "inside.marker", tmp_path / "outside.marker"]
    yield {"root": root, "inside": inside, "outside": outside, "link": link, "tmp": tmp_path}
    assert not any(marker.exists() for marker in markers), "code from a planted checkpoint ran"


def test_checkpoints_outside_the_model_roots_are_refused_with_one_message(client, settings, planted):
    root, outside, tmp = planted["root"], planted["outside"], planted["tmp"]
    hf = {"name": "x", "kind": "huggingface"}
    candidates = {
        "outside, exists": {**hf, "path": str(outside)},
        "outside, missing": {**hf, "path": str(tmp / "no" / "such" / "folder")},
        "outside, a file": {**hf, "path": "/etc/passwd"},
        "climbs out": {**hf, "path": f"{root}/../../elsewhere/planted_outside"},
        "link inside, target outside": {**hf, "path": str(planted["link"])},
        "relative": {**hf, "path": "planted_inside"},
        "tokenizer outside": {**hf, "path": str(planted["inside"]), "options": {"tokenizer_path": str(outside)}},
        "endpoint tokenizer outside": {"name": "x", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                       "model": "m", "options": {"tokenizer_path": str(outside)}},
    }
    answers = {}
    for label, body in candidates.items():
        response = client.post("/api/v1/models", json=body)
        assert response.status_code == 422, (label, response.text)
        answers[label] = response.json()
        assert str(settings.checkpoint_roots[0]) in response.text and "AIEVAL_MODEL_ROOTS" in response.text
    # Whether the folder exists, is a file or is a link makes no difference to the answer.
    path_answers = {json.dumps(answers[k]) for k in ("outside, exists", "outside, missing", "outside, a file",
                                                     "climbs out", "link inside, target outside", "relative")}
    assert len(path_answers) == 1, path_answers
    assert client.get("/api/v1/models").json() == []

    model = client.post("/api/v1/models", json={**hf, "path": str(planted["inside"])})
    assert model.status_code == 201, model.text
    for patch in [{"path": str(outside)}, {"options": {"tokenizer_path": str(planted["link"])}}]:
        response = client.patch(f"/api/v1/models/{model.json()['id']}", json=patch)
        assert response.status_code == 422 and "AIEVAL_MODEL_ROOTS" in response.text, response.text
    assert client.get(f"/api/v1/models/{model.json()['id']}").json()["settings"]["path"] == str(planted["inside"])


def test_remote_code_needs_the_administrators_switch(settings, planted):
    body = {"name": "m", "kind": "huggingface", "path": str(planted["inside"]), "options": {"trust_remote_code": True}}
    with _client_with(settings) as client:
        refused = client.post("/api/v1/models", json=body)
        assert refused.status_code == 422 and "AIEVAL_ALLOW_REMOTE_CODE_MODELS" in refused.text, refused.text
    with _client_with(settings, allow_remote_code_models=True) as client:
        allowed = client.post("/api/v1/models", json=body)
        assert allowed.status_code == 201 and allowed.json()["settings"]["trust_remote_code"] is True, allowed.text


def test_the_connection_test_reveals_no_folder_outside_the_roots_and_runs_no_checkpoint_code(client, settings,
                                                                                              planted):
    inside = client.post("/api/v1/models", json={"name": "in", "kind": "huggingface", "path": str(planted["inside"])})
    result = client.post(f"/api/v1/models/{inside.json()['id']}/test").json()
    assert result["ok"] is False and "custom code" in result["error"], result  # refused, not run (fixture checks)

    (planted["tmp"] / "empty folder").mkdir()
    errors = set()
    for i, path in enumerate([planted["outside"], planted["tmp"] / "missing", planted["tmp"] / "empty folder",
                              planted["link"], "/etc"]):
        model_id = _insert_model(settings, name=f"old {i}", kind="huggingface", settings={"path": str(path)})
        result = client.post(f"/api/v1/models/{model_id}/test").json()
        assert result["ok"] is False and "AIEVAL_MODEL_ROOTS" in result["error"], result
        errors.add(result["error"].replace(f"'old {i}'", "'…'"))
    assert len(errors) == 1, errors


def test_the_worker_checks_the_roots_and_remote_code_again_before_the_run(client, settings, planted, tiny_model):
    """A link that pointed inside the roots when the model was saved and points outside by the time it runs; a row
    saved with trust_remote_code before the switch existed."""
    current = planted["root"] / "current"
    current.symlink_to(tiny_model, target_is_directory=True)  # tiny_model lies under a model root of the settings
    model = client.post("/api/v1/models", json={"name": "moving", "kind": "huggingface", "path": str(current)})
    assert model.status_code == 201, model.text
    dataset_id = _qa_dataset(client)
    current.unlink()
    current.symlink_to(planted["outside"], target_is_directory=True)

    submitted = client.post("/api/v1/evaluations", json={"model_ids": [model.json()["id"]], "dataset_ids": [dataset_id]})
    assert submitted.status_code == 422 and "AIEVAL_MODEL_ROOTS" in submitted.text, submitted.text
    moved = _queued_evaluation(settings, model.json()["id"], dataset_id, "local")
    assert _run_on_the_worker(settings, moved) == "failed before start"
    assert "AIEVAL_MODEL_ROOTS" in client.get(f"/api/v1/evaluations/{moved}").json()["error"]

    trusting = _insert_model(settings, name="trusting", kind="huggingface",
                             settings={"path": str(planted["inside"]), "trust_remote_code": True})
    queued = _queued_evaluation(settings, trusting, dataset_id, "local")
    assert _run_on_the_worker(settings, queued) == "failed before start"
    assert "AIEVAL_ALLOW_REMOTE_CODE_MODELS" in client.get(f"/api/v1/evaluations/{queued}").json()["error"]


def test_the_demo_model_registers_under_the_default_roots_only(settings):
    from sqlalchemy import select

    from aieval_server.db import session_scope
    from aieval_server.models import Model
    from aieval_server.services.bootstrap import prepare_database, register_demo

    default = settings.model_copy(update={"model_roots": []})
    assert default.checkpoint_roots == [settings.data_dir / "models"]
    elsewhere = settings.model_copy(update={"model_roots": [settings.data_dir / "other"]})
    prepare_database(default)
    register_demo(elsewhere)
    with session_scope(settings.database_url) as session:
        assert session.scalars(select(Model).where(Model.is_demo.is_(True))).all() == []
    register_demo(default)
    with session_scope(settings.database_url) as session:
        (demo,) = session.scalars(select(Model).where(Model.is_demo.is_(True))).all()
        assert demo.settings["path"] == str(settings.data_dir / "models" / "SmolLM2-135M-Instruct")


def test_model_roots_come_from_the_environment_resolved(monkeypatch, tmp_path):
    from aieval_server.config import Settings

    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    monkeypatch.setenv("AIEVAL_MODEL_ROOTS", json.dumps([str(tmp_path / "alias"), "/srv/models"]))
    monkeypatch.setenv("AIEVAL_MODEL_KEY_ENV_ALLOWLIST", '["TEAM_KEY"]')
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.checkpoint_roots == [tmp_path / "real", Path(os.path.realpath("/srv/models"))]
    assert settings.model_key_env_allowlist == ["TEAM_KEY"] and settings.allow_remote_code_models is False


# ---- 10. the key hint -----------------------------------------------------------------------------
def test_the_key_hint_shows_at_most_the_last_four_characters(client, settings):
    from aieval_server import keyring

    key = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789wxyz"
    assert keyring.hint(key) == "…wxyz"
    assert keyring.hint("app-0123456789abcdef") == "…cdef"
    for short in ("", "k", "sk-1234", "sk-0123456789ab"):  # too short to show any part of it
        assert keyring.hint(short) == "****"

    created = client.post("/api/v1/models", json={"name": "k", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                   "model": "m", "api_key": key}).json()
    assert created["api_key_hint"] == "…wxyz"
    # A hint stored by an older version (first 3 characters too) is shown without them.
    old = _insert_model(settings, name="old hint", kind="openai", api_key_hint="sk-…6789",
                        settings={"base_url": "http://127.0.0.1:9/v1/", "model": "m"})
    assert client.get(f"/api/v1/models/{old}").json()["api_key_hint"] == "…6789"
    assert all(not (m["api_key_hint"] or "…").split("…")[0] for m in client.get("/api/v1/models").json())
