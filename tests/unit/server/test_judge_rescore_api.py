"""LLM-as-judge and re-scoring through the API (issue 10, "Scoring free-form answers").

Real runs: the worker code, real OpenCompass, an OpenAI-compatible model on loopback that always answers ANSWER, and a
deterministic judge on loopback whose verdict is written in each question ("judge-says-right" / "judge-says-wrong"),
so every verdict is known in advance whatever the judge's prompt looks like. Both servers count the requests they
get: re-scoring must not ask the evaluated model anything, and re-scoring with the same judge must not ask the judge
anything new (its verdicts are cached)."""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading

import pytest
from fake_openai import FakeChatEndpoint, chat_completion
from pydantic import SecretStr

from aieval_engine.local_server import free_port

ANSWER = "red green blue"
RIGHT, WRONG = "judge-says-right", "judge-says-wrong"
# question -> reference. "exact": only the 4th (the whole answer); "contains": 1st, 2nd and 4th; the judge: what each
# question says, whatever the answer.
ROWS = [(f"Name a colour ({WRONG} 1)", "red"), (f"Name another colour ({RIGHT} 2)", "green"),
        (f"Name a fruit ({RIGHT} 3)", "apple"), (f"Say the three colours ({WRONG} 4)", ANSWER)]
JUDGE_KEY = "sk-judge-secret-4711"
ADMIN, PASSWORD = "root", "correct horse battery"


class DeterministicJudge:
    """A real HTTP server speaking the chat-completions shape, answering as the judge prompt asks: a rationale
    naming the sample, then "Verdict: CORRECT" when the prompt it is sent contains RIGHT, else "Verdict: INCORRECT"."""

    def __init__(self):
        judge = self
        self.prompts: list[str] = []
        self.authorizations: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                text = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
                judge.prompts.append(text)
                judge.authorizations.append(self.headers.get("Authorization", ""))
                number = next((str(i + 1) for i, (question, _) in enumerate(ROWS) if question in text), "?")
                verdict = "CORRECT" if RIGHT in text else "INCORRECT"
                reply = f"Sample {number} is graded by its question's own instruction.\nVerdict: {verdict}"
                body = chat_completion(request.get("model"), reply)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(18000, 18999)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def servers():
    model, judge = FakeChatEndpoint(ANSWER), DeterministicJudge()
    yield model, judge
    model.close()
    judge.close()


def _upload(client, name: str, scorer: str, headers=None, rows=ROWS) -> int:
    body = "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows)
    response = client.post("/api/v1/datasets", files={"file": (f"{name}.jsonl", body.encode())},
                           data={"name": name, "scorer": scorer}, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()["dataset"]["id"]


def _model(client, name: str, url: str, headers=None, **extra) -> int:
    response = client.post("/api/v1/models", headers=headers or {},
                           json={"name": name, "kind": "openai", "base_url": url, "model": "m", **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _run(settings, evaluation_id: int) -> str:
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    return run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher())


def _samples(client, evaluation_id: int) -> list[dict]:
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/samples", params={"page_size": 500})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _accuracy(client, evaluation_id: int) -> dict:
    detail = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    assert detail["status"] == "succeeded", detail
    (score,) = [s for s in detail["scores"] if s["metric"] == "accuracy"]
    return score


def test_a_judge_scores_a_question_answer_file_with_verdicts_and_rationales(client, settings, servers):
    model_server, judge = servers
    dataset = _upload(client, "colours-judged", "judge")
    model = _model(client, "colour-model", model_server.url)
    judge_model = _model(client, "strict-judge", judge.url, api_key=JUDGE_KEY)

    created = client.post("/api/v1/evaluations", json={"model_ids": [model], "dataset_ids": [dataset],
                                                       "judge_model_id": judge_model, "judge_prompt_language": "en"})
    assert created.status_code == 201, created.text
    assert created.json()["judge"] == {"model_id": judge_model, "model": "strict-judge", "prompt_language": "en"}
    evaluation_id = created.json()["id"]
    assert _run(settings, evaluation_id) == "succeeded"

    score = _accuracy(client, evaluation_id)
    assert score["value"] == pytest.approx(50.0) and (score["n"], score["correct"]) == (4, 2)
    assert score["scorer"] == "judge:strict-judge"
    assert len(judge.prompts) == 4, "one judge call per sample"
    assert set(judge.authorizations) == {f"Bearer {JUDGE_KEY}"}, "the judge's key reaches the judge"
    job_files = [p for p in (settings.jobs_dir / str(evaluation_id)).rglob("*") if p.is_file()]
    assert job_files and not any(JUDGE_KEY.encode() in p.read_bytes() for p in job_files), "no key in a file"

    samples = _samples(client, evaluation_id)
    assert [s["correct"] for s in samples] == [False, True, True, False]
    assert {s["scorer"] for s in samples} == {"judge:strict-judge"}
    assert [s["judge_verdict"] for s in samples] == ["incorrect", "correct", "correct", "incorrect"]
    assert [s["judge_rationale"] for s in samples] == [
        f"Sample {number} is graded by its question's own instruction." for number in (1, 2, 3, 4)]

    csv_export = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "csv"})
    assert csv_export.status_code == 200, csv_export.text
    rows = list(csv.DictReader(io.StringIO(csv_export.content.decode("utf-8-sig"))))
    assert [row["judge_rationale"] for row in rows] == [s["judge_rationale"] for s in samples]
    assert [row["correct"] for row in rows] == ["false", "true", "true", "false"]
    jsonl = client.get(f"/api/v1/evaluations/{evaluation_id}/samples/export", params={"format": "jsonl"})
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [(line["judge_verdict"], line["judge_rationale"]) for line in lines] == [
        (s["judge_verdict"], s["judge_rationale"]) for s in samples]

    # The judge is part of what the score rests on: its fingerprint differs from the same run scored otherwise.
    from aieval_server.db import session_scope
    from aieval_server.models import Score

    with session_scope(settings.database_url) as session:
        (stored,) = session.query(Score).filter_by(evaluation_id=evaluation_id, metric="accuracy").all()
        assert stored.fingerprint_parts["scorer"] == "judge:strict-judge"
        assert stored.fingerprint_parts["judge"], "the judge model and prompt are in the fingerprint"


