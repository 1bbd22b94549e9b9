"""Evaluations: submit (everything checked before anything is written), list, show, cancel, retry, delete."""

from __future__ import annotations

import functools
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from aieval_engine.spec import (
    BuiltinDatasetSpec,
    CustomDatasetSpec,
    EvalSpec,
    RunParams,
    SpecError,
    parse_spec,
)

from ..config import Settings
from ..enums import CANCELLABLE, RETRYABLE, TERMINAL, AuditAction, AuditTarget, EvaluationStatus, Visibility
from ..models import Dataset, Evaluation, EvaluationDataset, EvaluationModel, Model, Schedule, Score, User
from ..schemas.api import (
    EvaluationCreate,
    EvaluationDetail,
    EvaluationParams,
    EvaluationRescore,
    EvaluationSummary,
    EvaluationUpdate,
    HeadlineScore,
    JudgeRead,
)
from ..storage import Storage
from . import access, audit, quotas
from . import datasets as dataset_service
from . import models as model_service
from .accounts import Caller
from .compare import chosen_metric
from .errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def artifacts_prefix(evaluation_id: int) -> str:
    return f"evaluations/{evaluation_id}"


def job_dir(settings: Settings, evaluation_id: int) -> Path:
    return settings.jobs_dir / str(evaluation_id)


def queue_for(models: list[Model]) -> str:
    """Jobs with a local checkpoint need a machine with the weights (and maybe a GPU); the rest only call APIs."""
    return "local" if any(m.kind == "huggingface" for m in models) else "api"


# ---- submit -------------------------------------------------------------------------------------
def _load_all(session: Session, caller: Caller, kind: type, ids: list[int], label: str) -> list[Any]:
    """The rows by id, in order; those the caller may not read are reported as not existing."""
    if len(set(ids)) != len(ids):
        raise Invalid(f"the same {label} is listed twice", [f"{label}_ids: {ids}"])
    rows = {row.id: row for row in session.scalars(select(kind).where(kind.id.in_(ids)))
            if access.can_read(caller, row)}
    unknown = [i for i in ids if i not in rows]
    if unknown:
        raise Invalid(f"unknown {label} id(s): {', '.join(map(str, unknown))}",
                      [f"{label} {i} does not exist" for i in unknown])
    return [rows[i] for i in ids]


def scorer_for(dataset: Dataset, scorer: str | None) -> str:
    """How an uploaded dataset's answers are scored in an evaluation: the evaluation's scorer (a re-score, or a
    submission naming one) for question-answer files, else the dataset's own. Multiple-choice files keep theirs."""
    return scorer if scorer is not None and dataset.data_type == "qa" else dataset.scorer


def judged_datasets(datasets: list[Dataset], scorer: str | None) -> list[Dataset]:
    """The datasets an LLM judge scores: uploaded files scored "judge" and built-in configs OpenCompass scores
    with a judge."""
    return [d for d in datasets
            if (d.kind == "builtin" and dataset_service.builtin_needs_judge(d.builtin_config))
            or (d.kind != "builtin" and scorer_for(d, scorer) == "judge")]


def _check_scoring(datasets: list[Dataset], scorer: str | None, judge: Model | None) -> None:
    """A judge exactly when something is judged; an evaluation-wide scorer only where there is a file it applies to."""
    if scorer is not None and not any(d.kind != "builtin" and d.data_type == "qa" for d in datasets):
        raise Invalid(f"the scorer {scorer!r} applies to uploaded question-answer datasets; this evaluation has none")
    judged = judged_datasets(datasets, scorer)
    if judged and judge is None:
        raise Invalid("choose a judge model (judge_model_id): these datasets are scored by an LLM judge",
                      [f"dataset {d.name!r}: " + ("OpenCompass scores this built-in config with a judge model"
                                                 if d.kind == "builtin" else "its scorer is 'judge'") for d in judged])
    if judge is not None and not judged:
        raise Invalid("no dataset of this evaluation is scored by a judge, so a judge model has nothing to do",
                      ["choose the scorer 'judge' for an uploaded question-answer dataset, or leave judge_model_id "
                       "unset"])


