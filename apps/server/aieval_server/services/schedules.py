"""Schedules: a saved evaluation request run on a cron expression, each run an ordinary evaluation of the schedule's
owner, submitted through the one submission.submit (issue 12, continuous evaluation).

Who fires them: `tick`, every `schedule_tick_s`. Celery beat runs it (celery_app's beat entry; `beat.py` runs the tick
in the beat process itself, so a schedule never waits behind workers busy with long evaluations), and `aieval serve`
runs it in a thread of its own (the embedded default has no beat). The schedules are read from the database on every
tick: a schedule made, edited or disabled in the UI counts from the next tick, without a restart.

Exactly once: a tick claims a due schedule by moving its `next_run_at` on with one conditional UPDATE (compare-and-set
on the value it read), in the same transaction that writes the run; a second tick or beat that read the same value
updates nothing and skips it. A schedule whose time passed while nothing ticked (the server was down) runs once, then
at its next time after now: missed occurrences are not caught up one by one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..enums import AuditAction, AuditTarget, EvaluationStatus, UserRole
from ..models import Dataset, Evaluation, Model, Schedule, User
from ..schemas.api import EvaluationCreate
from ..schemas.schedules import CronPreview, ScheduleCreate, ScheduleRead, ScheduleUpdate
from ..storage import Storage, get_storage
from . import access, audit
from . import evaluations as evaluation_service
from .accounts import SYSTEM_CALLER, Caller
from .errors import Conflict, Invalid, ServiceError
from .evaluations import utcnow

log = logging.getLogger(__name__)
NEXT_RUNS_SHOWN = 5
# Named cron shortcuts croniter understands (a sixth, seconds field is refused: the tick runs every ~30 s).
CRON_SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_HELP = ("five fields: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\": 02:00 every day, "
             "\"*/30 * * * 1-5\": every 30 minutes on weekdays), or one of " + ", ".join(CRON_SHORTCUTS))
DUE_PER_TICK = 100  # the rest are due on the next tick


# ---- cron expressions -------------------------------------------------------------------------------------------
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {name!r}", ["timezone: an IANA name such as UTC, Europe/Berlin or "
                                                      "Asia/Shanghai"]) from None


def check_cron(expression: str) -> str:
    """The expression, whitespace normalized, if it is one the schedules accept; Invalid (saying what is) otherwise."""
    cron = " ".join(expression.split())
    fields = cron.split(" ")
    shortcut = len(fields) == 1 and cron.lower() in CRON_SHORTCUTS
    if not shortcut and len(fields) != 5 or not croniter.is_valid(cron):
        raise Invalid(f"{expression!r} is not a cron expression the schedules accept", [f"cron: {CRON_HELP}"])
    return cron.lower() if shortcut else cron


def next_runs(cron: str, timezone: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next `count` times (UTC) strictly after `after`, the expression read in `timezone`, daylight saving
    included (croniter): a time the clocks skip runs at the end of the jump (02:30 on the spring-forward day: 03:00)."""
    times = croniter(cron, after.astimezone(zone(timezone)))
    return [times.get_next(datetime).astimezone(ZoneInfo("UTC")) for _ in range(count)]


def preview(cron: str, timezone: str, now: datetime | None = None) -> CronPreview:
    cron = check_cron(cron)
    return CronPreview(cron=cron, timezone=timezone,
                       next_runs=next_runs(cron, timezone, now or utcnow(), NEXT_RUNS_SHOWN))


# ---- reading ----------------------------------------------------------------------------------------------------
def _find(session: Session, schedule_id: int) -> Schedule | None:
    return session.get(Schedule, schedule_id)


def readable(session: Session, schedule_id: int, caller: Caller) -> Schedule:
    return access.readable(caller, _find(session, schedule_id), "schedule", schedule_id)


def changeable(session: Session, schedule_id: int, caller: Caller) -> Schedule:
    return access.changeable(caller, _find(session, schedule_id), "schedule", schedule_id)


def read_models(session: Session, schedules: list[Schedule], caller: Caller) -> list[ScheduleRead]:
    """What the API shows of each schedule, with its last run's status and gate (one query for all of them)."""
    last_ids = [s.last_evaluation_id for s in schedules if s.last_evaluation_id is not None]
    last = {row.id: row for row in session.execute(
        select(Evaluation.id, Evaluation.status, Evaluation.gate_status).where(Evaluation.id.in_(last_ids)))} \
        if last_ids else {}
    now = utcnow()
    items = []
    for schedule in schedules:
        run = last.get(schedule.last_evaluation_id)
        items.append(ScheduleRead(
            **access.owned_fields(caller, schedule), id=schedule.id, name=schedule.name, request=schedule.request,
            cron=schedule.cron, timezone=schedule.timezone, enabled=schedule.enabled,
            next_run_at=schedule.next_run_at,
            next_runs=next_runs(schedule.cron, schedule.timezone, now, NEXT_RUNS_SHOWN) if schedule.enabled else [],
            last_run_at=schedule.last_run_at, last_evaluation_id=schedule.last_evaluation_id,
            last_evaluation_status=run.status if run else None, last_gate_status=run.gate_status if run else None,
            baseline_evaluation_id=schedule.baseline_evaluation_id, last_error=schedule.last_error,
            gate_rules=schedule.gate_rules or [], created_at=schedule.created_at, updated_at=schedule.updated_at))
    return items


