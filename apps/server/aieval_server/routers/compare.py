from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..schemas.api import CompareTable, SuggestedComparison
from ..schemas.ids import DatabaseId
from ..services.compare import compare, suggested
from .deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(tags=["compare"])


@router.get("/compare/suggested", response_model=SuggestedComparison)
def suggested_comparison(*, session: SessionDep, caller: CurrentUser):
    """What to compare when nothing is chosen yet: up to 4 models whose latest finished evaluations share a dataset
    with the same settings (fingerprint), decided here so that every client opens with the same comparison."""
    return suggested(session, caller)


@router.get("/compare", response_model=CompareTable)
def compare_models(*, model_ids: Annotated[list[DatabaseId], Query(min_length=1)], dataset_ids: Annotated[list[DatabaseId] | None, Query()] = None,
                   metric: str | None = None, shared_only: bool = True, session: SessionDep, settings: SettingsDep,
                   storage: StorageDep, caller: CurrentUser):
    """Latest successful score of each chosen model on the datasets they share, with the evaluation it came from,
    and each ranked model's 95 % rank range."""
    return compare(session, caller, model_ids, dataset_ids, metric, shared_only, settings, storage)


@router.get("/leaderboard", response_model=CompareTable)
def leaderboard(*, dataset_ids: Annotated[list[DatabaseId] | None, Query()] = None, metric: str | None = None,
                session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    """Every model's latest successful score on each dataset, ranked by average, with each ranked model's 95 %
    rank range (a paired bootstrap over the averaged datasets' samples)."""
    return compare(session, caller, None, dataset_ids, metric, shared_only=False, settings=settings,
                   storage=storage)
