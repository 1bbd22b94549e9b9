"""Per-sample verdicts of a built-in config that OpenCompass scores with GenericLLMEvaluator and its plain
`generic_llmjudge_postprocess` (aime2024_llmjudge_gen_5e9f4f), which keeps only the judge's raw replies as details:
the engine swaps in oc_judge.generic_llmjudge_verdicts_postprocess, and the sample browser shows each sample's verdict
as OpenCompass' postprocessor read it, with a score equal to the `opencompass` CLI's on the stock config.

The data is four rows in AIME's file format written by the test (no AIME data ships here); the model under evaluation
and the judge are servers on 127.0.0.1 (tests/fake_judge.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_judge import DeterministicJudge, TableModel

from aieval_engine import workdir
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.spec import parse_spec

pytestmark = [pytest.mark.slow]
OPENCOMPASS = str(Path(sys.executable).parent / "opencompass")
CONFIG = "aime2024_llmjudge_gen_5e9f4f"
# (question, gold, the model's answer): the judge (fake_judge.grade_letter) says A when the answer contains the gold.
ROWS = [
    ("Find the remainder when 2^10 is divided by 1000.", "24", "2^10 = 1024, so the remainder is \\boxed{24}."),
    ("How many positive divisors does 360 have?", "24", "360 has \\boxed{12} divisors."),
    ("What is the sum of the first 20 odd numbers?", "400", "The sum is n^2 = \\boxed{400}."),
    ("Compute the number of subsets of a 5-element set.", "32", "I cannot work this one out."),
]
EXPECTED_VERDICTS = ["correct", "incorrect", "correct", "incorrect"]
# OpenCompass' default judge (GenericLLMEvaluator.default_judge_cfg) counts prompt tokens with tokenizer_path
# 'gpt-4o-2024-05-13', which offline falls back to a Hugging Face tokenizer of that name: a folder in the working dir.
OPENCOMPASS_JUDGE_TOKENIZER = "gpt-4o-2024-05-13"

CLI_CONFIG = """\
from mmengine.config import read_base

with read_base():
    from opencompass.configs.datasets.aime2024.{config} import aime2024_datasets

from opencompass.models import OpenAISDK

datasets = aime2024_datasets
models = [dict(
    type=OpenAISDK, abbr='table', path='table', key='not-a-secret', openai_api_base={url!r},
    tokenizer_path={tokenizer!r}, temperature=0.0, max_seq_len=4096, max_out_len=256, batch_size=4,
    query_per_second=100, retry=1,
    meta_template=dict(round=[dict(role='HUMAN', api_role='HUMAN'), dict(role='BOT', api_role='BOT', generate=True)]),
    run_cfg=dict(num_gpus=0),
)]
"""


@pytest.fixture
def aime_cache(tmp_path) -> Path:
    """A COMPASS_DATA_CACHE holding data/aime.jsonl, where the config's path 'opencompass/aime2024' is read from."""
    cache = tmp_path / "compass-cache"
    (cache / "data").mkdir(parents=True)
    with open(cache / "data" / "aime.jsonl", "w", encoding="utf-8") as handle:
        for question, gold, _ in ROWS:
            handle.write(json.dumps({"origin_prompt": question, "gold_answer": gold}) + "\n")
    return cache


@pytest.fixture
def servers():
    judge, model = DeterministicJudge(), TableModel({question: answer for question, _, answer in ROWS})
    yield judge, model
    judge.close()
    model.close()


def run_cli(tmp_path: Path, tiny_model_dir: Path, cache: Path, model_url: str, judge_url: str) -> Path:
    work = tmp_path / "cli"
    work.mkdir()
    config = work / "aime_llmjudge_stock.py"
    config.write_text(CLI_CONFIG.format(config=CONFIG, url=model_url + "/", tokenizer=str(tiny_model_dir)),
                      encoding="utf-8")
    (work / OPENCOMPASS_JUDGE_TOKENIZER).symlink_to(tiny_model_dir, target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COMPASS_DATA_CACHE": str(cache), "OC_JUDGE_MODEL": "judge-1",
           "OC_JUDGE_API_KEY": "not-a-secret", "OC_JUDGE_API_BASE": judge_url}
    completed = subprocess.run([OPENCOMPASS, str(config), "--debug", "-w", str(work / "out")], cwd=work, env=env,
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = [p for p in (work / "out").iterdir() if p.is_dir()]
    return run_dir


def test_generic_llmjudge_configs_get_per_sample_verdicts_and_the_cli_score(tmp_path, tiny_model_dir, aime_cache,
                                                                           servers, warm_launcher):
    judge, model = servers
    spec = parse_spec({
        "models": [{"kind": "openai", "name": "table", "base_url": model.url, "model": "table", "concurrency": 4,
                    "query_per_second": 100, "retries": 1, "max_out_len": 256}],
        "datasets": [{"kind": "builtin", "config": CONFIG}],
        "judge": {"model": {"kind": "openai", "name": "grader", "base_url": judge.url, "model": "judge-1",
                            "query_per_second": 100}},
    })
    result = Evaluation(spec, tmp_path / "job", data_cache=aime_cache, launcher=warm_launcher).run()
    assert result.ok, (result.error, result.log_excerpt)
    assert judge.calls == len(ROWS)
    (pair,) = result.pairs
    ours = json.loads(workdir.results_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text())

    samples = list(iter_samples(result.run_dir, pair.model_abbr, pair.dataset_abbr))
    assert [s.judge_verdict for s in samples] == EXPECTED_VERDICTS
    assert [s.correct for s in samples] == [v == "correct" for v in EXPECTED_VERDICTS]
    assert [s.judge_rationale for s in samples] == ["A", "B", "A", "B"]  # the judge's raw reply
    assert ours["accuracy"] == 100 * sum(s.correct for s in samples) / len(samples) == 50.0

    cli_run = run_cli(tmp_path, tiny_model_dir, aime_cache, model.url, judge.url)
    theirs = json.loads(workdir.results_file(cli_run, "table", pair.dataset_abbr).read_text())
    metrics = {key: value for key, value in theirs.items() if key != "details"}
    assert {key: value for key, value in ours.items() if key != "details"} == metrics
    # The CLI's details are the judge's raw outputs; ours are the same with the verdict added.
    assert [{k: v for k, v in d.items() if not k.startswith("judge_")} for d in ours["details"]] == theirs["details"]


def test_a_reply_opencompass_cannot_grade_is_unparsed_and_not_correct(tmp_path):
    from opencompass.datasets.generic import generic_llmjudge_postprocess

    from aieval_engine.oc_judge import generic_llmjudge_verdicts_postprocess

    def output():
        replies = ["A", "B", "I would rather not say.", "CORRECT"]  # "CORRECT" holds a C, and no A or B
        return {str(i): {"origin_prompt": f"q{i}", "prediction": reply, "gold": "1"} for i, reply in enumerate(replies)}

    path = str(tmp_path / "judged.json")
    ours = generic_llmjudge_verdicts_postprocess(output(), path)
    theirs = generic_llmjudge_postprocess(output(), path)
    assert {k: v for k, v in ours.items() if k != "details"} == {k: v for k, v in theirs.items() if k != "details"}
    assert [d["judge_verdict"] for d in ours["details"].values()] == ["correct", "incorrect", "unparsed", "unparsed"]
    # The config's own tags are honoured, as OpenCompass honours them.
    tagged = generic_llmjudge_verdicts_postprocess(output(), path, true_tag="CORRECT", false_tag="B")
    assert [d["judge_verdict"] for d in tagged["details"].values()] == ["unparsed", "incorrect", "unparsed", "correct"]
