from __future__ import annotations

from typing import Annotated, Literal

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, BackgroundTasks, Query, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from ..db import session_scope
from ..enums import EvaluationStatus
from ..schemas.api import (
    EvaluationCreate,
    EvaluationDetail,
    EvaluationRescore,
    EvaluationSummary,
    EvaluationUpdate,
    Page,
    SampleRead,
    ScoreRead,
)
from ..schemas.ids import DatabaseId, PageNumber
from ..services import access, artifacts
from ..services import evaluations as service
from ..services.submission import submit
from .deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/evaluations", tags=["evaluations"])

# List and show run their few milliseconds of database and serialization work on at most two threads per
# process. Starlette's default pool admits 40 at once; under a burst they then fight over the GIL (and the
# event loop with them): at 120 requests/s on one process p99 was ~100 ms with 40 threads, ~45 ms with 2.
hot_reads = CapacityLimiter(2)


@router.post("", response_model=EvaluationDetail, status_code=201)
def create_evaluation(*, body: EvaluationCreate, session: SessionDep,
                      settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    evaluation = service.create(session, settings, storage, body, caller)
    submit(settings, evaluation.id, evaluation.queue, session=session)
    return service.show(session, evaluation.id, caller)


@router.get("", response_model=Page[EvaluationSummary])
async def list_evaluations(*, status: Annotated[list[EvaluationStatus] | None, Query()] = None, model_id: DatabaseId | None = None,
                           dataset_id: DatabaseId | None = None, q: Annotated[str | None, Query(max_length=200)] = None,
                           page: PageNumber = 1, page_size: Annotated[int, Query(ge=1, le=200)] = 20,
                           scope: access.ListScope = "all", settings: SettingsDep, caller: CurrentUser):
    """The evaluations the caller may read ("all") or owns ("mine"), newest first."""
    # The hottest endpoints: all database work in one thread hop, serialized once (no re-validation).
    def work() -> bytes:
        with session_scope(settings.database_url) as session:
            items, total = service.list_evaluations(session, caller, status=status, model_id=model_id,
                                                    dataset_id=dataset_id, q=q, page=page, page_size=page_size,
                                                    scope=scope)
            return Page[EvaluationSummary](items=items, total=total, page=page, page_size=page_size).model_dump_json().encode()

    return Response(await to_thread.run_sync(work, limiter=hot_reads), media_type="application/json")


@router.get("/{evaluation_id}", response_model=EvaluationDetail)
async def show_evaluation(*, evaluation_id: DatabaseId, settings: SettingsDep, caller: CurrentUser):
    def work() -> bytes:
        with session_scope(settings.database_url) as session:
            return service.show(session, evaluation_id, caller).model_dump_json().encode()

    return Response(await to_thread.run_sync(work, limiter=hot_reads), media_type="application/json")


@router.patch("/{evaluation_id}", response_model=EvaluationDetail)
def update_evaluation(*, evaluation_id: DatabaseId, body: EvaluationUpdate, session: SessionDep,
                      caller: CurrentUser):
    """Rename it or change who may read it (its owner and administrators)."""
    service.edit(session, evaluation_id, body, caller)
    session.commit()
    return service.show(session, evaluation_id, caller)


@router.post("/{evaluation_id}/cancel", response_model=EvaluationDetail)
def cancel_evaluation(*, evaluation_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    service.cancel(session, evaluation_id, caller)
    session.commit()
    return service.show(session, evaluation_id, caller)


@router.post("/{evaluation_id}/retry", response_model=EvaluationDetail)
def retry_evaluation(*, evaluation_id: DatabaseId, session: SessionDep,
                     settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    evaluation = service.retry(session, settings, storage, evaluation_id, caller)
    submit(settings, evaluation.id, evaluation.queue, session=session)
    return service.show(session, evaluation_id, caller)


@router.post("/{evaluation_id}/rerun", response_model=EvaluationDetail, status_code=201)
def rerun_evaluation(*, evaluation_id: DatabaseId, session: SessionDep,
                     settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """Run a finished evaluation again as the caller's own new evaluation (same models, datasets, parameters and
    visibility). Every check of a new submission applies: the caller must be a member who may read the evaluation
    and each of its models and datasets, and within their quotas."""
    evaluation = service.run_again(session, settings, storage, evaluation_id, caller)
    submit(settings, evaluation.id, evaluation.queue, session=session)
    return service.show(session, evaluation.id, caller)


@router.post("/{evaluation_id}/rescore", response_model=EvaluationDetail, status_code=201)
def rescore_evaluation(*, evaluation_id: DatabaseId, body: EvaluationRescore, session: SessionDep,
                       settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """Score a succeeded evaluation's predictions again with another scorer or judge: a new evaluation of the
    caller's own (same models, datasets and parameters) that runs no inference, linked by rescored_from_id. Every
    check of a new submission applies (a member who may read the evaluation, its models, datasets and the judge;
    quotas)."""
    evaluation = service.rescore(session, settings, storage, evaluation_id, body, caller)
    submit(settings, evaluation.id, evaluation.queue, session=session)
    return service.show(session, evaluation.id, caller)


@router.delete("/{evaluation_id}", status_code=204)
def delete_evaluation(*, evaluation_id: DatabaseId, session: SessionDep,
                      settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    service.delete(session, settings, storage, evaluation_id, caller)
    return Response(status_code=204)


@router.get("/{evaluation_id}/logs", response_class=PlainTextResponse)
def evaluation_logs(*, evaluation_id: DatabaseId, tail: Annotated[int | None, Query(ge=1, le=100_000)] = 200,
                    download: bool = False, session: SessionDep,
                    storage: StorageDep, caller: CurrentUser):
    evaluation = service.readable(session, evaluation_id, caller)
    text = artifacts.log_text(evaluation, storage, None if download else tail)
    headers = {"Content-Disposition": f'attachment; filename="evaluation-{evaluation_id}.log"'} if download else {}
    return PlainTextResponse(text, headers=headers)


@router.get("/{evaluation_id}/results", response_model=list[ScoreRead])
def evaluation_results(*, evaluation_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    return service.score_rows(service.readable(session, evaluation_id, caller, scores=True))


@router.get("/{evaluation_id}/samples", response_model=Page[SampleRead])
def evaluation_samples(*, evaluation_id: DatabaseId, model: str | None = None, dataset: str | None = None,
                       correct: bool | None = None, q: Annotated[str | None, Query(max_length=500)] = None,
                       page: PageNumber = 1, page_size: Annotated[int, Query(ge=1, le=500)] = 50,
                       session: SessionDep, settings: SettingsDep,
                       storage: StorageDep, caller: CurrentUser):
    evaluation = service.readable(session, evaluation_id, caller)
    items, total = artifacts.samples(settings, storage, evaluation, model=model, dataset=dataset, correct=correct, q=q,
                                     page=page, page_size=page_size)
    return Page(items=items, total=total, page=page, page_size=page_size)


@router.get("/{evaluation_id}/samples/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                             "description": "one row per sample, streamed"}})
def export_samples(*, evaluation_id: DatabaseId, format: artifacts.SampleFormat = "csv",
                   model: str | None = None, dataset: str | None = None, correct: bool | None = None,
                   session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """Every sample (or those of one model, dataset or verdict) with its prompt, prediction, extracted answer, gold,
    verdict and scorer, as CSV or JSON lines."""
    evaluation = service.readable(session, evaluation_id, caller, scores=True)  # the scores name the scorers
    body = artifacts.sample_export(settings, storage, evaluation, format, model=model, dataset=dataset,
                                   correct=correct)
    filename = artifacts.sample_export_filename(evaluation_id, format)
    return StreamingResponse(body, media_type=artifacts.SAMPLE_MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/{evaluation_id}/export")
def export_evaluation(*, evaluation_id: DatabaseId, background: BackgroundTasks,
                      format: Literal["csv", "json", "md", "zip"] = "json",
                      session: SessionDep, settings: SettingsDep,
                      storage: StorageDep, caller: CurrentUser):
    evaluation = service.readable(session, evaluation_id, caller, scores=True)
    stem = f"evaluation-{evaluation_id}"
    if format == "zip":
        path = artifacts.export_zip(settings, storage, evaluation, caller)
        background.add_task(path.unlink, missing_ok=True)
        return FileResponse(path, media_type="application/zip", filename=f"{stem}.zip")
    body, media = {
        "csv": (artifacts.export_csv, "text/csv"),
        "json": (artifacts.export_json, "application/json"),
        "md": (artifacts.export_markdown, "text/markdown"),
    }[format]
    return Response(body(evaluation, caller), media_type=f"{media}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{stem}.{format}"'})
