"""Fair queueing on a real (SQLite) database: which queued job a worker's message takes (services/scheduling.py,
services/recovery.claim_fairest). PostgreSQL, concurrent claims and a real worker: tests/integration/server/
test_fair_queue.py."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
_clock = itertools.count()


@pytest.fixture
def db(client, settings):
    """The app's schema on SQLite (the client fixture creates it)."""
    return settings


def _user(settings, name: str) -> int:
    from aieval_server.db import session_scope
    from aieval_server.models import User

    with session_scope(settings.database_url) as session:
        user = User(username=name, display_name=name, password_hash="", role="member")
        session.add(user)
        session.flush()
        return user.id


def _jobs(settings, owner_id: int | None, count: int, **values) -> list[int]:
    """`count` jobs of one owner, each created after every job made before it."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    values.setdefault("status", "queued")
    values.setdefault("queue", "local")
    with session_scope(settings.database_url) as session:
        jobs = [Evaluation(name="e", params={}, owner_id=owner_id, created_at=T0 + timedelta(seconds=next(_clock)),
                           **values) for _ in range(count)]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def _take(settings, queue: str = "local") -> int | None:
    """One worker slot takes the fairest job, as a message of `queue` would."""
    from aieval_server.db import session_scope
    from aieval_server.services import scheduling

    with session_scope(settings.database_url) as session:
        before = scheduling.claim_fairest(session, queue, {"status": "running", "worker": "test",
                                                            "started_at": T0 + timedelta(seconds=next(_clock))})
        return before.id if before is not None else None


def _finish(settings, evaluation_id: int) -> None:
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(status="succeeded"))


def _status(settings, evaluation_id: int) -> str:
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation

    with session_scope(settings.database_url) as session:
        return session.scalar(select(Evaluation.status).where(Evaluation.id == evaluation_id))


def test_another_users_job_goes_before_the_twenty_queued_by_the_first(db):
    alice, bob = _user(db, "alice"), _user(db, "bob")
    alice_jobs = _jobs(db, alice, 21)
    assert _take(db) == alice_jobs[0]  # the one slot runs Alice's first job
    (bob_job,) = _jobs(db, bob, 1)  # submitted after all of Alice's
    assert _take(db) == bob_job  # a second slot (or the first, once free) takes Bob's next
    # Then the slots alternate by who has fewer running: Alice's remaining jobs in submission order.
    _finish(db, alice_jobs[0])
    _finish(db, bob_job)
    assert [_take(db) for _ in range(20)] == alice_jobs[1:]
    assert _take(db) is None


def test_one_slot_serves_users_in_turn(db):
    """With one slot nobody has a job running when the next is picked: the user who started least recently goes."""
    alice, bob, carol = _user(db, "alice"), _user(db, "bob"), _user(db, "carol")
    alice_jobs = _jobs(db, alice, 3)
    bob_jobs = _jobs(db, bob, 2)
    carol_jobs = _jobs(db, carol, 1)
    order = []
    while (taken := _take(db)) is not None:
        order.append(taken)
        _finish(db, taken)
    assert order == [alice_jobs[0], bob_jobs[0], carol_jobs[0], alice_jobs[1], bob_jobs[1], alice_jobs[2]]


def test_administrators_jobs_first_then_fair_order(db):
    alice, admin = _user(db, "alice"), _user(db, "root")
    alice_jobs = _jobs(db, alice, 2)
    admin_jobs = _jobs(db, admin, 2, priority=1)
    assert [_take(db) for _ in range(4)] == [*admin_jobs, *alice_jobs]


def test_jobs_without_owner_are_one_more_owner(db):
    alice = _user(db, "alice")
    unowned = _jobs(db, None, 2)
    alice_jobs = _jobs(db, alice, 1)
    assert _take(db) == unowned[0]
    assert _take(db) == alice_jobs[0]  # the unowned jobs have one running: Alice's turn
    assert _take(db) == unowned[1]


def test_only_queued_jobs_of_the_messages_queue_are_taken(db):
    alice = _user(db, "alice")
    (cancelled,) = _jobs(db, alice, 1, cancel_requested=True)
    (finished,) = _jobs(db, alice, 1, status="failed")
    (on_api,) = _jobs(db, alice, 1, queue="api")
    assert _take(db, "local") is None
    assert _take(db, "api") == on_api
    assert (_status(db, cancelled), _status(db, finished)) == ("queued", "failed")


def test_a_message_takes_the_fairest_job_and_messages_balance_jobs(db):
    """recovery.claim_fairest: what the Celery task does with "run evaluation N"."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.recovery import claim_fairest

    alice, bob = _user(db, "alice"), _user(db, "bob")
    alice_jobs = _jobs(db, alice, 3)
    assert claim_fairest(db, alice_jobs[0], "w:1:a")[0] == alice_jobs[0]
    (bob_job,) = _jobs(db, bob, 1)
    # The message sent for Alice's second job runs Bob's: his turn, and his own message will run hers.
    taken, previous = claim_fairest(db, alice_jobs[1], "w:1:b")
    assert taken == bob_job and previous == {"worker": None, "run_pgid": None, "attempts": 0}
    with session_scope(db.database_url) as session:
        job = session.get(Evaluation, bob_job)
        assert (job.status, job.worker, job.attempts) == ("running", "w:1:b", 1)
    assert claim_fairest(db, bob_job, "w:1:c")[0] == alice_jobs[1]
    assert claim_fairest(db, alice_jobs[2], "w:1:d")[0] == alice_jobs[2]
    # Four messages, four jobs; a duplicate message (sweeper resend, redelivery) runs nothing.
    assert claim_fairest(db, alice_jobs[2], "w:1:e") == (None, {"worker": "w:1:d", "run_pgid": None, "attempts": 1})
    assert claim_fairest(db, 10_000, "w:1:f")[0] is None  # a message for a deleted job


