"""The schedules' tick as a Celery task: what beat's entry names (celery_app.TICK_SCHEDULES). beat.py runs it in the
beat process; a worker runs it too when someone sends it (`celery -A aieval_server.celery_app:celery_app call
aieval.tick_schedules`)."""

from __future__ import annotations

from ..celery_app import TICK_SCHEDULES, celery_app
from ..config import get_settings
from ..services import schedules


@celery_app.task(name=TICK_SCHEDULES, ignore_result=True)
def tick_schedules() -> list[int]:
    return schedules.tick(get_settings())
