"""One big evaluation over many workers: a job's local checkpoints, its datasets and its large datasets run as parts.

A worker that claims such a job (services/runs.py) does not run it: `fan_out` writes one `EvaluationPart` row per
part and hands the parts to the broker at once as a Celery group, each on its queue (`local`: a GPU worker each;
`api`). How a job is split (`split`):
- every local checkpoint is a part of its own; all endpoint models together are one part (they already share one
  request pool and one limit per server in one process: never split);
- a checkpoint's work is cut further while the job's local parts are fewer than AIEVAL_FANOUT_MAX_PARTS (default
  4; each checkpoint gets max_parts // checkpoints): into as many parts as its rows make worth it, each of at least
  AIEVAL_FANOUT_PART_ROWS rows (default 1000; a built-in dataset's size is not known before OpenCompass loads it:
  with `limit`, limit rows per dataset of its config, without, one part's worth). So a job of a few small datasets
  stays one part. An uploaded dataset whose share is 1.5 parts or more (and at least twice PART_ROWS rows) is cut
  into shards as OpenCompass' SizePartitioner cuts one (abbr `<abbr>_0`, `_1`, ..., `test_range` followed by the
  shard's `[start: stop]`; ranges of whole batches, so a shard's batches are the unsplit run's); the other datasets
  are grouped into the parts left. Built-in datasets are grouped, never cut; nothing is cut when the run has
  several workers of its own (`params.workers`, which cuts its datasets itself);
- a job whose local work is one part runs whole, as before; as does one whose model names a part alone would
  abbreviate differently.
Each part is an ordinary engine run of the job's spec with only its models and datasets (`aieval_engine.runner.
Evaluation(datasets=..., shard=...)`: every dataset keeps the abbreviation and index it has in the whole job), in
`<job dir>/parts/<position>`, claimed, beaten, checkpointed and resumed like a whole job (`run_part`,
`PartRecorder`); a shard's part only infers. The part that finishes last merges them (`merge_if_done`): the engine
reads the parts' runs as one run of the whole spec (`Evaluation.merge_parts`); when parts ran some of the datasets it
then runs OpenCompass' evaluation stage on the merged run, which scores the shards from `<abbr>_0.json, <abbr>_1.json
...` as OpenCompass' own eval task reads a split dataset's predictions. Scores and samples equal the unsplit run's.

Why the database and not a Celery chord decides when to merge: a chord needs a result backend (the platform has
none) and its counter would be lost with a broker restart, while part states survive anything the database does.
What keeps working for the whole job:
- progress: each part's progress goes to its row, and their sum to the evaluation's (live, like a whole job's);
- cancel: every running part watches the evaluation's `cancel_requested` (RunRecorder's beat) and stops its run;
  a queued part is never claimed then, and the last part to stop records the job as cancelled;
- restarts: running parts beat the evaluation's heartbeat too. When no part beats any more (a worker died, a
  message was lost), the sweeper requeues the evaluation as any job; the worker that claims it runs `fan_out`
  again, which sends only the parts that have not succeeded, and a dead part resumes from its own predictions;
- retry: the same `fan_out`; the parts that succeeded are kept.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, select, update

from aieval_engine import workdir
from aieval_engine.config_builder import DatasetShard, plan_datasets, safe_abbr, shard_ranges
from aieval_engine.launchers import ColdLauncher, Launcher
from aieval_engine.spec import EvalSpec, HuggingFaceModelSpec, SpecError

from ..config import Settings
from ..db import session_scope
from ..db.outages import START_RETRIES, database_unavailable
from ..enums import EvaluationStatus
from ..models import Evaluation, EvaluationPart
from ..storage import Storage
from . import evaluations as evaluation_service
from . import runs
from .artifacts import RUN_LOG
from .attempt import run_attempt
from .checkpoints import JobCheckpoint
from .evaluations import utcnow
from .events import Publisher
from .recovery import worker_token
from .run_recorder import PgidRecordingLauncher, RunRecorder
from .submission import submit_parts

log = logging.getLogger(__name__)
PARTS = "parts"  # <job dir>/parts/<position>: each part's own job dir


# ---- the plan -------------------------------------------------------------------------------------------
def split(settings: Settings, spec: EvalSpec) -> list[tuple[dict[str, Any], str]] | None:
    """The job's parts, each (what it runs, its queue), in order: every local checkpoint's work as one part or, when
    the checkpoints are fewer than `fanout_max_parts`, as several (`_checkpoint_parts`), then one part for all
    endpoint models. What a part runs: {"models": display names, "datasets": spec dataset indexes or None for
    all, "shard": a DatasetShard's fields or None}. None: the job runs whole, as before (its local work is one
    part, fan-out is turned off, or model names whose OpenCompass abbreviations a part alone would not reproduce)."""
    local = [i for i, model in enumerate(spec.models) if isinstance(model, HuggingFaceModelSpec)]
    if not settings.fanout or not local:
        return None
    endpoints = [i for i in range(len(spec.models)) if i not in local]
    groups = [[i] for i in local] + ([endpoints] if endpoints else [])
    whole = _abbrs([model.name for model in spec.models])
    for group in groups:
        if _abbrs([spec.models[i].name for i in group]) != [whole[i] for i in group]:
            return None  # a name that is another's abbreviation: its part alone would abbreviate it differently
    per_checkpoint = settings.fanout_max_parts // len(local)
    sizes = _dataset_sizes(spec) if per_checkpoint >= 2 else None
    plan: list[tuple[dict[str, Any], str]] = []
    for i in local:
        model = spec.models[i]
        assert isinstance(model, HuggingFaceModelSpec)
        work = _checkpoint_parts(sizes, settings.fanout_part_rows, per_checkpoint, model.batch_size) if sizes else [
            (None, None)]
        plan += [({"models": [model.name], "datasets": datasets, "shard": shard}, "local") for datasets, shard in work]
    if len(plan) < 2:
        return None
    if endpoints:
        plan.append(({"models": [spec.models[i].name for i in endpoints], "datasets": None, "shard": None}, "api"))
    return plan


def _abbrs(names: list[str]) -> list[str]:
    taken: set[str] = set()
    return [safe_abbr(name, taken) for name in names]


def _dataset_sizes(spec: EvalSpec) -> list[tuple[int, int | None, bool]] | None:
    """(spec index, rows evaluated or None when not known before OpenCompass loads it, whether it may be cut into
    shards) for every dataset; None when the spec's datasets cannot be planned (the whole run reports why)."""
    try:
        planned = plan_datasets(spec)
    except (SpecError, OSError):
        return None
    limit = spec.params.limit
    sizes = []
    for item in planned:
        if item.rows is not None:  # an uploaded file: its rows are counted when it is checked
            rows = min(item.rows, limit) if limit else item.rows
            # A run with several workers already cuts its datasets itself (<abbr>_0, ...): not cut twice.
            sizes.append((item.index, rows, spec.params.workers == 1))
        else:  # a built-in config: at most `limit` rows from each of its datasets, else unknown
            sizes.append((item.index, limit * len(item.builtin.abbrs) if limit and item.builtin else None, False))
    return sizes


