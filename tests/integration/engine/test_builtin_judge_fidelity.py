"""A built-in config that OpenCompass scores with a judge model (gsm8k_cascade_eval_rawprompt_gen_36fce7: its
MATHVerifyEvaluator first, then a GenericLLMEvaluator with `judge_cfg=dict()` for what the rule rejects), run through
the engine with the spec's judge, equals the `opencompass` CLI on the stock config with the judge given the way
OpenCompass documents it (OC_JUDGE_MODEL / OC_JUDGE_API_KEY / OC_JUDGE_API_BASE): same predictions, same judge
replies, same score.

The config's prompt is a RawPromptTemplate (OpenAI-style messages), which OpenCompass' Hugging Face chat class cannot
read (KeyError 'prompt', in the CLI too), so the model under evaluation is an endpoint: a server on 127.0.0.1 that
answers each of the first GSM8K questions with a fixed text, and the judge is another (tests/fake_judge.py)."""

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
from aieval_engine.spec import SpecError, parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.gsm8k]
OPENCOMPASS = str(Path(sys.executable).parent / "opencompass")
CONFIG = "gsm8k_cascade_eval_rawprompt_gen_36fce7"
LIMIT = 4
MAX_OUT_LEN = 256
# OpenCompass' default judge (GenericLLMEvaluator.default_judge_cfg) counts tokens with tokenizer_path
# 'gpt-4o-2024-05-13': tiktoken's vocabulary is a download, so offline it falls back to a Hugging Face tokenizer
# of that name, which a folder of that name in the working directory provides. It only counts prompt tokens.
OPENCOMPASS_JUDGE_TOKENIZER = "gpt-4o-2024-05-13"

CLI_CONFIG = """\
from mmengine.config import read_base

with read_base():
    from opencompass.configs.datasets.gsm8k.{config} import gsm8k_datasets

from opencompass.models import OpenAISDK

datasets = gsm8k_datasets
for dataset in datasets:
    dataset['reader_cfg']['test_range'] = '[0:{limit}]'

models = [dict(
    type=OpenAISDK, abbr='table', path='table', key='not-a-secret', openai_api_base={url!r},
    tokenizer_path={tokenizer!r}, temperature=0.0, max_seq_len=4096, max_out_len={max_out_len}, batch_size=4,
    query_per_second=100, retry=1,
    meta_template=dict(round=[dict(role='HUMAN', api_role='HUMAN'), dict(role='BOT', api_role='BOT', generate=True)]),
    run_cfg=dict(num_gpus=0),
)]
"""