def test_rescoring_a_finished_evaluation_runs_no_inference(client, settings, servers):
    model_server, judge = servers
    dataset = _upload(client, "colours-exact", "exact")
    model = _model(client, "answering-model", model_server.url)
    judge_model = _model(client, "lenient-judge", judge.url, api_key=JUDGE_KEY)
    created = client.post("/api/v1/evaluations", json={"name": "colours", "model_ids": [model],
                                                       "dataset_ids": [dataset], "params": {"limit": 4}})
    assert created.status_code == 201, created.text
    source = created.json()["id"]
    model_calls = len(model_server.authorizations)
    assert _run(settings, source) == "succeeded"
    inferred = len(model_server.authorizations) - model_calls
    assert inferred == len(ROWS)
    assert _accuracy(client, source)["value"] == pytest.approx(25.0), "exact: only the whole answer"
    assert client.get(f"/api/v1/evaluations/{source}").json()["can_rescore"] is True

    def rescore(**body) -> dict:
        response = client.post(f"/api/v1/evaluations/{source}/rescore", json=body)
        assert response.status_code == 201, response.text
        new = response.json()
        assert new["id"] != source and new["rescored_from_id"] == source
        assert new["params"] == created.json()["params"] and new["params"]["limit"] == 4
        assert _run(settings, new["id"]) == "succeeded"
        return client.get(f"/api/v1/evaluations/{new['id']}").json()

    contains = rescore(scorer="contains")
    assert contains["name"] == "colours (re-scored)" and contains["scorer"] == "contains" and contains["judge"] is None
    assert _accuracy(client, contains["id"])["value"] == pytest.approx(75.0)
    assert _accuracy(client, contains["id"])["scorer"] == "contains"
    assert [s["correct"] for s in _samples(client, contains["id"])] == [True, True, False, True]

    judge_calls = len(judge.prompts)
    judged = rescore(scorer="judge", judge_model_id=judge_model)
    assert judged["judge"]["model"] == "lenient-judge"
    assert _accuracy(client, judged["id"])["value"] == pytest.approx(50.0)
    assert _accuracy(client, judged["id"])["scorer"] == "judge:lenient-judge"
    assert [s["correct"] for s in _samples(client, judged["id"])] == [False, True, True, False]
    assert len(judge.prompts) - judge_calls == len(ROWS)

    # The same judge on the same answers again: every verdict comes from the cache.
    again = client.post(f"/api/v1/evaluations/{judged['id']}/rescore", json={"judge_model_id": judge_model})
    assert again.status_code == 201, again.text
    assert _run(settings, again.json()["id"]) == "succeeded"
    assert _accuracy(client, again.json()["id"])["value"] == pytest.approx(50.0)
    assert len(judge.prompts) - judge_calls == len(ROWS), "cached verdicts: the judge was not asked again"
    # Two runs judged the same way are comparable: nothing of a run's own job dir (its copy of the data the judge
    # evaluator re-reads, the judge's cache file) enters the fingerprint.
    assert _accuracy(client, again.json()["id"])["fingerprint"] == _accuracy(client, judged["id"])["fingerprint"]
    assert _accuracy(client, judged["id"])["fingerprint"] != _accuracy(client, contains["id"])["fingerprint"]

    assert len(model_server.authorizations) - model_calls == inferred, "re-scoring asked the model nothing"
    audit = client.get("/api/v1/audit", params={"target_type": "evaluation", "target_id": judged["id"]}).json()
    assert [(e["action"], e["detail"]["rescored_from"], e["detail"]["judge"]) for e in audit["items"]] == [
        ("submitted", source, "lenient-judge")]