def show(session: Session, schedule_id: int, caller: Caller) -> ScheduleRead:
    return read_models(session, [readable(session, schedule_id, caller)], caller)[0]


def list_schedules(session: Session, caller: Caller, scope: access.ListScope = "all") -> list[ScheduleRead]:
    rows = list(session.scalars(select(Schedule).where(access.readable_clause(caller, Schedule, scope))
                                .order_by(Schedule.name, Schedule.id)))
    return read_models(session, rows, caller)


# ---- changing ---------------------------------------------------------------------------------------------------
def _check_request(session: Session, request: EvaluationCreate, caller: Caller) -> None:
    """What can be checked of a run's request now: the models, datasets and judge exist and the caller may use them
    (the rest, quotas and data on the server, is checked by each run, whose refusal the schedule shows)."""
    if request.schedule_id is not None:
        raise Invalid("a schedule's request cannot name a schedule_id: its runs belong to the schedule itself")
    evaluation_service._load_all(session, caller, Model, request.model_ids, "model")
    evaluation_service._load_all(session, caller, Dataset, request.dataset_ids, "dataset")
    if request.judge_model_id is not None:
        evaluation_service._load_all(session, caller, Model, [request.judge_model_id], "model")
    if not request.dataset_ids and not request.builtin_datasets:
        raise Invalid("choose at least one dataset (dataset_ids or builtin_datasets)")


def _rules(body_rules) -> list[dict]:
    return [rule.model_dump(mode="json") for rule in body_rules]


def create(session: Session, settings: Settings, body: ScheduleCreate, caller: Caller) -> Schedule:
    access.require_member(caller)
    cron = check_cron(body.cron)
    zone(body.timezone)
    _check_request(session, body.request, caller)
    schedule = Schedule(
        name=body.name, request=body.request.model_dump(mode="json"), cron=cron, timezone=body.timezone,
        enabled=body.enabled, gate_rules=_rules(body.gate_rules),
        next_run_at=next_runs(cron, body.timezone, utcnow())[0] if body.enabled else None,
        **access.ownership(caller, body.visibility, settings.default_visibility))
    session.add(schedule)
    session.flush()
    audit.record(session, caller, AuditAction.created, AuditTarget.schedule, schedule.id, schedule.name,
                 {"cron": cron, "timezone": body.timezone})
    return schedule


def edit(session: Session, schedule_id: int, body: ScheduleUpdate, caller: Caller) -> Schedule:
    schedule = changeable(session, schedule_id, caller)
    if body.name is not None:
        schedule.name = body.name
    if body.request is not None:
        _check_request(session, body.request, caller)
        schedule.request = body.request.model_dump(mode="json")
    if body.cron is not None:
        schedule.cron = check_cron(body.cron)
    if body.timezone is not None:
        zone(body.timezone)
        schedule.timezone = body.timezone
    if body.enabled is not None:
        schedule.enabled = body.enabled
    if body.gate_rules is not None:
        schedule.gate_rules = _rules(body.gate_rules)
    if body.visibility is not None:
        schedule.visibility = body.visibility.value
    if {"cron", "timezone", "enabled"} & body.model_fields_set:  # the next time as the new settings say
        schedule.next_run_at = next_runs(schedule.cron, schedule.timezone, utcnow())[0] if schedule.enabled else None
    session.flush()
    audit.record(session, caller, AuditAction.updated, AuditTarget.schedule, schedule.id, schedule.name,
                 {"fields": sorted(body.model_fields_set)})
    return schedule


def delete(session: Session, schedule_id: int, caller: Caller) -> None:
    """Its runs stay, as ordinary evaluations (their gate results too)."""
    schedule = changeable(session, schedule_id, caller)
    audit.record(session, caller, AuditAction.deleted, AuditTarget.schedule, schedule.id, schedule.name)
    session.execute(update(Evaluation).where(Evaluation.schedule_id == schedule_id).values(schedule_id=None)
                    .execution_options(synchronize_session=False))
    session.delete(schedule)
    session.flush()


