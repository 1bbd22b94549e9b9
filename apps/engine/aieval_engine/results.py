"""Structured results from an OpenCompass work dir: scores, per-sample rows, reproducibility manifest."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import workdir
from .catalogue import local_data_path, opencompass_version
from .judge import CORRECT, INCORRECT, UNPARSED
from .sample_metrics import SampleMetrics


@dataclass(frozen=True)
class Score:
    model: str  # display name
    model_abbr: str
    dataset: str  # display name
    dataset_abbr: str
    metric: str
    value: float
    dataset_index: int | None = None  # which of the spec's datasets this came from (None if unknown)


@dataclass(frozen=True)
class SampleRow:
    index: int
    prompt: Any  # str, or OpenCompass' list of chat turns
    prediction: Any
    gold: Any
    correct: bool | None
    extracted: Any = None  # the answer OpenCompass parsed from the prediction, when it reports one
    # Speed and size of the answer, recorded for endpoint models (sample_metrics.py); None when not recorded.
    latency_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retries: int | None = None
    # An LLM judge's verdict (correct | incorrect | unparsed) and its reasoning, when a judge scored the sample. For a
    # built-in config's judge the rationale is its raw reply, and the verdict the one OpenCompass drew from it.
    judge_verdict: str | None = None
    judge_rationale: str | None = None
    # A per-sample score that is not a right/wrong verdict (partial credit, a similarity), when the evaluator records
    # one in its details as `score`; the paired comparison tests such scores instead of verdicts.
    score: float | None = None


# The evaluator classes that score by asking a judge model (OpenCompass' own); a score whose dataset config names one
# is judge-scored, and its scorer is `judge_scorer_name(...)`.
JUDGE_EVALUATOR_CLASSES = frozenset({"GenericLLMEvaluator", "CascadeEvaluator"})


def judge_scorer_name(judge_name: str) -> str:
    """The scorer recorded for a judge-scored result: "judge:<the judge model's display name>"."""
    return f"judge:{judge_name}"


@dataclass
class PairOutcome:
    model_abbr: str
    dataset_abbr: str
    ok: bool
    error: str | None = None
    log_excerpt: str | None = None


@dataclass
class EvalResult:
    status: str  # succeeded | failed | cancelled | timeout
    job_dir: Path
    run_dir: Path | None
    scores: list[Score] = field(default_factory=list)
    pairs: list[PairOutcome] = field(default_factory=list)
    error: str | None = None
    log_excerpt: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def score_table(self) -> dict[tuple[str, str, str], float]:
        return {(s.model, s.dataset, s.metric): s.value for s in self.scores}

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "job_dir": str(self.job_dir),
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "duration_s": round(self.duration_s, 3),
            "error": self.error,
            "log_excerpt": self.log_excerpt,
            "scores": [asdict(s) for s in self.scores],
            "pairs": [asdict(p) for p in self.pairs],
            "manifest": self.manifest,
        }


def metric_values(result: dict) -> dict[str, float]:
    """The numeric metrics of one results/<model>/<ds>.json (details and other structures skipped)."""
    return {
        key: float(value)
        for key, value in result.items()
        if key != "details" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _detail_list(details: Any) -> list[dict]:
    if isinstance(details, dict):
        rows = [details[k] for k in sorted((k for k in details if str(k).isdigit()), key=int)]
        if details.get("type") == "GEN":
            # OpenCompass' generic details (e.g. AccEvaluator's exact match) record the compared values but
            # not the verdict; AccEvaluator counts a sample right when the two are equal as strings.
            rows = [
                {**row, "correct": str(row["predictions"]) == str(row["references"])}
                if isinstance(row, dict) and "correct" not in row and {"predictions", "references"} <= row.keys()
                else row
                for row in rows
            ]
        return [row if isinstance(row, dict) else {} for row in rows]
    if isinstance(details, list):
        return [d if isinstance(d, dict) else {} for d in details]
    return []


def _unwrap(value: Any) -> Any:
    # OpenCompass wraps per-sample values in one-element lists when n=1 replicas are evaluated.
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _correct_of(detail: dict) -> bool | None:
    value = _unwrap(detail.get("correct", detail.get("is_correct", detail.get("cascade_correct"))))
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    # A built-in judge config's verdict (oc_judge.generic_llmjudge_verdicts_postprocess), kept out of `correct`:
    # an unparsed reply counts as not correct, as in OpenCompass' score.
    verdict = _unwrap(detail.get("judge_verdict"))
    if verdict in (CORRECT, INCORRECT, UNPARSED):
        return verdict == CORRECT
    return None


def _score_of(detail: dict) -> float | None:
    value = _unwrap(detail.get("score"))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def iter_samples(run_dir: Path, model_abbr: str, dataset_abbr: str) -> Iterator[SampleRow]:
    """Per-sample rows in dataset order: prompt, prediction and gold from predictions, correctness from results,
    latency and tokens from the model's records (sample_metrics.py)."""
    result = workdir.read_json(workdir.results_file(run_dir, model_abbr, dataset_abbr)) or {}
    details = _detail_list(result.get("details"))
    metrics = SampleMetrics.read(workdir.sample_metrics_file(run_dir, model_abbr))
    for position, entry in enumerate(workdir.read_predictions(run_dir, model_abbr, dataset_abbr)):
        entry = entry if isinstance(entry, dict) else {}
        detail = details[position] if position < len(details) else {}
        extracted = _unwrap(detail.get("parsed", detail.get("pred")))
        rule = _unwrap(detail.get("rule_evaluation"))
        if isinstance(rule, dict) and extracted is None:  # CascadeEvaluator: what its rule step parsed
            extracted = rule.get("pred")
        verdict, rationale = _judgement_of(detail)
        yield SampleRow(
            index=position,
            prompt=entry.get("origin_prompt"),
            prediction=entry.get("prediction"),
            gold=entry.get("gold", _unwrap(detail.get("refr", detail.get("answer")))),
            correct=_correct_of(detail),
            extracted=extracted if extracted != entry.get("prediction") else None,
            **metrics.take(entry.get("origin_prompt")),
            judge_verdict=verdict,
            judge_rationale=rationale,
            score=_score_of(detail),
        )


