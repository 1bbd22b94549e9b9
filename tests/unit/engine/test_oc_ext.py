"""oc_ext: the 'contains' scorer and answer normalisation. The only module here that imports OpenCompass."""

from __future__ import annotations

import pytest

from aieval_engine import oc_ext  # imports opencompass: ~10 s, once for the whole directory

ContainsAnswerEvaluator = oc_ext.ContainsAnswerEvaluator
normalize_answer = oc_ext.normalize_answer


@pytest.fixture(scope="module")
def evaluator():
    return ContainsAnswerEvaluator()


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("  Paris.", "paris"),
        ("The capital is PARIS!", "the capital is paris"),
        ("法国的首都是巴黎。", "法国的首都是巴黎"),
        ("“巴黎”，对！", "巴黎 对"),
        ("ＡＢＣ１２３", "abc123"),  # NFKC folds full-width forms
        ("a\t\n b", "a b"),
        ("", ""),
        (8, "8"),
        ("3.14", "3.14"),  # punctuation inside a number stays
        ("It costs 8,000.", "it costs 8,000"),
        ("(-8)", "-8"),
        ("The answer is 8.", "the answer is 8"),  # a full stop after a number still goes
        ("e.g. 1.5, 2", "e g 1.5 2"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


@pytest.mark.parametrize(
    "prediction, reference, hit",
    [
        ("The capital is Paris.", "Paris", True),
        ("The capital is Paris.", "Par", False),  # whole words outside CJK
        ("paris", "PARIS", True),
        ("Parisian food", "Paris", False),
        ("New York City", "new york", True),
        ("法国的首都是巴黎。", "巴黎", True),  # CJK: substring
        ("法国的首都是北京。", "巴黎", False),
        ("It has 8 legs", "8", True),
        ("It has 18 legs", "8", False),
        ("8", "8", True),
        ("anything", "", False),  # an empty reference never matches
        ("", "x", False),
    ],
)
def test_contains_single(evaluator, prediction, reference, hit):
    result = evaluator.score([prediction], [reference])
    assert result["details"] == [{"pred": prediction, "answer": reference, "correct": hit}]
    assert result["accuracy"] == (100.0 if hit else 0.0)


def test_accuracy_over_several(evaluator):
    result = evaluator.score(
        ["The capital is Paris.", "It has 18 legs", "法国的首都是巴黎。", "It has 8 legs"],
        ["Paris", "8", "巴黎", "eight"],
    )
    assert result["accuracy"] == 50.0
    assert [d["correct"] for d in result["details"]] == [True, False, True, False]


def test_mismatched_lengths_and_empty(evaluator):
    assert evaluator.score(["a"], ["a", "b"]) == {"error": "predictions and references have different lengths"}
    assert evaluator.score([], []) == {"accuracy": 0.0, "details": []}


def test_registered_in_opencompass_registries():
    from opencompass.registry import ICL_EVALUATORS, MODELS

    assert ICL_EVALUATORS.get("ContainsAnswerEvaluator") is ContainsAnswerEvaluator
    assert MODELS.get("SecretKeyOpenAISDK") is oc_ext.SecretKeyOpenAISDK


def test_approximate_tokenizer_counts_cjk_per_character():
    tokenizer = oc_ext._ApproximateTokenizer()
    assert tokenizer.count("") == 0
    assert tokenizer.count("abcd") == 1
    assert tokenizer.count("abcde") == 2
    assert tokenizer.count("巴黎") == 2
    assert tokenizer.count("巴黎 abcd") == 2 + 2  # ' abcd' is 5 characters


META = {"round": [{"role": "HUMAN", "api_role": "HUMAN"}, {"role": "BOT", "api_role": "BOT", "generate": True}]}


def test_secret_key_sdk_reads_its_key_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("AIEVAL_API_KEY_7", "sk-from-env-99")
    model = oc_ext.SecretKeyOpenAISDK(
        key_env="AIEVAL_API_KEY_7", path="m", openai_api_base="http://127.0.0.1:9/v1/", meta_template=META
    )
    assert model.keys == ["sk-from-env-99"]
    assert model.openai_client.api_key == "sk-from-env-99"
    # offline: no tokenizer download, an approximate count instead
    assert model.tokenizer_type == "approximate"
    assert model.get_token_len("巴黎 abcd") == 4


def test_secret_key_sdk_without_key(monkeypatch):
    monkeypatch.delenv("AIEVAL_API_KEY_8", raising=False)
    for key_env in (None, "AIEVAL_API_KEY_8"):
        model = oc_ext.SecretKeyOpenAISDK(key_env=key_env, path="m", openai_api_base="http://127.0.0.1:9/v1/")
        assert model.keys == ["EMPTY"]


@pytest.mark.parametrize(
    "prediction, reference",
    [("It has 8.5 legs", "8"), ("About 8,000 people", "8"), ("The answer is 8", "-8"), ("The answer is -8", "8")],
)
def test_numbers_are_not_split_by_their_punctuation(evaluator, prediction, reference):
    assert evaluator.score([prediction], [reference])["details"][0]["correct"] is False


@pytest.mark.parametrize(
    "prediction, reference",
    [("It has 8.5 legs.", "8.5"), ("About 8,000 people.", "8,000"), ("The answer is -8.", "-8"), ("It is 8.", "8")],
)
def test_numbers_with_their_punctuation_still_match(evaluator, prediction, reference):
    assert evaluator.score([prediction], [reference])["details"][0]["correct"] is True


def test_quick_partitioners_are_registered_and_skip_formatting():
    from mmengine.config import Config
    from opencompass.partitioners import NaivePartitioner, NumWorkerPartitioner
    from opencompass.registry import PARTITIONERS

    assert issubclass(PARTITIONERS.get("QuickNumWorkerPartitioner"), NumWorkerPartitioner)
    assert issubclass(PARTITIONERS.get("QuickNaivePartitioner"), NaivePartitioner)
    tasks = [Config(dict(a=1)), [Config(dict(b=2)), Config(dict(c=3))], "not a config"]
    assert all(c._format_python_code for c in (tasks[0], *tasks[1]))
    assert oc_ext._skip_code_formatting(tasks) is tasks
    assert not any(c._format_python_code for c in (tasks[0], *tasks[1]))
    assert tasks[0].a == 1 and tasks[1][1].c == 3  # content unchanged