def _checkpoint_parts(sizes: list[tuple[int, int | None, bool]], part_rows: int, most: int,
                      batch_size: int) -> list[tuple[list[int] | None, dict[str, int] | None]]:
    """One checkpoint's work as parts, each (dataset indexes or None for all, a shard or None). As many parts as
    the rows make worth it (`part_rows` each, a dataset of unknown size counting as one part's worth), at most
    `most`. Each dataset gets its share of the parts; an uploaded dataset whose share is 1.5 parts or more (and of
    at least twice `part_rows` rows) is cut into that many shards (config_builder.shard_ranges: consecutive index
    ranges of whole batches), the other datasets are grouped into the parts left, the largest first into the
    lightest part. A part is never empty; [(None, None)]: the checkpoint's work stays one part."""
    weights = {index: rows if rows is not None else part_rows for index, rows, _ in sizes}
    total = sum(weights.values())
    parts = min(most, total // part_rows)
    if parts < 2:
        return [(None, None)]
    shards: dict[int, int] = {}
    for index, rows, shardable in sizes:
        count = min(int(weights[index] * parts / total + 0.5), (rows or 0) // part_rows)
        if shardable and rows is not None and count >= 2:
            shards[index] = count
    rest = [index for index, _, _ in sizes if index not in shards]
    while shards and sum(shards.values()) + (1 if rest else 0) > parts:
        largest = max(shards, key=lambda index: (shards[index], -index))
        shards[largest] -= 1
        if shards[largest] < 2:
            del shards[largest]
            rest = [index for index, _, _ in sizes if index not in shards]
    bins: list[list[int]] = [[] for _ in range(min(parts - sum(shards.values()), len(rest)))]
    loads = [0] * len(bins)
    for index in sorted(rest, key=lambda index: (-weights[index], index)):
        lightest = loads.index(min(loads))
        bins[lightest].append(index)
        loads[lightest] += weights[index]
    work: list[tuple[list[int] | None, dict[str, int] | None]] = [(sorted(group), None) for group in bins]
    rows_of = {index: rows for index, rows, _ in sizes}
    for index, count in shards.items():
        work += [([index], {"dataset": index, "index": position, "start": start, "stop": stop})
                 for position, (start, stop) in enumerate(shard_ranges(rows_of[index] or 0, count, batch_size))]
    if len(work) < 2:
        return [(None, None)]
    return sorted(work, key=lambda part: (part[0][0], part[1]["index"] if part[1] else -1))


def part_what(stored: Any) -> dict[str, Any]:
    """What a part row runs: rows written before parts had datasets hold the list of their models only."""
    if isinstance(stored, list):
        return {"models": stored, "datasets": None, "shard": None}
    return stored


def part_spec(spec: EvalSpec, models: list[str]) -> EvalSpec:
    """The job's spec with only these models (by display name): one part's engine run."""
    return spec.model_copy(update={"models": [model for model in spec.models if model.name in models]})


def part_job_dir(settings: Settings, evaluation_id: int, position: int) -> Path:
    return evaluation_service.job_dir(settings, evaluation_id) / PARTS / str(position)


def _part_prefix(evaluation_id: int, position: int) -> str:
    return f"{evaluation_service.artifacts_prefix(evaluation_id)}/{PARTS}/{position}"


def _part_key(evaluation_id: int, position: int):
    return (EvaluationPart.evaluation_id == evaluation_id) & (EvaluationPart.position == position)


# ---- fanning out (the worker that claimed the job) ------------------------------------------------------
def fan_out(settings: Settings, storage: Storage, evaluation_id: int, token: str, spec: EvalSpec,
            publisher: Publisher | None = None) -> str:
    """Write the job's parts (first attempt) or put back in the queue those that did not succeed and are not
    running (a requeue or a retry), and send them. The evaluation stays "running"; its parts beat for it."""
    plan = split(settings, spec)
    assert plan is not None
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    with session_scope(settings.database_url) as session:
        parts = list(session.scalars(select(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id)
                                     .order_by(EvaluationPart.position)))
        replanned = [(part_what(part.models), part.queue) for part in parts] != plan
        stale_parts = replanned and bool(parts)
        if replanned:
            session.execute(delete(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id))
            session.add_all([EvaluationPart(evaluation_id=evaluation_id, position=position, models=what, queue=queue,
                                            status=EvaluationStatus.queued.value, attempts=0)
                             for position, (what, queue) in enumerate(plan)])
        else:
            for part in parts:
                alive = part.status == "running" and part.heartbeat_at is not None and part.heartbeat_at >= cutoff
                if part.status in ("succeeded", "queued") or alive:
                    continue
                # Conditional on what was read: the part's own (late) claim or outcome wins over this reset.
                session.execute(update(EvaluationPart).where(
                    _part_key(evaluation_id, part.position), EvaluationPart.status == part.status,
                    EvaluationPart.worker.is_(None) if part.worker is None else EvaluationPart.worker == part.worker)
                    .values(status=EvaluationStatus.queued.value, error=None, finished_at=None))
        session.flush()
        parts = list(session.scalars(select(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id)
                                     .order_by(EvaluationPart.position)))
        to_send = [(part.position, part.queue) for part in parts if part.status == "queued"]
        progress = combined_progress(parts)
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.worker == token).values(
            progress=progress, stage="running", fraction=progress["fraction"], heartbeat_at=utcnow(),
            run_pgid=None, revision=Evaluation.revision + 1))
    if stale_parts:
        # Parts of another plan (the settings or a dataset changed since): a new part must not resume from the files
        # of the old part that had its position, which may have run other datasets or another shard's range.
        shutil.rmtree(evaluation_service.job_dir(settings, evaluation_id) / PARTS, ignore_errors=True)
        storage.delete_prefix(f"{evaluation_service.artifacts_prefix(evaluation_id)}/{PARTS}")
    if not to_send:
        merged = merge_if_done(settings, storage, evaluation_id, publisher)
        return merged or f"fanned out into {len(plan)} parts, none to send (the running ones go on)"
    submit_parts(settings, evaluation_id, to_send)
    return f"fanned out into {len(plan)} parts ({len(to_send)} sent)"


