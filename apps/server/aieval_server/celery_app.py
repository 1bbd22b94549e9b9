"""The Celery application shared by the API (which only sends "run evaluation N", through
services/submission.submit) and the workers."""

from __future__ import annotations

from celery import Celery

from .config import Settings, get_settings

RUN_EVALUATION = "aieval.run_evaluation"
RUN_EVALUATION_PART = "aieval.run_evaluation_part"  # one part of a fanned-out job (services/fanout.py)
TICK_SCHEDULES = "aieval.tick_schedules"  # submit the due schedules' runs (services/schedules.py)
QUEUES = ("api", "local")


def create_celery(settings: Settings) -> Celery:
    app = Celery("aieval", broker=settings.celery_broker_url,
                 include=["aieval_server.tasks.evaluation", "aieval_server.tasks.schedules"])
    transport_options: dict = {}
    if settings.celery_broker_url.startswith("filesystem://"):
        app.conf.broker_transport = "aieval_server.directory_broker:Transport"
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
        if settings.celery_broker_url.startswith("redis://"):
            # Acknowledgements that survive a Redis restart (redis_transport.py). rediss:// keeps kombu's own
            # transport, whose TLS set-up is chosen by the URL's scheme.
            app.conf.broker_transport = "aieval_server.redis_transport:Transport"
        # Redelivery of unacknowledged messages is our sweeper's job (heartbeats), not Redis' hour-long timeout.
        transport_options = {"visibility_timeout": 24 * 3600}
        if settings.key_prefix:
            transport_options["global_keyprefix"] = settings.key_prefix
    events_on_broker = not settings.celery_broker_url.startswith("filesystem://")
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
        # A broker that goes away (restart, network) must not stop running evaluations: the database holds
        # their state and heartbeats, and they finish on their own (Celery 6 would cancel them by default).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # Task events (received, started, succeeded...; `task-sent` from the API) are what Flower's task pages show.
        # Redis and RabbitMQ drop them while no monitor listens. Not on the directory broker, which writes each event
        # as a file for every queue a monitor ever bound, and keeps the binding after the monitor exits.
        worker_send_task_events=events_on_broker,
        task_send_sent_event=events_on_broker,
        worker_enable_remote_control=False,
        # Celery beat (`celery -A aieval_server.celery_app:celery_app beat`): one entry that looks at the schedules in
        # the database, so schedules edited in the UI apply without a restart. beat.py's scheduler runs this entry in
        # the beat process itself instead of queueing it behind the workers' long evaluations; any number of beats
        # may run (each run is claimed once, services/schedules.claim).
        beat_scheduler="aieval_server.beat:DatabaseTickScheduler",
        beat_schedule={"aieval-schedules": {"task": TICK_SCHEDULES, "schedule": settings.schedule_tick_s,
                                            "options": {"expires": settings.schedule_tick_s}}},
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


# ---- a Redis broker that lost its messages -----------------------------------------------------------
def broker_redis(settings: Settings):
    if not settings.celery_broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(settings.celery_broker_url, socket_timeout=2, socket_connect_timeout=2)


def broker_marker_key(settings: Settings) -> str:
    return f"{settings.key_prefix}aieval:broker-marker"


def broker_lost_messages(settings: Settings, client=None) -> bool:
    """Whether the broker may have lost messages since it was last marked: a Redis restarted without
    persistence (or flushed) comes back without the marker key, and without the queued messages. RabbitMQ
    (durable queues, persistent messages) and the directory broker keep theirs: always False for them."""
    client = client or broker_redis(settings)
    return client is not None and not client.exists(broker_marker_key(settings))


def mark_broker(settings: Settings, client=None) -> None:
    client = client or broker_redis(settings)
    if client is not None:
        client.set(broker_marker_key(settings), "1")
