"""What each stored score rests on: samples scored, right answers, the scorer, its 95 % confidence interval, and
the comparability fingerprint (the settings two scores must share to be put side by side, services/compare.py).

Computed once on the worker when a run's scores are written (services/runs.py), from the same OpenCompass output
files the sample browser reads, so the numbers in the table and the samples behind them cannot disagree.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aieval_engine.config_builder import scored_by_judge
from aieval_engine.results import Score as EngineScore
from aieval_engine.results import iter_samples, judge_scorer_name
from aieval_engine.sample_metrics import summarize as speed_summary
from aieval_engine.spec import BuiltinDatasetSpec, CustomDatasetSpec, EvalSpec, judge_fingerprint

from .statistics import score_interval

log = logging.getLogger(__name__)

PROVENANCE_FIELDS = ("n", "correct", "scorer", "ci_low", "ci_high", "fingerprint", "fingerprint_parts", "speed")
# Keys of a resolved dataset config that the prompt hash leaves out: where this run's copy of the file lies and
# its abbreviation change from run to run; the sample range, the output length and the evaluator class are
# fingerprint parts of their own ("limit", "max_out_len", "scorer"), so a difference there is named once, not also
# as "prompt".
# A judge's settings (model, concurrency, cache file) are the "judge" part; the copy of the data a judge evaluator
# re-reads lies in this run's job dir.
_NOT_PROMPT = {(): {"path", "abbr"}, ("reader_cfg",): {"test_range"}, ("infer_cfg", "inferencer"): {"max_out_len"},
               ("eval_cfg", "evaluator"): {"type", "judge_cfg"},
               ("eval_cfg", "evaluator", "dataset_cfg"): {"path", "abbr"},
               ("eval_cfg", "evaluator", "llm_evaluator"): {"judge_cfg"},
               ("eval_cfg", "evaluator", "llm_evaluator", "dataset_cfg"): {"path", "abbr"}}


def _fields(node: ast.AST | None) -> dict[str, ast.AST]:
    """The keyword fields of `dict(a=...)` or the string keys of `{'a': ...}` in a dumped OpenCompass config."""
    if isinstance(node, ast.Call):
        return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    if isinstance(node, ast.Dict):
        return {k.value: v for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return {}


def _dumped_datasets(run_dir: Path) -> list[ast.AST]:
    """The dataset entries of the config OpenCompass dumped at start (`configs/<stamp>.py`, the fully resolved one:
    built-in and custom datasets alike), as syntax: read, never run."""
    configs = sorted((run_dir / "configs").glob("*.py"))
    if not configs:
        return []
    try:
        tree = ast.parse(configs[0].read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    return [element for statement in tree.body
            if isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "datasets" for t in statement.targets)
            for element in getattr(statement.value, "elts", [])]


def evaluator_classes(run_dir: Path) -> dict[str, str]:
    """dataset abbr -> the class name of the evaluator OpenCompass scored it with."""
    found: dict[str, str] = {}
    for element in _dumped_datasets(run_dir):
        fields = _fields(element)
        abbr = fields.get("abbr")
        kind = _fields(_fields(fields.get("eval_cfg")).get("evaluator")).get("type")
        if isinstance(abbr, ast.Constant) and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
            found[str(abbr.value)] = kind.value.rsplit(".", 1)[-1]
    return found


def _plain(node: ast.AST) -> Any:
    """A dumped config value as plain data: `dict(...)` calls and dict/list/tuple literals become dicts and lists,
    constants stay; anything else (never seen in OpenCompass' dumps, which write types as dotted strings) becomes its
    source text. Never evaluates code."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {keyword: _plain(value) for keyword, value in _fields(node).items()}
    if isinstance(node, ast.Dict):
        return {keyword: _plain(value) for keyword, value in _fields(node).items()}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_plain(element) for element in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    return ast.unparse(node)


def resolved_dataset_configs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """dataset abbr -> its dataset config as OpenCompass resolved it, as data: reader columns, prompt template,
    retriever, inferencer and evaluator, for built-in and uploaded datasets alike."""
    found: dict[str, dict[str, Any]] = {}
    for element in _dumped_datasets(run_dir):
        config = _plain(element)
        if isinstance(config, dict) and isinstance(config.get("abbr"), str):
            found[config["abbr"]] = config
    return found


def _without(config: Any, where: tuple[str, ...] = ()) -> Any:
    if not isinstance(config, dict):
        return config
    dropped = _NOT_PROMPT.get(where, set())
    return {key: _without(value, (*where, key)) for key, value in config.items() if key not in dropped}


def _short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def fingerprint_parts(spec: EvalSpec, dataset_index: int | None, scorer: str | None,
                      manifest: dict[str, Any] | None, dataset_config: dict[str, Any] | None) -> dict[str, Any]:
    """The readable settings a score depends on apart from the model. Each part is None when not known (or, for
    `limit` and `max_out_len`, when not set: every sample, the dataset's own output length).

    - data: the content hash of the samples. An uploaded file: its sha256 (the dataset's own, as uploaded). A
      built-in benchmark: the sha256 over the data files its config reads (the engine's manifest), plus the config's
      qualified name in `config`; what that config defines is covered by `prompt`.
    - prompt: a hash of the dataset config OpenCompass resolved for the run (reader columns, prompt template,
      retriever, inferencer, evaluator), so an edited template or a changed built-in config shows up here.
    - limit: the first N samples; a limit at or above an uploaded file's row count is every sample (None).
    - scorer: Score.scorer. max_out_len: the user's override, None for each dataset's own setting.
    - opencompass: the OpenCompass version that ran it.
    - judge (only for a dataset an LLM judge scores, so other fingerprints stay as they were): the judge model and
      its prompt (the engine's judge_fingerprint); judged results compare only under the same judge and prompt."""
    manifest = manifest or {}
    in_spec = dataset_index is not None and 0 <= dataset_index < len(spec.datasets)
    dataset = spec.datasets[dataset_index] if in_spec else None
    manifest_datasets = manifest.get("datasets") or []  # one per spec dataset, in the spec's order
    described = manifest_datasets[dataset_index] if in_spec and dataset_index < len(manifest_datasets) else {}
    data: str | None = None
    config_name: str | None = None
    limit = spec.params.limit
    if isinstance(dataset, CustomDatasetSpec):
        data = described.get("sha256")
        rows = described.get("rows")
        if limit is not None and isinstance(rows, int) and limit >= rows:
            limit = None  # the same samples as no limit at all
    elif isinstance(dataset, BuiltinDatasetSpec):
        config_name = described.get("config") or dataset.config
        data = (described.get("data") or {}).get("sha256")
    parts = {
        "data": data[:16] if data else None,
        "config": config_name,
        "prompt": _short_hash(_without(dataset_config)) if dataset_config else None,
        "limit": limit,
        "scorer": scorer,
        "max_out_len": spec.params.max_out_len,
        "opencompass": manifest.get("opencompass"),
    }
    if in_spec and _judged(spec, dataset_index):
        parts["judge"] = judge_fingerprint(spec)
    return parts


def _judged(spec: EvalSpec, dataset_index: int) -> bool:
    """Whether the spec's judge scored this dataset (an uploaded file scored "judge", or a built-in config OpenCompass
    scores with a judge)."""
    return spec.judge is not None and scored_by_judge(spec, dataset_index)


def fingerprint_of(parts: dict[str, Any]) -> str:
    """The short hash two scores compare: equal parts, equal fingerprint."""
    return _short_hash(parts)


def scorer_of(spec: EvalSpec, dataset_index: int | None, evaluator: str | None) -> str | None:
    """A user's own file: the scorer chosen for it ("exact" or "contains"). A built-in benchmark: the class name of
    the OpenCompass evaluator its config names (e.g. "Gsm8kEvaluator"), since that is what decides right or wrong.
    Either scored by an LLM judge: "judge:<the judge model's name>"."""
    if dataset_index is not None and 0 <= dataset_index < len(spec.datasets):
        dataset = spec.datasets[dataset_index]
        if _judged(spec, dataset_index):
            return judge_scorer_name(spec.judge.model.name)
        if isinstance(dataset, CustomDatasetSpec):
            return dataset.scorer
    return evaluator


def score_provenance(run_dir: Path | None, scores: Sequence[EngineScore], spec: EvalSpec,
                     manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """For each score (same order), the provenance columns of its `Score` row. Reading the files is best effort:
    a score whose samples cannot be read keeps its value and gets None here (shown as "not known"), never a
    failed run. `manifest` is the engine's (results.build_manifest): data hashes and the OpenCompass version."""
    empty = dict.fromkeys(PROVENANCE_FIELDS)
    if run_dir is None:
        return [dict(empty) for _ in scores]
    try:
        evaluators = evaluator_classes(run_dir)
    except Exception:  # an unreadable config costs the scorer names only
        log.exception("cannot read the evaluators from %s", run_dir)
        evaluators = {}
    try:
        dataset_configs = resolved_dataset_configs(run_dir)
    except Exception:  # an unreadable config costs the prompt part of the fingerprint only
        log.exception("cannot read the dataset configs from %s", run_dir)
        dataset_configs = {}
    verdicts: dict[tuple[str, str], list[bool | None] | None] = {}
    speeds: dict[tuple[str, str], dict[str, Any] | None] = {}  # latency and tokens per answer, when recorded
    provenance = []
    for score in scores:
        pair = (score.model_abbr, score.dataset_abbr)
        if pair not in verdicts:
            try:
                rows = list(iter_samples(run_dir, *pair))
                verdicts[pair] = [row.correct for row in rows]
                speeds[pair] = speed_summary(rows)
            except Exception:
                log.exception("cannot read the samples of %s x %s in %s", *pair, run_dir)
                verdicts[pair] = speeds[pair] = None
        interval = score_interval(score.value, verdicts[pair]) if verdicts[pair] is not None else None
        scorer = scorer_of(spec, score.dataset_index, evaluators.get(score.dataset_abbr))
        parts = fingerprint_parts(spec, score.dataset_index, scorer, manifest, dataset_configs.get(score.dataset_abbr))
        provenance.append({
            **empty,
            "scorer": scorer,
            "fingerprint": fingerprint_of(parts),
            "fingerprint_parts": parts,
            "speed": speeds[pair],
            **({"n": interval.n, "correct": interval.correct, "ci_low": interval.ci_low, "ci_high": interval.ci_high}
               if interval is not None else {}),
        })
    return provenance
