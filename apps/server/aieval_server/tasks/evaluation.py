from __future__ import annotations

import logging
import threading

from aieval_engine.launchers import WarmLauncher

from ..celery_app import RUN_EVALUATION, RUN_EVALUATION_PART, celery_app
from ..config import get_settings
from ..log_config import evaluation_context
from ..services import fanout, runs
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
    """A message "run evaluation N" is a ticket for one run on N's queue: the fairest queued job of that queue runs
    (services/scheduling.py), which is N unless another user's job, or a higher-priority one, should go first."""
    settings = get_settings()
    ran, outcome = runs.run_next(settings, get_storage(settings), int(evaluation_id), launcher())
    if ran is None or ran == int(evaluation_id):
        log.info("evaluation %s: %s", evaluation_id, outcome)
    else:
        log.info("evaluation %s (fairest, taken with the message for %s): %s", ran, evaluation_id, outcome)
    return outcome


@celery_app.task(name=RUN_EVALUATION_PART, acks_late=True, ignore_result=True)
def run_evaluation_part(evaluation_id: int, position: int) -> str:
    """One part of a job fanned out over the workers (services/fanout.py): this very part, claimed like a job."""
    settings = get_settings()
    with evaluation_context(int(evaluation_id)):
        outcome = fanout.run_part(settings, get_storage(settings), int(evaluation_id), int(position), launcher())
    log.info("evaluation %s part %s: %s", evaluation_id, position, outcome)
    return outcome
