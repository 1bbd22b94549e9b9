"""What each stored score rests on: samples scored, right answers, the scorer, its 95 % confidence interval.

Computed once on the worker when a run's scores are written (services/runs.py), from the same OpenCompass output
files the sample browser reads, so the numbers in the table and the samples behind them cannot disagree.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aieval_engine.results import Score as EngineScore
from aieval_engine.results import iter_samples
from aieval_engine.spec import CustomDatasetSpec, EvalSpec

from .statistics import score_interval

log = logging.getLogger(__name__)

PROVENANCE_FIELDS = ("n", "correct", "scorer", "ci_low", "ci_high")


def _fields(node: ast.AST | None) -> dict[str, ast.AST]:
    """The keyword fields of `dict(a=...)` or the string keys of `{'a': ...}` in a dumped OpenCompass config."""
    if isinstance(node, ast.Call):
        return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    if isinstance(node, ast.Dict):
        return {k.value: v for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return {}


def evaluator_classes(run_dir: Path) -> dict[str, str]:
    """dataset abbr -> the class name of the evaluator OpenCompass scored it with, from the config it dumped at
    start (`configs/<stamp>.py`, the fully resolved one: built-in and custom datasets alike)."""
    configs = sorted((run_dir / "configs").glob("*.py"))
    if not configs:
        return {}
    try:
        tree = ast.parse(configs[0].read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, str] = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "datasets" for t in statement.targets)):
            continue
        for element in getattr(statement.value, "elts", []):
            fields = _fields(element)
            abbr = fields.get("abbr")
            kind = _fields(_fields(fields.get("eval_cfg")).get("evaluator")).get("type")
            if isinstance(abbr, ast.Constant) and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                found[str(abbr.value)] = kind.value.rsplit(".", 1)[-1]
    return found


def scorer_of(spec: EvalSpec, dataset_index: int | None, evaluator: str | None) -> str | None:
    """A user's own file: the scorer chosen for it ("exact" or "contains"). A built-in benchmark: the class name of
    the OpenCompass evaluator its config names (e.g. "Gsm8kEvaluator"), since that is what decides right or wrong."""
    if dataset_index is not None and 0 <= dataset_index < len(spec.datasets):
        dataset = spec.datasets[dataset_index]
        if isinstance(dataset, CustomDatasetSpec):
            return dataset.scorer
    return evaluator


def score_provenance(run_dir: Path | None, scores: Sequence[EngineScore], spec: EvalSpec) -> list[dict[str, Any]]:
    """For each score (same order), the provenance columns of its `Score` row. Reading the files is best effort:
    a score whose samples cannot be read keeps its value and gets None here (shown as "not known"), never a
    failed run."""
    empty = dict.fromkeys(PROVENANCE_FIELDS)
    if run_dir is None:
        return [dict(empty) for _ in scores]
    try:
        evaluators = evaluator_classes(run_dir)
    except Exception:  # an unreadable config costs the scorer names only
        log.exception("cannot read the evaluators from %s", run_dir)
        evaluators = {}
    verdicts: dict[tuple[str, str], list[bool | None] | None] = {}
    provenance = []
    for score in scores:
        pair = (score.model_abbr, score.dataset_abbr)
        if pair not in verdicts:
            try:
                verdicts[pair] = [row.correct for row in iter_samples(run_dir, *pair)]
            except Exception:
                log.exception("cannot read the samples of %s x %s in %s", *pair, run_dir)
                verdicts[pair] = None
        interval = score_interval(score.value, verdicts[pair]) if verdicts[pair] is not None else None
        provenance.append({
            **empty,
            "scorer": scorer_of(spec, score.dataset_index, evaluators.get(score.dataset_abbr)),
            **({"n": interval.n, "correct": interval.correct, "ci_low": interval.ci_low, "ci_high": interval.ci_high}
               if interval is not None else {}),
        })
    return provenance
