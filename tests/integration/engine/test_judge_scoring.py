"""LLM-as-judge scoring through real OpenCompass: a question-answer file scored "judge" (OpenCompass'
GenericLLMEvaluator with our prompt), the judge call cache, and re-scoring a finished run without inference.

The judge and the evaluated model are real HTTP servers on 127.0.0.1 (tests/fake_judge.py): the model answers each
question from a table, the judge says "correct" exactly when the answer contains the reference, so every verdict
and rationale is known in advance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fake_judge import DeterministicJudge, TableModel, judge_reply

from aieval_engine import workdir
from aieval_engine.results import iter_samples
from aieval_engine.runner import Evaluation
from aieval_engine.spec import SpecError, parse_spec

pytestmark = pytest.mark.slow

ROWS = [
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is Tokyo."),
    ("How many legs does a spider have?", "8", "A spider has six legs."),
    ("Which planet is known as the red planet?", "Mars", "It is Mars, the fourth planet."),
    ("What is the chemical symbol of gold?", "Au", "Gold is written Ag."),
]
ZH_ROWS = [
    ("中国的首都是哪座城市？", "北京", "中国的首都是北京。"),
    ("一年有多少个月？", "12", "一年有十个月。"),
]


@pytest.fixture
def servers():
    judge = DeterministicJudge()
    model = TableModel({question: answer for question, _, answer in ROWS + ZH_ROWS})
    yield judge, model
    judge.close()
    model.close()


def write_qa(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a, _ in rows),
                    encoding="utf-8")
    return path


def endpoint(name: str, url: str, model: str) -> dict:
    return {"kind": "openai", "name": name, "base_url": url, "model": model, "concurrency": 2,
            "query_per_second": 100, "retries": 1}


def judge_spec(tmp_path: Path, servers, scorer: str = "judge", with_judge: bool = True) -> dict:
    judge, model = servers
    spec = {
        "name": "judged",
        "models": [endpoint("table model", model.url, "table")],
        "datasets": [
            {"kind": "custom", "name": "facts", "path": str(write_qa(tmp_path / "facts.jsonl", ROWS)), "scorer": scorer},
            {"kind": "custom", "name": "facts-zh", "path": str(write_qa(tmp_path / "facts_zh.jsonl", ZH_ROWS)),
             "scorer": scorer},
        ],
        "params": {"max_out_len": 64},
    }
    if with_judge:
        spec["judge"] = {"model": endpoint("deterministic judge", judge.url, "judge-1")}
    return spec


def samples(result, dataset_abbr: str):
    (model_abbr,) = {p.model_abbr for p in result.pairs}
    return list(iter_samples(result.run_dir, model_abbr, dataset_abbr))


def expected_verdicts(rows, language: str):
    verdicts = []
    for _, reference, answer in rows:
        reply = judge_reply(language, reference, answer)
        verdict = "correct" if reference.lower() in answer.lower() else "incorrect"
        verdicts.append((verdict, reply.splitlines()[0]))
    return verdicts


def test_a_judge_scores_qa_answers_per_sample_and_the_cache_spares_a_second_run(tmp_path, servers, warm_launcher):
    judge, model = servers
    cache = tmp_path / "judge-cache.sqlite"
    spec = parse_spec(judge_spec(tmp_path, servers))
    first = Evaluation(spec, tmp_path / "job1", launcher=warm_launcher, judge_cache=cache).run()
    assert first.ok, (first.error, first.log_excerpt)
    assert judge.calls == len(ROWS) + len(ZH_ROWS)
    assert model.calls == len(ROWS) + len(ZH_ROWS)

    scores = {(s.dataset, s.metric): s.value for s in first.scores}
    assert scores == {("facts", "accuracy"): 50.0, ("facts-zh", "accuracy"): 50.0}
    for abbr, rows, language in (("facts", ROWS, "en"), ("facts-zh", ZH_ROWS, "zh")):
        got = samples(first, abbr)
        assert [(s.judge_verdict, s.judge_rationale) for s in got] == expected_verdicts(rows, language)
        assert [s.correct for s in got] == [v == "correct" for v, _ in expected_verdicts(rows, language)]
        assert [s.prediction for s in got] == [answer for _, _, answer in rows]
    # The prompt language follows the questions: the Chinese file was judged with the Chinese prompt.
    prompts = [m["content"] for r in judge.requests for m in r["messages"]]
    assert sum("[待评回答]" in p for p in prompts) == len(ZH_ROWS)
    assert sum("[Candidate answer]" in p for p in prompts) == len(ROWS)

    # The same answers judged again: every reply comes from the cache, the scores are the same.
    second = Evaluation(spec, tmp_path / "job2", launcher=warm_launcher, judge_cache=cache).run()
    assert second.ok, (second.error, second.log_excerpt)
    assert judge.calls == len(ROWS) + len(ZH_ROWS)  # no new judge call
    assert [(s.dataset, s.value) for s in second.scores] == [(s.dataset, s.value) for s in first.scores]
    assert [s.judge_rationale for s in samples(second, "facts")] == [s.judge_rationale for s in samples(first, "facts")]

    # Without a cache file every run asks the judge.
    third = Evaluation(spec, tmp_path / "job3", launcher=warm_launcher).run()
    assert third.ok and judge.calls == 2 * (len(ROWS) + len(ZH_ROWS))


def test_rescoring_a_finished_run_with_a_judge_makes_no_model_call(tmp_path, servers, warm_launcher):
    judge, model = servers
    exact = Evaluation(parse_spec(judge_spec(tmp_path, servers, scorer="exact", with_judge=False)),
                       tmp_path / "exact", launcher=warm_launcher).run()
    assert exact.ok, (exact.error, exact.log_excerpt)
    assert [s.value for s in exact.scores] == [0.0, 0.0]  # no answer equals its reference word for word
    assert model.calls == len(ROWS) + len(ZH_ROWS) and judge.calls == 0

    rescore = Evaluation(parse_spec(judge_spec(tmp_path, servers)), tmp_path / "rescore", launcher=warm_launcher,
                         rescore_from=exact.job_dir, judge_cache=tmp_path / "cache.sqlite")
    result = rescore.run()
    assert result.ok, (result.error, result.log_excerpt)
    assert model.calls == len(ROWS) + len(ZH_ROWS)  # inference did not run again
    assert judge.calls == len(ROWS) + len(ZH_ROWS)
    assert {s.dataset: s.value for s in result.scores} == {"facts": 50.0, "facts-zh": 50.0}
    for pair in result.pairs:
        ours = workdir.predictions_file(result.run_dir, pair.model_abbr, pair.dataset_abbr).read_bytes()
        theirs = workdir.predictions_file(exact.run_dir, pair.model_abbr, pair.dataset_abbr).read_bytes()
        assert ours == theirs
    assert [s.judge_verdict for s in samples(result, "facts")] == ["correct", "incorrect", "correct", "incorrect"]
    manifest = json.loads((result.job_dir / "job.json").read_text())
    assert manifest["rescored_from"] == str(exact.run_dir)


def test_a_rescore_of_other_models_is_refused(tmp_path, servers):
    judge, model = servers
    source = tmp_path / "source" / "outputs" / "20250101_000000"
    (source / "predictions" / "someone-else").mkdir(parents=True)
    (tmp_path / "source" / "job.json").write_text(json.dumps({"models": {"someone-else": "x"}, "custom_datasets": {}}))
    (tmp_path / "source" / "manifest.json").write_text(json.dumps(
        {"datasets": [{"kind": "custom", "name": "facts", "sha256": "0" * 64}]}))
    evaluation = Evaluation(parse_spec(judge_spec(tmp_path, servers)), tmp_path / "job", rescore_from=source)
    with pytest.raises(SpecError) as error:
        evaluation.prepare()
    assert "evaluated other models" in str(error.value)
    assert "has no predictions of model 'table_model" in str(error.value)
    assert "the file of dataset 'facts' changed since" in str(error.value)


@pytest.mark.endpoint
def test_a_real_model_server_judges_and_its_replies_are_cached(tmp_path, llama_server, warm_launcher):
    """SmolLM2 behind llama.cpp's OpenAI-compatible server as both the evaluated model and the judge: a real judge's
    replies go through the same path (verdict or 'unparsed', rationale, cache)."""
    from aieval_engine.demo import DEMO_DATA

    smollm2 = endpoint("smollm2", llama_server, "smollm2")
    spec = parse_spec({
        "models": [smollm2],
        "datasets": [{"kind": "custom", "name": "demo-qa", "path": str(DEMO_DATA / "demo_qa.jsonl"),
                      "scorer": "judge"}],
        "judge": {"model": {**smollm2, "name": "smollm2 judge", "max_out_len": 96}},
        "params": {"limit": 3, "max_out_len": 32},
    })
    cache = tmp_path / "judge-cache.sqlite"
    first = Evaluation(spec, tmp_path / "job1", launcher=warm_launcher, judge_cache=cache).run()
    assert first.ok, (first.error, first.log_excerpt)
    rows = samples(first, "demo-qa")
    assert len(rows) == 3
    assert all(r.judge_verdict in ("correct", "incorrect", "unparsed") for r in rows)
    assert all(isinstance(r.judge_rationale, str) and r.judge_rationale for r in rows)
    assert [s.value for s in first.scores] == [100 * sum(r.correct for r in rows) / 3]

    second = Evaluation(spec, tmp_path / "job2", launcher=warm_launcher, judge_cache=cache).run()
    assert second.ok, (second.error, second.log_excerpt)
    # OpenCompass asks the judge in batches (of the judge's concurrency): each batch was answered from the cache.
    hits = re.findall(r"judge: (\d+) of (\d+) replies from the cache", (second.job_dir / "run.log").read_text())
    assert hits and all(cached == asked for cached, asked in hits) and sum(int(a) for _, a in hits) == 3
    assert [r.judge_rationale for r in samples(second, "demo-qa")] == [r.judge_rationale for r in rows]


def test_a_local_checkpoint_can_judge(tmp_path, servers, tiny_model_dir, warm_launcher):
    """A Hugging Face checkpoint as the judge (the tiny random model: its replies are noise, so 'unparsed')."""
    _, model = servers
    data = judge_spec(tmp_path, servers)
    data["datasets"] = data["datasets"][:1]
    data["judge"] = {"model": {"kind": "huggingface", "name": "tiny judge", "path": str(tiny_model_dir),
                               "max_out_len": 8}}
    cache = tmp_path / "judge-cache.sqlite"
    first = Evaluation(parse_spec(data), tmp_path / "job1", launcher=warm_launcher, judge_cache=cache).run()
    assert first.ok, (first.error, first.log_excerpt)
    rows = samples(first, "facts")
    assert [r.judge_verdict for r in rows] == ["unparsed"] * len(ROWS)
    assert [s.value for s in first.scores] == [0.0]
    second = Evaluation(parse_spec(data), tmp_path / "job2", launcher=warm_launcher, judge_cache=cache).run()
    assert second.ok, (second.error, second.log_excerpt)
    hits = re.findall(r"judge: (\d+) of (\d+) replies from the cache", (second.job_dir / "run.log").read_text())
    assert hits and all(cached == asked for cached, asked in hits) and sum(int(a) for _, a in hits) == len(ROWS)
    assert [r.judge_rationale for r in samples(second, "facts")] == [r.judge_rationale for r in rows]
