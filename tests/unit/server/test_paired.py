"""Paired comparison of two evaluations on the same samples (issue 10, "Comparing two models the right way").

Two real runs (the worker code, real OpenCompass, two OpenAI-compatible servers on loopback that always answer the
same text) make exactly known samples right for A and for B: the 2×2 table is known in advance, and the p-value is
checked against statsmodels on that table. A third run with another `limit` must not be paired; a member must not
reach another member's private evaluation through the comparison."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fake_openai import FakeChatEndpoint
from pydantic import SecretStr
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

# "contains" scores a sample right when its gold word is a whole word of the answer.
BOTH = ["red", "green", "blue"]
ONLY_A = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
ONLY_B = ["zulu"]
NEITHER = ["black", "white"]
ANSWER_A = " ".join(BOTH + ONLY_A)
ANSWER_B = " ".join(BOTH + ONLY_B)
# Interleaved, so that pairing by position (not by sorting) is what gives the table.
WORDS = ["alpha", "red", "zulu", "bravo", "black", "charlie", "green", "delta", "echo", "white", "foxtrot", "blue",
         "golf", "hotel", "india", "juliet"]
# "exact": A's whole answer, B's whole answer, and two phrases neither gives (one discordant sample each way).
PHRASES = [ANSWER_A, ANSWER_B, "nothing", "nobody"]


def _upload(client, name: str, answers: list[str], scorer: str, headers=None) -> int:
    body = "".join(json.dumps({"question": f"Say {i}", "answer": a}) + "\n" for i, a in enumerate(answers))
    response = client.post("/api/v1/datasets", files={"file": (f"{name}.jsonl", body.encode())},
                           data={"name": name, "scorer": scorer}, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()["dataset"]["id"]


def _model(client, name: str, url: str, headers=None) -> int:
    response = client.post("/api/v1/models", json={"name": name, "kind": "openai", "base_url": url, "model": "m"},
                           headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _evaluate(client, settings, model_id: int, dataset_ids: list[int], params: dict | None = None) -> int:
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    created = client.post("/api/v1/evaluations", json={"model_ids": [model_id], "dataset_ids": dataset_ids,
                                                       "params": params or {}})
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]
    assert run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher()) == "succeeded"
    return evaluation_id


@pytest.fixture(scope="module")
def endpoints():
    a, b = FakeChatEndpoint(ANSWER_A), FakeChatEndpoint(ANSWER_B)
    yield a, b
    a.close()
    b.close()


def test_two_real_runs_paired_sample_by_sample(client, settings, endpoints):
    from aieval_server.services.statistics import (
        PairedTable,
        minimum_detectable_accuracy_difference,
        paired_difference_interval,
    )

    letters = _upload(client, "letters", WORDS, "contains")
    phrases = _upload(client, "phrases", PHRASES, "exact")
    model_a, model_b = _model(client, "model-a", endpoints[0].url), _model(client, "model-b", endpoints[1].url)
    a = _evaluate(client, settings, model_a, [letters, phrases])
    b = _evaluate(client, settings, model_b, [letters, phrases])
    limited = _evaluate(client, settings, model_b, [letters], {"limit": 5})

    response = client.get("/api/v1/paired", params={"a": a, "b": b})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["a"]["model"] == "model-a" and result["b"]["model"] == "model-b"
    assert result["a"]["evaluation_id"] == a and result["b"]["evaluation_id"] == b and result["alpha"] == 0.05
    rows = {row["dataset"]: row for row in result["datasets"]}
    assert set(rows) == {"letters", "phrases"}

    letters_row, phrases_row = rows["letters"], rows["phrases"]
    assert letters_row["comparable"] and letters_row["reason"] is None
    assert letters_row["counts"] == {"both": 3, "only_a": 10, "only_b": 1, "neither": 2}
    assert letters_row["n"] == 16
    assert letters_row["accuracy_a"] == pytest.approx(100 * 13 / 16)
    assert letters_row["accuracy_b"] == pytest.approx(100 * 4 / 16)
    assert letters_row["difference"] == pytest.approx(100 * 9 / 16)
    assert phrases_row["counts"] == {"both": 0, "only_a": 1, "only_b": 1, "neither": 2}

    # The exact McNemar p against statsmodels on the same tables, and Holm's adjustment across the two datasets.
    expected_p = [mcnemar([[3, 10], [1, 2]], exact=True).pvalue, mcnemar([[0, 1], [1, 2]], exact=True).pvalue]
    assert [letters_row["test"], phrases_row["test"]] == ["mcnemar_exact", "mcnemar_exact"]
    # Right/wrong verdicts (no per-sample scores): the method the UI names.
    assert {(row["basis"], row["interval_method"]) for row in (letters_row, phrases_row)} == {("verdicts", "newcombe")}
    assert letters_row["p_value"] == pytest.approx(expected_p[0], rel=1e-9)
    assert letters_row["p_value"] == pytest.approx(2 * 12 / 2**11, rel=1e-9)  # 2·P(X ≤ 1), X ~ Bin(11, 1/2)
    assert phrases_row["p_value"] == pytest.approx(expected_p[1])
    holm = multipletests(expected_p, method="holm")[1]
    assert [letters_row["p_holm"], phrases_row["p_holm"]] == pytest.approx(list(holm))
    assert letters_row["significant"] is True and phrases_row["significant"] is False

    low, high = paired_difference_interval(PairedTable(both=3, only_a=10, only_b=1, neither=2))
    assert (letters_row["ci_low"], letters_row["ci_high"]) == pytest.approx((100 * low, 100 * high))
    assert letters_row["ci_low"] > 0, "a significant difference has an interval that excludes 0"
    assert phrases_row["ci_low"] < 0 < phrases_row["ci_high"]
    assert letters_row["detectable_difference"] == pytest.approx(
        100 * minimum_detectable_accuracy_difference(16, 11 / 16))
    assert letters_row["few_samples"] is True, "16 samples cannot see differences of a few points"

    # Side by side: right for A only are exactly the ONLY_A words, in dataset order, numbered from 1.
    def side_by_side(**params):
        answer = client.get("/api/v1/paired/samples", params={"a": a, "b": b, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()

    only_a = side_by_side(dataset="letters", flip="a_only")
    assert only_a["total"] == 10
    assert [s["index"] for s in only_a["items"]] == [i + 1 for i, w in enumerate(WORDS) if w in ONLY_A]
    assert [s["gold"] for s in only_a["items"]] == [w for w in WORDS if w in ONLY_A]
    first = only_a["items"][0]
    assert first["a"]["correct"] is True and first["b"]["correct"] is False
    assert first["a"]["prediction"] == ANSWER_A and first["b"]["prediction"] == ANSWER_B
    assert side_by_side(dataset="letters", flip="b_only")["items"][0]["index"] == WORDS.index("zulu") + 1
    assert side_by_side(dataset="letters", flip="both")["total"] == 3
    assert [s["gold"] for s in side_by_side(dataset="letters", flip="neither")["items"]] == NEITHER
    changed = side_by_side(dataset="letters", flip="changed", page=2, page_size=4)
    assert changed["total"] == 11 and len(changed["items"]) == 4
    assert [s["gold"] for s in changed["items"]] == [w for w in WORDS if w in ONLY_A + ONLY_B][4:8]
    everything = side_by_side(dataset="phrases", page_size=500)
    assert [s["index"] for s in everything["items"]] == [1, 2, 3, 4]
    assert [(s["a"]["correct"], s["b"]["correct"]) for s in everything["items"]] == [
        (True, False), (False, True), (False, False), (False, False)]

    # The same rows exported for a spreadsheet or a script: prompt and gold once, each side's answer in a_/b_ columns.
    exported = client.get("/api/v1/paired/samples/export", params={"a": a, "b": b, "dataset": "letters",
                                                                   "flip": "a_only", "format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [row["gold"] for row in table] == [w for w in WORDS if w in ONLY_A]
    assert [row["index"] for row in table] == [str(s["index"]) for s in only_a["items"]]
    assert {(row["a_correct"], row["b_correct"]) for row in table} == {("true", "false")}
    assert table[0]["a_prediction"] == ANSWER_A and table[0]["b_prediction"] == ANSWER_B
    assert {"a_latency_s", "b_completion_tokens", "a_judge_rationale", "b_scorer"} <= set(table[0])
    lines = client.get("/api/v1/paired/samples/export", params={"a": a, "b": b, "dataset": "phrases",
                                                                "format": "jsonl"})
    assert lines.status_code == 200
    rows = [json.loads(line) for line in lines.text.splitlines()]
    assert [(r["index"], r["a_correct"], r["b_correct"]) for r in rows] == [
        (1, True, False), (2, False, True), (3, False, False), (4, False, False)]

    # Another sample selection: not paired, and the reason says why.
    other = client.get("/api/v1/paired", params={"a": a, "b": limited})
    assert other.status_code == 200, other.text
    reasons = {row["dataset"]: row for row in other.json()["datasets"]}
    assert reasons["letters"]["comparable"] is False and reasons["letters"]["p_value"] is None
    assert reasons["letters"]["reason"] == ("different sample selection: A used all samples, B the first 5 "
                                            "(limit 5)")
    assert reasons["phrases"] == {**reasons["phrases"], "comparable": False, "reason": "only evaluation A has it"}
    for path in ("/api/v1/paired/samples", "/api/v1/paired/samples/export"):
        refused = client.get(path, params={"a": a, "b": limited, "dataset": "letters"})
        assert refused.status_code == 422 and "different sample selection" in refused.json()["detail"]

    # The data B read is recorded with another hash than A's: another version of the dataset, not paired.
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        evaluation = session.get(Evaluation, b)
        manifest = json.loads(json.dumps(evaluation.manifest))
        assert manifest["datasets"][0]["sha256"], "the run recorded the hash of the file it read"
        manifest["datasets"][0]["sha256"] = "0" * 64
        evaluation.manifest = manifest
    changed_data = {row["dataset"]: row for row in client.get("/api/v1/paired", params={"a": a, "b": b}).json()["datasets"]}
    assert changed_data["letters"]["comparable"] is False
    assert changed_data["letters"]["reason"].startswith("different dataset version")
    assert changed_data["phrases"]["comparable"] is True and changed_data["phrases"]["p_holm"] == pytest.approx(1.0)

    # Questions a person can get wrong, answered with a sentence.
    for params, words in (({"a": a, "b": b, "model_a": "nobody"}, "has no model 'nobody'"),
                          ({"a": a, "b": a}, "the same model of the same evaluation"),
                          ({"a": a, "b": b, "dataset": "nowhere"}, "no dataset 'nowhere'"),
                          ({"a": a, "b": b, "dataset": "letters", "flip": "sideways"}, "flip")):
        path = "/api/v1/paired/samples" if "dataset" in params else "/api/v1/paired"
        answer = client.get(path, params=params)
        assert answer.status_code == 422 and words in answer.json()["detail"], (params, answer.text)


ADMIN, PASSWORD = "root", "correct horse battery"


def test_a_member_cannot_pair_another_members_private_evaluation(settings):
    from fastapi.testclient import TestClient

    from aieval_server.main import create_app

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

        def evaluation(headers, visibility: str, tag: str) -> int:
            model = _model(client, f"m-{tag}", "http://127.0.0.1:9/v1", headers)
            dataset = _upload(client, f"d-{tag}", [f"w{tag}"], "exact", headers)
            created = client.post("/api/v1/evaluations", headers=headers, json={
                "model_ids": [model], "dataset_ids": [dataset], "visibility": visibility})
            assert created.status_code == 201, created.text
            return created.json()["id"]

        private, shared = evaluation(alice, "private", "alice-1"), evaluation(alice, "shared", "alice-2")
        own = evaluation(bob, "private", "bob-1")
        hidden = client.get(f"/api/v1/evaluations/{private}", headers=bob)
        assert hidden.status_code == 404
        for path, extra in (("/api/v1/paired", {}), ("/api/v1/paired/samples", {"dataset": "x"})):
            for a, b in ((own, private), (private, own)):
                answer = client.get(path, headers=bob, params={"a": a, "b": b, **extra})
                assert answer.status_code == 404, (path, a, b, answer.text)
                assert answer.json()["detail"] == hidden.json()["detail"], "exactly like any other read"
            # Readable to Bob (the shared one): access is granted, the runs have just not finished.
            answer = client.get(path, headers=bob, params={"a": own, "b": shared, **extra})
            assert answer.status_code == 409 and "has no samples to compare yet" in answer.json()["detail"]
            # Alice's own private evaluation is hers to compare.
            answer = client.get(path, headers=alice, params={"a": private, "b": shared, **extra})
            assert answer.status_code == 409, answer.text
        assert client.get("/api/v1/paired", params={"a": own, "b": shared}).status_code == 401