def combined_progress(parts: list[EvaluationPart]) -> dict[str, Any]:
    """The job's progress from its parts': counts added up, the pairs of every part, and the fraction as the mean
    of the parts' (a part not started counts 0, a succeeded one 1), so it never goes back when a part starts."""
    known = [part.progress or {} for part in parts]
    fractions = [1.0 if part.status == "succeeded" else (part.progress or {}).get("fraction") or 0.0 for part in parts]
    totals = [p.get("samples_total") for p in known]
    etas = [p["eta_s"] for p in known if p.get("eta_s") is not None]
    stages = {p.get("stage") for p in known}
    return {
        "kind": "progress",
        "stage": next((s for s in ("infer", "eval", "summarize") if s in stages), "running"),
        "elapsed_s": max((p.get("elapsed_s") or 0.0 for p in known), default=0.0),
        "samples_done": sum(p.get("samples_done") or 0 for p in known),
        "samples_total": sum(totals) if totals and all(t is not None for t in totals) else None,
        "pairs_done": sum(p.get("pairs_done") or 0 for p in known),
        "pairs_total": sum(p.get("pairs_total") or 0 for p in known),
        "eta_s": max(etas) if etas else None,
        "pairs": _whole_pairs(parts),
        "message": None,
        "fraction": sum(fractions) / len(parts) if parts else None,
        "parts": [{"position": part.position, **part_what(part.models), "queue": part.queue, "status": part.status,
                   "worker": part.worker, "attempts": part.attempts, "elapsed_s": (part.progress or {}).get("elapsed_s")}
                  for part in parts],
    }


