"""Compare / leaderboard: each model's score on each dataset, put side by side only when the settings match.

Two scores are comparable when their fingerprints match (services/provenance.py: data, sample limit, prompt,
scorer, output-length override, OpenCompass version). For each dataset the column compares the fingerprint most
models have a result with (ties: the one with the newest result); a model's cell is its latest result with that
fingerprint, or else its latest result marked not comparable, with what differs. Averages use only the datasets
every model with scores has comparably, and the table names them. Each ranked model gets its plausible rank range
from a bootstrap over the samples behind those averages (statistics.rank_intervals).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aieval_engine.results import sample_verdicts

from ..config import Settings
from ..models import Dataset, Evaluation, Model, Score
from ..schemas.api import CompareCell, CompareDifference, CompareTable, RankInterval, SuggestedComparison
from ..storage import Storage
from . import access
from .accounts import Caller
from .statistics import RANK_RESAMPLES, rank_intervals

log = logging.getLogger(__name__)

PREFERRED_METRICS = ("accuracy", "score", "naive_average")
# The order differences are named in: what a person checks first.
FINGERPRINT_PART_ORDER = ("limit", "scorer", "max_out_len", "data", "config", "prompt", "opencompass")


@dataclass(frozen=True)
class _Result:
    score: Score
    finished_at: datetime | None
    newness: int  # 0 = the newest result of the query
    run_dir_name: str | None  # where the evaluation's outputs are stored (None: not stored)


def chosen_metric(names: set[str]) -> str:
    """The metric a dataset is compared (and headlined) by when it reports several."""
    return next((m for m in PREFERRED_METRICS if m in names), sorted(names)[0])


def _reference_fingerprint(results: list[_Result]) -> str | None:
    """The fingerprint most models have a result with; ties go to a recorded fingerprint, then the newest."""
    models_with: dict[str | None, set[int]] = {}
    newest: dict[str | None, int] = {}
    for result in results:
        fingerprint = result.score.fingerprint
        models_with.setdefault(fingerprint, set()).add(result.score.model_id)
        newest[fingerprint] = min(newest.get(fingerprint, result.newness), result.newness)
    return max(models_with, key=lambda f: (len(models_with[f]), f is not None, -newest[f]))


def _differences(parts: dict[str, Any] | None, reference: dict[str, Any] | None) -> list[CompareDifference]:
    if parts is None or reference is None:
        return [CompareDifference(part="unrecorded", value=None, reference=None)]
    keys = [k for k in FINGERPRINT_PART_ORDER if k in parts or k in reference]
    keys += sorted((set(parts) | set(reference)) - set(keys))  # parts added later still get named
    return [CompareDifference(part=key, value=_shown(parts.get(key)), reference=_shown(reference.get(key)))
            for key in keys if parts.get(key) != reference.get(key)]


def _shown(value: Any) -> str | int | None:
    return value if value is None or isinstance(value, (str, int)) and not isinstance(value, bool) else str(value)


def _cell(result: _Result, comparable: bool, differences: list[CompareDifference]) -> CompareCell:
    score = result.score
    return CompareCell(value=score.value, evaluation_id=score.evaluation_id, finished_at=result.finished_at,
                       n=score.n, correct=score.correct, ci_low=score.ci_low, ci_high=score.ci_high,
                       scorer=score.scorer, fingerprint=score.fingerprint, comparable=comparable,
                       differences=differences)


def _per_sample_scores(settings: Settings, storage: Storage, result: _Result) -> list[float] | float:
    """A cell's per-sample scores in its value's unit (the share right: 0 or 100 per sample), read from the run's
    stored outputs as the sample browser reads them; the value alone when they cannot stand for it (another metric,
    samples not stored or unreadable, or verdicts that do not add up to the stored count)."""
    # Imported here: artifacts imports services.evaluations, which imports this module (chosen_metric).
    from .artifacts import _pair_files, _RunFiles

    score = result.score
    if score.correct is None or not score.n or not result.run_dir_name:
        return score.value
    scale = next((s for s in (100.0, 1.0) if math.isclose(score.value, s * score.correct / score.n,
                                                            rel_tol=1e-6, abs_tol=1e-6)), None)
    if scale is None:
        return score.value
    try:
        run_dir = _pair_files(settings, storage, _RunFiles(score.evaluation_id, result.run_dir_name),
                              score.model_abbr, score.dataset_abbr)
        verdicts = sample_verdicts(run_dir, score.model_abbr, score.dataset_abbr)
    except Exception:  # a rank range is a refinement: without the samples the value is held fixed
        log.exception("cannot read the samples of score %s for its rank range", score.id)
        return score.value
    if len(verdicts) != score.n or sum(1 for v in verdicts if v) != score.correct or None in verdicts:
        return score.value
    return [scale if v else 0.0 for v in verdicts]


def _rank_intervals(settings: Settings, storage: Storage, ranked: list[int], dataset_ids: list[int],
                    chosen: dict[tuple[int, int], _Result]) -> dict[str, RankInterval]:
    if len(ranked) < 2 or not dataset_ids:
        return {}
    columns = [[_per_sample_scores(settings, storage, chosen[(m, d)]) for m in ranked] for d in dataset_ids]
    # Seeded: the same stored results always give the same ranges.
    intervals = rank_intervals(columns, resamples=RANK_RESAMPLES, seed=0)
    return {str(m): RankInterval(low=low, high=high) for m, (low, high) in zip(ranked, intervals, strict=True)}


def compare(session: Session, caller: Caller, model_ids: list[int] | None, dataset_ids: list[int] | None,
            metric: str | None, shared_only: bool, settings: Settings | None = None,
            storage: Storage | None = None) -> CompareTable:
    """Only scores of evaluations the caller may read, of models the caller may read. With `settings` and
    `storage` (where the per-sample verdicts are), ranked models get rank intervals."""
    query = (
        select(Score, Evaluation.finished_at, Evaluation.run_dir_name, Evaluation.artifacts_stored)
        .join(Evaluation, Score.evaluation_id == Evaluation.id)
        .join(Model, Score.model_id == Model.id)
        .where(Evaluation.status == "succeeded", Score.model_id.is_not(None), Score.dataset_id.is_not(None),
               access.readable_clause(caller, Evaluation), access.readable_clause(caller, Model))
        .order_by(Evaluation.finished_at.desc(), Evaluation.id.desc(), Score.id)
    )
    if model_ids:
        readable_models = select(Model.id).where(Model.id.in_(model_ids), access.readable_clause(caller, Model))
        model_ids = list(session.scalars(readable_models))
        query = query.where(Score.model_id.in_(model_ids))
    if dataset_ids:
        query = query.where(Score.dataset_id.in_(dataset_ids))
    if metric:
        query = query.where(Score.metric == metric)
    # dataset -> metric -> every result, newest first
    results: dict[int, dict[str, list[_Result]]] = {}
    for newness, (score, finished_at, run_dir_name, stored) in enumerate(session.execute(query)):
        results.setdefault(score.dataset_id, {}).setdefault(score.metric, []).append(
            _Result(score, finished_at, newness, run_dir_name if stored else None))

    cells: dict[str, dict[str, CompareCell]] = {}
    chosen: dict[tuple[int, int], _Result] = {}  # (model, dataset) -> the result its cell shows
    reference_of: dict[int, tuple[str | None, dict[str, Any] | None]] = {}
    metric_of: dict[int, str] = {}
    for dataset_id, by_metric in results.items():
        metric_of[dataset_id] = chosen_metric(set(by_metric))
        column = by_metric[metric_of[dataset_id]]
        reference = _reference_fingerprint(column)
        reference_parts = next(r.score.fingerprint_parts for r in column if r.score.fingerprint == reference)
        reference_of[dataset_id] = (reference, reference_parts)
        latest: dict[int, _Result] = {}
        matching: dict[int, _Result] = {}
        for result in column:  # newest first: setdefault keeps the latest
            latest.setdefault(result.score.model_id, result)
            if result.score.fingerprint == reference:
                matching.setdefault(result.score.model_id, result)
        for model_id, result in latest.items():
            if model_id in matching:
                cell = _cell(matching[model_id], True, [])
                chosen[(model_id, dataset_id)] = matching[model_id]
            else:
                cell = _cell(result, False, _differences(result.score.fingerprint_parts, reference_parts))
            cells.setdefault(str(model_id), {})[str(dataset_id)] = cell

    model_list = sorted({int(m) for m in cells} | set(model_ids or []))
    dataset_list = sorted({int(d) for row in cells.values() for d in row})
    # A chosen model without a single score is listed, but narrows neither the shared datasets nor the average:
    # it has nothing to share or compare.
    scored = [m for m in model_list if cells.get(str(m))]
    if shared_only and scored:
        dataset_list = [d for d in dataset_list if all(str(d) in cells[str(m)] for m in scored)]
        cells = {m: {d: c for d, c in row.items() if int(d) in dataset_list} for m, row in cells.items()}
    average_dataset_ids = [d for d in dataset_list if scored and all(
        str(d) in cells[str(m)] and cells[str(m)][str(d)].comparable for m in scored)]
    averages: dict[str, float | None] = {}
    for model_id in model_list:
        values = [cells[str(model_id)][str(d)].value for d in average_dataset_ids if str(model_id) in cells]
        averages[str(model_id)] = sum(values) / len(values) if values else None
    names_m = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(model_list))).all())
    names_d = dict(session.execute(select(Dataset.id, Dataset.name).where(Dataset.id.in_(dataset_list))).all())
    ranked = sorted(model_list, key=lambda m: -(averages[str(m)] if averages[str(m)] is not None else float("-inf")))
    with_average = [m for m in ranked if averages[str(m)] is not None]
    ranks = (_rank_intervals(settings, storage, with_average, average_dataset_ids, chosen)
             if settings is not None and storage is not None else {})
    return CompareTable(
        metric=metric,
        models=[{"id": m, "name": names_m.get(m, f"model {m}"), "average": averages[str(m)]} for m in ranked],
        datasets=[{"id": d, "name": names_d.get(d, f"dataset {d}"), "metric": metric_of.get(d, metric),
                   "fingerprint": reference_of[d][0], "fingerprint_parts": reference_of[d][1]}
                  for d in dataset_list],
        cells=cells,
        averages=averages,
        average_dataset_ids=average_dataset_ids,
        rank_intervals=ranks,
        rank_resamples=RANK_RESAMPLES if ranks else None,
    )


SUGGESTED_MODELS = 4


def suggested(session: Session, caller: Caller) -> SuggestedComparison:
    """What the compare page opens with when nothing is chosen: the models (at most SUGGESTED_MODELS) whose latest
    finished evaluations put the most of them side by side on one dataset with the same fingerprint, the newest
    such dataset on a tie; each model's newest evaluation there. With no two models comparable anywhere, the model
    with the newest finished scores alone; nothing when the caller can read no finished scores."""
    rows = session.execute(
        select(Score.model_id, Score.dataset_id, Score.fingerprint, Score.evaluation_id)
        .join(Evaluation, Score.evaluation_id == Evaluation.id)
        .join(Model, Score.model_id == Model.id)
        .where(Evaluation.status == "succeeded", Score.dataset_id.is_not(None),
               access.readable_clause(caller, Evaluation), access.readable_clause(caller, Model))
        .order_by(Evaluation.finished_at.desc(), Evaluation.id.desc(), Score.id)
    ).all()
    if not rows:
        return SuggestedComparison(model_ids=[], evaluation_ids=[], dataset_ids=[])
    # (dataset, fingerprint) -> model -> its newest evaluation with that result; dicts keep the newest first
    groups: dict[tuple[int, str], dict[int, int]] = {}
    first_seen: dict[tuple[int, str], int] = {}
    for newness, (model_id, dataset_id, fingerprint, evaluation_id) in enumerate(rows):
        if fingerprint is None:  # settings not recorded: comparable with nothing
            continue
        key = (dataset_id, fingerprint)
        groups.setdefault(key, {}).setdefault(model_id, evaluation_id)
        first_seen.setdefault(key, newness)
    best = max(groups, key=lambda k: (min(len(groups[k]), SUGGESTED_MODELS), -first_seen[k]), default=None)
    if best is None or len(groups[best]) < 2:
        model_id, _, _, evaluation_id = rows[0]
        return SuggestedComparison(model_ids=[model_id], evaluation_ids=[evaluation_id], dataset_ids=[])
    chosen = list(groups[best].items())[:SUGGESTED_MODELS]
    models = {m for m, _ in chosen}
    shared = sorted(d for (d, _), members in groups.items() if models <= members.keys())
    return SuggestedComparison(model_ids=[m for m, _ in chosen], evaluation_ids=[e for _, e in chosen],
                               dataset_ids=sorted(set(shared)))
