"""Every stored score says what it rests on (issue 10): n, right answers, scorer and a 95 % interval, from a real
worker run (real OpenCompass, a real OpenAI-compatible endpoint on loopback), through the API and the exports;
and migration 0006 adds the columns to a database holding older scores."""

from __future__ import annotations

import csv
import io
import json

import pytest
from fake_openai import FakeChatEndpoint
from scored_runs import (
    ANSWER,
    COLOURS,
    PHRASES,
    colour_questions,
    database_with_a_deleted_score,
    register_endpoint_model,
    run_on_worker,
    upload_dataset,
)
from sqlalchemy import text


@pytest.fixture(scope="module")
def endpoint():
    server = FakeChatEndpoint(ANSWER)
    yield server
    server.close()


def test_a_real_run_stores_n_correct_scorer_and_wilson_interval(client, settings, endpoint):
    from aieval_engine.workdir import latest_run_dir
    from aieval_server.services.evaluations import job_dir
    from aieval_server.services.provenance import evaluator_classes
    from aieval_server.services.statistics import wilson_interval

    model_id = register_endpoint_model(client, "colours", endpoint.url)
    contains_id = upload_dataset(client, "colours.jsonl", colour_questions(COLOURS), "contains")
    exact_id = upload_dataset(client, "phrases.jsonl", colour_questions(PHRASES), "exact")
    evaluation_id = run_on_worker(client, settings, [model_id], [contains_id, exact_id])

    detail = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    scores = {s["dataset"]: s for s in detail["scores"]}
    five_of_eight, one_of_four = wilson_interval(5, 8), wilson_interval(1, 4)
    expected = {
        "model_id": model_id, "model": "colours", "dataset_id": contains_id, "dataset": "colours",
        "metric": "accuracy", "value": 62.5, "n": 8, "correct": 5, "scorer": "contains",
        "ci_low": pytest.approx(100 * five_of_eight[0]), "ci_high": pytest.approx(100 * five_of_eight[1])}
    assert {key: scores["colours"][key] for key in expected} == expected
    # And what its comparability rests on (test_fingerprint_compare.py checks the parts themselves).
    assert len(scores["colours"]["fingerprint"]) == 16 and scores["colours"]["fingerprint_parts"]["scorer"] == "contains"
    expected = {"model_id": model_id, "model": "colours", "dataset_id": exact_id, "dataset": "phrases",
                "metric": "accuracy", "value": 25.0, "n": 4, "correct": 1, "scorer": "exact"}
    assert {key: scores["phrases"][key] for key in expected} == expected
    assert (scores["phrases"]["ci_low"], scores["phrases"]["ci_high"]) == pytest.approx(
        (100 * one_of_four[0], 100 * one_of_four[1]))
    # The same rows from the results endpoint (the other query path).
    assert client.get(f"/api/v1/evaluations/{evaluation_id}/results").json() == detail["scores"]

    # The evaluator names come from the config OpenCompass resolved: what a built-in benchmark's scorer is read from.
    run_dir = latest_run_dir(job_dir(settings, evaluation_id))
    assert evaluator_classes(run_dir) == {"colours": "ContainsAnswerEvaluator", "phrases": "AccEvaluator"}

    # Exports: CSV columns, JSON fields, and the Markdown cell a person reads.
    export = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "csv"}).text
    rows = {row["dataset"]: row for row in csv.DictReader(io.StringIO(export))}
    assert (rows["colours"]["n"], rows["colours"]["correct"], rows["colours"]["scorer"]) == ("8", "5", "contains")
    assert float(rows["colours"]["ci_low"]) == pytest.approx(100 * five_of_eight[0])
    exported = json.loads(client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "json"}).text)
    assert exported["scores"] == detail["scores"]
    report = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "md"}).text
    half = 100 * (five_of_eight[1] - five_of_eight[0]) / 2
    assert f"| colours | accuracy | 62.5 % ± {half:.1f}, n = 8, contains |" in report
    assert "| phrases | accuracy | 25 % ± " in report and ", n = 4, exact |" in report
    assert "half the width of the 95 % confidence interval" in report


def test_scores_stored_before_provenance_show_what_is_known(client, settings):
    """A score row without provenance (stored before migration 0006) reads as null, and reports show the value
    alone rather than inventing an interval."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Score

    with session_scope(settings.database_url) as session:
        evaluation = Evaluation(name="old", status="succeeded", params={}, queue="local")
        session.add(evaluation)
        session.flush()
        session.add(Score(evaluation_id=evaluation.id, model_name="m", dataset_name="d", model_abbr="m",
                          dataset_abbr="d", metric="accuracy", value=50.0))
        evaluation_id = evaluation.id
    score = client.get(f"/api/v1/evaluations/{evaluation_id}").json()["scores"][0]
    assert {key: score[key] for key in ("value", "n", "correct", "scorer", "ci_low", "ci_high")} == {
        "value": 50.0, "n": None, "correct": None, "scorer": None, "ci_low": None, "ci_high": None}
    report = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "md"}).text
    assert "| d | accuracy | 50 |" in report and "confidence interval" not in report
    export = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "csv"}).text
    row = next(csv.reader([export.splitlines()[1]]))
    assert row[3:5] == ["accuracy", "50.0"] and not any(row[5:])  # nothing else known: empty cells


def test_migration_0006_adds_nullable_provenance_and_keeps_ids_never_reused(tmp_path):
    from aieval_server.db.migrate import downgrade, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = database_with_a_deleted_score(url, "0005")
    upgrade(url)
    with engine.begin() as connection:
        old = connection.execute(text("SELECT value, n, correct, scorer, ci_low, ci_high FROM scores")).all()
        assert [tuple(row) for row in old] == [(50.0, None, None, None, None, None)]
        connection.execute(text("INSERT INTO scores (evaluation_id, model_name, dataset_name, model_abbr, "
                                "dataset_abbr, metric, value, n, correct, scorer, ci_low, ci_high) VALUES "
                                "(1, 'm', 'd', 'm', 'd', 'acc', 62.5, 8, 5, 'contains', 30.6, 86.3)"))
        # AUTOINCREMENT survived the table copy: the deleted id 2 is not handed out again.
        assert connection.execute(text("SELECT max(id) FROM scores")).scalar() == 3
    downgrade(url, "0005")
    with engine.connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(scores)"))}
        assert columns.isdisjoint({"n", "correct", "scorer", "ci_low", "ci_high"}) and "value" in columns
        assert connection.execute(text("SELECT count(*) FROM scores")).scalar() == 2
    engine.dispose()
