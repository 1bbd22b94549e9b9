"""What the results pages are served (issue 10, "What people asked for on the results pages"): rank intervals on the
leaderboard from real runs' per-sample verdicts, the comparison the compare page opens with, each evaluation's
headline scores in the list (one query for a page), and the fingerprint in the score rows and exports.

Real worker runs (real OpenCompass, OpenAI-compatible servers on loopback that always answer the same text) make
the verdicts exactly known: models "same-1" and "same-2" answer alike, "weak" gets one sample right."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fake_openai import FakeChatEndpoint
from sqlalchemy import event

GOOD = "red green blue yellow purple orange"
WEAK = "red"
# "contains": GOOD names 6 of these 12 colours, WEAK 1.
COLOURS = ["red", "black", "green", "white", "blue", "grey", "yellow", "brown", "purple", "pink", "orange", "teal"]


@pytest.fixture(scope="module")
def endpoints():
    good, weak = FakeChatEndpoint(GOOD), FakeChatEndpoint(WEAK)
    yield good, weak
    good.close()
    weak.close()


def _model(client, name: str, url: str) -> int:
    response = client.post("/api/v1/models", json={"name": name, "kind": "openai", "base_url": url, "model": "m"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _run(client, settings, model_id: int, dataset_ids: list[int]) -> int:
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    created = client.post("/api/v1/evaluations", json={"model_ids": [model_id], "dataset_ids": dataset_ids})
    assert created.status_code == 201, created.text
    evaluation_id = created.json()["id"]
    assert run_evaluation(settings, get_storage(settings), evaluation_id, ColdLauncher()) == "succeeded"
    return evaluation_id


def test_rank_ranges_suggestion_headlines_and_fingerprints_from_real_runs(client, settings, endpoints):
    good, weak = endpoints
    body = "".join(json.dumps({"question": f"Name colour {i}", "answer": a}) + "\n" for i, a in enumerate(COLOURS))
    uploaded = client.post("/api/v1/datasets", files={"file": ("colours.jsonl", body.encode())},
                           data={"scorer": "contains"})
    assert uploaded.status_code == 201, uploaded.text
    colours = uploaded.json()["dataset"]["id"]
    assert client.get("/api/v1/compare/suggested").json() == {"model_ids": [], "evaluation_ids": [],
                                                              "dataset_ids": []}
    same_1, same_2, weak_model = (_model(client, "same-1", good.url), _model(client, "same-2", good.url),
                                  _model(client, "weak", weak.url))
    first = _run(client, settings, same_1, [colours])
    # One model with scores: it is suggested alone (its own scores are something to look at).
    assert client.get("/api/v1/compare/suggested").json() == {"model_ids": [same_1], "evaluation_ids": [first],
                                                              "dataset_ids": []}
    second = _run(client, settings, same_2, [colours])
    third = _run(client, settings, weak_model, [colours])

    board = client.get("/api/v1/leaderboard").json()
    assert board["averages"] == {str(same_1): 50.0, str(same_2): 50.0, str(weak_model): pytest.approx(100 / 12)}
    # The two alike models tie in every resample: each plausibly first or second, never third; "weak" is right only
    # where they are too, so it is last in (practically) every resample.
    assert board["rank_intervals"] == {str(same_1): {"low": 1, "high": 2}, str(same_2): {"low": 1, "high": 2},
                                       str(weak_model): {"low": 3, "high": 3}}
    assert board["rank_resamples"] == 1000
    pair = client.get("/api/v1/compare", params={"model_ids": [same_1, weak_model]}).json()
    assert pair["rank_intervals"] == {str(same_1): {"low": 1, "high": 1}, str(weak_model): {"low": 2, "high": 2}}
    alone = client.get("/api/v1/compare", params={"model_ids": [same_1]}).json()
    assert alone["rank_intervals"] == {} and alone["rank_resamples"] is None  # one model: no ranking

    # Nothing chosen: the newest results of the three models, which share the dataset with the same settings.
    assert client.get("/api/v1/compare/suggested").json() == {
        "model_ids": [weak_model, same_2, same_1], "evaluation_ids": [third, second, first], "dataset_ids": [colours]}

    listed = {item["id"]: item for item in client.get("/api/v1/evaluations").json()["items"]}
    assert listed[first]["headline"] == [{"model_id": same_1, "model": "same-1", "value": 50.0, "datasets": 1,
                                          "dataset": "colours", "metric": "accuracy", "n": 12, "correct": 6,
                                          "ci_low": pytest.approx(25.4, abs=0.1), "ci_high": pytest.approx(74.6, abs=0.1)}]
    assert listed[third]["headline"][0]["correct"] == 1

    detail = client.get(f"/api/v1/evaluations/{first}").json()["scores"][0]
    results = client.get(f"/api/v1/evaluations/{first}/results").json()[0]
    for score in (detail, results):
        assert len(score["fingerprint"]) == 16
        assert score["fingerprint_parts"]["scorer"] == "contains" and score["fingerprint_parts"]["limit"] is None
        assert len(score["fingerprint_parts"]["data"]) == 16 and score["fingerprint_parts"]["opencompass"]
    parts = results["fingerprint_parts"]
    exported = list(csv.DictReader(io.StringIO(
        client.get(f"/api/v1/evaluations/{first}/export", params={"format": "csv"}).text)))
    assert exported[0]["fingerprint"] == results["fingerprint"]
    assert (exported[0]["data"], exported[0]["prompt"], exported[0]["limit"], exported[0]["max_out_len"],
            exported[0]["opencompass"]) == (parts["data"], parts["prompt"], "", "", parts["opencompass"])
    as_json = client.get(f"/api/v1/evaluations/{first}/export", params={"format": "json"}).json()
    assert as_json["scores"][0]["fingerprint_parts"] == parts
    report = client.get(f"/api/v1/evaluations/{first}/export", params={"format": "md"}).text
    comparability = report.split("## Comparability", 1)[1]
    assert results["fingerprint"] in comparability and parts["data"] in comparability
    assert "| model | dataset | fingerprint | data | config | prompt | limit | max\\_out\\_len | opencompass |" in report


def test_headlines_average_each_models_datasets_and_a_page_costs_the_same_queries(client, settings):
    from aieval_server.db import get_engine, session_scope
    from aieval_server.models import Dataset, Evaluation, Model, Score

    with session_scope(settings.database_url) as session:
        model, other = Model(name="m", kind="openai", settings={}), Model(name="o", kind="openai", settings={})
        one, two = Dataset(name="d1", kind="custom"), Dataset(name="d2", kind="custom")
        session.add_all([model, other, one, two])
        session.flush()
        ids = []
        for i in range(25):
            evaluation = Evaluation(name=f"e{i}", status="succeeded", params={}, queue="api")
            session.add(evaluation)
            session.flush()
            ids.append(evaluation.id)

            def score(model_row, dataset, metric, value, n):
                session.add(Score(evaluation_id=evaluation.id, model_id=model_row.id, dataset_id=dataset.id,  # noqa: B023
                                  model_name=model_row.name, dataset_name=dataset.name, model_abbr=model_row.name,
                                  dataset_abbr=dataset.name, metric=metric, value=value, n=n))
            # Two metrics on d1: accuracy is the one headlined (as compare picks it), not "bleu".
            score(model, one, "bleu", 3.0, 10)
            score(model, one, "accuracy", 40.0, 10)
            score(model, two, "accuracy", 80.0, 20)
            score(other, one, "accuracy", 10.0, None)
        session.add(Evaluation(name="running", status="running", params={}, queue="api"))
        model_id, other_id = model.id, other.id
    listed = client.get("/api/v1/evaluations", params={"page_size": 30}).json()["items"]
    by_name = {item["name"]: item for item in listed}
    assert by_name["running"]["headline"] == []
    assert by_name["e0"]["headline"] == [
        {"model_id": model_id, "model": "m", "value": 60.0, "datasets": 2, "dataset": None, "metric": None, "n": 30,
         "correct": None, "ci_low": None, "ci_high": None},
        {"model_id": other_id, "model": "o", "value": 10.0, "datasets": 1, "dataset": "d1", "metric": "accuracy",
         "n": None, "correct": None, "ci_low": None, "ci_high": None},
    ]

    engine = get_engine(settings.database_url)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    def queries(page_size: int) -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(client.get("/api/v1/evaluations", params={"page_size": page_size}).json()["items"]) == page_size
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    assert queries(1) == queries(20)  # no query per row
