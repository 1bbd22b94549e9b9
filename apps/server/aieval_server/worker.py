"""The Celery worker: threads pool (runs happen in forked OpenCompass processes, not in Python threads),
one warm launcher per process, a sweeper that requeues jobs whose worker died (unless the process that started
the worker sweeps itself: `aieval serve`, where a dead worker must not take the sweeper with it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from celery import signals

from .celery_app import (
    broker_lost_messages,
    broker_redis,
    celery_app,
    ensure_broker_dirs,
    mark_broker,
)
from .config import get_settings
from .log_config import configure_logging

log = logging.getLogger(__name__)


def _sweeper(stop: threading.Event) -> None:
    from .db.outages import database_unavailable
    from .services.notifications import resume_overdue as resume_overdue_notifications
    from .services.recovery import prune_deleted_job_dirs, sweep
    from .services.submission import submit

    settings = get_settings()
    broker = broker_redis(settings)
    while not stop.wait(settings.sweep_interval_s):
        try:
            lost = broker_lost_messages(settings, broker)
        except Exception as exc:  # the broker is away: nothing can be sent now anyway
            log.debug("broker check failed: %s", exc)
            lost = False
        try:
            resent = sweep(settings, lambda evaluation_id, queue: submit(settings, evaluation_id, queue),
                           resend_all_queued=lost)
            if lost:
                # Marked only once the queued jobs are sent again: a failed sweep is retried on the next pass.
                mark_broker(settings, broker)
                if resent:
                    log.warning("the broker had lost its messages (restarted without persistence?): resent %d "
                                "queued evaluation(s)", len(resent))
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("sweep skipped, the database is unavailable: %s", str(exc).splitlines()[0])
            else:
                log.exception("sweep failed (will try again)")
        try:
            prune_deleted_job_dirs(settings)
        except Exception as exc:  # next pass
            log.debug("job dirs not pruned: %s", exc)
        try:  # notifications whose process ended between two attempts (services/notifications.py)
            resume_overdue_notifications(settings)
        except Exception as exc:  # next pass
            log.debug("overdue notifications not resumed: %s", exc)


def start_sweeper(stop: threading.Event) -> threading.Thread:
    """Sweep every `sweep_interval_s` until `stop` is set. Any number of sweepers may run at once (workers,
    `aieval serve`): each requeue is one conditional UPDATE, so only one of them acts on a job."""
    thread = threading.Thread(target=_sweeper, args=(stop,), daemon=True, name="aieval-sweeper")
    thread.start()
    return thread


def _schedule_ticker(stop: threading.Event) -> None:
    from .db.outages import database_unavailable
    from .services.schedules import tick

    settings = get_settings()
    while not stop.wait(settings.schedule_tick_s):
        try:
            tick(settings)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("schedules not looked at, the database is unavailable: %s", str(exc).splitlines()[0])
            else:
                log.exception("the schedules' tick failed (will try again)")


def start_schedule_ticker(stop: threading.Event) -> threading.Thread:
    """The schedules' tick every `schedule_tick_s` until `stop` is set: `aieval serve`'s stand-in for Celery beat
    (beat.py). Safe beside a beat or another ticker: each run is claimed once (services/schedules.claim)."""
    thread = threading.Thread(target=_schedule_ticker, args=(stop,), daemon=True, name="aieval-schedules")
    thread.start()
    return thread


_stop = threading.Event()
_sweep_here = True  # run() turns it off for a worker whose parent sweeps (`aieval serve`)


@signals.worker_ready.connect
def _on_ready(sender=None, **_kwargs) -> None:
    from . import metrics
    from .tasks.evaluation import launcher

    settings = get_settings()
    if _sweep_here:
        start_sweeper(_stop)
    # Liveness for Prometheus (metrics.py), by the worker's Celery name (`--name`, e.g. aieval-123@host).
    metrics.worker_heartbeat(getattr(sender, "hostname", None) or f"aieval-{os.getpid()}", _stop,
                             settings.heartbeat_interval_s)
    # Import OpenCompass once now, so the first job starts in about a second.
    threading.Thread(target=lambda: log.info("OpenCompass warm in %.1f s", launcher().warm_up()),
                     daemon=True, name="aieval-warmup").start()
    if settings.register_demo and settings.prepare_demo_model:
        from .services.bootstrap import prepare_demo_model_in_background

        prepare_demo_model_in_background(settings)


@signals.worker_shutdown.connect
def _on_shutdown(**_kwargs) -> None:
    _stop.set()


def parser() -> argparse.ArgumentParser:
    """The worker's options (start_celery_worker.py; debug_celery_worker.py adds its own to them)."""
    settings = get_settings()
    options = argparse.ArgumentParser(description="Run an ai-eval-system worker.")
    options.add_argument("--queues", default=",".join(settings.worker_queues), help="comma-separated: api,local")
    options.add_argument("--concurrency", type=int, default=settings.worker_concurrency)
    options.add_argument("--name", default=f"aieval-{os.getpid()}@%h")
    options.add_argument("--loglevel", default=settings.log_level)
    options.add_argument("--no-sweeper", dest="sweeper", action="store_false",
                         help="do not requeue jobs of dead workers here (another process does)")
    options.add_argument("--metrics-port", type=int, default=None,
                         help="serve this machine's Prometheus metrics on this port (for a machine without an API "
                              "process; the API's /metrics serves them otherwise)")
    options.add_argument("--metrics-address", default="127.0.0.1",
                         help="the address of --metrics-port (no authentication: a monitoring network only)")
    options.add_argument("--parent-pid", type=int, default=None,
                         help="stop at once, with its runs, when this process ends (`aieval serve` passes its own)")
    options.add_argument("--quiet", action="store_true",
                         help="a quiet console (`aieval serve`): no Celery banner, no libraries' INFO lines")
    return options