def _with_key(spec: Any) -> dict[str, Any]:
    """A model spec as data for parse_spec, with its key: the key is excluded from every dump, so it is put back
    here (in memory only, never written anywhere)."""
    return spec.model_dump() | ({"api_key": spec.api_key} if getattr(spec, "api_key", None) else {})


def build_spec(settings: Settings, storage: Storage | None, name: str, models: list[Model], datasets: list[Dataset],
               params: dict[str, Any], *, judge_model: Model | None = None, judge_prompt_language: str | None = None,
               scorer: str | None = None, with_keys: bool = False, local_files: bool = False) -> EvalSpec:
    """The engine spec of an evaluation. API side: no keys, dataset paths are placeholders with the right
    extension (validation only); worker side: decrypted keys (the judge's too) and the uploaded files on local
    disk. `scorer`: the evaluation's scorer for question-answer files (scorer_for)."""
    model_specs = [model_service.engine_spec(m, settings, with_key=with_keys) for m in models]
    dataset_specs: list[BuiltinDatasetSpec | CustomDatasetSpec] = []
    for dataset in datasets:
        if dataset.kind == "builtin":
            dataset_specs.append(BuiltinDatasetSpec(config=dataset.builtin_config))
            continue
        path = (
            str(dataset_service.local_file(settings, storage, dataset))
            if local_files
            else f"/stored/{dataset.storage_key}"
        )
        dataset_specs.append(
            CustomDatasetSpec(name=dataset.name, path=path, data_type=dataset.data_type,
                              infer_method=dataset.infer_method, scorer=scorer_for(dataset, scorer))
        )
    judge: dict[str, Any] = {}
    if judge_model is not None:
        judge_spec = model_service.engine_spec(judge_model, settings, with_key=with_keys)
        judge = {"judge": {"model": _with_key(judge_spec), "prompt_language": judge_prompt_language or "auto"}}
    try:
        return parse_spec({
            "name": name,
            "models": [_with_key(m) for m in model_specs],
            "datasets": [d.model_dump() for d in dataset_specs],
            "params": RunParams(**params).model_dump(),
            **judge,
        })
    except SpecError as exc:
        raise Invalid("this evaluation cannot be run", exc.problems) from None


def _checkpoint_problems(settings: Settings, model: Model) -> list[str]:
    """Why a local model's checkpoint cannot be used by a run (nothing for endpoint models)."""
    if model.kind != "huggingface" or not settings.check_model_paths:
        return []
    # The server's rules first (roots, remote code): a row saved before they existed must not tell whether
    # a folder outside the roots exists.
    try:
        spec = model_service.engine_spec(model, settings)
    except Invalid as exc:
        return [f"{exc.message}: {problem}" for problem in exc.problems]
    path = Path(spec.path)
    if not (path / "config.json").is_file():
        hint = " (the demo model is still being prepared; try again in a minute)" if model.is_demo else ""
        return [f"model {model.name!r}: no Hugging Face checkpoint at {path}{hint}"]
    return []


def _check_runnable(settings: Settings, models: list[Model], datasets: list[Dataset],
                    judge: Model | None = None) -> None:
    problems = []
    for model in models:
        if model.kind not in model_service.EVALUABLE_KINDS:
            problems.append(f"model {model.name!r}: {model.kind} models cannot be evaluated")
        problems.extend(_checkpoint_problems(settings, model))
    if judge is not None:
        problems.extend(f"judge {problem}" for problem in _checkpoint_problems(settings, judge))
    for dataset in datasets:
        if dataset.kind == "builtin":
            missing = dataset_service.builtin_missing(settings, dataset.builtin_config)
            if missing:
                problems.append(f"dataset {dataset.name!r}: its data is not on this server (missing {', '.join(missing)})")
        if dataset.infer_method == "ppl":
            for model in models:
                if model.kind in ("openai", "dify"):
                    problems.append(f"{model.name!r} × {dataset.name!r}: perplexity (ppl) scoring needs a local model, "
                                    "an API endpoint or Dify app does not return prompt log-probabilities")
    if problems:
        raise Invalid("this evaluation cannot be run", problems)


