"""results.py and workdir.py against a hand-built OpenCompass work dir (layout from workdir.py's docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aieval_engine import workdir
from aieval_engine.config_builder import BuiltConfig, PlannedDataset
from aieval_engine.results import (
    EvalResult,
    PairOutcome,
    SampleRow,
    Score,
    _hash_paths,
    build_manifest,
    collect_scores,
    iter_samples,
    metric_values,
)
from aieval_engine.spec import parse_spec


def put_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """<job>/outputs/20261123_010203 with configs, predictions and results for model m1."""
    job = tmp_path / "job"
    run = job / "outputs" / "20261123_010203"
    (run / "configs").mkdir(parents=True)
    (run / "configs" / "20261123_010203_4242.py").write_text(
        "models = [dict(abbr='m1')]\n"
        "datasets=[dict(abbr='x', reader_cfg=dict(test_range='[0:8]')), "
        "{'abbr': 'qa', 'reader_cfg': {'input_columns': ['question']}}, "
        "dict(abbr='all', reader_cfg=dict(test_range='[:12]')), "
        "dict(abbr='tail', reader_cfg=dict(test_range='[5:10]')), "
        "dict(path='no-abbr')]\n",
        encoding="utf-8",
    )
    return run


# ---- workdir --------------------------------------------------------------------------------------------


def test_latest_run_dir_ignores_non_timestamp_dirs(tmp_path):
    job = tmp_path / "job"
    assert workdir.latest_run_dir(job) is None
    outputs = workdir.outputs_dir(job)
    assert outputs == job / "outputs"
    outputs.mkdir(parents=True)
    assert workdir.latest_run_dir(job) is None
    for name in ("20261122_235959", "20261123_000001", "20261123_000000"):
        (outputs / name).mkdir()
    for name in ("zzz", "20261123_0000010", "99999999_99999", "20261124_000000.bak", "latest"):
        (outputs / name).mkdir()
    (outputs / "20991231_235959").write_text("a file, not a run")
    assert workdir.latest_run_dir(job) == outputs / "20261123_000001"


def test_resolved_datasets_from_the_dumped_config(run_dir):
    assert workdir.resolved_datasets(run_dir) == [
        workdir.ResolvedDataset("x", "[0:8]"),
        workdir.ResolvedDataset("qa", None),
        workdir.ResolvedDataset("all", "[:12]"),
        workdir.ResolvedDataset("tail", "[5:10]"),
    ]


def test_resolved_datasets_before_and_with_broken_configs(tmp_path):
    run = tmp_path / "20261123_010203"
    assert workdir.resolved_datasets(run) is None  # no configs dir yet
    (run / "configs").mkdir(parents=True)
    assert workdir.resolved_datasets(run) is None
    (run / "configs" / "a.py").write_text("datasets = [dict(abbr='x'\n")  # half-written
    assert workdir.resolved_datasets(run) is None
    (run / "configs" / "a.py").write_text("models = []\n")
    assert workdir.resolved_datasets(run) is None
    (run / "configs" / "a.py").write_text("datasets = []\n")
    assert workdir.resolved_datasets(run) == []


def test_resolved_datasets_reads_the_first_config_of_a_resumed_run(tmp_path):
    run = tmp_path / "20261123_010203"
    put_json(run / "x", {})
    (run / "configs").mkdir()
    (run / "configs" / "20261123_010203_1.py").write_text("datasets = [dict(abbr='first')]\n")
    (run / "configs" / "20261123_020000_2.py").write_text("datasets = [dict(abbr='second')]\n")
    assert [d.abbr for d in workdir.resolved_datasets(run)] == ["first"]


@pytest.mark.parametrize(
    "test_range, limit",
    [("[0:8]", 8), ("[:12]", 12), ("[ 0 : 3 ]", 3), ("[5:10]", None), ("[0:-1]", None), ("[0:]", None),
     ("[0:8:2]", None), ("", None), (None, None), ("0:8", None)],
)  # fmt: skip
def test_range_limit(test_range, limit):
    assert workdir.range_limit(test_range) == limit


def test_predictions_done(run_dir):
    assert workdir.predictions_done(run_dir, "m1", "x") is None  # inference not started
    partial = run_dir / "predictions" / "m1" / "tmp_x.jsonl"
    partial.parent.mkdir(parents=True)
    partial.write_text("")
    assert workdir.predictions_done(run_dir, "m1", "x") == 0
    lines = [json.dumps({"idx": i, "prediction": f"p{i}"}) for i in range(3)]
    partial.write_text("\n".join(lines) + "\n\n")  # as OpenCompass appends batches, plus a blank line
    assert workdir.predictions_done(run_dir, "m1", "x") == 3
    with open(partial, "a") as handle:
        handle.write("\n".join(json.dumps({"idx": i}) for i in (3, 4)) + "\n")
    assert workdir.predictions_done(run_dir, "m1", "x") == 5
    assert not workdir.inference_finished(run_dir, "m1", "x")
    # the final file wins once it exists (the tmp file, until OpenCompass removes it, is not counted twice)
    final = put_json(workdir.predictions_file(run_dir, "m1", "x"), {str(i): {"prediction": "p"} for i in range(8)})
    assert final == run_dir / "predictions" / "m1" / "x.json"
    assert workdir.prediction_shards(run_dir, "m1", "x") == [final]
    assert workdir.predictions_done(run_dir, "m1", "x") == 8
    assert not workdir.inference_finished(run_dir, "m1", "x")
    partial.unlink()
    assert workdir.predictions_done(run_dir, "m1", "x") == 8
    assert workdir.inference_finished(run_dir, "m1", "x")
    final.write_text("{broken")  # caught mid-write: started, nothing readable yet
    assert workdir.predictions_done(run_dir, "m1", "x") == 0
    assert workdir.read_predictions(run_dir, "m1", "x") == []


def test_read_json_and_summary(run_dir):
    assert workdir.read_json(run_dir / "absent.json") is None
    (run_dir / "bad.json").write_text("{")
    assert workdir.read_json(run_dir / "bad.json") is None
    assert workdir.read_json(put_json(run_dir / "ok.json", {"a": [1]})) == {"a": [1]}
    assert not workdir.summary_exists(run_dir)
    (run_dir / "summary").mkdir()
    (run_dir / "summary" / "notes.txt").write_text("x")
    assert not workdir.summary_exists(run_dir)
    (run_dir / "summary" / "summary_20261123_010203.csv").write_text("dataset,version\n")
    assert workdir.summary_exists(run_dir)
    assert workdir.task_logs(run_dir, "m", "d") == [
        run_dir / "logs" / "infer" / "m" / "d.out",
        run_dir / "logs" / "eval" / "m" / "d.out",
    ]
    assert workdir.results_file(run_dir, "m", "d") == run_dir / "results" / "m" / "d.json"


# ---- scores ---------------------------------------------------------------------------------------------


def test_metric_values_skip_non_numeric():
    assert metric_values(
        {"accuracy": 87.5, "count": 8, "flag": True, "name": "x", "details": [{"correct": 1}], "sub": {"a": 1},
         "none": None, "list": [1, 2]}
    ) == {"accuracy": 87.5, "count": 8.0}  # fmt: skip


def test_collect_scores(run_dir):
    put_json(workdir.results_file(run_dir, "m1", "x"), {"accuracy": 62.5, "details": [], "note": "ok"})
    put_json(workdir.results_file(run_dir, "m1", "qa"), {"accuracy": 50, "score": 0.5})
    put_json(workdir.results_file(run_dir, "m2", "x"), {"error": "CUDA out of memory " + "x" * 3000})
    put_json(workdir.results_file(run_dir, "m2", "qa"), {"details": [], "type": "gen"})
    # m1/all has no result; m2/all is not JSON
    workdir.results_file(run_dir, "m2", "all").write_text("{")
    scores, pairs = collect_scores(
        run_dir, {"m1": "Model One", "m2": "Model Two"}, {"x": "X set", "qa": "QA set", "all": "All"}
    )
    assert scores == [
        Score("Model One", "m1", "X set", "x", "accuracy", 62.5),
        Score("Model One", "m1", "QA set", "qa", "accuracy", 50.0),
        Score("Model One", "m1", "QA set", "qa", "score", 0.5),
    ]
    outcome = {(p.model_abbr, p.dataset_abbr): p for p in pairs}
    assert len(pairs) == 6
    assert outcome["m1", "x"].ok and outcome["m1", "qa"].ok and outcome["m1", "x"].error is None
    assert outcome["m1", "all"] == PairOutcome("m1", "all", ok=False, error="no result was produced")
    assert not outcome["m2", "x"].ok and outcome["m2", "x"].error.startswith("CUDA out of memory")
    assert len(outcome["m2", "x"].error) == 2000
    assert outcome["m2", "qa"].error == "the result has no numeric score"
    assert outcome["m2", "all"].error == "no result was produced"


def test_eval_result_views(tmp_path):
    scores = [Score("M", "m", "D", "d", "accuracy", 50.0), Score("M", "m", "E", "e", "accuracy", 75.0)]
    result = EvalResult("succeeded", tmp_path, tmp_path / "run", scores=scores, pairs=[PairOutcome("m", "d", True)])
    assert result.ok and not EvalResult("failed", tmp_path, None).ok
    assert result.score_table() == {("M", "D", "accuracy"): 50.0, ("M", "E", "accuracy"): 75.0}
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "succeeded" and data["run_dir"] == str(tmp_path / "run")
    assert data["scores"][1] == {"model": "M", "model_abbr": "m", "dataset": "E", "dataset_abbr": "e",
                                 "metric": "accuracy", "value": 75.0, "dataset_index": None}  # fmt: skip
    assert data["pairs"] == [{"model_abbr": "m", "dataset_abbr": "d", "ok": True, "error": None, "log_excerpt": None}]


# ---- samples --------------------------------------------------------------------------------------------


def test_iter_samples_with_list_details(run_dir):
    # AccEvaluator-style: a list in dataset order, values wrapped in one-element lists
    n = 12  # more than 10 so "10" must sort after "9"
    predictions = {str(i): {"origin_prompt": f"Q{i}?", "prediction": f"p{i}", "gold": f"g{i}"} for i in range(n)}
    predictions["3"] = {"origin_prompt": [{"role": "HUMAN", "prompt": "Q3?"}], "prediction": "p3"}  # no gold
    put_json(workdir.predictions_file(run_dir, "m1", "x"), predictions)
    details = [{"pred": [f"p{i}"], "refr": [f"r{i}"], "correct": [i % 2 == 0]} for i in range(n)]
    details[5] = {"pred": ["five"], "answer": ["A5"], "is_correct": [1]}
    details[7] = "not a dict"
    put_json(workdir.results_file(run_dir, "m1", "x"), {"accuracy": 50.0, "details": details})

    rows = list(iter_samples(run_dir, "m1", "x"))
    assert [r.index for r in rows] == list(range(n))
    assert rows[0] == SampleRow(index=0, prompt="Q0?", prediction="p0", gold="g0", correct=True, extracted=None)
    assert rows[1].correct is False
    assert rows[3].prompt == [{"role": "HUMAN", "prompt": "Q3?"}]
    assert rows[3].gold == "r3"  # from the result's details when predictions have none
    assert rows[5].correct is True and rows[5].extracted == "five"  # 'pred' differs from the raw prediction
    assert rows[7].correct is None and rows[7].gold == "g7"
    assert rows[10] == SampleRow(10, "Q10?", "p10", "g10", True, None)
    assert rows[11].correct is False


def test_iter_samples_with_dict_details(run_dir):
    # OptionSimAccEvaluator-style: {"<index>": {...}} with the parsed option
    predictions = {str(i): {"origin_prompt": f"Q{i}", "prediction": f"The answer is {'AB'[i % 2]}", "gold": "A"}
                   for i in range(11)}  # fmt: skip
    put_json(workdir.predictions_file(run_dir, "m1", "mcq"), predictions)
    details = {str(i): {"pred": predictions[str(i)]["prediction"], "parsed": "AB"[i % 2], "refr": "A",
                        "correct": i % 2 == 0} for i in range(11)}  # fmt: skip
    put_json(workdir.results_file(run_dir, "m1", "mcq"), {"accuracy": 54.5, "details": details})
    rows = list(iter_samples(run_dir, "m1", "mcq"))
    assert len(rows) == 11
    assert rows[0] == SampleRow(0, "Q0", "The answer is A", "A", True, "A")
    assert rows[1] == SampleRow(1, "Q1", "The answer is B", "A", False, "B")
    assert rows[10] == SampleRow(10, "Q10", "The answer is A", "A", True, "A")


def test_iter_samples_without_results_or_predictions(run_dir):
    put_json(workdir.predictions_file(run_dir, "m1", "x"), {"0": {"origin_prompt": "Q", "prediction": "p", "gold": "g"}})
    assert list(iter_samples(run_dir, "m1", "x")) == [SampleRow(0, "Q", "p", "g", None, None)]
    assert list(iter_samples(run_dir, "m1", "absent")) == []
    put_json(workdir.predictions_file(run_dir, "m1", "y"), {"0": "not a dict"})
    assert list(iter_samples(run_dir, "m1", "y")) == [SampleRow(0, None, None, None, None, None)]


# ---- manifest -------------------------------------------------------------------------------------------


def test_hash_paths(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "x.bin").write_bytes(b"12345")
        (root / "sub" / "y.txt").write_text("hello")
    ha, hb = _hash_paths([a]), _hash_paths([b])
    assert ha == hb and ha["files"] == 2 and ha["bytes"] == 10 and ha["content_hashed"]
    (b / "sub" / "y.txt").write_text("hellO")  # same size, other content
    assert _hash_paths([b])["sha256"] != ha["sha256"]
    shallow = _hash_paths([b], budget_bytes=1)
    assert not shallow["content_hashed"] and shallow["sha256"] == _hash_paths([a], budget_bytes=1)["sha256"]
    assert _hash_paths([tmp_path / "nothing"]) == {
        "sha256": _hash_paths([])["sha256"], "files": 0, "bytes": 0, "content_hashed": True
    }


def test_build_manifest_has_identities_and_no_secrets(tmp_path, hf_model_dir, qa_file):
    spec = parse_spec(
        {
            "models": [
                {"kind": "huggingface", "name": "tiny", "path": str(hf_model_dir)},
                {"kind": "openai", "name": "api", "base_url": "http://h:1/v1", "model": "m", "api_key": "sk-NOPE-123"},
            ],
            "datasets": [{"kind": "custom", "name": "qa", "path": str(qa_file)}],
        }
    )
    planned = [PlannedDataset(spec.datasets[0], "gen", 0, abbr="qa", rows=2, sha256="abc")]
    built = BuiltConfig(tmp_path / "config.py", "x = 1\n", {"tiny": "tiny", "api": "api"}, planned, {"K": "sk-NOPE-123"})
    manifest = build_manifest(spec, built, tmp_path / "cache")
    text = json.dumps(manifest)
    assert "sk-NOPE-123" not in text
    assert manifest["config_sha256"] == built.sha256
    assert manifest["opencompass"] == "0.5.4"
    assert manifest["datasets"] == [{"kind": "custom", "name": "qa", "sha256": "abc", "rows": 2}]
    hf_identity, api_identity = manifest["models"]
    assert hf_identity["weights"]["files"] == 1 and hf_identity["path"] == str(hf_model_dir)
    assert api_identity == {"abbr": "api", "name": "api", "kind": "openai", "base_url": "http://h:1/v1/", "model": "m"}
    assert manifest["spec"] == spec.public_dict()


# ---- datasets that OpenCompass split across workers ------------------------------------------------------
# With workers > 1, NumWorkerPartitioner splits a dataset larger than min_task_size (16) into
# `<abbr>_0`, `<abbr>_1`, ... (opencompass/partitioners/num_worker.py:118-130); inference writes
# predictions/<model>/<abbr>_<i>.json (tmp_<abbr>_<i>.jsonl while running) and the eval task reads them back
# in order (opencompass/tasks/openicl_eval.py:159-182) without ever writing predictions/<model>/<abbr>.json.

def test_predictions_done_counts_split_predictions(run_dir):
    folder = run_dir / "predictions" / "m1"
    folder.mkdir(parents=True)
    (folder / "tmp_x_0.jsonl").write_text('{"idx": 0}\n')
    (folder / "tmp_x_1.jsonl").write_text('{"idx": 0}\n{"idx": 1}\n')
    assert workdir.predictions_done(run_dir, "m1", "x") == 3  # shards still running: their tmp files
    assert workdir.prediction_shards(run_dir, "m1", "x") == []
    put_json(folder / "x_0.json", {str(i): {"prediction": "p"} for i in range(16)})
    (folder / "tmp_x_0.jsonl").unlink()
    partial = folder / "tmp_x_1.jsonl"
    partial.write_text("".join(json.dumps({"idx": i, "prediction": "p"}) + "\n" for i in range(3)))
    assert workdir.predictions_done(run_dir, "m1", "x") == 19
    assert not workdir.inference_finished(run_dir, "m1", "x")
    put_json(folder / "x_1.json", {str(i): {"prediction": "p"} for i in range(4)})
    assert workdir.predictions_done(run_dir, "m1", "x") == 20  # tmp_x_1 not counted twice
    partial.unlink()
    assert workdir.prediction_shards(run_dir, "m1", "x") == [folder / "x_0.json", folder / "x_1.json"]
    assert workdir.predictions_done(run_dir, "m1", "x") == 20 and workdir.inference_finished(run_dir, "m1", "x")


def test_iter_samples_reads_split_predictions(run_dir):
    # 12 shards: x_10 and x_11 come after x_9 (shard number, not name order); keys restart at 0 in each
    # shard and go past 9 in the first (numeric, not name order); SampleRow.index is the dataset position.
    sizes = [12] + [1] * 11
    offset = 0
    for part, size in enumerate(sizes):
        put_json(run_dir / "predictions" / "m1" / f"x_{part}.json",
                 {str(i): {"origin_prompt": f"Q{offset + i}", "prediction": "p", "gold": "g"} for i in range(size)})  # fmt: skip
        offset += size
    total = sum(sizes)
    details = [{"correct": [i % 3 != 0]} for i in range(total)]
    put_json(workdir.results_file(run_dir, "m1", "x"), {"accuracy": 50.0, "details": details})
    rows = list(iter_samples(run_dir, "m1", "x"))
    assert [r.prompt for r in rows] == [f"Q{i}" for i in range(total)]
    assert [r.index for r in rows] == list(range(total))
    assert [r.correct for r in rows] == [i % 3 != 0 for i in range(total)]
    assert [p["origin_prompt"] for p in workdir.read_predictions(run_dir, "m1", "x")] == [f"Q{i}" for i in range(total)]


def test_another_dataset_named_like_a_shard_is_not_read_as_one(run_dir, tmp_path):
    from aieval_engine.config_builder import build_config
    from aieval_engine.spec import parse_spec

    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n', encoding="utf-8")
    spec = parse_spec(
        {
            "models": [{"kind": "huggingface", "name": "m1", "path": "/models/m1"}],
            "datasets": [{"kind": "custom", "name": n, "path": str(data)} for n in ("exam", "exam_0", "exam_2")],
        }
    )
    abbrs = [d.abbr for d in build_config(spec, tmp_path / "job").datasets]
    folder = run_dir / "predictions" / "m1"
    put_json(folder / f"{abbrs[1]}.json", {"0": {"prediction": "p"}})  # dataset 'exam_0' finished
    (folder / f"tmp_{abbrs[2]}.jsonl").write_text('{"idx": 0}\n')  # dataset 'exam_2' running
    assert workdir.predictions_done(run_dir, "m1", abbrs[0]) is None  # 'exam' has not started
    assert not workdir.inference_finished(run_dir, "m1", abbrs[0])
    assert workdir.read_predictions(run_dir, "m1", abbrs[0]) == []


def test_resolved_datasets_tell_which_builtin_config_each_abbr_came_from(tmp_path):
    run = tmp_path / "outputs" / "20260101_000000"
    (run / "configs").mkdir(parents=True)
    (run / "configs" / "20260101_000000_1.py").write_text(
        "builtin_2_mmlu_datasets=[dict(abbr='mmlu_a'), dict(abbr='mmlu_b')]\n"
        "builtin_0_gsm8k_datasets=[dict(abbr='gsm8k', reader_cfg=dict(test_range='[0:4]'))]\n"
        "datasets=[dict(abbr='gsm8k', reader_cfg=dict(test_range='[0:4]')), dict(abbr='mine'),"
        " dict(abbr='mmlu_a'), dict(abbr='mmlu_b')]\n",
        encoding="utf-8",
    )
    resolved = workdir.resolved_datasets(run)
    assert [(d.abbr, d.builtin_index, d.test_range) for d in resolved] == [
        ("gsm8k", 0, "[0:4]"), ("mine", None, None), ("mmlu_a", 2, None), ("mmlu_b", 2, None)]


def test_generic_gen_details_of_exact_match_give_each_sample_its_verdict(run_dir):
    # The shape AccEvaluator (exact match, OpenCompass' default for custom QA) writes: a "type" key beside the
    # numbered rows, and the compared values without a verdict.
    put_json(workdir.predictions_file(run_dir, "m1", "qa"), {
        "0": {"origin_prompt": "Q0", "prediction": "Paris", "gold": "Paris"},
        "1": {"origin_prompt": "Q1", "prediction": "It is Paris.", "gold": "Paris"},
    })
    put_json(workdir.results_file(run_dir, "m1", "qa"), {"accuracy": 50.0, "details": {
        "type": "GEN",
        "0": {"predictions": "Paris", "references": "Paris"},
        "1": {"predictions": "It is Paris.", "references": "Paris"},
    }})
    rows = list(iter_samples(run_dir, "m1", "qa"))
    assert [(r.index, r.prompt, r.correct) for r in rows] == [(0, "Q0", True), (1, "Q1", False)]


def test_a_per_sample_score_that_is_not_a_verdict_is_read_as_the_samples_score(run_dir):
    # mol_instructions_chem-style details: partial credit per sample under `score`, no verdict.
    predictions = {str(i): {"origin_prompt": f"Q{i}", "prediction": f"p{i}", "gold": f"g{i}"} for i in range(4)}
    put_json(workdir.predictions_file(run_dir, "m1", "partial"), predictions)
    details = [{"pred": "p0", "score": 0.75}, {"pred": "p1", "score": [0.2]}, {"pred": "p2", "score": True},
               {"pred": "p3", "score": "high"}]
    put_json(workdir.results_file(run_dir, "m1", "partial"), {"score": 31.67, "details": details})
    rows = list(iter_samples(run_dir, "m1", "partial"))
    assert [r.score for r in rows] == [0.75, 0.2, None, None]  # a bool or a word is not a score
    assert [r.correct for r in rows] == [None] * 4
