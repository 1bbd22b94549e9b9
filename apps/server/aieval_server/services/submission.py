"""The one way a queued evaluation reaches the workers: `submit` (and `submit_parts` for a fanned-out job's parts).

Every path that (re)queues a job calls it: a new evaluation, a retry, a run again and a re-score (the API, right
after the row is written) and the sweeper's requeues and resends (services/recovery.sweep). It sends the ticket
"run evaluation N" to N's queue (services/scheduling.py says which job a ticket runs) and stamps `enqueued_at`.
"""

from __future__ import annotations

import logging

from celery import group
from sqlalchemy import update
from sqlalchemy.orm import Session

from ..celery_app import RUN_EVALUATION, RUN_EVALUATION_PART, celery_for
from ..config import Settings
from ..db import session_scope
from ..enums import EvaluationStatus
from ..models import Evaluation
from .evaluations import utcnow

log = logging.getLogger(__name__)


def submit(settings: Settings, evaluation_id: int, queue: str, *, session: Session | None = None) -> bool:
    """Hand queued evaluation `evaluation_id` to the workers of `queue`. `session`: the caller's transaction that
    queued it, committed first, so that the row exists before the message and a worker always finds what it is
    told to run.

    Returns whether the broker took the message. A failure is not fatal: the job stays queued in the database,
    marked as never sent (`enqueued_at` NULL), and the workers' sweepers send it as soon as the broker takes
    messages again."""
    if session is not None:
        session.commit()
    try:
        celery_for(settings).send_task(RUN_EVALUATION, args=[evaluation_id], queue=queue)
    except Exception as exc:
        log.error("cannot send evaluation %s to the broker (it stays queued and will be resent): %s", evaluation_id, exc)
        _stamp_enqueued(settings, evaluation_id, sent=False)
        return False
    _stamp_enqueued(settings, evaluation_id, sent=True)
    return True


def submit_parts(settings: Settings, evaluation_id: int, parts: list[tuple[int, str]]) -> bool:
    """Hand the parts (position, queue) of a fanned-out evaluation to the workers at once, each on its own queue,
    as one Celery group (services/fanout.py). A failure is not fatal: the parts stay queued, nobody beats for the
    job, and the sweeper requeues it: the worker that claims it sends them again."""
    app = celery_for(settings)
    try:
        group(app.signature(RUN_EVALUATION_PART, args=(evaluation_id, position), queue=queue)
              for position, queue in parts).apply_async()
    except Exception as exc:
        log.error("cannot send the parts of evaluation %s to the broker (the sweeper requeues it): %s", evaluation_id, exc)
        return False
    return True


def _stamp_enqueued(settings: Settings, evaluation_id: int, *, sent: bool) -> None:
    condition = Evaluation.enqueued_at.is_(None) if sent else Evaluation.enqueued_at.is_not(None)
    try:
        with session_scope(settings.database_url) as session:
            session.execute(update(Evaluation).where(Evaluation.id == evaluation_id,
                                                     Evaluation.status == EvaluationStatus.queued.value, condition)
                            .values(enqueued_at=utcnow() if sent else None)
                            .execution_options(synchronize_session=False))
    except Exception as exc:  # unsent: the sweeper sends it again; sent: at worst one harmless duplicate
        log.error("cannot record whether evaluation %s reached the broker: %s", evaluation_id, exc)
