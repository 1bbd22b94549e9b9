"""Running an evaluation on a worker: claim it, run the engine, record progress and results.

`run_next` is what a broker message does (tasks/evaluation.py): claim the fairest queued job of its queue and run
it; `run_evaluation` runs the very job it is given (tests, debugging). An attempt first stops what a dead previous
attempt left running on this machine and brings back its files from shared storage when they are not here, so
OpenCompass resumes from the predictions already made. Who runs which job and how lost jobs come back:
services/recovery.py; what the attempt writes to its row while it runs (heartbeat, cancel watch, log tail,
progress, outcome): services/run_recorder.py; the files mirrored to shared storage: services/checkpoints.py;
waiting out a database restart: db/outages.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aieval_engine import workdir
from aieval_engine.config_builder import DatasetShard
from aieval_engine.launchers import Launcher
from aieval_engine.prediction_cache import cache_file as prediction_cache_file
from aieval_engine.runner import Evaluation as EngineEvaluation

from .. import metrics
from ..config import Settings
from ..db import session_scope
from ..db.outages import START_RETRIES
from ..log_config import evaluation_context
from ..storage import Storage
from . import evaluations as evaluation_service
from . import fanout, gates
from .attempt import run_attempt
from .checkpoints import JobCheckpoint
from .errors import ServiceError
from .events import Publisher
from .provenance import score_provenance
from .recovery import claim, claim_fairest, worker_token
from .run_recorder import PgidRecordingLauncher, RunRecorder

log = logging.getLogger(__name__)


def run_evaluation(settings: Settings, storage: Storage, evaluation_id: int, launcher: Launcher,
                   publisher: Publisher | None = None) -> str:
    """The whole life of one attempt of this job (tests, debugging). Returns what happened (for the log)."""
    token = worker_token()
    claimed, previous = START_RETRIES.run(f"evaluation {evaluation_id}: claim",
                                          lambda: claim(settings, evaluation_id, token))
    if not claimed:
        return "skipped: not queued (already taken, finished or cancelled)"
    with evaluation_context(evaluation_id):
        return _run_claimed(settings, storage, evaluation_id, token, previous, launcher, publisher)


def run_next(settings: Settings, storage: Storage, message_evaluation_id: int, launcher: Launcher,
             publisher: Publisher | None = None) -> tuple[int | None, str]:
    """What the worker does with a broker message: run the fairest queued job of the message's queue
    (claim_fairest). Returns (the job run or None, what happened)."""
    token = worker_token()
    evaluation_id, previous = START_RETRIES.run(f"message for evaluation {message_evaluation_id}: claim",
                                                lambda: claim_fairest(settings, message_evaluation_id, token))
    if evaluation_id is None:
        return None, "skipped: nothing queued (the job was taken by an earlier message, finished or cancelled)"
    with evaluation_context(evaluation_id):  # the job run, which may not be the message's
        return evaluation_id, _run_claimed(settings, storage, evaluation_id, token, previous, launcher, publisher)


def _run_claimed(settings: Settings, storage: Storage, evaluation_id: int, token: str, previous: dict[str, Any],
                 launcher: Launcher, publisher: Publisher | None) -> str:
    publisher = publisher or Publisher(settings)
    job_dir = evaluation_service.job_dir(settings, evaluation_id)
    recorder = RunRecorder(settings, evaluation_id, token, publisher)
    publisher.publish(evaluation_id, {"type": "status", "status": "running"})
    checkpoint = JobCheckpoint(storage, evaluation_service.artifacts_prefix(evaluation_id), job_dir)
    job: dict[str, Any] = {}

    def start() -> EngineEvaluation | str:
        spec, model_ids, dataset_ids, source = load_job(settings, storage, evaluation_id)
        job.update(spec=spec, model_ids=model_ids, dataset_ids=dataset_ids)
        job_dir.mkdir(parents=True, exist_ok=True)
        if source is None and fanout.split(settings, spec) is not None:  # work for several local workers: parts
            return fanout.fan_out(settings, storage, evaluation_id, token, spec)
        rescore_from = _source_run_dir(settings, storage, *source) if source is not None else None
        return new_engine(settings, spec, job_dir, PgidRecordingLauncher(launcher, recorder.record_pgid),
                          rescore_from=rescore_from)

    end = run_attempt(settings, recorder, checkpoint, job_dir, previous, str(evaluation_id), start)
    if end.result is None:
        return end.stopped
    return record_result(evaluation_id, recorder, checkpoint, job["spec"], job["model_ids"], job["dataset_ids"],
                         end.result)


def record_result(evaluation_id: int, recorder: RunRecorder, checkpoint: JobCheckpoint, spec, model_ids: dict[str, int],
                  dataset_ids: list[int], result) -> str:
    """Store the run's files and write its outcome: status, scores with what they rest on, pairs, manifest."""
    run_dir_name = result.run_dir.name if result.run_dir else None
    stored = checkpoint.store()
    pairs = _pairs(recorder.last_progress, result)
    provenance = score_provenance(result.run_dir, result.scores, spec, result.manifest)
    scores = [
        dict(evaluation_id=evaluation_id, model_id=model_ids.get(s.model),
              dataset_id=dataset_ids[s.dataset_index] if s.dataset_index is not None else None,
              model_name=s.model, dataset_name=s.dataset, model_abbr=s.model_abbr, dataset_abbr=s.dataset_abbr,
              metric=s.metric, value=s.value, **rests_on)
        for s, rests_on in zip(result.scores, provenance, strict=True)
    ]
    final_progress = dict(recorder.last_progress or {})
    final_progress.update(stage=result.status, elapsed_s=result.duration_s)
    recorder.finish(status=result.status, error=result.error, scores=scores, extra={
        "log_excerpt": result.log_excerpt, "manifest": result.manifest, "pairs": pairs, "run_dir_name": run_dir_name,
        "artifacts_stored": stored, "progress": final_progress, "run_pgid": None, "stage": result.status,
        "fraction": 1.0 if result.status == "succeeded" else final_progress.get("fraction"),
    })
    metrics.results_stored(result, scores)  # endpoint latency, retries, samples scored (Prometheus)
    if result.status == "succeeded":
        _check_gate(recorder.settings, evaluation_id, checkpoint.storage)
    return result.status


