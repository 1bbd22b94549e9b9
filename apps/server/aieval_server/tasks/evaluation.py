from __future__ import annotations

import logging
import threading

from aieval_engine.launchers import WarmLauncher

from ..celery_app import RUN_EVALUATION, celery_app
from ..config import get_settings
from ..services import runs
from ..storage import get_storage

log = logging.getLogger(__name__)
_launcher_lock = threading.Lock()
_launcher: WarmLauncher | None = None


def launcher() -> WarmLauncher:
    """One warm OpenCompass fork server per worker process, shared by its threads (it is thread-safe)."""
    global _launcher
    with _launcher_lock:
        if _launcher is None:
            _launcher = WarmLauncher()
        return _launcher


@celery_app.task(name=RUN_EVALUATION, acks_late=True, ignore_result=True)
def run_evaluation(evaluation_id: int) -> str:
    settings = get_settings()
    outcome = runs.run_evaluation(settings, get_storage(settings), int(evaluation_id), launcher())
    log.info("evaluation %s: %s", evaluation_id, outcome)
    return outcome