def create(session: Session, settings: Settings, storage: Storage, body: EvaluationCreate,
           caller: Caller, *, rescored_from: Evaluation | None = None) -> Evaluation:
    """Check everything, then write one row; the caller hands it to the workers (submission.submit, which commits
    first). `rescored_from`: a finished evaluation whose predictions this one scores again (its worker runs no
    inference)."""
    access.require_member(caller)
    models = _load_all(session, caller, Model, body.model_ids, "model")
    datasets = _load_all(session, caller, Dataset, body.dataset_ids, "dataset")
    for config in dict.fromkeys(body.builtin_datasets):
        datasets.append(dataset_service.get_or_register_builtin(session, settings, config, caller))
    if not datasets:
        raise Invalid("choose at least one dataset (dataset_ids or builtin_datasets)")
    if len({d.id for d in datasets}) != len(datasets):
        raise Invalid("the same dataset is listed twice")
    # The judge is read like any model the caller names: one they may not read is reported as not existing.
    judge = _load_all(session, caller, Model, [body.judge_model_id], "model")[0] if body.judge_model_id else None
    judge_language = body.judge_prompt_language if judge is not None else None
    params = body.params.model_dump(exclude_none=True)
    _check_scoring(datasets, body.scorer, judge)
    _check_runnable(settings, models, datasets, judge)
    build_spec(settings, storage, body.name, models, datasets, params, judge_model=judge,
               judge_prompt_language=judge_language, scorer=body.scorer)
    if body.schedule_id is not None:  # its baseline and gate rules apply to this run (services/gates.py)
        access.readable(caller, session.get(Schedule, body.schedule_id), "schedule", body.schedule_id)
    quotas.check_can_submit(session, settings, caller)
    # enqueued_at stays NULL until the broker has the message (submission.submit stamps it): a job whose API
    # process died before sending is then found and sent by the sweeper.
    evaluation = Evaluation(name=body.name, status=EvaluationStatus.queued.value, params=params,
                            queue=queue_for(models + ([judge] if judge is not None else [])), enqueued_at=None,
                            priority=1 if caller.is_admin else 0, scorer=body.scorer,
                            judge_model_id=judge.id if judge is not None else None,
                            judge_prompt_language=judge_language,
                            rescored_from_id=rescored_from.id if rescored_from is not None else None,
                            schedule_id=body.schedule_id,
                            **access.ownership(caller, body.visibility, settings.default_visibility))
    evaluation.models = [EvaluationModel(model_id=m.id, position=i) for i, m in enumerate(models)]
    evaluation.datasets = [EvaluationDataset(dataset_id=d.id, position=i) for i, d in enumerate(datasets)]
    session.add(evaluation)
    session.flush()
    scoring = {key: value for key, value in (
        ("scorer", body.scorer), ("judge", judge.name if judge is not None else None),
        ("judge_prompt_language", judge_language),
        ("rescored_from", rescored_from.id if rescored_from is not None else None)) if value is not None}
    audit.record(session, caller, AuditAction.submitted, AuditTarget.evaluation, evaluation.id, evaluation.name,
                 {"models": [m.name for m in models], "datasets": [d.name for d in datasets], "params": params,
                  **scoring})
    return evaluation


# ---- read ---------------------------------------------------------------------------------------
def _with_links(query: Select) -> Select:
    return query.options(
        selectinload(Evaluation.models).selectinload(EvaluationModel.model),
        selectinload(Evaluation.datasets).selectinload(EvaluationDataset.dataset),
    )


def readable(session: Session, evaluation_id: int, caller: Caller, *, scores: bool = False) -> Evaluation:
    """The evaluation if the caller may read it (NotFound otherwise, as if there were none)."""
    return access.readable(caller, _find(session, evaluation_id, scores), "evaluation", evaluation_id)


def changeable(session: Session, evaluation_id: int, caller: Caller) -> Evaluation:
    return access.changeable(caller, _find(session, evaluation_id, False), "evaluation", evaluation_id)


def get(session: Session, evaluation_id: int, *, scores: bool = False) -> Evaluation:
    """For the server's own work (workers, sweeper), not for requests: no access check."""
    evaluation = _find(session, evaluation_id, scores)
    if evaluation is None:
        raise NotFound(f"evaluation {evaluation_id} does not exist")
    return evaluation


