"""The server's one rule for waiting out a database outage (a restart, cut connections, a locked SQLite file).

Bounded retries belong to the worker's run path (services/runs.py and services/recovery.py): a claim, loading the
job, writing its outcome. Each waits `step_s` longer after every failure, up to `max_wait_s`, for `attempts` tries;
only errors that mean "the database is away for now" are retried, a bad statement fails at once. An action that
runs out of attempts raises, and the job is left for the sweeper (a running job without heartbeat is requeued and
resumes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database is away for now" (restarting, connections cut), not a bad request."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated))


@dataclass(frozen=True)
class DatabaseRetries:
    """`attempts` tries of an action while the database is unavailable, waiting `step_s` x the number of failures
    so far (at most `max_wait_s`) between two."""

    attempts: int
    step_s: float
    max_wait_s: float

    def wait_after(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure (1, 2, ...)."""
        return min(self.step_s * failures, self.max_wait_s)

    def run(self, what: str, action: Callable[[], T]) -> T:
        """`action()`, retried while the database is unavailable; `what` names it in the log."""
        failures = 0
        while True:
            try:
                return action()
            except Exception as exc:
                failures += 1
                if failures >= self.attempts or not database_unavailable(exc):
                    raise
                log.warning("%s: the database is unavailable (%s); retrying", what, str(exc).splitlines()[0])
                time.sleep(self.wait_after(failures))


# Starting an attempt (claiming and loading the job): about half a minute (1 + 2 + 3 + 4 + 5 + 5 + 5 s), then the
# attempt is given up and the sweeper hands the job out again.
START_RETRIES = DatabaseRetries(attempts=8, step_s=1.0, max_wait_s=5.0)
# Recording a finished run's outcome: longer (about 70 s), since giving up costs a whole new attempt (which resumes
# from the predictions, but scores everything again).
OUTCOME_RETRIES = DatabaseRetries(attempts=10, step_s=2.0, max_wait_s=10.0)
