"""Compare and leaderboard put results side by side only when their settings match (issue 10): each stored score
carries a fingerprint of what it depends on apart from the model; real worker runs (real OpenCompass, a real
OpenAI-compatible endpoint on loopback) with different sample limits are marked not comparable with the reason,
and averages use only the datasets every model has with the same settings. Plus migration 0007."""

from __future__ import annotations

import hashlib

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


def test_only_results_with_the_same_settings_are_side_by_side(client, settings, endpoint):
    from aieval_engine.catalogue import opencompass_version
    from aieval_server.db import session_scope
    from aieval_server.models import Score

    def model(name: str) -> int:
        return register_endpoint_model(client, name, endpoint.url)

    def run(model_id: int, dataset_ids: list[int], params: dict) -> int:
        return run_on_worker(client, settings, [model_id], dataset_ids, params)

    alpha, beta = model("alpha"), model("beta")
    colours = upload_dataset(client, "colours.jsonl", colour_questions(COLOURS), "contains")
    phrases = upload_dataset(client, "phrases.jsonl", colour_questions(PHRASES), "exact")
    # alpha: the first 6 colours; a limit of 6 on the 4 phrases is every phrase, the same samples as no limit.
    first = run(alpha, [colours, phrases], {"limit": 6})
    second = run(beta, [colours, phrases], {})

    with session_scope(settings.database_url) as session:
        stored = {(s.evaluation_id, s.dataset_name): (s.fingerprint, s.fingerprint_parts)
                  for s in session.query(Score).filter(Score.metric == "accuracy")}
    fingerprint, parts = stored[(first, "colours")]
    assert parts == {"data": hashlib.sha256(colour_questions(COLOURS)).hexdigest()[:16], "config": None,
                     "prompt": parts["prompt"], "limit": 6, "scorer": "contains", "max_out_len": None,
                     "opencompass": opencompass_version()}
    assert len(parts["prompt"]) == 16 and len(fingerprint) == 16
    assert stored[(second, "colours")][1] == parts | {"limit": None}
    assert stored[(second, "colours")][0] != fingerprint
    assert stored[(first, "phrases")] == stored[(second, "phrases")]  # limit 6 of 4 rows = all of them
    assert stored[(first, "phrases")][1]["scorer"] == "exact"
    # The prompt hash leaves out where the run's copy of the file lay: the same template, the same hash.
    assert stored[(first, "phrases")][1]["prompt"] == parts["prompt"]

    table = client.get("/api/v1/compare", params={"model_ids": [alpha, beta]}).json()
    a_colours, b_colours = table["cells"][str(alpha)][str(colours)], table["cells"][str(beta)][str(colours)]
    # A tie (one model each): the newest settings are the column's; alpha's 6 samples are not put beside them.
    assert (b_colours["comparable"], b_colours["value"], b_colours["n"]) == (True, 62.5, 8)
    assert (a_colours["comparable"], a_colours["value"], a_colours["n"]) == (False, 50.0, 6)
    assert a_colours["differences"] == [{"part": "limit", "value": 6, "reference": None}]
    assert (a_colours["scorer"], a_colours["evaluation_id"]) == ("contains", first)
    assert a_colours["ci_low"] < 50.0 < a_colours["ci_high"]
    both_phrases = [table["cells"][str(m)][str(phrases)] for m in (alpha, beta)]
    assert [(c["comparable"], c["value"], c["differences"]) for c in both_phrases] == [(True, 25.0, [])] * 2
    # The average is over the phrases only (both 25), not the colours (that would be 37.5 and 43.75).
    assert table["average_dataset_ids"] == [phrases]
    assert table["averages"] == {str(alpha): 25.0, str(beta): 25.0}
    column = next(d for d in table["datasets"] if d["id"] == colours)
    assert column["fingerprint"] == stored[(second, "colours")][0]
    # A chosen model that has never run narrows nothing: it is listed, unranked, and the columns stay.
    never_ran = model("never ran")
    with_it = client.get("/api/v1/compare", params={"model_ids": [alpha, beta, never_ran]}).json()
    assert [d["id"] for d in with_it["datasets"]] == sorted([colours, phrases])
    assert with_it["average_dataset_ids"] == [phrases]
    assert with_it["averages"] == table["averages"] | {str(never_ran): None}
    board = client.get("/api/v1/leaderboard").json()
    assert board["average_dataset_ids"] == [phrases] and board["averages"] == table["averages"]
    assert board["cells"][str(alpha)][str(colours)]["comparable"] is False

    # alpha again on every colour: now the same settings as beta, side by side and in the averages.
    third = run(alpha, [colours], {})
    table = client.get("/api/v1/compare", params={"model_ids": [alpha, beta]}).json()
    a_colours = table["cells"][str(alpha)][str(colours)]
    assert (a_colours["comparable"], a_colours["value"], a_colours["evaluation_id"]) == (True, 62.5, third)
    assert table["average_dataset_ids"] == [colours, phrases]
    assert table["averages"] == {str(alpha): pytest.approx(43.75), str(beta): pytest.approx(43.75)}
    assert client.get("/api/v1/leaderboard").json()["average_dataset_ids"] == [colours, phrases]