def _check_gate(settings: Settings, evaluation_id: int, storage: Storage) -> None:
    """A schedule's run is checked against its gate right after its success is recorded (services/gates.py). Never
    fails the run: a gate that cannot be checked now is logged, and the run keeps its result without a verdict."""
    try:
        gates.check_after_success(settings, evaluation_id, storage)
    except Exception:
        log.exception("evaluation %s: its gate could not be checked", evaluation_id)


def load_job(settings: Settings, storage: Storage, evaluation_id: int):
    """The job's spec (keys decrypted, files local), its models' ids by name, its datasets' ids in spec order and the
    evaluation a re-score reads (or None), waiting out a brief database outage."""
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

    return START_RETRIES.run(f"evaluation {evaluation_id}: load", load)


def new_engine(settings: Settings, spec, job_dir: Path, launcher: Launcher,
               rescore_from: Path | None = None, datasets: list[int] | None = None,
               shard: DatasetShard | None = None) -> EngineEvaluation:
    """The engine run of `spec` in `job_dir` as every worker runs it (a whole job or one part of it: `datasets`,
    `shard`, services/fanout.py)."""
    if settings.runner == "slurm":
        # This worker's setting, not the job's: a job requeued to another worker runs its tasks as that one does.
        spec = spec.model_copy(update={"params": spec.params.model_copy(update={"slurm": settings.slurm_spec()})})
    return EngineEvaluation(
        spec, job_dir, data_cache=settings.compass_data_cache, launcher=launcher,
        outbound_policy=settings.outbound_policy,  # the OpenCompass process obeys the server's policy
        budget_store=settings.budget_store,  # models' shared request caps, shared with every other worker
        judge_cache=judge_cache_file(settings),
        prediction_cache=prediction_cache_file(settings.data_dir),  # endpoint models' answers
        rescore_from=rescore_from,  # a re-score: the source's predictions, no inference
        datasets=datasets, shard=shard,
    )


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
