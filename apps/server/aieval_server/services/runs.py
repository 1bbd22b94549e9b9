"""Running an evaluation on a worker: claim it in the database, run the engine, record progress and results.

The claim is one atomic UPDATE, so a job sent twice (requeue, broker redelivery) runs once. While it runs,
a heartbeat thread refreshes `heartbeat_at` and watches `cancel_requested`; a job whose heartbeat stops
(worker killed) is requeued by `sweep()` and the next attempt resumes from the predictions already made: from
the job directory on the same machine, or from the checkpoint in shared storage on another one.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, true, update

from aieval_engine import workdir
from aieval_engine.launchers import Launcher, RunProcess, kill_orphaned_group
from aieval_engine.runner import Evaluation as EngineEvaluation
from aieval_engine.runner import ProgressEvent
from aieval_engine.spec import SpecError

from ..config import Settings
from ..db import session_scope
from ..enums import TERMINAL
from ..models import Evaluation, Score
from ..storage import Storage
from . import evaluations as evaluation_service
from . import scheduling
from .artifacts import RUN_LOG
from .checkpoints import JobCheckpoint
from .errors import ServiceError
from .events import Publisher
from .provenance import score_provenance

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 400
HOST = socket.gethostname()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def worker_token() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# ---- database outages ------------------------------------------------------------------------------
def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database is away for now" (restarting, connections cut), not a bad request."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated))


def with_database_retries(what: str, action: Callable[[], Any], attempts: int = 8) -> Any:
    """Run `action`, retrying for about half a minute while the database is unavailable."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts - 1 or not database_unavailable(exc):
                raise
            log.warning("%s: the database is unavailable (%s); retrying", what, str(exc).splitlines()[0])
            time.sleep(min(1.0 + attempt, 5.0))


# ---- claim / requeue ------------------------------------------------------------------------------
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


def sweep(settings: Settings, send: Callable[[int, str], None], resend_all_queued: bool = False) -> list[int]:
    """Requeue jobs whose worker stopped beating and resend queued jobs the broker may have lost: those it never
    got (`enqueued_at` is NULL when sending failed), those waiting too long, and with `resend_all_queued` (the
    broker lost its messages, e.g. Redis restarted without persistence) every queued job. A duplicate message
    is harmless: only one claim succeeds."""
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


def _stop_orphan(previous: dict[str, Any], job_dir: Path) -> None:
    """A killed worker's OpenCompass run lives on in its own session; stop it before resuming its files."""
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


# ---- running --------------------------------------------------------------------------------------
class _RecordingLauncher:
    """Delegates to the real launcher and records the run's process group in the database."""

    def __init__(self, inner: Launcher, on_start: Callable[[int], None]):
        self.inner = inner
        self.on_start = on_start

    def start(self, job_dir: str, argv: list[str], env: dict[str, str], seed: int) -> RunProcess:
        process = self.inner.start(job_dir, argv, env, seed)
        self.on_start(process.pid)
        return process


class _Run:
    def __init__(self, settings: Settings, storage: Storage, evaluation_id: int, token: str, publisher: Publisher):
        self.settings = settings
        self.storage = storage
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

    def _owned(self):
        return (Evaluation.id == self.id) & (Evaluation.worker == self.token)

    def record_pgid(self, pgid: int) -> None:
        """Remember the run's process group (to stop it if this worker dies). Not worth failing the run for: if
        the database is away now, the next heartbeat writes it."""
        try:
            self.write(run_pgid=pgid)
        except Exception as exc:
            log.warning("evaluation %s: process group not recorded yet (%s)", self.id, exc)
            with self.lock:
                self.pending_pgid = pgid

    def write(self, **values: Any) -> bool:
        if self.lost.is_set():
            return False
        with session_scope(self.settings.database_url) as session:
            changed = session.execute(
                update(Evaluation).where(self._owned()).values(**values).execution_options(synchronize_session=False)
            ).rowcount
        if not changed:
            self.lost.set()
        return bool(changed)

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

    def keep_checkpointed(self, checkpoint: JobCheckpoint) -> None:
        interval = self.settings.checkpoint_interval_s
        if interval <= 0:
            return
        while not self.stop.wait(interval):
            try:
                checkpoint.sync()
            except Exception as exc:  # storage away: the run goes on, only a resume elsewhere would start over
                log.warning("evaluation %s: checkpoint not stored (%s)", self.id, exc)

    def heartbeat(self) -> None:
        interval = min(1.0, self.settings.heartbeat_interval_s)
        while not self.stop.wait(interval):
            try:
                if not self._beat():
                    return
            except Exception as exc:  # the database may be restarting; keep the run and try again
                log.warning("evaluation %s: heartbeat failed (%s); retrying", self.id, exc)

    _last_beat = 0.0

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


def run_evaluation(settings: Settings, storage: Storage, evaluation_id: int, launcher: Launcher,
                   publisher: Publisher | None = None) -> str:
    """The whole life of one attempt of this job (tests, debugging). Returns what happened (for the log)."""
    token = worker_token()
    claimed, previous = with_database_retries(f"evaluation {evaluation_id}: claim",
                                              lambda: claim(settings, evaluation_id, token))
    if not claimed:
        return "skipped: not queued (already taken, finished or cancelled)"
    return _run_claimed(settings, storage, evaluation_id, token, previous, launcher, publisher)


