"""Compare / leaderboard: the latest successful score of each model on each dataset, with its evaluation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Dataset, Evaluation, Model, Score
from ..schemas.api import CompareCell, CompareTable
from . import access
from .accounts import Caller

PREFERRED_METRICS = ("accuracy", "score", "naive_average")


def compare(session: Session, caller: Caller, model_ids: list[int] | None, dataset_ids: list[int] | None,
            metric: str | None, shared_only: bool) -> CompareTable:
    """Only scores of evaluations the caller may read, of models the caller may read."""
    query = (
        select(Score, Evaluation.finished_at)
        .join(Evaluation, Score.evaluation_id == Evaluation.id)
        .join(Model, Score.model_id == Model.id)
        .where(Evaluation.status == "succeeded", Score.model_id.is_not(None), Score.dataset_id.is_not(None),
               access.readable_clause(caller, Evaluation), access.readable_clause(caller, Model))
        .order_by(Evaluation.finished_at.desc(), Evaluation.id.desc())
    )
    if model_ids:
        readable_models = select(Model.id).where(Model.id.in_(model_ids), access.readable_clause(caller, Model))
        model_ids = list(session.scalars(readable_models))
        query = query.where(Score.model_id.in_(model_ids))
    if dataset_ids:
        query = query.where(Score.dataset_id.in_(dataset_ids))
    if metric:
        query = query.where(Score.metric == metric)
    latest: dict[tuple[int, int, str], tuple[Score, object]] = {}
    metrics_of: dict[int, set[str]] = {}
    for score, finished_at in session.execute(query):
        latest.setdefault((score.model_id, score.dataset_id, score.metric), (score, finished_at))
        metrics_of.setdefault(score.dataset_id, set()).add(score.metric)

    def chosen_metric(dataset_id: int) -> str:
        names = metrics_of[dataset_id]
        return next((m for m in PREFERRED_METRICS if m in names), sorted(names)[0])

    cells: dict[str, dict[str, CompareCell]] = {}
    for (model_id, dataset_id, name), (score, finished_at) in latest.items():
        if name != chosen_metric(dataset_id):
            continue
        cells.setdefault(str(model_id), {})[str(dataset_id)] = CompareCell(
            value=score.value, evaluation_id=score.evaluation_id, finished_at=finished_at
        )
    model_list = sorted({int(m) for m in cells} | set(model_ids or []))
    dataset_list = sorted({int(d) for row in cells.values() for d in row})
    if shared_only and model_list:
        dataset_list = [d for d in dataset_list if all(str(d) in cells.get(str(m), {}) for m in model_list)]
        cells = {m: {d: c for d, c in row.items() if int(d) in dataset_list} for m, row in cells.items()}
    names_m = dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(model_list))).all())
    names_d = dict(session.execute(select(Dataset.id, Dataset.name).where(Dataset.id.in_(dataset_list))).all())
    averages = {}
    for model_id in model_list:
        values = [c.value for c in cells.get(str(model_id), {}).values()]
        averages[str(model_id)] = sum(values) / len(values) if values else None
    ranked = sorted(model_list, key=lambda m: -(averages[str(m)] if averages[str(m)] is not None else float("-inf")))
    return CompareTable(
        metric=metric,
        models=[{"id": m, "name": names_m.get(m, f"model {m}"), "average": averages[str(m)]} for m in ranked],
        datasets=[{"id": d, "name": names_d.get(d, f"dataset {d}"),
                   "metric": chosen_metric(d) if d in metrics_of else metric} for d in dataset_list],
        cells=cells,
        averages=averages,
    )
