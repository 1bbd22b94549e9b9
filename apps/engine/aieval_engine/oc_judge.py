"""The judge's side inside the OpenCompass process (judge.py has what needs no OpenCompass): registered into
OpenCompass' own registries, nothing of it patched.

- `CachedJudge*` model classes: the project's model classes (oc_ext.py) and OpenCompass' Hugging Face classes
  with the judge call cache (judge.JudgeCallCache) in front of `generate`: a prompt judged before with the same
  judge and settings is answered from the cache, the rest go to the model in one batch, as OpenCompass sent them.
- `judge_verdict_postprocess`: the dict postprocessor our judge prompt goes with (GenericLLMEvaluator's
  `dict_postprocessor`): reads each reply's verdict and rationale (judge.parse_judgement) into the per-sample
  details and scores the share judged correct.
"""

from __future__ import annotations

from typing import Any

from opencompass.models import HuggingFaceBaseModel, HuggingFacewithChatTemplate
from opencompass.registry import DICT_POSTPROCESSORS, MODELS
from opencompass.utils.logging import get_logger

from .judge import JudgeCallCache, parse_judgement, plain_prompt
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
