"""One attempt of an engine run on this worker, the same for a whole job (services/runs.py) and for a part of a
fanned-out job (services/fanout.py): a heartbeat thread and a checkpoint thread around the engine run, a dead
previous attempt's processes stopped and its files brought back from shared storage first, and every way the run
can end turned into one `AttemptEnd`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aieval_engine import workdir
from aieval_engine.results import EvalResult
from aieval_engine.runner import Evaluation as EngineEvaluation
from aieval_engine.spec import SpecError

from ..config import Settings
from ..db.outages import database_unavailable
from .checkpoints import JobCheckpoint
from .errors import ServiceError
from .recovery import stop_orphan
from .run_recorder import RunRecorder

log = logging.getLogger(__name__)

# What `start` gives back: the engine to run, or a line saying the attempt's work was handed elsewhere (fan-out).
Start = Callable[[], "EngineEvaluation | str"]


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended: `result` when the engine ran to its end (its status may still say failed or lost);
    otherwise `stopped` says why, and `recorded` whether a failed outcome was written for it."""

    result: EvalResult | None = None
    stopped: str | None = None
    recorded: bool = False


def run_attempt(settings: Settings, recorder: RunRecorder, checkpoint: JobCheckpoint, job_dir: Path,
                previous: dict[str, Any], label: str, start: Start) -> AttemptEnd:
    """Run one attempt in `job_dir`: `start()` is called once the previous attempt's leftovers are dealt with."""
    threading.Thread(target=recorder.heartbeat, daemon=True, name=f"heartbeat-{label}").start()
    saver = threading.Thread(target=checkpoint.keep_synced, args=(recorder.stop, settings.checkpoint_interval_s),
                             daemon=True, name=f"checkpoint-{label}")
    try:
        stop_orphan(previous, job_dir)
        if previous.get("attempts") and workdir.latest_run_dir(job_dir) is None:
            checkpoint.resume_here(lambda line: recorder.note(job_dir, line))
        resume = workdir.latest_run_dir(job_dir) is not None
        engine = start()
        if isinstance(engine, str):
            return AttemptEnd(stopped=engine)
        recorder.engine = engine
        engine.prepare()
        saver.start()
        result = engine.run(recorder.on_event, resume=resume)
    except (SpecError, ServiceError) as exc:
        problems = exc.problems if isinstance(exc, SpecError) else [exc.message, *exc.problems]
        recorder.stop.set()
        recorder.finish(status="failed", error="; ".join(problems), scores=[], extra={})
        return AttemptEnd(stopped="failed before start", recorded=True)
    except Exception as exc:
        recorder.stop.set()
        if database_unavailable(exc):
            # Not the job's fault: leave it "running" without heartbeat; the sweeper requeues it once the
            # database is back and the next attempt resumes.
            log.error("evaluation %s: attempt abandoned, the database stayed unavailable (%s)", label, exc)
            return AttemptEnd(stopped="interrupted: database unavailable")
        log.exception("evaluation %s crashed in the worker", label)
        recorder.finish(status="failed", error=f"the worker failed: {type(exc).__name__}: {exc}", scores=[], extra={})
        return AttemptEnd(stopped="crashed", recorded=True)
    finally:
        recorder.stop.set()
        if saver.is_alive():
            saver.join(timeout=120)
    if recorder.lost.is_set() or result.status == "lost":
        return AttemptEnd(stopped="lost to another worker")
    return AttemptEnd(result=result)
