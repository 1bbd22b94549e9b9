"""Prometheus metrics (prometheus_client in multiprocess mode; docs/OPERATIONS.md "Monitoring").

Every process of an installation on one machine (the API's processes, the workers, `aieval serve`'s children)
writes its counters and histograms into files under one directory (`metrics_dir`, default `<data dir>/metrics`;
prometheus_client's PROMETHEUS_MULTIPROC_DIR). `GET /metrics` merges them with what is read from the database at
scrape time (evaluations by state, queue depth and oldest wait, heartbeats of running jobs): counts that must match
the database are computed from it, never counted up and down where they could drift.

A file is named after the process that writes it, `<kind>_<host>-<pid>.db` (host too: containers sharing a volume
all have pid 1). Each process, when it starts, removes the files of this host's processes that no longer run, and
removes its own live gauges when it exits, as the client's documentation asks for multiprocess set-ups.

Labels never carry a user name, a URL or a secret: models are labelled with their display name, routes with their
template (`/api/v1/evaluations/{evaluation_id}`, never an id)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from aieval_engine.results import EvalResult

    from .config import Settings

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ---- recorded by the processes (merged across them at scrape time) ------------------------------------------
EVALUATION_DURATION = Histogram(
    "aieval_evaluation_duration_seconds",
    "One attempt of an evaluation, from claiming the job to writing its outcome (a fanned-out job: its parts and their "
    "merge), by outcome.",
    ["outcome"], buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400))
SAMPLES_SCORED = Counter(
    "aieval_samples_scored_total", "Samples scored by finished attempts (per model and dataset, once), by model.",
    ["model"])
MODEL_REQUEST_DURATION = Histogram(
    "aieval_model_request_duration_seconds",
    "Endpoint model requests answered: latency of the successful attempt (sent to whole answer), by model.",
    ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300))
MODEL_TIME_TO_FIRST_TOKEN = Histogram(
    "aieval_model_time_to_first_token_seconds",
    "Endpoint model requests answered by a stream: time from sending to the first text, by model.",
    ["model"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60))
MODEL_REQUEST_RETRIES = Counter(
    "aieval_model_request_retries_total",
    "Endpoint requests that failed (429, 5xx, network errors) and were sent again, by model.", ["model"])
MODEL_CACHED_ANSWERS = Counter(
    "aieval_model_cached_answers_total", "Answers taken from the prediction cache instead of the model, by model.",
    ["model"])
MODEL_FAILED_TASKS = Counter(
    "aieval_model_failed_tasks_total",
    "Model x dataset tasks of finished attempts that produced no score (the model failed or errors exhausted the "
    "retries), by model.", ["model"])
HTTP_REQUEST_DURATION = Histogram(
    "aieval_http_request_duration_seconds",
    "API requests, from receiving to the end of the response, by method, route template and status code.",
    ["method", "route", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
# livemax: a worker that exits cleanly takes its series with it; one that is killed leaves its last beat, whose
# age then grows (the alert) until a process on this host starts and clears what dead processes left.
WORKER_HEARTBEAT = Gauge(
    "aieval_worker_heartbeat_timestamp_seconds",
    "Unix time of a worker process' last heartbeat (every heartbeat_interval_s while it runs), by worker name.",
    ["worker"], multiprocess_mode="livemax")
RECORDED = (EVALUATION_DURATION, SAMPLES_SCORED, MODEL_REQUEST_DURATION, MODEL_TIME_TO_FIRST_TOKEN,
            MODEL_REQUEST_RETRIES, MODEL_CACHED_ANSWERS, MODEL_FAILED_TASKS, HTTP_REQUEST_DURATION, WORKER_HEARTBEAT)
# Computed from the database at scrape time (DatabaseCollector).
FROM_DATABASE = ("aieval_database_up", "aieval_evaluations", "aieval_queue_depth", "aieval_queue_oldest_wait_seconds",
                 "aieval_running_job_heartbeat_age_seconds")


# ---- the process' metrics directory ------------------------------------------------------------------------
HOST_ID = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())  # no `_`: the client splits file names there


def process_identifier() -> str:
    """Distinct for every process writing into one directory, also across containers sharing it (called on every
    recorded value: cheap)."""
    return f"{HOST_ID}-{os.getpid()}"


_lock = threading.Lock()
_directory: Path | None = None


def metrics_directory(settings: Settings) -> Path:
    return settings.metrics_dir or settings.data_dir / "metrics"


def configure(settings: Settings) -> Path:
    """Point this process' metrics at the installation's directory; called by every entry point (create_app, the
    worker) before anything is recorded. Once per process in production; a second call with another directory
    (tests building apps of several data dirs in one process) starts this process' series afresh there."""
    global _directory
    directory = metrics_directory(settings)
    with _lock:
        if directory == _directory:
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # model names are in the files: private like the rest of the data dir
        remove_dead_processes_files(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # where prometheus_client opens its files
        with warnings.catch_warnings():  # "not implemented in multi-process mode": it forgets the children
            warnings.simplefilter("ignore", UserWarning)
            for metric in RECORDED:
                metric.clear()  # children made before hold the previous directory's files
        values.ValueClass = values.MultiProcessValue(process_identifier)
        if _directory is None:
            atexit.register(_at_exit)
        _directory = directory
    return directory


def _at_exit() -> None:
    if _directory is not None:
        mark_process_dead(process_identifier(), str(_directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_processes_files(directory: Path) -> list[Path]:
    """Remove the files of this host's processes that no longer run (their counters restart from zero, which
    Prometheus' rate() reads as a reset); other hosts' files are theirs to clean."""
    prefix = HOST_ID + "-"
    removed = []
    for path in directory.glob("*.db"):
        owner = path.stem.rsplit("_", 1)[-1]
        if owner.startswith(prefix) and owner[len(prefix):].isdigit() and not _alive(int(owner[len(prefix):])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ---- what the workers record ---------------------------------------------------------------------------------
def evaluation_finished(outcome: str, duration_s: float) -> None:
    EVALUATION_DURATION.labels(outcome=outcome).observe(max(duration_s, 0.0))


# Beside the records: how far the attempts that finished have observed each model's file. A resumed or retried
# attempt appends to the same files; an attempt that died before observing leaves its records to the next one.
OBSERVED = ".observed-by-metrics.json"


def _new_records(folder: Path, name: str, offsets: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The records of `<folder>/<name>.jsonl` after `offsets[name]`; moves the offset to the end."""
    path = folder / f"{name}.jsonl"
    try:
        with open(path, "rb") as handle:
            handle.seek(offsets.get(name, 0))
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a line still being written (or cut off by a crash): not observed yet
                offsets[name] = offsets.get(name, 0) + len(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
    except OSError:
        return


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return float(value)


def results_stored(result: EvalResult, scores: list[dict[str, Any]]) -> None:
    """Observe a finished attempt's work: its endpoint requests (the records no finished attempt observed before),
    the samples its stored scores rest on (`n`, once per model and dataset) and its failed tasks, labelled with the
    models' display names. Never fails the run: metrics are not worth an evaluation."""
    try:
        _observe_results(result, scores)
    except Exception:
        log.exception("metrics: the results of %s were not observed", result.job_dir)


def _observe_results(result: EvalResult, scores: list[dict[str, Any]]) -> None:
    from aieval_engine import workdir

    names = {m.get("abbr"): m.get("name") for m in (result.manifest or {}).get("models", []) if isinstance(m, dict)}
    folder = workdir.sample_metrics_dir(result.job_dir)
    observed_file = folder / OBSERVED
    try:
        offsets = json.loads(observed_file.read_text())
    except (OSError, ValueError):
        offsets = {}
    for abbr, name in names.items():
        if not abbr or not name:
            continue
        for record in _new_records(folder, abbr, offsets):
            if record.get("cached"):
                MODEL_CACHED_ANSWERS.labels(model=name).inc()
                continue
            latency = _number(record.get("latency_s"))
            if latency is not None:
                MODEL_REQUEST_DURATION.labels(model=name).observe(latency)
            first_token = _number(record.get("ttft_s"))
            if first_token is not None:
                MODEL_TIME_TO_FIRST_TOKEN.labels(model=name).observe(first_token)
            retries = _number(record.get("retries"))
            if retries:
                MODEL_REQUEST_RETRIES.labels(model=name).inc(retries)
    if offsets and folder.is_dir():
        observed_file.write_text(json.dumps(offsets))
    counted: set[tuple[Any, Any]] = set()
    for score in scores:
        pair = (score.get("model_abbr"), score.get("dataset_abbr"))
        if pair in counted or not score.get("n") or not score.get("model_name"):
            continue
        counted.add(pair)
        SAMPLES_SCORED.labels(model=score["model_name"]).inc(score["n"])
    for outcome in result.pairs:
        if not outcome.ok and names.get(outcome.model_abbr):
            MODEL_FAILED_TASKS.labels(model=names[outcome.model_abbr]).inc()


def worker_heartbeat(name: str, stop: threading.Event, interval_s: float) -> threading.Thread:
    """A worker process' liveness: its heartbeat time, set every `interval_s` until `stop`."""

    def beat() -> None:
        while True:
            WORKER_HEARTBEAT.labels(worker=name).set(time.time())
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=beat, daemon=True, name="aieval-metrics-heartbeat")
    thread.start()
    return thread


# ---- API request latency --------------------------------------------------------------------------------------
class RequestLatency:
    """ASGI middleware: every HTTP request's duration, labelled with the template of the route that answered it
    (`/api/v1/evaluations/{evaluation_id}`), `static` for the UI's files and pages, `unmatched` for any other
    path (404), so no id or typed path becomes a label. WebSockets (long-lived) are not timed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_recording(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            HTTP_REQUEST_DURATION.labels(method=_method(scope["method"]), route=route_label(scope, status),
                                         status=str(status)).observe(time.perf_counter() - started)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def route_label(scope, status: int) -> str:
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if not template:
        return "static" if status < 400 else "unmatched"  # the UI's files and pages (SinglePageApp), or nothing
    path, pattern = scope.get("path", ""), getattr(route, "path_regex", None)
    if pattern is not None and not pattern.match(path):
        # A route of a router included under a prefix (/api/v1) may carry its own path only: the prefix is the
        # fixed part of the path before what the route matched.
        for cut in range(1, len(path)):
            if path[cut] == "/" and pattern.match(path[cut:]):
                return path[:cut] + template
    return template


# ---- the scrape ------------------------------------------------------------------------------------------------
def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class DatabaseCollector:
    """What the database knows, read at scrape time: evaluations by state, queued jobs and the oldest one's wait
    per queue, and the heartbeat age of running jobs per worker process (a worker that died holding a job shows
    here as a growing age, on whichever machine it ran)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from .celery_app import QUEUES
        from .db import session_scope
        from .enums import EvaluationStatus
        from .models import Evaluation

        now = datetime.now(timezone.utc)
        up = GaugeMetricFamily("aieval_database_up", "1 when this scrape could read the database, else 0.")
        try:
            with session_scope(self.settings.database_url) as session:
                by_state = dict(session.execute(
                    select(Evaluation.status, func.count()).group_by(Evaluation.status)).all())
                queued = session.execute(
                    select(Evaluation.queue, func.count(),
                           func.min(func.coalesce(Evaluation.enqueued_at, Evaluation.created_at)))
                    .where(Evaluation.status == EvaluationStatus.queued.value).group_by(Evaluation.queue)).all()
                running = session.execute(select(Evaluation.worker, Evaluation.heartbeat_at).where(
                    Evaluation.status == EvaluationStatus.running.value)).all()
        except Exception as exc:  # the processes' metrics still answer; this says why the others are missing
            log.warning("metrics: the database could not be read (%s)", str(exc).splitlines()[0][:300])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        states = GaugeMetricFamily("aieval_evaluations", "Evaluations by state (from the database).",
                                   labels=["state"])
        for state in EvaluationStatus:
            states.add_metric([state.value], by_state.get(state.value, 0))
        yield states
        depth = GaugeMetricFamily("aieval_queue_depth", "Evaluations queued, by queue (from the database).",
                                  labels=["queue"])
        wait = GaugeMetricFamily("aieval_queue_oldest_wait_seconds",
                                 "How long the oldest queued evaluation has waited, by queue (0: none waits).",
                                 labels=["queue"])
        found = {queue: (count, _aware(oldest)) for queue, count, oldest in queued}
        for queue in sorted(set(QUEUES) | set(found)):
            count, oldest = found.get(queue, (0, None))
            depth.add_metric([queue], count)
            wait.add_metric([queue], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield depth
        yield wait
        ages: dict[str, float] = {}
        for token, beat in running:
            # the worker token is host:pid:attempt; the attempt part would make a new series for every job
            worker = ":".join((token or "unknown").split(":")[:2])
            age = (now - _aware(beat)).total_seconds() if beat else float("inf")
            ages[worker] = max(ages.get(worker, 0.0), age)
        heartbeat = GaugeMetricFamily(
            "aieval_running_job_heartbeat_age_seconds",
            "Seconds since the oldest heartbeat of the jobs a worker process runs (host:pid; from the database).",
            labels=["worker"])
        for worker, age in sorted(ages.items()):
            heartbeat.add_metric([worker], age)
        yield heartbeat


def serve_this_machine(settings: Settings, port: int, address: str = "127.0.0.1"):
    """For a worker on a machine without an API process: serve the metrics recorded on this machine (not the
    database's, which the API serves) at http://address:port/metrics, without authentication (a port for the
    monitoring network only; loopback by default). Returns the server (its `shutdown()` stops it)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(configure(settings)))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server


def exposition(settings: Settings) -> bytes:
    """The text a scrape gets: every process' recorded metrics on this machine and the database's."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(configure(settings)))
    registry.register(DatabaseCollector(settings))
    return generate_latest(registry)