def run_next(settings: Settings, storage: Storage, message_evaluation_id: int, launcher: Launcher,
             publisher: Publisher | None = None) -> tuple[int | None, str]:
    """What the worker does with a broker message: run the fairest queued job of the message's queue
    (claim_fairest). Returns (the job run or None, what happened)."""
    token = worker_token()
    evaluation_id, previous = with_database_retries(f"message for evaluation {message_evaluation_id}: claim",
                                                    lambda: claim_fairest(settings, message_evaluation_id, token))
    if evaluation_id is None:
        return None, "skipped: nothing queued (the job was taken by an earlier message, finished or cancelled)"
    return evaluation_id, _run_claimed(settings, storage, evaluation_id, token, previous, launcher, publisher)


def _run_claimed(settings: Settings, storage: Storage, evaluation_id: int, token: str, previous: dict[str, Any],
                 launcher: Launcher, publisher: Publisher | None) -> str:
    publisher = publisher or Publisher(settings)
    job_dir = evaluation_service.job_dir(settings, evaluation_id)
    run = _Run(settings, storage, evaluation_id, token, publisher)
    publisher.publish(evaluation_id, {"type": "status", "status": "running"})
    beat = threading.Thread(target=run.heartbeat, daemon=True, name=f"heartbeat-{evaluation_id}")
    beat.start()
    checkpoint = JobCheckpoint(storage, evaluation_service.artifacts_prefix(evaluation_id), job_dir)
    saver = threading.Thread(target=run.keep_checkpointed, args=(checkpoint,), daemon=True,
                             name=f"checkpoint-{evaluation_id}")
    try:
        _stop_orphan(previous, job_dir)
        if previous.get("attempts") and workdir.latest_run_dir(job_dir) is None:
            _restore(run, checkpoint)
        resume = workdir.latest_run_dir(job_dir) is not None

        def load():
            with session_scope(settings.database_url) as session:
                evaluation = evaluation_service.get(session, evaluation_id)
                models = [link.model for link in evaluation.models]
                datasets = [link.dataset for link in evaluation.datasets]
                # The judge's key is decrypted here like the evaluated models' and stays in memory (the engine
                # passes keys to its process by the environment, never in a file).
                spec = evaluation_service.build_spec(
                    settings, storage, evaluation.name, models, datasets, evaluation.params,
                    judge_model=evaluation.judge_model, judge_prompt_language=evaluation.judge_prompt_language,
                    scorer=evaluation.scorer, with_keys=True, local_files=True)
                # spec datasets are built one per row, in this order
                return (spec, {m.name: m.id for m in models}, [d.id for d in datasets],
                        evaluation_service.rescore_source(session, evaluation))

        spec, model_ids, dataset_ids, source = with_database_retries(f"evaluation {evaluation_id}: load", load)
        job_dir.mkdir(parents=True, exist_ok=True)
        rescore_from = _source_run_dir(settings, storage, *source) if source is not None else None
        engine = EngineEvaluation(
            spec, job_dir, data_cache=settings.compass_data_cache,
            launcher=_RecordingLauncher(launcher, run.record_pgid),
            outbound_policy=settings.outbound_policy,  # the OpenCompass process obeys the server's policy
            budget_store=settings.budget_store,  # models' shared request caps, shared with every other worker
            judge_cache=judge_cache_file(settings),
            rescore_from=rescore_from,  # a re-score: the source's predictions, no inference
        )
        run.engine = engine
        engine.prepare()
        saver.start()
        result = engine.run(run.on_event, resume=resume)
    except (SpecError, ServiceError) as exc:
        problems = exc.problems if isinstance(exc, SpecError) else [exc.message, *exc.problems]
        run.stop.set()
        _finish(run, status="failed", error="; ".join(problems), scores=[], extra={})
        return "failed before start"
    except Exception as exc:
        run.stop.set()
        if database_unavailable(exc):
            # Not the job's fault: leave it "running" without heartbeat; the sweeper requeues it once the
            # database is back and the next attempt resumes.
            log.error("evaluation %s: attempt abandoned, the database stayed unavailable (%s)", evaluation_id, exc)
            return "interrupted: database unavailable"
        log.exception("evaluation %s crashed in the worker", evaluation_id)
        _finish(run, status="failed", error=f"the worker failed: {type(exc).__name__}: {exc}", scores=[], extra={})
        return "crashed"
    finally:
        run.stop.set()
        if saver.is_alive():
            saver.join(timeout=120)
    if run.lost.is_set() or result.status == "lost":
        return "lost to another worker"
    run_dir_name = result.run_dir.name if result.run_dir else None
    stored = _store_artifacts(checkpoint, evaluation_id)
    pairs = _pairs(run.last_progress, result)
    provenance = score_provenance(result.run_dir, result.scores, spec, result.manifest)
    scores = [
        dict(evaluation_id=evaluation_id, model_id=model_ids.get(s.model),
              dataset_id=dataset_ids[s.dataset_index] if s.dataset_index is not None else None,
              model_name=s.model, dataset_name=s.dataset, model_abbr=s.model_abbr, dataset_abbr=s.dataset_abbr,
              metric=s.metric, value=s.value, **rests_on)
        for s, rests_on in zip(result.scores, provenance, strict=True)
    ]
    final_progress = dict(run.last_progress or {})
    final_progress.update(stage=result.status, elapsed_s=result.duration_s)
    _finish(run, status=result.status, error=result.error, scores=scores, extra={
        "log_excerpt": result.log_excerpt, "manifest": result.manifest, "pairs": pairs, "run_dir_name": run_dir_name,
        "artifacts_stored": stored, "progress": final_progress, "run_pgid": None, "stage": result.status,
        "fraction": 1.0 if result.status == "succeeded" else final_progress.get("fraction"),
    })
    return result.status


