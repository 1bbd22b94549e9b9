"""A job run as parts (services/fanout.py), merged by the engine (`Evaluation.merge_parts`), equals the job run whole:
one uploaded dataset cut into two shards that only infer (`shard`), the other run by a part of its own (`datasets`);
the merge scores the shards with OpenCompass' own evaluation stage, which reads `<abbr>_0.json, <abbr>_1.json` as the
predictions of `<abbr>`. Real OpenCompass runs with the tiny model."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from aieval_engine import workdir
from aieval_engine.config_builder import DatasetShard, shard_ranges
from aieval_engine.demo import DEMO_DATA
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = pytest.mark.slow
BATCH = 4


def spec_of(model_dir):
    return parse_spec({
        "name": "sharded",
        "models": [{"kind": "huggingface", "name": "tiny", "path": str(model_dir), "batch_size": BATCH}],
        "datasets": [
            {"kind": "custom", "name": "demo-mcq", "path": str(DEMO_DATA / "demo_mcq.jsonl")},
            {"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl"), "scorer": "contains"},
        ],
        "params": {"max_out_len": 16},
    })


def scores(result) -> list[tuple]:
    return [(s.model, s.dataset, s.dataset_abbr, s.metric, s.value, s.dataset_index) for s in result.scores]


def samples(result) -> list[dict]:
    return [asdict(row) for pair in result.pairs for row in iter_samples(result.run_dir, pair.model_abbr,
                                                                         pair.dataset_abbr)]


def test_shards_and_dataset_parts_merged_equal_the_whole_run(tmp_path, tiny_model_dir, warm_launcher):
    spec = spec_of(tiny_model_dir)
    whole = Evaluation(spec, tmp_path / "whole", launcher=warm_launcher).run()
    assert whole.status == "succeeded", whole.error

    ranges = shard_ranges(12, 2, BATCH)  # demo_mcq's 12 rows: [0, 8) and [8, 12), whole batches of 4
    assert ranges == [(0, 8), (8, 12)]
    parts = [tmp_path / "parts" / str(i) for i in range(3)]
    for index, (start, stop) in enumerate(ranges):
        shard = Evaluation(spec, parts[index], launcher=warm_launcher,
                           shard=DatasetShard(dataset=0, index=index, start=start, stop=stop)).run()
        assert shard.status == "succeeded", shard.error
        assert shard.scores == [] and [p.dataset_abbr for p in shard.pairs] == [f"demo-mcq_{index}"]
        assert not (shard.run_dir / "results").exists()  # a shard only infers
    other = Evaluation(spec, parts[2], launcher=warm_launcher, datasets=[1]).run()
    assert other.status == "succeeded", other.error
    assert [p.dataset_abbr for p in other.pairs] == ["demo-qa"]

    merged = Evaluation(spec, tmp_path / "merged", launcher=warm_launcher).merge_parts(parts)
    assert merged.status == "succeeded", merged.error
    # OpenCompass scored the shards as one dataset: no whole prediction file was written, the shards' are read
    assert not workdir.predictions_file(merged.run_dir, "tiny", "demo-mcq").exists()
    assert [p.name for p in workdir.prediction_shards(merged.run_dir, "tiny", "demo-mcq")] == [
        "demo-mcq_0.json", "demo-mcq_1.json"]
    assert scores(merged) == scores(whole) and len(scores(whole)) >= 2
    assert [(p.model_abbr, p.dataset_abbr, p.ok) for p in merged.pairs] == [
        (p.model_abbr, p.dataset_abbr, p.ok) for p in whole.pairs]
    for dataset in ("demo-mcq", "demo-qa"):
        ours = json.loads(workdir.results_file(merged.run_dir, "tiny", dataset).read_text())
        theirs = json.loads(workdir.results_file(whole.run_dir, "tiny", dataset).read_text())
        assert ours == theirs  # scores and every sample's details
    assert samples(merged) == samples(whole) and len(samples(whole)) == 20
    # the merged run's dumped config is the whole job's (what provenance and re-scores read)
    assert [d.abbr for d in workdir.resolved_datasets(merged.run_dir)] == ["demo-mcq", "demo-qa"]
