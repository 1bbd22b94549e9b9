"""The judge's side inside the OpenCompass process (judge.py has what needs no OpenCompass): registered into
OpenCompass' own registries, nothing of it patched.

- `CachedJudge*` model classes: the project's model classes (oc_ext.py) and OpenCompass' Hugging Face classes
  with the judge call cache (judge.JudgeCallCache) in front of `generate`: a prompt judged before with the same
  judge and settings is answered from the cache, the rest go to the model in one batch, as OpenCompass sent them.
- `judge_verdict_postprocess`: the dict postprocessor our judge prompt goes with (GenericLLMEvaluator's
  `dict_postprocessor`): reads each reply's verdict and rationale (judge.parse_judgement) into the per-sample
  details and scores the share judged correct.
- `generic_llmjudge_verdicts_postprocess`: in built-in configs, stands in for OpenCompass' own
  `generic_llmjudge_postprocess` (config_builder swaps it in), which scores the judge's replies but keeps only the raw
  replies as details: the same result, with each sample's verdict as OpenCompass' postprocessor reads it added.
"""

from __future__ import annotations

from typing import Any

from opencompass.models import HuggingFaceBaseModel, HuggingFacewithChatTemplate
from opencompass.registry import DICT_POSTPROCESSORS, MODELS
from opencompass.utils.logging import get_logger

from .judge import CORRECT, INCORRECT, UNPARSED, JudgeCallCache, parse_judgement, plain_prompt
from .oc_ext import DifyChatModel, SecretKeyOpenAISDK


class _CachedJudgeCalls:
    """Mixin for OpenCompass model classes: `judge_cache={'path': ..., 'identity': {...}}` (config_builder) puts the
    cache in front of generate(); None calls the model every time."""

    _judge_cache: JudgeCallCache | None = None

    def _open_judge_cache(self, judge_cache: dict | None) -> None:
        self._judge_cache = JudgeCallCache(judge_cache["path"], judge_cache["identity"]) if judge_cache else None

    def generate(self, inputs, max_out_len, **kwargs) -> list[str]:
        if self._judge_cache is None:
            return super().generate(inputs, max_out_len, **kwargs)
        settings = {"max_out_len": max_out_len, **kwargs}
        keys = [self._judge_cache.key(plain_prompt(prompt), settings) for prompt in inputs]
        known = self._judge_cache.get_many(list(dict.fromkeys(keys)))
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:
            replies = super().generate([inputs[i] for i in missing], max_out_len, **kwargs)
            fresh = {keys[i]: reply for i, reply in zip(missing, replies, strict=True)}
            self._judge_cache.put_many(fresh)
            known = {**known, **fresh}
        get_logger().info(f"judge: {len(inputs) - len(missing)} of {len(inputs)} replies from the cache")
        return [known[key] for key in keys]


@MODELS.register_module()
class CachedJudgeOpenAISDK(_CachedJudgeCalls, SecretKeyOpenAISDK):
    def __init__(self, judge_cache: dict | None = None, **kwargs):
        self._open_judge_cache(judge_cache)
        super().__init__(**kwargs)


@MODELS.register_module()
class CachedJudgeDifyChatModel(_CachedJudgeCalls, DifyChatModel):
    def __init__(self, judge_cache: dict | None = None, **kwargs):
        self._open_judge_cache(judge_cache)
        super().__init__(**kwargs)


@MODELS.register_module()
class CachedJudgeHuggingFaceChat(_CachedJudgeCalls, HuggingFacewithChatTemplate):
    def __init__(self, judge_cache: dict | None = None, **kwargs):
        self._open_judge_cache(judge_cache)
        super().__init__(**kwargs)


@MODELS.register_module()
class CachedJudgeHuggingFaceBase(_CachedJudgeCalls, HuggingFaceBaseModel):
    def __init__(self, judge_cache: dict | None = None, **kwargs):
        self._open_judge_cache(judge_cache)
        super().__init__(**kwargs)


def _column(dataset: Any, name: str) -> list | None:
    test = getattr(dataset, "test", None)
    if test is not None and name in getattr(test, "column_names", []):
        return list(test[name])
    return None


@DICT_POSTPROCESSORS.register_module()
def judge_verdict_postprocess(output: dict, output_path: str, dataset: Any = None) -> dict:
    """GenericLLMEvaluator's judge replies (`output`: '0', '1', ... -> {'origin_prompt', 'prediction': the reply,
    'gold'}) -> accuracy and per-sample details with the verdict and the judge's rationale. A reply without a
    readable verdict line is not correct and its verdict is 'unparsed', so a judge that ignores the requested format
    shows in the samples rather than as a silently low score."""
    entries = [output[key] for key in sorted(output, key=lambda k: int(k) if str(k).isdigit() else 0)]
    predictions = _column(dataset, "prediction")
    details = []
    for position, entry in enumerate(entries):
        reply = entry.get("prediction") if isinstance(entry, dict) else None
        judgement = parse_judgement(reply)
        details.append({
            "pred": predictions[position] if predictions is not None and position < len(predictions) else None,
            "answer": entry.get("gold") if isinstance(entry, dict) else None,
            "correct": judgement.correct,
            "judge_verdict": judgement.verdict,
            "judge_rationale": judgement.rationale,
            "judge_response": reply,
        })
    correct = sum(d["correct"] for d in details)
    return {
        "accuracy": 100 * correct / len(details) if details else 0.0,
        "details": details,
    }


# A judge's per-sample verdict from OpenCompass' generic_llmjudge_postprocess counts: it counts a reply that is
# neither the true nor the false tag as "not attempted", which is not correct.
_GRADE_COUNTS = (("correct_count", CORRECT), ("incorrect_count", INCORRECT), ("not_attempted_count", UNPARSED))


@DICT_POSTPROCESSORS.register_module()
def generic_llmjudge_verdicts_postprocess(output: dict, output_path: str, **kwargs: Any) -> dict:
    """OpenCompass' `generic_llmjudge_postprocess` (same arguments, same result), with each sample's verdict added to
    its details, which that postprocessor leaves as the judge's raw replies ({'origin_prompt', 'prediction': the reply,
    'gold'}).

    Each verdict is what OpenCompass' own postprocessor makes of that sample's reply alone (its correct, incorrect and
    not-attempted counts for one sample), so verdict and score come from the same code, whatever the config's tags.
    The verdict goes in `judge_verdict`, not `correct`: a `correct` key would make OpenCompass' evaluate() add
    G-Pass@k metrics to repeated configs, and the scores must stay the `opencompass` CLI's."""
    from opencompass.datasets.generic import generic_llmjudge_postprocess

    result = generic_llmjudge_postprocess(output, output_path, **kwargs)
    details = {}
    for key, entry in output.items():
        alone = generic_llmjudge_postprocess({key: entry}, output_path, **kwargs)
        verdict = next(name for count, name in _GRADE_COUNTS if alone.get(count))
        reply = entry.get("prediction") if isinstance(entry, dict) else None
        details[key] = {**(entry if isinstance(entry, dict) else {}), "judge_verdict": verdict,
                        "judge_rationale": reply}
    if sum(d["judge_verdict"] == CORRECT for d in details.values()) != result.get("correct_count"):
        # Not expected (OpenCompass grades each reply on its own); the score stands, the samples keep the raw replies.
        get_logger().warning("judge verdicts per sample do not add up to the judged score: not recorded")
        return result
    result["details"] = details
    return result
