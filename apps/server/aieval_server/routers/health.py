from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ..services.bootstrap import demo_model_state
from .deps import SessionDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(*, session: SessionDep, settings: SettingsDep) -> dict:
    """The database answers; the set-up in words; `demo_model`: ready, preparing (the UI says "being prepared"),
    unavailable or off (enums.DemoModelState)."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", **settings.public_summary(), "demo_model": demo_model_state(settings).value}