def sample_verdicts(run_dir: Path, model_abbr: str, dataset_abbr: str) -> list[bool | None]:
    """Each sample's verdict in dataset order, exactly as iter_samples' `correct`, reading nothing else: a leaderboard's
    rank bootstrap reads those of every result it averages, and whole sample rows cost ten times more."""
    result = workdir.read_json(workdir.results_file(run_dir, model_abbr, dataset_abbr)) or {}
    details = _detail_list(result.get("details"))
    count = len(workdir.read_predictions(run_dir, model_abbr, dataset_abbr))
    return [_correct_of(details[i]) if i < len(details) else None for i in range(count)]


def _judgement_of(detail: dict) -> tuple[str | None, str | None]:
    """(verdict, rationale) of a judged sample's details, (None, None) when no judge saw it.

    - our judge prompt (oc_judge.judge_verdict_postprocess): its `judge_verdict` and `judge_rationale`; the same keys
      for OpenCompass' generic_llmjudge_postprocess in a built-in config (oc_judge.generic_llmjudge_verdicts_postprocess
      stands in for it: its verdict, and the judge's raw reply as the rationale);
    - CascadeEvaluator: `llm_evaluation` when its rule step passed the sample on to the judge (the judge's raw reply
      and its `llm_correct`), nothing when the rule step already found it right;
    - GenericLLMEvaluator with OpenCompass' other postprocessors: its details are the judge's raw outputs
      (origin_prompt, prediction: the reply, gold), without a verdict per sample."""
    if "judge_verdict" in detail:
        verdict, rationale = _unwrap(detail.get("judge_verdict")), _unwrap(detail.get("judge_rationale"))
        return (str(verdict) if verdict is not None else None), (str(rationale) if rationale is not None else None)
    llm = _unwrap(detail.get("llm_evaluation"))
    if isinstance(llm, dict):
        reply = llm.get("prediction", llm.get("llm_judge"))
        correct = llm.get("llm_correct")
        verdict = None if not isinstance(correct, bool) else ("correct" if correct else "incorrect")
        return verdict, (str(reply) if reply is not None else None)
    if "correct" not in detail and {"origin_prompt", "prediction", "gold"} <= detail.keys():
        reply = _unwrap(detail.get("prediction"))
        return None, (str(reply) if reply is not None else None)
    return None, None