def _find(session: Session, evaluation_id: int, scores: bool) -> Evaluation | None:
    query = _with_links(select(Evaluation).where(Evaluation.id == evaluation_id))
    if scores:
        query = query.options(selectinload(Evaluation.scores))
    return session.scalar(query)


SUMMARY_COLUMNS = (
    Evaluation.id, Evaluation.name, Evaluation.status, Evaluation.queue, Evaluation.created_at, Evaluation.started_at,
    Evaluation.finished_at, Evaluation.fraction, Evaluation.stage, Evaluation.revision, Evaluation.error,
    Evaluation.owner_id, Evaluation.visibility, Evaluation.schedule_id, Evaluation.gate_status,
)


def _access_mode(caller: Caller, scope: access.ListScope) -> str:
    """Which rows a list shows, as one of the few shapes _list_statements builds (the caller's id is a parameter)."""
    if scope == "mine":
        return "mine" if caller.user_id is not None else "installation"
    return "everything" if caller.is_admin else "readable"


def list_evaluations(session: Session, caller: Caller, *, status: list[EvaluationStatus] | None,
                     model_id: int | None, dataset_id: int | None, q: str | None, page: int, page_size: int,
                     scope: access.ListScope = "all") -> tuple[list[EvaluationSummary], int]:
    """One page of summaries, newest first. Reads plain columns (no ORM objects, no JSON): lists are hot.
    `status` is checked where the request is parsed (an unknown one is a 422 naming the known ones)."""
    text_is_id = bool(q and q.isdigit())
    count, page_query = _list_statements(session.get_bind().dialect.name, bool(status), model_id is not None,
                                         dataset_id is not None, bool(q), text_is_id, _access_mode(caller, scope))
    values: dict[str, Any] = {"statuses": [EvaluationStatus(s).value for s in status or ()], "model_id": model_id, "dataset_id": dataset_id,
                              "pattern": _contains_pattern(q) if q else None, "text_id": int(q) if text_is_id else None,
                              "offset": (page - 1) * page_size, "limit": page_size, "caller_id": caller.user_id}
    connection = session.connection()
    total = connection.execute(count, values).scalar() or 0
    rows = connection.execute(page_query, values).all()
    return summaries(session, rows, caller), total