def _whole_pairs(parts: list[EvaluationPart]) -> list[dict[str, Any]]:
    """The parts' pairs, a dataset's shards (`<abbr>_<i>`, an uploaded dataset's abbr never ends so) added up into
    the pair of the whole dataset, where its first shard's pair is."""
    pairs: list[dict[str, Any]] = []
    whole: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        shard = part_what(part.models).get("shard")
        for pair in (part.progress or {}).get("pairs") or []:
            if not shard or not str(pair.get("dataset_abbr", "")).endswith(f"_{shard['index']}"):
                pairs.append(pair)
                continue
            abbr = pair["dataset_abbr"].removesuffix(f"_{shard['index']}")
            key = (pair.get("model_abbr"), abbr)
            if key not in whole:
                whole[key] = {**pair, "dataset_abbr": abbr}
                pairs.append(whole[key])
                continue
            merged = whole[key]
            merged["done"] = (merged.get("done") or 0) + (pair.get("done") or 0)
            both = (merged.get("total"), pair.get("total"))
            merged["total"] = both[0] + both[1] if None not in both else None
            states = (merged.get("state"), pair.get("state"))
            merged["state"] = states[0] if states[0] == states[1] else "failed" if "failed" in states else "inferring"
    return pairs


# ---- one part (a worker that got its message) -----------------------------------------------------------
class PartRecorder(RunRecorder):
    """A RunRecorder for one part's row. Its beats keep the evaluation's heartbeat alive too (the sweeper watches
    the evaluation); its progress is written to the part and, added up with the other parts', to the evaluation;
    the cancel watch reads the evaluation's `cancel_requested` (RunRecorder's, unchanged)."""

    table = EvaluationPart

    def __init__(self, settings: Settings, evaluation_id: int, position: int, token: str, publisher: Publisher):
        super().__init__(settings, evaluation_id, token, publisher)
        self.position = position

    def _row(self):
        return _part_key(self.id, self.position)

    def write(self, **values: Any) -> bool:
        written = super().write(**values)
        if written and "heartbeat_at" in values:
            with session_scope(self.settings.database_url) as session:
                session.execute(update(Evaluation).where(Evaluation.id == self.id, Evaluation.status == "running")
                                .values(heartbeat_at=values["heartbeat_at"]))
        return written

    def write_progress(self, data: dict[str, Any]) -> None:
        if not self.write(progress=data, heartbeat_at=utcnow()):
            return
        with session_scope(self.settings.database_url) as session:
            parts = list(session.scalars(select(EvaluationPart).where(EvaluationPart.evaluation_id == self.id)
                                         .order_by(EvaluationPart.position)))
            combined = combined_progress(parts)
            session.execute(update(Evaluation).where(Evaluation.id == self.id, Evaluation.status == "running")
                            .values(progress=combined, stage=combined["stage"], fraction=combined["fraction"],
                                    revision=Evaluation.revision + 1))
        self.publisher.publish(self.id, {"type": "progress", "status": "running", "progress": combined})

    def _write_outcome(self, *, status: str, error: str | None, scores: list[dict[str, Any]],
                       extra: dict[str, Any]) -> None:
        with self.lock:
            log_tail = "\n".join(self.log_lines) or None
        progress = {**(self.last_progress or {}), "stage": status}
        if status == "succeeded":
            progress["fraction"] = 1.0
        self.write(status=status, error=error, finished_at=utcnow(), log_tail=log_tail, run_pgid=None,
                   progress=progress)