def test_judge_and_rescore_refusals_are_readable(client, settings, servers):
    model_server, judge = servers
    judged_dataset = _upload(client, "judged-file", "judge")
    exact_dataset = _upload(client, "exact-file", "exact", rows=ROWS[:2])
    model = _model(client, "m1", model_server.url)
    judge_model = _model(client, "j1", judge.url)

    def refused(body: dict, status: int = 422) -> str:
        response = client.post("/api/v1/evaluations", json={"model_ids": [model], **body})
        assert response.status_code == status, response.text
        return response.json()["detail"]

    assert refused({"dataset_ids": [judged_dataset]}).startswith("choose a judge model")
    assert refused({"dataset_ids": [judged_dataset], "judge_model_id": 99999}) == "unknown model id(s): 99999"
    assert refused({"dataset_ids": [exact_dataset], "judge_model_id": judge_model}).startswith(
        "no dataset of this evaluation is scored by a judge")
    assert refused({"dataset_ids": [exact_dataset], "scorer": "judge"}).startswith("choose a judge model")
    assert "judge_prompt_language" in str(refused({"dataset_ids": [judged_dataset], "judge_model_id": judge_model,
                                                   "judge_prompt_language": "fr"}))
    # A built-in config OpenCompass scores with a judge (its data needs no local file, so it can be registered here).
    builtin = refused({"builtin_datasets": ["omni_math_llmverify_gen_ccf9c0"]})
    assert builtin.startswith("choose a judge model"), builtin
    settings_answer = client.get("/api/v1/datasets/builtin/math_500_llmjudge_gen_6ff468/settings")
    assert settings_answer.status_code == 200 and settings_answer.json()["needs_judge"] is True
    assert client.get("/api/v1/datasets/builtin/gsm8k_gen/settings").json()["needs_judge"] is False

    mcq = "\n".join(json.dumps({"question": "q", "A": "a", "B": "b", "answer": "A"}) for _ in range(2)).encode()
    upload = client.post("/api/v1/datasets", files={"file": ("mcq.jsonl", mcq)}, data={"scorer": "judge"})
    assert upload.status_code == 422 and "question-answer" in upload.text, upload.text

    queued = client.post("/api/v1/evaluations", json={"model_ids": [model], "dataset_ids": [exact_dataset]})
    assert queued.status_code == 201, queued.text
    not_finished = client.post(f"/api/v1/evaluations/{queued.json()['id']}/rescore", json={"scorer": "contains"})
    assert not_finished.status_code == 409 and "succeeded" in not_finished.json()["detail"]
    assert client.post("/api/v1/evaluations/99999/rescore", json={"scorer": "contains"}).status_code == 404

    # A model judging an evaluation cannot be deleted from under it.
    judged = client.post("/api/v1/evaluations", json={"model_ids": [model], "dataset_ids": [judged_dataset],
                                                      "judge_model_id": judge_model})
    assert judged.status_code == 201, judged.text
    deleted = client.delete(f"/api/v1/models/{judge_model}")
    assert deleted.status_code == 409 and "judge" in deleted.json()["detail"]


def test_another_member_can_neither_rescore_nor_judge_with_private_work(settings, servers):
    from fastapi.testclient import TestClient

    from aieval_server.main import create_app

    model_server, judge = servers
    auth = settings.model_copy(update={"auth_enabled": True, "initial_admin_username": ADMIN,
                                       "initial_admin_password": SecretStr(PASSWORD)})
    with TestClient(create_app(auth)) as client:
        def sign_in(username: str) -> dict[str, str]:
            response = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
            assert response.status_code == 200, response.text
            client.cookies.clear()
            return {"Authorization": f"Bearer {response.cookies['aieval_session']}"}

        admin = sign_in(ADMIN)
        for name in ("alice", "bob"):
            made = client.post("/api/v1/users", headers=admin, json={"username": name, "password": PASSWORD,
                                                                      "role": "member"})
            assert made.status_code == 201, made.text
        alice, bob = sign_in("alice"), sign_in("bob")
        private_judge = _model(client, "alice-judge", judge.url, alice, visibility="private")
        alice_model = _model(client, "alice-model", model_server.url, alice, visibility="private")
        alice_data = _upload(client, "alice-file", "exact", alice, rows=ROWS[:1])
        private = client.post("/api/v1/evaluations", headers=alice, json={
            "model_ids": [alice_model], "dataset_ids": [alice_data], "visibility": "private"})
        assert private.status_code == 201, private.text
        assert _run(auth, private.json()["id"]) == "succeeded"

        hidden = client.post(f"/api/v1/evaluations/{private.json()['id']}/rescore", headers=bob,
                             json={"scorer": "contains"})
        assert hidden.status_code == 404, hidden.text
        assert hidden.json()["detail"] == f"evaluation {private.json()['id']} does not exist"

        bob_model = _model(client, "bob-model", model_server.url, bob)
        bob_data = _upload(client, "bob-file", "judge", bob, rows=ROWS[1:2])
        judged = client.post("/api/v1/evaluations", headers=bob, json={
            "model_ids": [bob_model], "dataset_ids": [bob_data], "judge_model_id": private_judge})
        assert judged.status_code == 422, judged.text
        assert judged.json()["detail"] == f"unknown model id(s): {private_judge}", "as if it did not exist"

        own = client.post(f"/api/v1/evaluations/{private.json()['id']}/rescore", headers=alice,
                          json={"scorer": "contains"})
        assert own.status_code == 201 and own.json()["visibility"] == "private", own.text