def _contains_pattern(text: str) -> str:
    """A LIKE pattern matching `text` literally anywhere (a user's % or _ is not a wildcard)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _matches_text(column, dialect: str):
    # SQLite's LIKE already ignores ASCII case and its lower() folds nothing more, so ilike's lower() on both
    # sides would only cost a function call per row there.
    pattern = bindparam("pattern")
    return column.like(pattern, escape="\\") if dialect == "sqlite" else column.ilike(pattern, escape="\\")


@functools.cache
def _list_statements(dialect: str, by_status: bool, by_model: bool, by_dataset: bool, by_text: bool, text_is_id: bool,
                     access_mode: str):
    """The count and page statements for one combination of filters, built once: building and caching a
    statement costs more than SQLite takes to run it on a 10,000-row table."""
    conditions = []
    mine = Evaluation.owner_id == bindparam("caller_id")
    if access_mode == "readable":  # the same rule as access.may_read, in SQL
        conditions.append(or_(Evaluation.visibility == "shared", mine))
    elif access_mode == "mine":
        conditions.append(mine)
    elif access_mode == "installation":
        conditions.append(Evaluation.owner_id.is_(None))
    if by_status:
        conditions.append(Evaluation.status.in_(bindparam("statuses", expanding=True)))
    if by_model:
        conditions.append(Evaluation.id.in_(
            select(EvaluationModel.evaluation_id).where(EvaluationModel.model_id == bindparam("model_id"))))
    if by_dataset:
        conditions.append(Evaluation.id.in_(
            select(EvaluationDataset.evaluation_id).where(EvaluationDataset.dataset_id == bindparam("dataset_id"))))
    if by_text:
        matching_models = select(Model.id).where(_matches_text(Model.name, dialect))
        by_model_name = select(EvaluationModel.evaluation_id).where(EvaluationModel.model_id.in_(matching_models))
        options = [_matches_text(Evaluation.name, dialect), Evaluation.id.in_(by_model_name)]
        if text_is_id:
            options.append(Evaluation.id == bindparam("text_id"))
        conditions.append(or_(*options))
    count = select(func.count()).select_from(Evaluation).where(*conditions)
    page = (select(*SUMMARY_COLUMNS).where(*conditions)
            .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
            .offset(bindparam("offset")).limit(bindparam("limit")))
    return count, page


_MODEL_LINKS = (
    select(EvaluationModel.evaluation_id, Model.id, Model.name, Model.kind).join(Model)
    .where(EvaluationModel.evaluation_id.in_(bindparam("ids", expanding=True))).order_by(EvaluationModel.position)
)
_DATASET_LINKS = (
    select(EvaluationDataset.evaluation_id, Dataset.id, Dataset.name, Dataset.kind).join(Dataset)
    .where(EvaluationDataset.evaluation_id.in_(bindparam("ids", expanding=True))).order_by(EvaluationDataset.position)
)


_OWNERS = select(User.id, User.username, User.display_name).where(User.id.in_(bindparam("ids", expanding=True)))


def _owners(session: Session, owner_ids: set[int]) -> dict[int, dict[str, Any]]:
    if not owner_ids:
        return {}
    return {row.id: {"id": row.id, "username": row.username, "display_name": row.display_name}
            for row in session.connection().execute(_OWNERS, {"ids": sorted(owner_ids)})}


_HEADLINE_SCORES = (
    select(Score.evaluation_id, Score.model_id, Score.model_name, Score.dataset_name, Score.metric, Score.value,
           Score.n, Score.correct, Score.ci_low, Score.ci_high)
    .where(Score.evaluation_id.in_(bindparam("ids", expanding=True))).order_by(Score.id)
)


def _headlines(rows: list[Any]) -> list[HeadlineScore]:
    """One evaluation's headline per model, in the order its scores were stored: the model's score on its only
    dataset, or its average over its datasets (each by the metric compare uses for it), with the samples behind it."""
    by_model: dict[tuple[int | None, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault((row.model_id, row.model_name), {}).setdefault(row.dataset_name, {})[row.metric] = row
    headlines = []
    for (model_id, model_name), by_dataset in by_model.items():
        chosen = [metrics[chosen_metric(set(metrics))] for metrics in by_dataset.values()]
        counts = [row.n for row in chosen]
        n = sum(counts) if None not in counts else None
        if len(chosen) == 1:
            only = chosen[0]
            headlines.append(HeadlineScore(model_id=model_id, model=model_name, value=only.value, datasets=1,
                                           dataset=only.dataset_name, metric=only.metric, n=n, correct=only.correct,
                                           ci_low=only.ci_low, ci_high=only.ci_high))
        else:
            headlines.append(HeadlineScore(model_id=model_id, model=model_name, datasets=len(chosen), n=n,
                                           value=sum(row.value for row in chosen) / len(chosen)))
    return headlines


def summaries(session: Session, rows, caller: Caller) -> list[EvaluationSummary]:
    """Summaries of rows of SUMMARY_COLUMNS (or Evaluation objects) as `caller` sees them: one query each for the
    page's models, datasets, owners and headline scores, however many rows."""
    ids = [row.id for row in rows]
    models: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    datasets: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    score_rows: dict[int, list[Any]] = {i: [] for i in ids}
    owners = _owners(session, {row.owner_id for row in rows if row.owner_id is not None})
    if ids:
        connection = session.connection()
        for evaluation_id, link_id, name, kind in connection.execute(_MODEL_LINKS, {"ids": ids}):
            models[evaluation_id].append({"id": link_id, "name": name, "kind": kind})
        for evaluation_id, link_id, name, kind in connection.execute(_DATASET_LINKS, {"ids": ids}):
            datasets[evaluation_id].append({"id": link_id, "name": name, "kind": kind})
        for score in connection.execute(_HEADLINE_SCORES, {"ids": ids}):
            score_rows[score.evaluation_id].append(score)
    return [
        EvaluationSummary(id=row.id, name=row.name, status=row.status, queue=row.queue, created_at=row.created_at,
                          started_at=row.started_at, finished_at=row.finished_at, fraction=row.fraction,
                          stage=row.stage, revision=row.revision, error=row.error,
                          models=models[row.id], datasets=datasets[row.id], owner=owners.get(row.owner_id),
                          visibility=row.visibility, can_change=access.may_change(caller, row.owner_id),
                          headline=_headlines(score_rows[row.id]), schedule_id=row.schedule_id,
                          gate_status=row.gate_status)
        for row in rows
    ]


