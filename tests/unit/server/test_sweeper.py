"""The sweeper on a real (SQLite) database: jobs whose worker stopped beating are requeued, queued jobs the
broker may have lost are resent, and a cancel nobody can carry out any more is recorded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select


def _evaluation(session, **values):
    from aieval_server.models import Evaluation

    evaluation = Evaluation(name="e", params={}, queue=values.pop("queue", "local"), **values)
    session.add(evaluation)
    session.flush()
    return evaluation.id


def test_sweep_requeues_dead_workers_jobs_and_resends_forgotten_ones(client, settings):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.recovery import claim, sweep

    now = datetime.now(timezone.utc)
    long_ago = now - timedelta(seconds=settings.stale_after_s + 60)
    with session_scope(settings.database_url) as session:
        dead = _evaluation(session, status="running", heartbeat_at=long_ago, worker="host:1:a")
        alive = _evaluation(session, status="running", heartbeat_at=now, worker="host:2:b")
        forgotten = _evaluation(session, status="queued", enqueued_at=now - timedelta(seconds=settings.resend_queued_after_s + 1),
                                queue="api")
        fresh = _evaluation(session, status="queued", enqueued_at=now)
        abandoned_cancel = _evaluation(session, status="running", heartbeat_at=long_ago, cancel_requested=True)
    sent = []
    requeued = sweep(settings, lambda evaluation_id, queue: sent.append((evaluation_id, queue)))
    assert sorted(requeued) == sorted([dead, forgotten])
    assert sorted(sent) == sorted([(dead, "local"), (forgotten, "api")])
    with session_scope(settings.database_url) as session:
        status = dict(session.execute(select(Evaluation.id, Evaluation.status)).all())
    assert status == {dead: "queued", alive: "running", forgotten: "queued", fresh: "queued",
                      abandoned_cancel: "cancelled"}
    assert sweep(settings, lambda *a: sent.append(a)) == []  # nothing twice

    # A duplicate message is harmless: only one claim of the requeued job succeeds.
    first, previous = claim(settings, dead, "host:3:c")
    second, _ = claim(settings, dead, "host:4:d")
    assert (first, second) == (True, False) and previous["worker"] == "host:1:a"
    assert claim(settings, alive, "host:5:e")[0] is False  # a beating job is not taken over


def test_a_job_whose_api_died_before_sending_it_is_sent_after_the_grace(client, settings, queued_messages):
    """The row commits first and the message follows; an API killed in between leaves enqueued_at NULL."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.recovery import sweep
    from aieval_server.services.submission import submit

    now = datetime.now(timezone.utc)
    with session_scope(settings.database_url) as session:
        orphan = _evaluation(session, status="queued", enqueued_at=None,
                             created_at=now - timedelta(seconds=settings.unsent_grace_s + 1))
        being_sent = _evaluation(session, status="queued", enqueued_at=None, created_at=now)
    sent = []
    assert sweep(settings, lambda evaluation_id, queue: sent.append(evaluation_id)) == [orphan]
    assert sent == [orphan]

    assert submit(settings, being_sent, "local") is True  # what the API does right after the commit
    assert len(queued_messages()) == 1
    with session_scope(settings.database_url) as session:
        assert session.get(Evaluation, being_sent).enqueued_at is not None
    assert sweep(settings, lambda *a: sent.append(a)) == []


def test_workers_drop_job_dirs_of_deleted_evaluations(client, settings):
    from aieval_server.db import session_scope
    from aieval_server.services.recovery import prune_deleted_job_dirs

    with session_scope(settings.database_url) as session:
        kept = _evaluation(session, status="succeeded")
    for name in (str(kept), str(kept + 1), "not-a-job"):
        (settings.jobs_dir / name).mkdir(parents=True)
    assert prune_deleted_job_dirs(settings) == [kept + 1]
    assert sorted(p.name for p in settings.jobs_dir.iterdir()) == sorted([str(kept), "not-a-job"])