def _keep_logging_configuration(**_kwargs) -> None:
    """Celery's `setup_logging` signal: with a receiver, Celery configures no logging of its own."""


def run(args: argparse.Namespace, pool: str = "threads") -> None:
    """`pool="solo"` runs tasks in the main thread, one at a time (debug_celery_worker.py: breakpoints)."""
    global _sweep_here
    if getattr(args, "parent_pid", None):
        from aieval_engine.launchers import stop_with_parent

        # SIGKILL, not Celery's warm shutdown (which would finish the running evaluation first): with its parent
        # gone nobody supervises this worker. Its fork server sees its stdin close and stops the runs; the jobs
        # stay "running" without heartbeat and resume after the next start.
        stop_with_parent(args.parent_pid, lambda: os.kill(os.getpid(), signal.SIGKILL), death_signal=signal.SIGKILL)
    _sweep_here = getattr(args, "sweeper", True)
    settings = get_settings()
    settings.check_production_ready()
    quiet = getattr(args, "quiet", False)
    configure_logging(settings, quiet=quiet, level=args.loglevel)
    # Celery leaves the logging as configured here (and its stdout is not turned into WARNING lines).
    signals.setup_logging.connect(_keep_logging_configuration, weak=False)
    from .services.bootstrap import prepare_database

    prepare_database(settings)  # the data dir made private; the schema migrated if auto_migrate
    ensure_broker_dirs(settings)
    from . import metrics

    metrics.configure(settings)  # this process' metrics files (scraped through the API on this machine)
    if getattr(args, "metrics_port", None):
        metrics.serve_this_machine(settings, args.metrics_port, args.metrics_address)
    concurrency = 1 if pool == "solo" else args.concurrency
    celery_app.worker_main([
        *(["--quiet"] if quiet else []), "worker", f"--pool={pool}", f"--concurrency={concurrency}", f"--queues={args.queues}",
        f"--hostname={args.name}", f"--loglevel={args.loglevel}", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ])


def main(argv: list[str] | None = None) -> None:
    run(parser().parse_args(argv))


if __name__ == "__main__":
    main()