def summary(evaluation: Evaluation, caller: Caller) -> EvaluationSummary:
    return EvaluationSummary(
        **access.owned_fields(caller, evaluation),
        id=evaluation.id, name=evaluation.name, status=evaluation.status, queue=evaluation.queue,
        models=[{"id": link.model_id, "name": link.model.name, "kind": link.model.kind} for link in evaluation.models],
        datasets=[{"id": link.dataset_id, "name": link.dataset.name, "kind": link.dataset.kind} for link in evaluation.datasets],
        created_at=evaluation.created_at, started_at=evaluation.started_at, finished_at=evaluation.finished_at,
        fraction=evaluation.fraction, stage=evaluation.stage, revision=evaluation.revision, error=evaluation.error,
        schedule_id=evaluation.schedule_id, gate_status=evaluation.gate_status,
    )


# A score as the API shows it (schemas ScoreRead), from a Score row or a select of these columns.
SCORE_COLUMNS = (Score.model_id, Score.model_name, Score.dataset_id, Score.dataset_name, Score.metric, Score.value,
                 Score.n, Score.correct, Score.scorer, Score.ci_low, Score.ci_high, Score.fingerprint,
                 Score.fingerprint_parts, Score.speed)


def _score_dict(s: Any) -> dict[str, Any]:
    return {"model_id": s.model_id, "model": s.model_name, "dataset_id": s.dataset_id, "dataset": s.dataset_name,
            "metric": s.metric, "value": s.value, "n": s.n, "correct": s.correct, "scorer": s.scorer,
            "ci_low": s.ci_low, "ci_high": s.ci_high, "fingerprint": s.fingerprint,
            "fingerprint_parts": s.fingerprint_parts, "speed": s.speed}


def score_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    return [_score_dict(s) for s in sorted(evaluation.scores, key=lambda s: (s.model_name, s.dataset_name, s.metric))]


def detail(evaluation: Evaluation, caller: Caller) -> EvaluationDetail:
    """The full view of an evaluation loaded with its links and scores (exports)."""
    return _detail(evaluation, summary(evaluation, caller).model_dump(), score_rows(evaluation))


def _detail(evaluation: Evaluation, base: dict[str, Any], scores: list[dict[str, Any]]) -> EvaluationDetail:
    duration = None
    if evaluation.started_at and evaluation.finished_at:
        duration = (_aware(evaluation.finished_at) - _aware(evaluation.started_at)).total_seconds()
    judge = None
    if evaluation.judge_model_id is not None and evaluation.judge_model is not None:
        judge = JudgeRead(model_id=evaluation.judge_model_id, model=evaluation.judge_model.name,
                          prompt_language=evaluation.judge_prompt_language or "auto")
    return EvaluationDetail(
        **base,
        params=evaluation.params, scorer=evaluation.scorer, judge=judge, rescored_from_id=evaluation.rescored_from_id,
        attempts=evaluation.attempts, worker=evaluation.worker,
        heartbeat_at=evaluation.heartbeat_at, cancel_requested=evaluation.cancel_requested,
        progress=evaluation.progress, duration_s=duration, log_excerpt=evaluation.log_excerpt,
        manifest=evaluation.manifest, pairs=evaluation.pairs, scores=scores, gate=evaluation.gate,
    )


def show(session: Session, evaluation_id: int, caller: Caller) -> EvaluationDetail:
    """`detail` for one id with a few plain queries (the most requested page while jobs run), if the caller may
    read it."""
    evaluation = access.readable(caller, session.get(Evaluation, evaluation_id), "evaluation", evaluation_id)
    base = summaries(session, [evaluation], caller)[0]
    scores = [
        _score_dict(row)
        for row in session.execute(
            select(*SCORE_COLUMNS)
            .where(Score.evaluation_id == evaluation_id)
            .order_by(Score.model_name, Score.dataset_name, Score.metric)
        )
    ]
    return _detail(evaluation, dict(base), scores)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# ---- state changes ------------------------------------------------------------------------------