def golds(cache: Path) -> list[tuple[str, str]]:
    """(question, gold number) of the first GSM8K test rows."""
    rows = []
    with open(cache / "data" / "gsm8k" / "test.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            rows.append((row["question"], row["answer"].split("####")[-1].strip().replace(",", "")))
            if len(rows) == LIMIT:
                return rows
    return rows


def answers(cache: Path) -> dict[str, str]:
    """Right in its box; the gold in the text but another number boxed; two without any number. The judge accepts the
    first two (tests/fake_judge.grade_letter): 50 %. (The config's rule step rejects all four here: it hands
    MATHVerify the bare last number that gsm8k_postprocess extracts, which MATHVerify's LaTeX extraction does not
    read; the same in the CLI. So every sample reaches the judge.)"""
    (q0, g0), (q1, g1), (q2, _), (q3, _) = golds(cache)
    return {
        q0: f"Working it out step by step gives {g0}, so the answer is \\boxed{{{g0}}}.",
        q1: f"Adding the parts gives {g1} in total. Final answer: \\boxed{{{int(g1) + 1}}}",
        q2: "I cannot work this one out.",
        q3: "There is not enough information to answer.",
    }


@pytest.fixture
def judge():
    server = DeterministicJudge()
    yield server
    server.close()


@pytest.fixture
def model(compass_cache_with_gsm8k):
    server = TableModel(answers(compass_cache_with_gsm8k))
    yield server
    server.close()


def spec(model_url: str, judge_url: str | None):
    data = {
        "models": [{"kind": "openai", "name": "table", "base_url": model_url, "model": "table", "concurrency": 4,
                    "query_per_second": 100, "retries": 1, "max_out_len": MAX_OUT_LEN}],
        "datasets": [{"kind": "builtin", "config": CONFIG}],
        "params": {"limit": LIMIT},
    }
    if judge_url:
        data["judge"] = {"model": {"kind": "openai", "name": "grader", "base_url": judge_url, "model": "judge-1",
                                   "query_per_second": 100}}
    return parse_spec(data)


def run_cli(tmp_path: Path, tiny_model_dir: Path, cache: Path, model_url: str, judge_url: str) -> Path:
    work = tmp_path / "cli"
    work.mkdir()
    config = work / "gsm8k_cascade_stock.py"
    config.write_text(CLI_CONFIG.format(config=CONFIG, limit=LIMIT, url=model_url + "/", tokenizer=str(tiny_model_dir),
                                        max_out_len=MAX_OUT_LEN), encoding="utf-8")
    (work / OPENCOMPASS_JUDGE_TOKENIZER).symlink_to(tiny_model_dir, target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COMPASS_DATA_CACHE": str(cache), "OC_JUDGE_MODEL": "judge-1",
           "OC_JUDGE_API_KEY": "not-a-secret", "OC_JUDGE_API_BASE": judge_url}
    completed = subprocess.run([OPENCOMPASS, str(config), "--debug", "-w", str(work / "out")], cwd=work, env=env,
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = [p for p in (work / "out").iterdir() if p.is_dir()]
    return run_dir


def llm_replies(result: dict) -> list[str | None]:
    return [(d.get("llm_evaluation") or [{}])[0].get("prediction") for d in result["details"]]


def test_a_builtin_judge_config_without_a_judge_is_refused(tmp_path):
    with pytest.raises(SpecError) as error:
        Evaluation(spec("http://127.0.0.1:9/v1", None), tmp_path / "job").prepare()
    assert f"{CONFIG} is scored by a judge model (OpenCompass' GenericLLMEvaluator): choose a judge model" in str(
        error.value)


def test_builtin_judge_config_matches_the_opencompass_cli(tmp_path, tiny_model_dir, compass_cache_with_gsm8k, judge,
                                                          model, warm_launcher):
    result = Evaluation(spec(model.url, judge.url), tmp_path / "job", data_cache=compass_cache_with_gsm8k,
                        launcher=warm_launcher).run()
    assert result.ok, (result.error, result.log_excerpt)
    engine_calls = judge.calls
    (pair,) = result.pairs
    ours = json.loads(workdir.results_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text())

    cli_run = run_cli(tmp_path, tiny_model_dir, compass_cache_with_gsm8k, model.url, judge.url)
    theirs = json.loads(workdir.results_file(cli_run, "table", pair.dataset_abbr).read_text())
    ours_pred = json.loads(workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_text())
    theirs_pred = json.loads(workdir.predictions_file(cli_run, "table", pair.dataset_abbr).read_text())

    assert [v["prediction"] for v in ours_pred.values()] == [v["prediction"] for v in theirs_pred.values()]
    assert len(ours_pred) == LIMIT
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["cascade_stats"] == theirs["cascade_stats"]
    # The judge was really asked, by both, about the same samples, and answered both the same.
    (stats,) = ours["cascade_stats"]
    assert stats["llm_evaluated"] == LIMIT
    assert engine_calls == stats["llm_evaluated"] == judge.calls - engine_calls
    assert llm_replies(ours) == llm_replies(theirs)
    assert ours["accuracy"] == 50.0  # rule or judge: the first two answers, not the last two
    # The sample browser's view: the judge's raw reply as the rationale, its verdict as OpenCompass read it.
    samples = list(iter_samples(result.run_dir, pair.model_abbr, pair.dataset_abbr))
    judged = [s for s in samples if s.judge_rationale is not None]
    assert len(judged) == stats["llm_evaluated"]
    assert all(s.judge_verdict == ("correct" if s.judge_rationale == "A" else "incorrect") for s in judged)
    assert [s.correct for s in samples] == [d["cascade_correct"][0] for d in ours["details"]]
    assert (sum(s.correct for s in samples) * 100 / LIMIT) == ours["accuracy"]
