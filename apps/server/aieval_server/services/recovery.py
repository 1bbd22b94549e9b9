"""Which worker runs a job, and getting jobs back that a worker or the broker lost.

A worker takes a job with one atomic UPDATE (`claim`, `claim_fairest`), so a job sent twice (requeue, broker
redelivery) runs once. A job whose heartbeat stops (its worker was killed) is requeued by `sweep()`, which also
sends again the queued jobs the broker may never have had; the next attempt first stops what is left of the dead
worker's run on this machine (`stop_orphan`) and resumes from the predictions already made (services/runs.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, true, update

from aieval_engine.launchers import kill_orphaned_group

from ..config import Settings
from ..db import session_scope
from ..models import Evaluation
from . import scheduling
from .evaluations import utcnow

log = logging.getLogger(__name__)
HOST = socket.gethostname()


def worker_token() -> str:
    """Who holds a claimed job: this machine, this process and this attempt (`Evaluation.worker`)."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# ---- claim ----------------------------------------------------------------------------------------
def _claimed_values(token: str) -> dict[str, Any]:
    """What taking a job writes: it is this worker's now, for a new attempt."""
    now = utcnow()
    return dict(status="running", worker=token, heartbeat_at=now, attempts=Evaluation.attempts + 1,
                started_at=now, finished_at=None, error=None, revision=Evaluation.revision + 1)


def _previous_attempt(session, evaluation_id: int) -> dict[str, Any] | None:
    before = session.execute(
        select(Evaluation.worker, Evaluation.run_pgid, Evaluation.attempts).where(Evaluation.id == evaluation_id)
    ).first()
    if before is None:
        return None
    return {"worker": before.worker, "run_pgid": before.run_pgid, "attempts": before.attempts}


def claim(settings: Settings, evaluation_id: int, token: str) -> tuple[bool, dict[str, Any]]:
    """Take this job if it is queued (or running with a dead heartbeat). Returns (claimed, previous state)."""
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    with session_scope(settings.database_url) as session:
        previous = _previous_attempt(session, evaluation_id)
        if previous is None:
            return False, {}
        result = session.execute(
            update(Evaluation)
            .where(
                Evaluation.id == evaluation_id,
                Evaluation.cancel_requested.is_(False),
                (Evaluation.status == "queued")
                | ((Evaluation.status == "running") & (Evaluation.heartbeat_at < cutoff)),
            )
            .values(**_claimed_values(token))
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1, previous


def claim_fairest(settings: Settings, message_evaluation_id: int, token: str) -> tuple[int | None, dict[str, Any]]:
    """What a broker message takes (services/scheduling.py): the fairest queued job of the message's queue, which
    may be another job than the one the message was sent for. When nothing is queued there, the message's own
    job if its worker died (a redelivered message). Returns (the claimed job's id or None, its previous state)."""
    with session_scope(settings.database_url) as session:
        queue = session.scalar(select(Evaluation.queue).where(Evaluation.id == message_evaluation_id))
        if queue is not None:
            before = scheduling.claim_fairest(session, queue, _claimed_values(token))
            if before is not None:
                if before.id != message_evaluation_id and before.enqueued_at is None:
                    # The job taken never had a ticket of its own: the message's own job is left without one.
                    # Marked unsent, the next sweep sends it one (else it would wait resend_queued_after_s).
                    session.execute(update(Evaluation).where(Evaluation.id == message_evaluation_id,
                                                             Evaluation.status == "queued").values(enqueued_at=None))
                return before.id, {"worker": before.worker, "run_pgid": before.run_pgid, "attempts": before.attempts}
    claimed, previous = claim(settings, message_evaluation_id, token)
    return (message_evaluation_id if claimed else None), previous


# ---- requeue --------------------------------------------------------------------------------------
def sweep(settings: Settings, send: Callable[[int, str], None], resend_all_queued: bool = False) -> list[int]:
    """Requeue jobs whose worker stopped beating and resend queued jobs the broker may have lost: those it never
    got (`enqueued_at` is NULL when sending failed), those waiting too long, and with `resend_all_queued` (the
    broker lost its messages, e.g. Redis restarted without persistence) every queued job. `send(id, queue)` hands
    each to the broker (the worker's sweeper passes services/submission.submit). A duplicate message is harmless:
    only one claim succeeds."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    forgotten = now - timedelta(seconds=settings.resend_queued_after_s)
    unsent = Evaluation.enqueued_at.is_(None) & (Evaluation.created_at < now - timedelta(seconds=settings.unsent_grace_s))
    resend = true() if resend_all_queued else unsent | (Evaluation.enqueued_at < forgotten)
    resent = []
    with session_scope(settings.database_url) as session:
        candidates = session.execute(
            select(Evaluation.id, Evaluation.status, Evaluation.queue, Evaluation.cancel_requested,
                   Evaluation.enqueued_at).where(
                ((Evaluation.status == "running") & (Evaluation.heartbeat_at < stale))
                | ((Evaluation.status == "queued") & resend)
            )
        ).all()
        for row in candidates:
            if row.status == "running" and row.cancel_requested:
                # Nobody is left to stop it: record the cancellation the user asked for.
                session.execute(update(Evaluation).where(Evaluation.id == row.id, Evaluation.status == "running",
                                                         Evaluation.heartbeat_at < stale)
                                .values(status="cancelled", finished_at=now, error="cancelled by request",
                                        revision=Evaluation.revision + 1))
                continue
            if row.status == "running":
                condition = Evaluation.heartbeat_at < stale
            elif row.enqueued_at is None:
                condition = unsent  # several sweepers: the first to stamp it sends it
            else:
                condition = Evaluation.enqueued_at == row.enqueued_at
            changed = session.execute(
                update(Evaluation).where(Evaluation.id == row.id, Evaluation.status == row.status, condition)
                .values(status="queued", enqueued_at=now, revision=Evaluation.revision + 1)
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed:
                resent.append((row.id, row.queue))
    for evaluation_id, queue in resent:
        log.warning("requeueing evaluation %s (worker lost or message lost)", evaluation_id)
        send(evaluation_id, queue)
    return [e for e, _ in resent]


# ---- what a dead worker left on this machine ------------------------------------------------------
def prune_deleted_job_dirs(settings: Settings) -> list[int]:
    """Remove this machine's job directories of evaluations that were deleted (the API removes its own and the
    shared storage; a worker on another machine learns of it here). Returns the ids removed."""
    local = {int(path.name): path for path in settings.jobs_dir.glob("*") if path.is_dir() and path.name.isdigit()}
    if not local:
        return []
    with session_scope(settings.database_url) as session:
        existing = set(session.scalars(select(Evaluation.id).where(Evaluation.id.in_(list(local)))))
    gone = sorted(set(local) - existing)
    for evaluation_id in gone:
        shutil.rmtree(local[evaluation_id], ignore_errors=True)
    return gone


def stop_orphan(previous: dict[str, Any], job_dir: Path) -> None:
    """A killed worker's OpenCompass run lives on in its own session; stop it before resuming its files. Only a
    run of this machine, and only while that process group still works in this job's directory (else its id
    now belongs to an unrelated process). The killing itself is the engine's (launchers.kill_orphaned_group)."""
    pgid = previous.get("run_pgid")
    worker = previous.get("worker") or ""
    if not pgid or not worker.startswith(f"{HOST}:"):
        return
    try:
        if Path(f"/proc/{pgid}/cwd").resolve() != job_dir.resolve():
            return  # the id now belongs to an unrelated process
    except OSError:  # no such process any more
        return
    kill_orphaned_group(pgid)
    log.warning("stopped the orphaned run (process group %s) of the previous attempt", pgid)
