"""Paired comparison of two evaluations on the same samples (services/paired.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from ..schemas.api import Page
from ..schemas.ids import DatabaseId, PageNumber
from ..schemas.paired import PairedComparison, PairedSampleRead
from ..services import paired as service
from ..services.artifacts import SAMPLE_MEDIA_TYPES, SampleFormat
from .deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/paired", tags=["compare"])
Name = Annotated[str | None, Query(max_length=200)]


@router.get("", response_model=PairedComparison)
def paired_comparison(*, a: DatabaseId, b: DatabaseId, model_a: Name = None, model_b: Name = None,
                      session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """Evaluation A against evaluation B on the samples both answered, per dataset: the accuracy difference with its
    95 % interval, the exact McNemar p (and Holm's across datasets), the 2×2 table, and the smallest difference the
    sample count could detect. A dataset whose samples are not the same on both sides (another limit, another
    version of the data) is listed as not comparable, with the reason. model_a / model_b choose the model of an
    evaluation that has several (the same evaluation can then be A and B)."""
    return service.compare(session, settings, storage, caller, a, b, model_a, model_b)


@router.get("/samples", response_model=Page[PairedSampleRead])
def paired_samples(*, a: DatabaseId, b: DatabaseId, dataset: Annotated[str, Query(min_length=1, max_length=200)],
                   flip: service.Flip | None = None, model_a: Name = None, model_b: Name = None,
                   page: PageNumber = 1, page_size: Annotated[int, Query(ge=1, le=500)] = 50,
                   session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """The samples of one dataset with A's and B's answers side by side, numbered from 1. flip: a_only (right for A
    only), b_only, both (right for both), neither, changed (right for exactly one); for a dataset compared by
    per-sample scores (`basis` scores): a_only (A scored higher), b_only (B scored higher), changed (they differ)."""
    items, total = service.samples(session, settings, storage, caller, a, b, dataset=dataset, flip=flip,
                                   model_a=model_a, model_b=model_b, page=page, page_size=page_size)
    return Page(items=items, total=total, page=page, page_size=page_size)


@router.get("/samples/export", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                             "description": "one row per compared sample, streamed"}})
def export_paired_samples(*, a: DatabaseId, b: DatabaseId, dataset: Annotated[str, Query(min_length=1, max_length=200)],
                          flip: service.Flip | None = None, model_a: Name = None, model_b: Name = None,
                          format: SampleFormat = "csv", session: SessionDep, settings: SettingsDep,
                          storage: StorageDep, caller: CurrentUser):
    """The compared samples of one dataset (those with the chosen flip) as CSV or JSON lines: the prompt and gold
    once, then A's and B's model, prediction, extracted answer, verdict, scorer, judge verdict and rationale, latency
    and tokens (columns a_… and b_…)."""
    body = service.sample_export(session, settings, storage, caller, a, b, dataset=dataset, flip=flip,
                                 export_format=format, model_a=model_a, model_b=model_b)
    filename = f"paired-{a}-{b}-samples.{format}"
    return StreamingResponse(body, media_type=SAMPLE_MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
