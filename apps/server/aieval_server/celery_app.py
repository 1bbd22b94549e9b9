"""The Celery application shared by the API (which only sends "run evaluation N") and the workers."""

from __future__ import annotations

import logging

from celery import Celery

from .config import Settings, get_settings

RUN_EVALUATION = "aieval.run_evaluation"
QUEUES = ("api", "local")
log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    app = Celery("aieval", broker=settings.celery_broker_url, include=["aieval_server.tasks.evaluation"])
    transport_options: dict = {}
    if settings.celery_broker_url.startswith("filesystem://"):
        # A directory queue: no server to install or start. Every process on this machine shares it.
        folder = settings.broker_dir
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    elif settings.celery_broker_url.startswith(("redis://", "rediss://")):
        # Redelivery of unacknowledged messages is our sweeper's job (heartbeats), not Redis' hour-long timeout.
        transport_options = {"visibility_timeout": 24 * 3600}
        if settings.key_prefix:
            transport_options["global_keyprefix"] = settings.key_prefix
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="local",
        task_routes={RUN_EVALUATION: {"queue": "local"}},
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    return app


# The worker's app (tasks register on it); the API sends through celery_for(settings) of its own settings.
celery_app = create_celery(get_settings())
_senders: dict[str, Celery] = {}


def ensure_broker_dirs(settings: Settings) -> None:
    if settings.celery_broker_url.startswith("filesystem://"):
        for sub in ("queue", "processed", "control"):
            (settings.broker_dir / sub).mkdir(parents=True, exist_ok=True)


def celery_for(settings: Settings) -> Celery:
    ensure_broker_dirs(settings)
    key = f"{settings.celery_broker_url}|{settings.broker_dir}|{settings.key_prefix}"
    if key not in _senders:
        _senders[key] = create_celery(settings)
    return _senders[key]


def enqueue(settings: Settings, evaluation_id: int, queue: str) -> bool:
    """Send "run evaluation N". A failure is not fatal: the job stays queued in the DB and the sweeper resends it."""
    try:
        celery_for(settings).send_task(RUN_EVALUATION, args=[evaluation_id], queue=queue)
        return True
    except Exception as exc:
        log.error("cannot send evaluation %s to the broker (it stays queued and will be resent): %s", evaluation_id, exc)
        return False
