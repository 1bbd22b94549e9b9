"""What a running attempt writes to its evaluation's row, and what it watches there.

`RunRecorder` holds the job for the worker that claimed it (its token in `Evaluation.worker`): every write is
conditional on that token, so an attempt that was taken over (its heartbeat looked dead to a sweeper) writes
nothing more. Beside the run it keeps:
- the heartbeat (`heartbeat_at`, every `heartbeat_interval_s`), which also carries the log tail and a process
  group the database could not take when the run started;
- the cancel watch: `cancel_requested` is read on every beat and cancels the engine; a job taken over cancels it
  too ("lost");
- the log buffer (the last LOG_TAIL_LINES lines, written with the beat: not worth a database write each);
- the progress writer (one write per engine progress event, published live);
- the outcome: status, error, scores and what the pages show, in one transaction (`finish`), then the owner's
  notifications (services/notifications.py).

A database that is briefly away never fails the run: heartbeats and progress are tried again with the next one,
the outcome waits it out (db/outages.py).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from aieval_engine.launchers import Launcher, RunProcess
from aieval_engine.runner import Evaluation as EngineEvaluation
from aieval_engine.runner import ProgressEvent

from .. import metrics
from ..config import Settings
from ..db import session_scope
from ..db.outages import OUTCOME_RETRIES
from ..enums import TERMINAL
from ..models import Evaluation, Score
from . import notifications
from .artifacts import RUN_LOG
from .evaluations import _aware, utcnow
from .events import Publisher

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 400


class PgidRecordingLauncher:
    """Delegates to the real launcher and reports the run's process group (`on_start(pgid)`) as soon as it
    exists, so that the next attempt can stop it if this worker dies (services/recovery.stop_orphan)."""

    def __init__(self, inner: Launcher, on_start: Callable[[int], None]):
        self.inner = inner
        self.on_start = on_start

    def start(self, job_dir: str, argv: list[str], env: dict[str, str], seed: int) -> RunProcess:
        process = self.inner.start(job_dir, argv, env, seed)
        self.on_start(process.pid)
        return process


class RunRecorder:
    """Holds an evaluation's row for one attempt. A subclass holds another row of the same shape (worker, heartbeat,
    process group, progress, log tail): services/fanout.PartRecorder, one part of a fanned-out job."""

    table: type = Evaluation

    def __init__(self, settings: Settings, evaluation_id: int, token: str, publisher: Publisher):
        self.settings = settings
        self.id = evaluation_id
        self.token = token
        self.publisher = publisher
        self.log_lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.log_dirty = False
        self.lost = threading.Event()  # another worker took the job over: write nothing more
        self.stop = threading.Event()
        self.engine: EngineEvaluation | None = None
        self.last_progress: dict[str, Any] | None = None
        self.pending_pgid: int | None = None  # the run's process group, when the database could not take it
        self.lock = threading.Lock()
        self._last_beat = 0.0
        # When the outcome's row carries no started_at (metrics.py's duration is measured from it otherwise).
        self.started = time.monotonic()

    def _row(self):
        return self.table.id == self.id

    def _owned(self):
        return self._row() & (self.table.worker == self.token)

    def write(self, **values: Any) -> bool:
        """Update the row while this attempt holds it; False (and `lost` set) once another worker took it."""
        if self.lost.is_set():
            return False
        with session_scope(self.settings.database_url) as session:
            changed = session.execute(
                update(self.table).where(self._owned()).values(**values).execution_options(synchronize_session=False)
            ).rowcount
        if not changed:
            self.lost.set()
        return bool(changed)

    def record_pgid(self, pgid: int) -> None:
        """Remember the run's process group (to stop it if this worker dies). Not worth failing the run for: if
        the database is away now, the next heartbeat writes it."""
        try:
            self.write(run_pgid=pgid)
        except Exception as exc:
            log.warning("evaluation %s: process group not recorded yet (%s)", self.id, exc)
            with self.lock:
                self.pending_pgid = pgid

    # ---- progress and log ---------------------------------------------------------------------------
    def on_event(self, event: ProgressEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:  # e.g. the database restarting: the run goes on, the next event catches up
            log.warning("evaluation %s: progress not recorded (%s)", self.id, exc)

    def _record(self, event: ProgressEvent) -> None:
        data = event.to_dict()
        if event.kind == "log":
            with self.lock:
                self.log_lines.extend(event.lines)
                self.log_dirty = True
            self.publisher.publish(self.id, {"type": "log", "lines": event.lines})
            return
        data.pop("lines", None)
        if event.kind == "status" and self.last_progress and event.stage in ("preparing", "running"):
            data = {**self.last_progress, "stage": event.stage, "elapsed_s": event.elapsed_s}
        if event.kind == "progress":
            self.last_progress = data
        if event.stage in TERMINAL:
            return  # the final state is written with the results, in one transaction
        self.write_progress(data)

    def write_progress(self, data: dict[str, Any]) -> None:
        self.write(progress=data, stage=data.get("stage"), fraction=data.get("fraction"),
                   revision=Evaluation.revision + 1, heartbeat_at=utcnow())
        self.publisher.publish(self.id, {"type": "progress", "status": "running", "progress": data})

    def note(self, job_dir: Path, line: str) -> None:
        """A line of our own in the run's log, live and stored (OpenCompass appends its output after it)."""
        with self.lock:
            self.log_lines.append(line)
            self.log_dirty = True
        with open(job_dir / RUN_LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    # ---- heartbeat and cancel watch -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """The heartbeat thread's loop, until `stop` is set or the job was taken over."""
        interval = min(1.0, self.settings.heartbeat_interval_s)
        while not self.stop.wait(interval):
            try:
                if not self._beat():
                    return
            except Exception as exc:  # the database may be restarting; keep the run and try again
                log.warning("evaluation %s: heartbeat failed (%s); retrying", self.id, exc)

    def _beat(self) -> bool:
        """One heartbeat; False when the job was taken over by another worker."""
        values: dict[str, Any] = {}
        now = time.monotonic()
        with self.lock:
            if self.log_dirty:
                values["log_tail"] = "\n".join(self.log_lines)
                self.log_dirty = False
            if self.pending_pgid is not None:
                values["run_pgid"], self.pending_pgid = self.pending_pgid, None
        if values or now - self._last_beat >= self.settings.heartbeat_interval_s:
            values["heartbeat_at"] = utcnow()
            self._last_beat = now
            try:
                written = self.write(**values)
            except Exception:
                with self.lock:  # the database is away: what was not written goes with the next beat
                    self.log_dirty = self.log_dirty or "log_tail" in values
                    if "run_pgid" in values and self.pending_pgid is None:
                        self.pending_pgid = values["run_pgid"]
                raise
            if not written:
                log.warning("evaluation %s was taken over by another worker; stopping this attempt", self.id)
                if self.engine:
                    self.engine.cancel("lost")
                return False
        with session_scope(self.settings.database_url) as session:
            wanted = session.scalar(select(Evaluation.cancel_requested).where(Evaluation.id == self.id))
        if wanted and self.engine is not None:
            self.engine.cancel()
        return True

    # ---- outcome --------------------------------------------------------------------------------------
    def finish(self, *, status: str, error: str | None, scores: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        """Write the outcome in one transaction, waiting out a brief database outage. When the database stays
        away this raises: the job stays "running" without heartbeat, the sweeper requeues it and it resumes."""
        OUTCOME_RETRIES.run(f"evaluation {self.id}: outcome",
                            lambda: self._write_outcome(status=status, error=error, scores=scores, extra=extra))

    def _write_outcome(self, *, status: str, error: str | None, scores: list[dict[str, Any]],
                       extra: dict[str, Any]) -> None:
        if self.lost.is_set():
            return
        with self.lock:
            log_tail = "\n".join(self.log_lines) or None
        finished_at = utcnow()
        with session_scope(self.settings.database_url) as session:
            owned = session.execute(
                update(Evaluation).where(self._owned()).values(
                    status=status, error=error, finished_at=finished_at, revision=Evaluation.revision + 1,
                    log_tail=log_tail, **extra,
                ).returning(Evaluation.started_at).execution_options(synchronize_session=False)
            ).first()
            if owned is None:
                return
            session.execute(delete(Score).where(Score.evaluation_id == self.id))
            session.add_all([Score(**score) for score in scores])
        self.publisher.publish(self.id, {"type": "status", "status": status})
        # From the job's claim (started_at), not this recorder's start: a fanned-out job's outcome is written by the
        # recorder of its merge, which began when the last part ended (services/fanout.py).
        started_at = owned.started_at
        metrics.evaluation_finished(status, (finished_at - _aware(started_at)).total_seconds() if started_at
                                    else time.monotonic() - self.started)
        # Every final status a worker writes passes here (a whole job, a merged fanned-out job, a failure before
        # start); parts write theirs in PartRecorder and are not announced. Sent in the background, never raises.
        notifications.outcome_recorded(self.settings, self.id, status)