def test_scores_without_a_fingerprint_are_marked_unrecorded(client, settings):
    """A score stored before fingerprints existed is never assumed to match a recorded one."""
    from aieval_server.db import session_scope
    from aieval_server.models import Dataset, Evaluation, Model, Score

    parts = {"data": "ab" * 8, "config": None, "prompt": "cd" * 8, "limit": None, "scorer": "exact",
             "max_out_len": None, "opencompass": "0.5.4"}
    with session_scope(settings.database_url) as session:
        models = [Model(name=name, kind="openai", settings={}) for name in ("old", "new", "newer")]
        dataset = Dataset(name="d", kind="custom")
        session.add_all([*models, dataset])
        session.flush()
        for model, fingerprint in zip(models, (None, "f" * 16, "f" * 16), strict=True):
            evaluation = Evaluation(name=model.name, status="succeeded", params={}, queue="local")
            session.add(evaluation)
            session.flush()
            session.add(Score(evaluation_id=evaluation.id, model_id=model.id, dataset_id=dataset.id, model_name="m",
                              dataset_name="d", model_abbr="m", dataset_abbr="d", metric="accuracy", value=50.0,
                              fingerprint=fingerprint, fingerprint_parts=parts if fingerprint else None))
        old_id, dataset_id = models[0].id, dataset.id
    table = client.get("/api/v1/leaderboard").json()
    old = table["cells"][str(old_id)][str(dataset_id)]
    assert (old["comparable"], old["differences"]) == (False, [{"part": "unrecorded", "value": None,
                                                                 "reference": None}])
    assert table["average_dataset_ids"] == [] and set(table["averages"].values()) == {None}


def test_migration_0007_adds_nullable_fingerprint_and_keeps_ids_never_reused(tmp_path):
    from aieval_server.db.migrate import downgrade, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = database_with_a_deleted_score(url, "0006", {"n": "8"})
    upgrade(url, "0007")
    with engine.begin() as connection:
        old = connection.execute(text("SELECT value, n, fingerprint, fingerprint_parts FROM scores")).all()
        assert [tuple(row) for row in old] == [(50.0, 8, None, None)]
        connection.execute(text("INSERT INTO scores (evaluation_id, model_name, dataset_name, model_abbr, "
                                "dataset_abbr, metric, value, fingerprint, fingerprint_parts) VALUES "
                                "(1, 'm', 'd', 'm', 'd', 'acc', 62.5, 'abcdef0123456789', '{\"limit\": 8}')"))
        # AUTOINCREMENT survived the table copy: the deleted id 2 is not handed out again.
        assert connection.execute(text("SELECT max(id) FROM scores")).scalar() == 3
    downgrade(url, "0006")
    with engine.connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(scores)"))}
        assert columns.isdisjoint({"fingerprint", "fingerprint_parts"}) and {"n", "ci_low"} <= columns
        assert connection.execute(text("SELECT count(*) FROM scores")).scalar() == 2
    engine.dispose()


def test_fingerprint_parts_of_a_builtin_benchmark_and_what_the_prompt_hash_covers():
    """A built-in benchmark: the data files' hash from the engine's manifest and the config's name; the prompt hash
    ignores what changes from run to run or is a part of its own, and sees an edited template."""
    from aieval_engine.spec import parse_spec
    from aieval_server.services.provenance import fingerprint_of, fingerprint_parts

    spec = parse_spec({"models": [{"kind": "openai", "name": "m", "base_url": "http://127.0.0.1:9/v1", "model": "m"}],
                       "datasets": [{"kind": "builtin", "config": "gsm8k_gen"}],
                       "params": {"limit": 8, "max_out_len": 64}})
    manifest = {"opencompass": "0.5.4", "datasets": [{"kind": "builtin", "config": "gsm8k/gsm8k_gen",
                                                      "data": {"sha256": "9" * 64, "files": 2}}]}
    config = {"abbr": "gsm8k", "path": "/job/1/data", "type": "opencompass.datasets.GSM8KDataset",
              "reader_cfg": {"input_columns": ["question"], "output_column": "answer", "test_range": "[0:8]"},
              "infer_cfg": {"prompt_template": {"template": "Q: {question}"},
                            "inferencer": {"type": "GenInferencer", "max_out_len": 64}},
              "eval_cfg": {"evaluator": {"type": "Gsm8kEvaluator"}, "pred_postprocessor": {"type": "gsm8k_pp"}}}
    parts = fingerprint_parts(spec, 0, "Gsm8kEvaluator", manifest, config)
    assert parts == {"data": "9" * 16, "config": "gsm8k/gsm8k_gen", "prompt": parts["prompt"], "limit": 8,
                     "scorer": "Gsm8kEvaluator", "max_out_len": 64, "opencompass": "0.5.4"}
    elsewhere = {**config, "abbr": "gsm8k-2", "path": "/job/2/data",
                 "reader_cfg": {**config["reader_cfg"], "test_range": "[0:12]"},
                 "infer_cfg": {**config["infer_cfg"], "inferencer": {"type": "GenInferencer", "max_out_len": 512}},
                 "eval_cfg": {**config["eval_cfg"], "evaluator": {"type": "OtherEvaluator"}}}
    assert fingerprint_parts(spec, 0, "Gsm8kEvaluator", manifest, elsewhere)["prompt"] == parts["prompt"]
    edited = {**config, "infer_cfg": {**config["infer_cfg"], "prompt_template": {"template": "Question: {question}"}}}
    assert fingerprint_parts(spec, 0, "Gsm8kEvaluator", manifest, edited)["prompt"] != parts["prompt"]
    other_postprocessor = {**config, "eval_cfg": {**config["eval_cfg"], "pred_postprocessor": {"type": "first_number"}}}
    assert fingerprint_parts(spec, 0, "Gsm8kEvaluator", manifest, other_postprocessor)["prompt"] != parts["prompt"]
    assert fingerprint_of(parts) == fingerprint_of(dict(reversed(parts.items())))  # key order does not matter
    assert fingerprint_of(parts) != fingerprint_of(parts | {"limit": 12})