def claim_part(settings: Settings, evaluation_id: int, position: int, token: str) -> tuple[bool, dict[str, Any]]:
    """Take this part if it is queued (or running with a dead heartbeat) and its job still runs, not cancelled.
    Returns (claimed, the previous attempt's worker, process group and attempts)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.stale_after_s)
    with session_scope(settings.database_url) as session:
        before = session.execute(select(EvaluationPart.worker, EvaluationPart.run_pgid, EvaluationPart.attempts)
                                 .where(_part_key(evaluation_id, position))).first()
        if before is None:
            return False, {}
        job_runs = exists().where(Evaluation.id == evaluation_id, Evaluation.status == "running",
                                  Evaluation.cancel_requested.is_(False))
        claimed = session.execute(
            update(EvaluationPart).where(
                _part_key(evaluation_id, position), job_runs,
                (EvaluationPart.status == "queued")
                | ((EvaluationPart.status == "running") & (EvaluationPart.heartbeat_at < cutoff)))
            .values(status="running", worker=token, heartbeat_at=now, attempts=EvaluationPart.attempts + 1,
                    started_at=now, finished_at=None, error=None)
            .execution_options(synchronize_session=False)).rowcount
        return claimed == 1, {"worker": before.worker, "run_pgid": before.run_pgid, "attempts": before.attempts}


def run_part(settings: Settings, storage: Storage, evaluation_id: int, position: int, launcher: Launcher,
             publisher: Publisher | None = None) -> str:
    """What a part's message does: claim the part, run the engine on its models in its own job dir (resuming from
    its predictions after a dead attempt), record how it went, and merge the job if it was the last part."""
    token = worker_token()
    claimed, previous = START_RETRIES.run(f"evaluation {evaluation_id} part {position}: claim",
                                          lambda: claim_part(settings, evaluation_id, position, token))
    publisher = publisher or Publisher(settings)
    if not claimed:
        # A cancelled job's queued parts are never claimed: the last of them to be skipped ends the job.
        merged = merge_if_done(settings, storage, evaluation_id, publisher)
        return merged or "skipped: not queued (taken, finished, or its job is cancelled or over)"
    part_dir = part_job_dir(settings, evaluation_id, position)
    recorder = PartRecorder(settings, evaluation_id, position, token, publisher)
    checkpoint = JobCheckpoint(storage, _part_prefix(evaluation_id, position), part_dir)

    def start() -> runs.EngineEvaluation:
        spec = runs.load_job(settings, storage, evaluation_id)[0]
        with session_scope(settings.database_url) as session:
            what = part_what(session.scalar(select(EvaluationPart.models).where(_part_key(evaluation_id, position))))
        part_dir.mkdir(parents=True, exist_ok=True)
        return runs.new_engine(settings, part_spec(spec, what["models"]), part_dir,
                               PgidRecordingLauncher(launcher, recorder.record_pgid), datasets=what["datasets"],
                               shard=DatasetShard(**what["shard"]) if what["shard"] else None)

    end = run_attempt(settings, recorder, checkpoint, part_dir, previous, f"{evaluation_id} part {position}", start)
    if end.result is None:
        merged = merge_if_done(settings, storage, evaluation_id, publisher) if end.recorded else None
        return merged or end.stopped
    result = end.result
    checkpoint.store()
    recorder.finish(status=result.status, error=result.error, scores=[], extra={})
    return merge_if_done(settings, storage, evaluation_id, publisher) or f"part {position}: {result.status}"


# ---- merging (the last part) ----------------------------------------------------------------------------
def merge_if_done(settings: Settings, storage: Storage, evaluation_id: int,
                  publisher: Publisher | None = None) -> str | None:
    """When no part of the job is left to run, take the job (one compare-and-set on its worker, so two parts that
    end at once merge once) and write its outcome from the merged parts. None: parts still run (or are lost: the
    sweeper requeues the job once nobody beats for it), or another worker merges."""
    token = worker_token()
    with session_scope(settings.database_url) as session:
        job = session.execute(select(Evaluation.status, Evaluation.worker, Evaluation.cancel_requested)
                              .where(Evaluation.id == evaluation_id)).first()
        if job is None or job.status != "running":
            return None
        if job.cancel_requested:  # nobody will run these any more
            session.execute(update(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id,
                                                         EvaluationPart.status == "queued")
                            .values(status="cancelled", error="cancelled by request", finished_at=utcnow()))
        parts = list(session.scalars(select(EvaluationPart).where(EvaluationPart.evaluation_id == evaluation_id)
                                     .order_by(EvaluationPart.position)))
        if not parts or any(part.status in ("queued", "running") for part in parts):
            return None
        taken = session.execute(
            update(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.status == "running",
                                     Evaluation.worker == job.worker)
            .values(worker=token, stage="merging", heartbeat_at=utcnow(), revision=Evaluation.revision + 1)
            .execution_options(synchronize_session=False)).rowcount
        if not taken:
            return None
        outcomes = [(part.position, part.status, part.error) for part in parts]
        progress = combined_progress(parts)
        cancelled = job.cancel_requested
    return _merge(settings, storage, evaluation_id, token, outcomes, progress, cancelled,
                  publisher or Publisher(settings))


def _merge(settings: Settings, storage: Storage, evaluation_id: int, token: str,
           outcomes: list[tuple[int, str, str | None]], progress: dict[str, Any], cancelled: bool,
           publisher: Publisher) -> str:
    job_dir = evaluation_service.job_dir(settings, evaluation_id)
    recorder = RunRecorder(settings, evaluation_id, token, publisher)
    recorder.last_progress = progress
    threading.Thread(target=recorder.heartbeat, daemon=True, name=f"heartbeat-{evaluation_id}-merge").start()
    try:
        spec, model_ids, dataset_ids, _ = runs.load_job(settings, storage, evaluation_id)
        part_dirs = []
        for position, _, _ in outcomes:
            part_dir = part_job_dir(settings, evaluation_id, position)
            if workdir.latest_run_dir(part_dir) is None:  # the part ran on another machine: its stored files
                JobCheckpoint(storage, _part_prefix(evaluation_id, position), part_dir).resume_here(log.info)
            part_dirs.append(part_dir)
        statuses = {status for _, status, _ in outcomes}
        stopped_as = "cancelled" if cancelled or "cancelled" in statuses else "timeout" if "timeout" in statuses else None
        # The merge may run OpenCompass' evaluation stage (the parts ran some of the datasets): its process group
        # is recorded as a run's, so that whoever takes the job over after this worker died stops it, and the
        # heartbeat's cancel watch stops it as it stops a run.
        engine = runs.new_engine(settings, spec, job_dir, PgidRecordingLauncher(ColdLauncher(), recorder.record_pgid))
        recorder.engine = engine
        result = engine.merge_parts(part_dirs, stopped_as)
        failures = [f"part {position} ({error})" for position, status, error in outcomes
                    if status == "failed" and error]
        if result.status == "failed" and failures:
            result.error = "; ".join([result.error or "a part failed", *failures])
        outcomes_by_pair = {(pair.model_abbr, pair.dataset_abbr): pair.ok for pair in result.pairs}
        for pair in progress["pairs"]:  # a shard's part only inferred: the merge scored its dataset
            if (pair.get("model_abbr"), pair.get("dataset_abbr")) in outcomes_by_pair:
                pair["state"] = "evaluated" if outcomes_by_pair[(pair["model_abbr"], pair["dataset_abbr"])] else "failed"
        with recorder.lock:
            recorder.log_lines.extend((job_dir / RUN_LOG).read_text(errors="replace").splitlines())
        checkpoint = JobCheckpoint(storage, evaluation_service.artifacts_prefix(evaluation_id), job_dir)
        return runs.record_result(evaluation_id, recorder, checkpoint, spec, model_ids, dataset_ids, result)
    except Exception as exc:
        if database_unavailable(exc):
            return "interrupted: database unavailable"  # the sweeper requeues the job; fan_out merges again
        log.exception("evaluation %s: merging its parts failed", evaluation_id)
        recorder.finish(status="failed", error=f"merging the parts failed: {type(exc).__name__}: {exc}", scores=[],
                        extra={})
        return "merge failed"
    finally:
        recorder.stop.set()