def collect_scores(
    run_dir: Path,
    models: dict[str, str],
    datasets: dict[str, str],
    dataset_indexes: dict[str, int | None] | None = None,
) -> tuple[list[Score], list[PairOutcome]]:
    """Scores of every model x dataset pair (datasets: abbr -> display name), and which pairs produced
    no valid result."""
    dataset_indexes = dataset_indexes or {}
    scores: list[Score] = []
    pairs: list[PairOutcome] = []
    for model_abbr, model_name in models.items():
        for dataset_abbr, dataset_name in datasets.items():
            result = workdir.read_json(workdir.results_file(run_dir, model_abbr, dataset_abbr))
            if not isinstance(result, dict):
                pairs.append(PairOutcome(model_abbr, dataset_abbr, ok=False, error="no result was produced"))
                continue
            if "error" in result:
                pairs.append(PairOutcome(model_abbr, dataset_abbr, ok=False, error=str(result["error"])[:2000]))
                continue
            values = metric_values(result)
            if not values:
                pairs.append(PairOutcome(model_abbr, dataset_abbr, ok=False, error="the result has no numeric score"))
                continue
            pairs.append(PairOutcome(model_abbr, dataset_abbr, ok=True))
            scores += [
                Score(model_name, model_abbr, dataset_name, dataset_abbr, metric, value,
                      dataset_indexes.get(dataset_abbr))
                for metric, value in values.items()
            ]
    return scores, pairs


def _hash_paths(paths: list[Path], budget_bytes: int = 4 << 30) -> dict[str, Any]:
    """sha256 over the files' contents (sorted by relative path); falls back to sizes past the budget."""
    files: list[tuple[str, Path]] = []
    for root in paths:
        if root.is_file():
            files.append((root.name, root))
        elif root.is_dir():
            files += sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for _, p in files)
    digest = hashlib.sha256()
    deep = total <= budget_bytes
    for name, path in files:
        digest.update(name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        if deep:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total, "content_hashed": deep}


def build_manifest(spec, built, data_cache: Path) -> dict[str, Any]:
    """What is needed to reproduce a run: versions, config hash, data and model identities, parameters."""
    from importlib.metadata import PackageNotFoundError, version

    def package_version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    datasets = []
    for planned in built.datasets:
        if planned.builtin is not None:
            sources = []
            for config_path in planned.builtin.data_paths:
                local = local_data_path(config_path)
                sources.append(Path(config_path) if local is None else data_cache / local)
            datasets.append(
                {
                    "kind": "builtin",
                    "config": planned.builtin.qualified_name,
                    "data": _hash_paths([p for p in sources if p.exists()]),
                }
            )
        else:
            datasets.append({"kind": "custom", "name": planned.spec.name, "sha256": planned.sha256, "rows": planned.rows})
    models = []
    for abbr, model in zip(built.models, spec.models, strict=True):
        identity: dict[str, Any] = {"abbr": abbr, "name": model.name, "kind": model.kind}
        if model.kind == "openai":
            identity.update(base_url=model.base_url, model=model.model)
        elif model.kind == "dify":
            identity.update(base_url=model.base_url)
        else:
            identity.update(path=model.path, weights=_hash_paths([Path(model.path)]) if os.path.isdir(model.path) else None)
        models.append(identity)
    return {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "opencompass": opencompass_version(),
        "aieval": package_version("ai-eval-system"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "config_sha256": built.sha256,
        "spec": spec.public_dict(),
        "models": models,
        "datasets": datasets,
    }
