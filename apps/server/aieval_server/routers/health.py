from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from .deps import SessionDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(*, session: SessionDep, settings: SettingsDep) -> dict:
    session.execute(text("SELECT 1"))
    return {"status": "ok", **settings.public_summary()}
