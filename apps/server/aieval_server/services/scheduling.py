"""Fair queueing across users (issue 9): which queued evaluation a free worker slot runs next.

The broker still carries one message per queued job, so there are as many runs as jobs and Celery keeps its
redelivery, routing (queues "api"/"local") and worker pools. But a message no longer decides WHICH job runs: it
is a ticket for one run on its queue. The worker that takes it claims, in one transaction, the fairest queued job
of that queue:

1. higher `priority` first (administrators' jobs get 1);
2. then the owner with the fewest jobs running on this queue now: one user's 20 queued jobs cannot hold every
   slot while another user waits;
3. then the owner whose latest start on this queue is the oldest (a user who never ran anything comes first), so
   users with nothing running take turns;
4. then the oldest job (created_at, id): each user's own jobs run in the order they were submitted.

Jobs without an owner (made with sign-in off) are one owner among the others.

The claim is a compare-and-set (`status = 'queued'` in the UPDATE's WHERE), so two workers that pick the same job
cannot both run it: the loser picks again. On PostgreSQL the pick also locks the row with SKIP LOCKED, so
concurrent claims take different jobs at once instead of retrying. Tickets and jobs stay balanced: a claim takes one
ticket and one job; a job cancelled or deleted while queued leaves a ticket that finds nothing (or another job). A
job whose own ticket was never sent (submitted while the broker was down) can be claimed with another job's
ticket: that other job is then marked unsent, and the next sweep sends its ticket (services/recovery.claim_fairest)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, Select, case, func, literal_column, or_, select, update
from sqlalchemy.orm import Session, aliased

from ..enums import EvaluationStatus
from ..models import Evaluation

# The owner of jobs without one, in the fairness order (user ids start at 1). Written into the SQL, not bound: the
# GROUP BY must be the very expression of the SELECT for PostgreSQL, and two bound parameters are two expressions.
NO_OWNER = literal_column("0")
# A claim that lost every race this many times gives the ticket up (other workers are taking jobs, so none waits).
MAX_PICKS = 20

QUEUED = EvaluationStatus.queued.value
RUNNING = EvaluationStatus.running.value


def fair_order(queue: str) -> Select:
    """Ids of the queued jobs of `queue`, fairest first (the module docstring says in which order)."""
    others = aliased(Evaluation)
    waiting_owners = select(Evaluation.owner_id).where(Evaluation.status == QUEUED, Evaluation.queue == queue)
    # Per owner with queued jobs: jobs running on this queue now, and the latest start on it.
    load = (
        select(func.coalesce(others.owner_id, NO_OWNER).label("owner"),
               func.sum(case((others.status == RUNNING, 1), else_=0)).label("running"),
               func.max(others.started_at).label("last_started"))
        .where(others.queue == queue, or_(others.owner_id.in_(waiting_owners), others.owner_id.is_(None)))
        .group_by(func.coalesce(others.owner_id, NO_OWNER))
        .subquery("owner_load")
    )
    return (
        select(Evaluation.id)
        .outerjoin(load, load.c.owner == func.coalesce(Evaluation.owner_id, NO_OWNER))
        .where(Evaluation.status == QUEUED, Evaluation.queue == queue, Evaluation.cancel_requested.is_(False))
        .order_by(Evaluation.priority.desc(), func.coalesce(load.c.running, 0).asc(),
                  load.c.last_started.asc().nulls_first(), Evaluation.created_at.asc(), Evaluation.id.asc())
    )


def claim_fairest(session: Session, queue: str, claimed_values: dict[str, Any]) -> Row | None:
    """Mark the fairest queued job of `queue` as taken (`claimed_values`: status "running", the worker's token...)
    and return it as it was before (id, worker, run_pgid, attempts: what the new attempt needs to know about the
    previous one); None when nothing is queued there. The caller commits."""
    locking = session.get_bind().dialect.name == "postgresql"
    for _ in range(MAX_PICKS):
        pick = (fair_order(queue).add_columns(Evaluation.worker, Evaluation.run_pgid, Evaluation.attempts,
                                              Evaluation.enqueued_at).limit(1))
        if locking:
            pick = pick.with_for_update(of=Evaluation, skip_locked=True)
        before = session.execute(pick).first()
        if before is None:
            return None
        taken = session.execute(
            update(Evaluation)
            .where(Evaluation.id == before.id, Evaluation.status == QUEUED, Evaluation.cancel_requested.is_(False))
            .values(**claimed_values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken == 1:
            return before
    return None
