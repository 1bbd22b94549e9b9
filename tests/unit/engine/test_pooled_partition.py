"""The infer partitioner (oc_ext.QuickNumWorkerPartitioner) with real OpenCompass dataset configs: every pair on the
request pool goes into one task marked for oc_infer_task.PooledInferTask, unsplit; every other pair is partitioned
exactly as OpenCompass' NumWorkerPartitioner does; a pair whose predictions exist is skipped either way."""

from __future__ import annotations

import copy
import json

from mmengine.config import ConfigDict
from opencompass.datasets.custom import make_custom_dataset_config
from opencompass.partitioners import NumWorkerPartitioner
from opencompass.utils import dataset_abbr_from_cfg, model_abbr_from_cfg

from aieval_engine.oc_ext import QuickNumWorkerPartitioner
from aieval_engine.oc_infer_task import POOLED_TASK, PooledInferTask
from aieval_engine.oc_pool import CONTINUOUS_INFERENCER

ENDPOINT = {"type": "SecretKeyOpenAISDK", "abbr": "endpoint", "path": "m", "openai_api_base": "http://127.0.0.1:9/v1",
            "request_pool": {"concurrency": 4, "max_concurrency": 256, "query_per_second": None}}
LOCAL = {"type": "HuggingFacewithChatTemplate", "abbr": "local", "path": "/models/tiny", "run_cfg": {"num_gpus": 0}}


def dataset(tmp_path, name: str, rows: int, infer_method: str = "gen") -> ConfigDict:
    """A question-answer file (gen), or a multiple-choice one (ppl: OpenCompass scores its choices' likelihoods)."""
    path = tmp_path / f"{name}.jsonl"
    choices = {"A": "1", "B": "2", "C": "3", "D": "4"} if infer_method == "ppl" else {}
    path.write_text("".join(json.dumps({"question": f"q{i}", **choices, "answer": "A"}) + "\n" for i in range(rows)))
    return ConfigDict(make_custom_dataset_config({"path": str(path), "abbr": name, "infer_method": infer_method,
                                                  "data_type": "mcq" if choices else "qa"}))


def pairs(task) -> list[tuple[str, str]]:
    return [(model_abbr_from_cfg(model), dataset_abbr_from_cfg(d))
            for model, datasets in zip(task["models"], task["datasets"], strict=True) for d in datasets]


def test_pooled_pairs_make_one_unsplit_task_and_the_others_are_partitioned_as_opencompass_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # NumWorkerPartitioner makes a .cache/ folder where it runs
    gen = [dataset(tmp_path, "a", 40), dataset(tmp_path, "b", 40)]
    ppl = dataset(tmp_path, "c", 40, "ppl")
    second = {**ENDPOINT, "abbr": "endpoint-2"}
    out = tmp_path / "predictions"
    (out / "endpoint-2").mkdir(parents=True)
    (out / "endpoint-2" / "b.json").write_text("{}")  # finished before a resume: not inferred again
    combinations = [{"models": [ConfigDict(ENDPOINT), ConfigDict(second), ConfigDict(LOCAL)],
                     "datasets": [*gen, ppl]}]
    options = {"out_dir": str(out), "num_worker": 3, "dataset_size_path": str(tmp_path / "sizes.json")}
    tasks = QuickNumWorkerPartitioner(**options).partition(copy.deepcopy(combinations), "work", str(out))

    pooled, *others = tasks
    assert pooled[POOLED_TASK] is True and pooled["work_dir"] == "work"
    assert pairs(pooled) == [("endpoint", "a"), ("endpoint", "b"), ("endpoint-2", "a")]
    assert not any(POOLED_TASK in task for task in others)
    # The rest: what NumWorkerPartitioner makes of the same pairs (the pooled model's ppl dataset, the local model).
    rest = [{"models": [ConfigDict(ENDPOINT)], "datasets": [ppl]}, {"models": [ConfigDict(second)], "datasets": [ppl]},
            {"models": [ConfigDict(LOCAL)], "datasets": [*gen, ppl]}]
    stock = NumWorkerPartitioner(**options).partition(copy.deepcopy(rest), "work", str(out))
    assert [pairs(task) for task in others] == [pairs(task) for task in stock]
    assert ("local", "a_0") in [pair for task in others for pair in pairs(task)]  # split into shards, as before

    # The whole call: the pool swapped in for GenInferencer, and the pooled task runs its own command.
    built = QuickNumWorkerPartitioner(**options)(ConfigDict(
        models=[ConfigDict(ENDPOINT)], datasets=gen, work_dir="work"))
    assert len(built) == 1 and built[0][POOLED_TASK]
    assert {d["infer_cfg"]["inferencer"]["type"] for d in built[0]["datasets"][0]} == {CONTINUOUS_INFERENCER}
    command = PooledInferTask(built[0]).get_command("task.py", "{task_cmd}")
    assert command.endswith("-m aieval_engine.oc_infer_task task.py")


def test_a_job_without_pooled_pairs_is_partitioned_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen = [dataset(tmp_path, "a", 40), dataset(tmp_path, "b", 10)]
    out = tmp_path / "predictions"
    options = {"out_dir": str(out), "num_worker": 2, "dataset_size_path": str(tmp_path / "sizes.json")}
    combinations = [{"models": [ConfigDict(LOCAL)], "datasets": gen}]
    ours = QuickNumWorkerPartitioner(**options).partition(copy.deepcopy(combinations), "work", str(out))
    stock = NumWorkerPartitioner(**options).partition(copy.deepcopy(combinations), "work", str(out))
    assert [pairs(task) for task in ours] == [pairs(task) for task in stock]
    assert not any(POOLED_TASK in task for task in ours)
    command = PooledInferTask(ours[0]).get_command("task.py", "{task_cmd}")
    assert command.endswith("opencompass/tasks/openicl_infer.py task.py")  # OpenCompass' own script
