"""LLM-as-judge without running OpenCompass: the spec rules, which built-in configs need a judge, the generated
config (user text only ever a constant), reading verdicts and rationales, the call cache, the fingerprint, and the
sample rows the sample browser shows."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import pytest

from aieval_engine.catalogue import resolve_builtin
from aieval_engine.config_builder import (
    REFERENCES,
    build_config,
    builtin_needs_judge,
    plan_datasets,
    scored_by_judge,
)
from aieval_engine.judge import (
    JUDGE_PROMPTS,
    JudgeCallCache,
    detect_prompt_language,
    parse_judgement,
)
from aieval_engine.results import iter_samples, judge_scorer_name
from aieval_engine.spec import SpecError, judge_fingerprint, parse_spec

JUDGE_CONFIG = "gsm8k_cascade_eval_rawprompt_gen_36fce7"


def judge_model(**overrides) -> dict:
    return {"kind": "openai", "name": "grader", "base_url": "http://127.0.0.1:8001/v1", "model": "judge-1",
            **overrides}


def spec_data(datasets: list[dict], judge: dict | None = None, **params) -> dict:
    data = {
        "models": [{"kind": "openai", "name": "m", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}],
        "datasets": datasets,
        "params": params,
    }
    if judge is not None:
        data["judge"] = judge
    return data


# ---- spec rules ---------------------------------------------------------------------------------------------
def test_the_judge_scorer_needs_a_judge(qa_file):
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file), "scorer": "judge"}]))
    assert error.value.problems == ["datasets[0] (qa): the 'judge' scorer needs a judge model: set `judge`"]
    spec = parse_spec(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file), "scorer": "judge"}],
                                {"model": judge_model()}))
    assert spec.judge.prompt_language == "auto" and spec.judge.model.model == "judge-1"


def test_the_judge_scorer_is_for_question_answer_files_only(mcq_file, tmp_path):
    declared = spec_data([{"kind": "custom", "name": "mcq", "path": str(mcq_file), "data_type": "mcq",
                           "scorer": "judge"}], {"model": judge_model()})
    with pytest.raises(SpecError, match="the 'judge' scorer is for question-answer files, not multiple choice"):
        parse_spec(declared)
    detected = parse_spec(spec_data([{"kind": "custom", "name": "mcq", "path": str(mcq_file), "scorer": "judge"}],
                                    {"model": judge_model()}))
    with pytest.raises(SpecError, match="the 'judge' scorer is for question-answer files, not multiple choice"):
        plan_datasets(detected)


@pytest.mark.parametrize("judge", [
    {"model": judge_model(name="a\nb")},
    {"model": judge_model(model="judge\n1")},
    {"model": judge_model(), "prompt_language": "fr"},
    {"model": judge_model(), "extra": 1},
])
def test_bad_judge_settings_are_refused_readably(judge, qa_file):
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file)}], judge))
    assert all(problem.startswith("judge.") for problem in error.value.problems), error.value.problems


def test_which_builtin_configs_are_scored_by_a_judge():
    assert builtin_needs_judge(resolve_builtin(JUDGE_CONFIG))  # a GenericLLMEvaluator inside a CascadeEvaluator
    assert not builtin_needs_judge(resolve_builtin("gsm8k_gen"))


def test_a_builtin_judge_config_without_a_judge_is_refused_by_name():
    spec = parse_spec(spec_data([{"kind": "builtin", "config": JUDGE_CONFIG}]))
    with pytest.raises(SpecError) as error:
        plan_datasets(spec)
    assert error.value.problems == [
        f"datasets[0] ({JUDGE_CONFIG}): {JUDGE_CONFIG} is scored by a judge model (OpenCompass' GenericLLMEvaluator): "
        "choose a judge model"]
    judged = parse_spec(spec_data([{"kind": "builtin", "config": JUDGE_CONFIG}, {"kind": "builtin",
                                   "config": "gsm8k_gen"}], {"model": judge_model()}))
    assert [d.needs_judge for d in plan_datasets(judged)] == [True, False]
    assert [scored_by_judge(judged, i) for i in range(2)] == [True, False]


# ---- the generated config -----------------------------------------------------------------------------------
HOSTILE = "x'); __import__('os').system('id'); y=(\"\"\"名前"
JUDGE_LOOP_NAMES = {"judge_model", "judge_pending", "judge_node", "judge_type", "isinstance", "list", "tuple", "type",
                    "str", "k", "v"}
CONFIG_NAMES = {"read_base", "datasets", "gen_datasets", "ppl_datasets", "models", "ppl_models", "dataset", "dict",
                "infer", "eval", "model_dataset_combinations"}


def assert_user_text_is_constant(text: str, hostile: str) -> ast.Module:
    tree = ast.parse(text)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    unexpected = {n for n in names if not n.startswith("builtin_")} - set(REFERENCES) - CONFIG_NAMES - JUDGE_LOOP_NAMES
    assert not unexpected, unexpected
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert any(hostile in s for s in strings)
    code = " ".join(tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                    if tok.type not in (tokenize.STRING, tokenize.COMMENT))
    for fragment in ("__import__", "system", "名前"):
        assert fragment not in code
    return tree


def test_judge_settings_reach_the_config_only_as_constants(tmp_path, write_jsonl):
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Capital of Japan?", "answer": "Tokyo"}])
    spec = parse_spec(spec_data(
        [{"kind": "custom", "name": "qa", "path": str(qa), "scorer": "judge"}, {"kind": "builtin", "config": JUDGE_CONFIG}],
        {"model": judge_model(name=f"grader {HOSTILE}", model=HOSTILE, base_url="http://127.0.0.1:8001/v1/a'b\"c",
                              api_key="sk-judge-NEVER-IN-FILES")},
        limit=3))
    built = build_config(spec, tmp_path / "job", judge_cache=tmp_path / "cache.sqlite")
    tree = assert_user_text_is_constant(built.text, HOSTILE)
    assert "sk-judge-NEVER-IN-FILES" not in built.text
    assert built.secret_env == {"AIEVAL_JUDGE_API_KEY": "sk-judge-NEVER-IN-FILES"}
    assert f"grader {HOSTILE}" not in built.text  # the display name is metadata, not config
    # The custom file is scored by OpenCompass' GenericLLMEvaluator with our English prompt and our postprocessor.
    gen = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "gen_datasets")
    custom = gen.elts[0]
    fields = {k.value: v for k, v in zip(custom.keys, custom.values, strict=True)}
    assert fields["evaluator"].id == "GenericLLMEvaluator"
    kwargs = {k.value: v for k, v in zip(fields["evaluator_kwargs"].keys, fields["evaluator_kwargs"].values,
                                          strict=True)}
    assert JUDGE_PROMPTS["en"] in ast.literal_eval(ast.unparse(kwargs["prompt_template"]).replace(
        "PromptTemplate", "None"))["template"]["round"][0]["prompt"]
    assert "judge_verdict_postprocess" in ast.unparse(kwargs["dict_postprocessor"])
    assert "'test_range': '[0:3]'" in ast.unparse(kwargs["dataset_cfg"])
    judge_cfg = ast.unparse(kwargs["judge_cfg"])
    assert "CachedJudgeOpenAISDK" in judge_cfg and "'key_env': 'AIEVAL_JUDGE_API_KEY'" in judge_cfg
    assert str((tmp_path / "cache.sqlite").resolve()) in judge_cfg
    # The built-in's empty judge_cfg is filled with the same judge by a data edit.
    assert "judge_node['judge_cfg'] = judge_model" in built.text


def test_a_judge_prompt_follows_the_questions_language_unless_set(tmp_path, write_jsonl):
    zh = write_jsonl(tmp_path / "zh.jsonl", [{"question": "日本的首都是哪里？", "answer": "东京"},
                                             {"question": "What is 1+1? 一加一等于几？", "answer": "2"}])
    for language, expected in (("auto", "zh"), ("en", "en")):
        spec = parse_spec(spec_data([{"kind": "custom", "name": "zh", "path": str(zh), "scorer": "judge"}],
                                    {"model": judge_model(), "prompt_language": language}))
        text = build_config(spec, tmp_path / f"job-{language}").text
        assert repr(JUDGE_PROMPTS[expected]) in text
    assert detect_prompt_language(["Capital of Japan?", "日本"]) == "en"
    assert detect_prompt_language(["日本的首都是哪里？", "Tokyo?"]) == "zh"


def test_a_judge_is_only_configured_when_something_is_judged(tmp_path, qa_file):
    spec = parse_spec(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file)}], {"model": judge_model()}))
    built = build_config(spec, tmp_path / "job", judge_cache=tmp_path / "cache.sqlite")
    assert "CachedJudge" not in built.text and "judge_model" not in built.text


# ---- verdicts and rationales ----------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, verdict, rationale", [
    ("The answer names Tokyo, as the reference does.\nVerdict: CORRECT", "correct",
     "The answer names Tokyo, as the reference does."),
    ("Rationale: the candidate says 6, the reference 8.\nVerdict: INCORRECT", "incorrect",
     "the candidate says 6, the reference 8."),
    ("**Verdict:** correct", "correct", ""),
    ("It is not correct that 6 equals 8, so this is wrong.\n\nFinal verdict: incorrect.", "incorrect",
     "It is not correct that 6 equals 8, so this is wrong."),
    # a reasoning model's hidden thoughts are neither verdict nor rationale (the raw reply is kept beside them)
    ("<think>Verdict: CORRECT? no...</think>The numbers differ.\nVerdict: INCORRECT", "incorrect",
     "The numbers differ."),
    ("待评回答给出的答案是北京，与参考答案一致。\n结论：正确", "correct", "待评回答给出的答案是北京，与参考答案一致。"),
    ("理由：回答是十个月，参考答案是12。\n结论: 错误", "incorrect", "回答是十个月，参考答案是12。"),
    ("最终结论：不正确", "incorrect", ""),
    ("The candidate is right.\nCORRECT", "correct", "The candidate is right."),
    ("I think the answer might be right, the verdict is correct.", "unparsed",
     "I think the answer might be right, the verdict is correct."),
    # the last verdict line counts, wherever it is
    ("Verdict: INCORRECT\nOn reflection the units match.\nVerdict: CORRECT\nThanks.", "correct",
     "Verdict: INCORRECT\nOn reflection the units match.\nThanks."),
    ("", "unparsed", ""),
    (None, "unparsed", ""),
])
def test_verdicts_and_rationales_are_read_from_replies(reply, verdict, rationale):
    judgement = parse_judgement(reply)
    assert (judgement.verdict, judgement.rationale) == (verdict, rationale)
    assert judgement.correct is (verdict == "correct")


# ---- the call cache ------------------------------------------------------------------------------------------
def test_the_cache_keeps_replies_per_judge_and_prompt(tmp_path):
    path = tmp_path / "cache.sqlite"
    judge_a = JudgeCallCache(path, {"model": "a"})
    prompt = [{"role": "HUMAN", "prompt": "judge this"}]
    key = judge_a.key(prompt, {"max_out_len": 64})
    assert judge_a.get_many([key]) == {}
    judge_a.put_many({key: "Verdict: CORRECT", judge_a.key("failed", {}): ""})  # a failed (empty) call is not kept
    again = JudgeCallCache(path, {"model": "a"})
    assert again.get_many([key, again.key("failed", {})]) == {key: "Verdict: CORRECT"}
    other_judge = JudgeCallCache(path, {"model": "b"})
    assert other_judge.key(prompt, {"max_out_len": 64}) != key
    assert judge_a.key(prompt, {"max_out_len": 65}) != key
    assert judge_a.key([{"role": "HUMAN", "prompt": "judge that"}], {"max_out_len": 64}) != key


# ---- the fingerprint -----------------------------------------------------------------------------------------
def test_the_judge_fingerprint_names_the_judge_and_its_prompt(qa_file):
    def fingerprint(judge):
        return judge_fingerprint(parse_spec(spec_data(
            [{"kind": "custom", "name": "qa", "path": str(qa_file), "scorer": "judge"}], judge)))

    base = fingerprint({"model": judge_model()})
    assert base["kind"] == "openai" and base["model"] == "judge-1"
    assert base["base_url"] == "http://127.0.0.1:8001/v1/" and base["temperature"] == 0.0
    assert base["prompt_language"] == "auto" and len(base["prompt_sha256"]) == 64
    assert fingerprint({"model": judge_model()}) == base
    assert fingerprint({"model": judge_model(api_key="k", concurrency=3)}) == base  # how it is called does not count
    assert fingerprint({"model": judge_model(temperature=0.5)}) != base
    assert fingerprint({"model": judge_model(), "prompt_language": "zh"})["prompt_sha256"] != base["prompt_sha256"]
    assert judge_fingerprint(parse_spec(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file)}]))) is None
    assert judge_scorer_name("grader") == "judge:grader"


# ---- sample rows ------------------------------------------------------------------------------------------
def _run_dir(tmp_path: Path, details: list[dict], predictions: list[str]) -> Path:
    run = tmp_path / "outputs" / "20250101_000000"
    (run / "predictions" / "m").mkdir(parents=True)
    (run / "results" / "m").mkdir(parents=True)
    (run / "predictions" / "m" / "ds.json").write_text(json.dumps(
        {str(i): {"origin_prompt": f"q{i}", "prediction": p, "gold": "8"} for i, p in enumerate(predictions)}))
    (run / "results" / "m" / "ds.json").write_text(json.dumps({"accuracy": 50.0, "details": details}))
    return run


def test_sample_rows_carry_our_judges_verdict_and_rationale(tmp_path):
    run = _run_dir(tmp_path, [
        {"example_abbr": "ds_0", "pred": ["8 legs"], "answer": ["8"], "correct": [True],
         "judge_verdict": ["correct"], "judge_rationale": ["It says 8."], "judge_response": ["It says 8.\nVerdict: CORRECT"]},
        {"example_abbr": "ds_1", "pred": ["six"], "answer": ["8"], "correct": [False],
         "judge_verdict": ["unparsed"], "judge_rationale": ["hmm"], "judge_response": ["hmm"]},
    ], ["8 legs", "six"])
    rows = list(iter_samples(run, "m", "ds"))
    assert [(r.correct, r.judge_verdict, r.judge_rationale) for r in rows] == [
        (True, "correct", "It says 8."), (False, "unparsed", "hmm")]


def test_sample_rows_of_a_cascade_judge_show_its_raw_reply(tmp_path):
    run = _run_dir(tmp_path, [
        {"example_abbr": "ds_0", "rule_evaluation": [{"pred": "[8]", "answer": "[8]", "correct": True}],
         "cascade_correct": [True]},
        {"example_abbr": "ds_1", "rule_evaluation": [{"pred": "[]", "answer": "[8]", "correct": False}],
         "llm_evaluation": [{"origin_prompt": [], "prediction": "A", "gold": "8", "llm_correct": True}],
         "cascade_correct": [True]},
        {"example_abbr": "ds_2", "rule_evaluation": [{"pred": "[]", "answer": "[8]", "correct": False}],
         "llm_evaluation": [{"origin_prompt": [], "prediction": "B", "gold": "8", "llm_correct": False}],
         "cascade_correct": [False]},
    ], ["\\boxed{8}", "eight", "six"])
    rows = list(iter_samples(run, "m", "ds"))
    assert [(r.correct, r.judge_verdict, r.judge_rationale, r.extracted) for r in rows] == [
        (True, None, None, "[8]"), (True, "correct", "A", "[]"), (False, "incorrect", "B", "[]")]


def test_the_postprocessor_scores_by_verdict_and_keeps_rationales():
    from datasets import Dataset
    from opencompass.registry import DICT_POSTPROCESSORS

    from aieval_engine.oc_judge import judge_verdict_postprocess  # imports OpenCompass (registers it there)

    assert DICT_POSTPROCESSORS.get("judge_verdict_postprocess") is judge_verdict_postprocess

    class Judged:  # what GenericLLMEvaluator passes: its dataset, with the answers added as `prediction`
        test = Dataset.from_list([{"question": "q", "answer": "8", "prediction": p} for p in ("8 legs", "six", "?")])

    output = {
        "0": {"origin_prompt": [], "prediction": "It says 8.\nVerdict: CORRECT", "gold": "8"},
        "1": {"origin_prompt": [], "prediction": "理由：六不是八。\n结论：错误", "gold": "8"},
        "2": {"origin_prompt": [], "prediction": "no idea", "gold": "8"},
    }
    result = judge_verdict_postprocess(output, "unused.json", dataset=Judged())
    assert result["accuracy"] == pytest.approx(100 / 3)
    assert [(d["pred"], d["correct"], d["judge_verdict"], d["judge_rationale"]) for d in result["details"]] == [
        ("8 legs", True, "correct", "It says 8."), ("six", False, "incorrect", "六不是八。"),
        ("?", False, "unparsed", "no idea")]
    assert set(result) == {"accuracy", "details"}  # no other number becomes a score


def test_rescore_from_a_folder_without_a_run_is_refused_readably(tmp_path, qa_file, capsys, monkeypatch):
    from aieval_engine import cli

    monkeypatch.delenv("COMPASS_DATA_CACHE", raising=False)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_data([{"kind": "custom", "name": "qa", "path": str(qa_file), "scorer": "judge"}],
                                         {"model": judge_model()})))
    code = cli.main(["--data-dir", str(tmp_path / "data"), "rescore", str(spec), "--from", str(tmp_path / "nothing")])
    assert code == cli.EXIT_INVALID
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "is neither a finished run's directory nor a job directory with one" in printed
