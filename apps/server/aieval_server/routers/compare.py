from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..schemas.api import CompareTable
from ..schemas.ids import DatabaseId
from ..services.compare import compare
from .deps import CurrentUser, SessionDep

router = APIRouter(tags=["compare"])


@router.get("/compare", response_model=CompareTable)
def compare_models(*, model_ids: Annotated[list[DatabaseId], Query(min_length=1)], dataset_ids: Annotated[list[DatabaseId] | None, Query()] = None,
                   metric: str | None = None, shared_only: bool = True, session: SessionDep, caller: CurrentUser):
    """Latest successful score of each chosen model on the datasets they share, with the evaluation it came from."""
    return compare(session, caller, model_ids, dataset_ids, metric, shared_only)


@router.get("/leaderboard", response_model=CompareTable)
def leaderboard(*, dataset_ids: Annotated[list[DatabaseId] | None, Query()] = None, metric: str | None = None,
                session: SessionDep, caller: CurrentUser):
    """Every model's latest successful score on each dataset, ranked by average."""
    return compare(session, caller, None, dataset_ids, metric, shared_only=False)