def set_baseline(session: Session, schedule_id: int, evaluation_id: int | None, caller: Caller) -> Schedule:
    """What each run's no_significant_drop rule compares with: a succeeded evaluation the caller may read."""
    schedule = changeable(session, schedule_id, caller)
    if evaluation_id is not None:
        baseline = evaluation_service.readable(session, evaluation_id, caller)
        if baseline.status != EvaluationStatus.succeeded:
            raise Conflict(f"evaluation {evaluation_id} is {baseline.status}: only a succeeded evaluation can be a "
                           "baseline")
    schedule.baseline_evaluation_id = evaluation_id
    session.flush()
    audit.record(session, caller, AuditAction.updated, AuditTarget.schedule, schedule.id, schedule.name,
                 {"baseline_evaluation_id": evaluation_id})
    return schedule


# ---- runs -------------------------------------------------------------------------------------------------------
def owner_caller(session: Session, schedule: Schedule) -> Caller:
    """Who a run is submitted as: the schedule's owner, with the owner's role today (the installation for a schedule
    made with sign-in off)."""
    if schedule.owner_id is None:
        return SYSTEM_CALLER
    owner = session.get(User, schedule.owner_id)
    if owner is None or owner.disabled:
        raise Invalid(f"the owner of schedule {schedule.id} is disabled or deleted: its runs are not submitted")
    return Caller(user_id=owner.id, username=owner.username, display_name=owner.display_name,
                  role=UserRole(owner.role))


def _run_name(schedule: Schedule, at: datetime) -> str:
    local = at.astimezone(zone(schedule.timezone)).strftime("%Y-%m-%d %H:%M")
    return f"{schedule.name[: 200 - len(local) - 1]} {local}"


def new_run(session: Session, settings: Settings, storage: Storage, schedule: Schedule, at: datetime) -> Evaluation:
    """Write one run of the schedule (every check of a new submission, as its owner); the caller submits it."""
    try:
        request = EvaluationCreate.model_validate(schedule.request)
    except ValidationError as exc:
        raise Invalid("the schedule's saved request is no longer accepted; edit the schedule",
                      [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
    body = request.model_copy(update={"name": _run_name(schedule, at), "schedule_id": schedule.id})
    evaluation = evaluation_service.create(session, settings, storage, body, owner_caller(session, schedule))
    schedule.last_evaluation_id = evaluation.id
    schedule.last_run_at = at
    schedule.last_error = None
    session.flush()
    return evaluation


def run_now(session: Session, settings: Settings, storage: Storage, schedule_id: int, caller: Caller) -> Evaluation:
    """One run at once, outside the cron (its next time stays). Refusals answer the request."""
    schedule = changeable(session, schedule_id, caller)
    return new_run(session, settings, storage, schedule, utcnow())


def _error_text(exc: ServiceError) -> str:
    return "; ".join([exc.message, *exc.problems])[:2000]


def claim(session: Session, schedule_id: int, due_at: datetime, now: datetime) -> Schedule | None:
    """Take the occurrence `due_at` of a schedule: move next_run_at on, only if it still is `due_at` (and the
    schedule enabled). None when another tick took it (or it was edited or disabled meanwhile)."""
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        return None
    following = next_runs(schedule.cron, schedule.timezone, max(now, due_at))[0]
    taken = session.execute(
        update(Schedule).where(Schedule.id == schedule_id, Schedule.enabled.is_(True),
                               Schedule.next_run_at == due_at)
        .values(next_run_at=following).execution_options(synchronize_session=False)).rowcount
    if not taken:
        return None
    session.refresh(schedule)
    return schedule


def tick(settings: Settings, *, now: datetime | None = None, storage: Storage | None = None) -> list[int]:
    """Submit a run of every due schedule, each claimed and written in a transaction of its own. Returns the ids of
    the evaluations submitted. A run the server refuses (quota, a deleted model) is recorded as the schedule's
    last_error and the schedule waits for its next time."""
    from .submission import submit  # submission imports the Celery app; imported when a tick runs

    now = now or utcnow()
    storage = storage or get_storage(settings)
    with session_scope(settings.database_url) as session:
        due = session.execute(select(Schedule.id, Schedule.next_run_at)
                              .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                              .order_by(Schedule.next_run_at).limit(DUE_PER_TICK)).all()
    submitted = []
    for schedule_id, due_at in due:
        with session_scope(settings.database_url) as session:
            schedule = claim(session, schedule_id, due_at, now)
            if schedule is None:
                continue
            try:
                with session.begin_nested():  # a refused run keeps the claim: this occurrence is over
                    evaluation = new_run(session, settings, storage, schedule, now)
            except ServiceError as exc:
                schedule.last_run_at, schedule.last_error = now, _error_text(exc)
                log.warning("schedule %s (%s): its run was refused: %s", schedule.id, schedule.name, schedule.last_error)
                continue
            submit(settings, evaluation.id, evaluation.queue, session=session)
            submitted.append(evaluation.id)
            log.info("schedule %s (%s): submitted evaluation %s", schedule.id, schedule.name, evaluation.id)
    return submitted