def edit(session: Session, evaluation_id: int, body: EvaluationUpdate, caller: Caller) -> Evaluation:
    """Rename an evaluation or change who may read it."""
    evaluation = changeable(session, evaluation_id, caller)
    if body.name is not None:
        evaluation.name = body.name
    if body.visibility is not None:
        evaluation.visibility = body.visibility.value
    evaluation.revision += 1  # live feeds and pollers notice the change
    session.flush()
    audit.record(session, caller, AuditAction.updated, AuditTarget.evaluation, evaluation.id, evaluation.name,
                 {"fields": sorted(body.model_fields_set)})
    return evaluation


def cancel(session: Session, evaluation_id: int, caller: Caller) -> Evaluation:
    evaluation = changeable(session, evaluation_id, caller)
    if evaluation.status not in CANCELLABLE:
        raise Conflict(f"evaluation {evaluation_id} has already finished ({evaluation.status})")
    # A queued job is cancelled at once (a worker that receives it later skips it); a running one is
    # stopped by its worker, which watches this flag.
    session.execute(
        update(Evaluation).where(Evaluation.id == evaluation_id)
        .values(cancel_requested=True, revision=Evaluation.revision + 1)
    )
    session.execute(
        update(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.status == EvaluationStatus.queued.value)
        .values(status=EvaluationStatus.cancelled.value, finished_at=utcnow(), error="cancelled by request")
    )
    session.flush()
    session.refresh(evaluation)
    audit.record(session, caller, AuditAction.cancelled, AuditTarget.evaluation, evaluation.id, evaluation.name)
    return evaluation


def retry(session: Session, settings: Settings, storage: Storage, evaluation_id: int, caller: Caller) -> Evaluation:
    """Queue a finished-unsuccessfully job again; its worker resumes from the predictions already made."""
    evaluation = changeable(session, evaluation_id, caller)
    if evaluation.status not in RETRYABLE:
        raise Conflict(f"only {', '.join(sorted(RETRYABLE))} evaluations can be retried (this one is {evaluation.status})")
    models = [link.model for link in evaluation.models]
    datasets = [link.dataset for link in evaluation.datasets]
    _check_runnable(settings, models, datasets, evaluation.judge_model)
    build_spec(settings, storage, evaluation.name, models, datasets, evaluation.params,
               judge_model=evaluation.judge_model, judge_prompt_language=evaluation.judge_prompt_language,
               scorer=evaluation.scorer)
    quotas.check_can_submit(session, settings, caller)
    evaluation.status = EvaluationStatus.queued.value
    evaluation.cancel_requested = False
    evaluation.error = evaluation.log_excerpt = None
    evaluation.finished_at = None
    evaluation.enqueued_at = None  # stamped once sent, as for a new job
    evaluation.worker = None
    evaluation.revision += 1
    session.flush()
    audit.record(session, caller, AuditAction.retried, AuditTarget.evaluation, evaluation.id, evaluation.name)
    return evaluation


def delete(session: Session, settings: Settings, storage: Storage, evaluation_id: int, caller: Caller) -> None:
    evaluation = changeable(session, evaluation_id, caller)
    if evaluation.status == EvaluationStatus.running:
        raise Conflict(f"evaluation {evaluation_id} is running; cancel it first")
    audit.record(session, caller, AuditAction.deleted, AuditTarget.evaluation, evaluation.id, evaluation.name)
    session.delete(evaluation)
    session.commit()
    storage.delete_prefix(artifacts_prefix(evaluation_id))
    shutil.rmtree(job_dir(settings, evaluation_id), ignore_errors=True)
    shutil.rmtree(settings.cache_dir / artifacts_prefix(evaluation_id), ignore_errors=True)


# ---- run again ----------------------------------------------------------------------------------
AGAIN = " (again)"