def test_a_requeued_job_tells_its_next_attempt_about_the_dead_one(db):
    """The sweeper requeues a dead worker's job with its old worker and process group: the new attempt must
    learn them (to stop the orphaned run on the same host), also when it was taken by another job's message."""
    from aieval_server.services.recovery import claim_fairest

    alice = _user(db, "alice")
    (requeued,) = _jobs(db, alice, 1, worker="host:7:dead", run_pgid=4242, attempts=1)
    (newer,) = _jobs(db, alice, 1)
    taken, previous = claim_fairest(db, newer, "host:8:new")
    assert taken == requeued and previous == {"worker": "host:7:dead", "run_pgid": 4242, "attempts": 1}


def test_a_redelivered_message_still_takes_over_its_dead_workers_job(db):
    from aieval_server.services.recovery import claim_fairest

    long_ago = datetime.now(timezone.utc) - timedelta(seconds=db.stale_after_s + 60)
    (dead,) = _jobs(db, None, 1, status="running", heartbeat_at=long_ago, worker="host:1:a")
    (beating,) = _jobs(db, None, 1, status="running", heartbeat_at=datetime.now(timezone.utc), worker="host:2:b")
    assert claim_fairest(db, dead, "host:3:c")[0] == dead
    assert claim_fairest(db, beating, "host:3:d")[0] is None


def test_a_job_never_sent_taken_with_another_jobs_message_leaves_that_job_to_the_sweeper(db):
    """Bob submitted while the broker was down (no message yet); Alice's message takes Bob's job (his turn): Alice's
    job is then without a message, and must not wait resend_queued_after_s (10 min) for one."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.recovery import claim_fairest, sweep

    alice, bob = _user(db, "alice"), _user(db, "bob")
    _jobs(db, alice, 1, status="running", started_at=T0)  # Alice runs something: Bob's turn next
    (alice_job,) = _jobs(db, alice, 1, enqueued_at=T0)
    (bob_job,) = _jobs(db, bob, 1)  # enqueued_at NULL: never sent
    assert claim_fairest(db, alice_job, "w:1:a")[0] == bob_job
    with session_scope(db.database_url) as session:
        assert session.get(Evaluation, alice_job).enqueued_at is None
    sent = []
    sweep(db, lambda evaluation_id, queue: sent.append(evaluation_id))
    assert sent == [alice_job]
