"""Celery beat for the schedules: `celery -A aieval_server.celery_app:celery_app beat` (celery_app sets this scheduler).

The schedules live in the database (services/schedules.py), so beat holds one entry only, the tick, every
`schedule_tick_s`. Beat would send it to the workers as a message; this scheduler runs it in the beat process instead:
the workers' threads may all be busy with evaluations for hours, and a tick queued behind them would fire nothing.
What the tick submits reaches the workers as usual (services/submission.submit). Nothing is kept in a file: the
schedules' state (next and last runs) is in the database, and several beats may run (each occurrence is claimed once).
"""

from __future__ import annotations

import logging

from celery.beat import Scheduler

from .celery_app import TICK_SCHEDULES
from .config import get_settings

log = logging.getLogger(__name__)


class _Ran:
    """What apply_async returns for an entry run here (beat logs its id)."""

    def __init__(self, submitted: list[int]):
        self.id = f"submitted {submitted}" if submitted else "nothing due"


class DatabaseTickScheduler(Scheduler):
    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if entry.task != TICK_SCHEDULES:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        entry = self.reserve(entry) if advance else entry
        from .services.schedules import tick

        try:
            return _Ran(tick(get_settings()))
        except Exception:  # the next tick tries again; beat itself must keep running
            log.exception("the schedules' tick failed")
            return None