def resubmission(evaluation: Evaluation) -> EvaluationCreate:
    """The submission that runs `evaluation` again: its models, datasets (built-in ones by config name, as a new
    submission names them), parameters and visibility, under its name + " (again)"."""
    if evaluation.status not in TERMINAL:
        raise Conflict(f"evaluation {evaluation.id} has not finished yet ({evaluation.status}); "
                       "run it again once it has")
    links = sorted(evaluation.datasets, key=lambda link: link.position)
    name = evaluation.name if evaluation.name.endswith(AGAIN) else evaluation.name[: 200 - len(AGAIN)] + AGAIN
    try:
        params = EvaluationParams.model_validate(evaluation.params or {})
    except ValidationError as exc:
        raise Invalid("this evaluation's parameters are no longer accepted; start a new evaluation instead",
                      [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
    return EvaluationCreate(
        name=name,
        model_ids=[link.model_id for link in sorted(evaluation.models, key=lambda link: link.position)],
        dataset_ids=[link.dataset_id for link in links if link.dataset.kind != "builtin"],
        builtin_datasets=[link.dataset.builtin_config for link in links if link.dataset.kind == "builtin"],
        params=params, visibility=Visibility(evaluation.visibility), scorer=evaluation.scorer,
        judge_model_id=evaluation.judge_model_id, judge_prompt_language=evaluation.judge_prompt_language or "auto",
    )


def run_again(session: Session, settings: Settings, storage: Storage, evaluation_id: int,
              caller: Caller) -> Evaluation:
    """A finished evaluation run again as the caller's own new one: every check of a new submission applies."""
    access.require_member(caller)
    return create(session, settings, storage, resubmission(readable(session, evaluation_id, caller)), caller)


# ---- re-score -----------------------------------------------------------------------------------
RESCORED = " (re-scored)"


def rescore(session: Session, settings: Settings, storage: Storage, evaluation_id: int, body: EvaluationRescore,
            caller: Caller) -> Evaluation:
    """A succeeded evaluation's predictions scored again with another scorer or judge, as the caller's own new
    evaluation (same models, datasets and parameters) whose worker runs no inference. Every check of a new
    submission applies."""
    access.require_member(caller)
    source = readable(session, evaluation_id, caller)
    if source.status != EvaluationStatus.succeeded:
        raise Conflict(f"only a succeeded evaluation can be re-scored (#{evaluation_id} is {source.status}): "
                       "its predictions must all be there")
    if not source.artifacts_stored or not source.run_dir_name:
        raise Conflict(f"evaluation {evaluation_id} has no stored predictions to score again")
    if body.scorer is None and body.judge_model_id is None:
        raise Invalid("choose what to score with: a scorer, a judge model, or both")
    submission = resubmission(source)
    datasets = [link.dataset for link in sorted(source.datasets, key=lambda link: link.position)]
    scorer = body.scorer if body.scorer is not None else source.scorer
    # A judge named now, else the source's when what is re-scored is still judged (e.g. another prompt language).
    judge_model_id = body.judge_model_id
    language = body.judge_prompt_language
    if judge_model_id is None and judged_datasets(datasets, scorer):
        judge_model_id = source.judge_model_id
        if "judge_prompt_language" not in body.model_fields_set:
            language = source.judge_prompt_language or "auto"
    base = source.name.removesuffix(AGAIN).removesuffix(RESCORED)
    submission = submission.model_copy(update={
        "name": body.name or base[: 200 - len(RESCORED)] + RESCORED,
        "scorer": scorer, "judge_model_id": judge_model_id, "judge_prompt_language": language,
        "visibility": body.visibility or submission.visibility,
    })
    return create(session, settings, storage, submission, caller, rescored_from=source)


def rescore_source(session: Session, evaluation: Evaluation) -> tuple[int, str] | None:
    """(id, run dir name) of the evaluation whose predictions `evaluation` scores again; None when it is not a
    re-score. Raises Invalid when the source is gone (deleted, or its predictions no longer stored): running the
    models again instead would be what re-scoring promised not to do."""
    if evaluation.rescored_from_id is None:
        return None
    source = session.get(Evaluation, evaluation.rescored_from_id)
    if source is None or not source.artifacts_stored or not source.run_dir_name:
        raise Invalid(f"evaluation {evaluation.rescored_from_id}, whose predictions this one scores again, was deleted "
                      "or has no stored predictions; start a new evaluation instead")
    return source.id, source.run_dir_name