def judge_cache_file(settings: Settings) -> Path:
    """Where judge verdicts are cached per (judge, prompt, question, answer, reference), for every evaluation on
    this machine: re-scoring with the same judge asks it nothing new."""
    return settings.data_dir / "judge-cache.sqlite"


def _source_run_dir(settings: Settings, storage: Storage, source_id: int, run_dir_name: str) -> Path:
    """The run directory of the evaluation a re-score scores again, on this machine: its stored outputs (the
    predictions and the config OpenCompass resolved), downloaded once into the cache when storage is remote."""
    prefix = f"{evaluation_service.artifacts_prefix(source_id)}/{workdir.OUTPUTS}/{run_dir_name}"
    keys = storage.list(prefix + "/")
    if not keys:
        raise ServiceError(f"the predictions of evaluation {source_id}, which this one scores again, are no longer "
                           "stored; start a new evaluation instead")
    local = None
    for key in keys:
        local = storage.local_copy(key, settings.cache_dir)
    relative = keys[-1][len(prefix) + 1:]
    return Path(str(local)[: -len(relative) - 1])


def _pairs(last_progress: dict[str, Any] | None, result) -> list[dict[str, Any]]:
    outcomes = {(p.model_abbr, p.dataset_abbr): p for p in result.pairs}
    pairs = []
    for pair in (last_progress or {}).get("pairs", []):
        outcome = outcomes.get((pair["model_abbr"], pair["dataset_abbr"]))
        pairs.append({**pair, "ok": outcome.ok if outcome else False,
                      "error": outcome.error if outcome else None,
                      "log_excerpt": outcome.log_excerpt if outcome else None})
    return pairs


def _finish(run: _Run, *, status: str, error: str | None, scores: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """Write the outcome in one transaction, retrying for a while if the database is briefly away."""
    for attempt in range(10):
        try:
            return _write_outcome(run, status=status, error=error, scores=scores, extra=extra)
        except Exception as exc:
            if attempt == 9:
                raise  # the job stays "running" without heartbeat: the sweeper requeues and it resumes
            log.warning("evaluation %s: cannot record the outcome yet (%s); retrying", run.id, exc)
            time.sleep(min(2.0 * (attempt + 1), 10.0))


def _write_outcome(run: _Run, *, status: str, error: str | None, scores: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    if run.lost.is_set():
        return
    with run.lock:
        log_tail = "\n".join(run.log_lines) or None
    with session_scope(run.settings.database_url) as session:
        owned = session.execute(
            update(Evaluation).where(run._owned()).values(
                status=status, error=error, finished_at=utcnow(), revision=Evaluation.revision + 1,
                log_tail=log_tail, **extra,
            ).execution_options(synchronize_session=False)
        ).rowcount
        if not owned:
            return
        session.execute(delete(Score).where(Score.evaluation_id == run.id))
        session.add_all([Score(**score) for score in scores])
    run.publisher.publish(run.id, {"type": "status", "status": status})


def _restore(run: _Run, checkpoint: JobCheckpoint) -> None:
    """A previous attempt ran elsewhere: bring its files here so OpenCompass resumes instead of starting over."""
    try:
        restored = checkpoint.restore()
    except Exception as exc:
        log.warning("evaluation %s: checkpoint not restored, starting over (%s)", run.id, exc)
        checkpoint.job_dir.mkdir(parents=True, exist_ok=True)
        run.note(checkpoint.job_dir, f"[aieval] the previous attempt's files could not be fetched ({exc}); starting over")
        return
    if restored:
        log.info("evaluation %s: resuming from %d files of the previous attempt", run.id, restored)
        run.note(checkpoint.job_dir, f"[aieval] resuming from {restored} files checkpointed by the previous attempt")


def _store_artifacts(checkpoint: JobCheckpoint, evaluation_id: int) -> bool:
    """Copy the job's files to shared storage (the local job dir stays for a possible resume)."""
    try:
        checkpoint.sync()
        return True
    except Exception:
        log.exception("cannot store the artifacts of evaluation %s", evaluation_id)
        return False
