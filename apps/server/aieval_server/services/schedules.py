"""Schedules: a saved evaluation request run on a cron expression, or when an endpoint among its models serves a new
version of its model (the new_model_version trigger), each run an ordinary evaluation of the schedule's owner, submitted
through the one submission.submit (issue 12, continuous evaluation).

Who fires them: `tick`, every `schedule_tick_s`. Celery beat runs it (celery_app's beat entry; `beat.py` runs the tick
in the beat process itself, so a schedule never waits behind workers busy with long evaluations), and `aieval serve`
runs it in a thread of its own (the embedded default has no beat). The schedules are read from the database on every
tick: a schedule made, edited or disabled in the UI counts from the next tick, without a restart.

Exactly once: a tick claims a due schedule by moving its `next_run_at` on with one conditional UPDATE (compare-and-set
on the value it read), in the same transaction that writes the run; a second tick or beat that read the same value
updates nothing and skips it. A schedule whose time passed while nothing ticked (the server was down) runs once, then
at its next time after now: missed occurrences are not caught up one by one.

New model versions: every `schedule_version_check_s` the tick asks the endpoints of each new_model_version schedule
which version they serve (services/model_versions.py). It claims the look with a compare-and-set on
`version_checked_at` (committed before asking: no transaction stays open during the HTTP requests), and records what
it saw with a compare-and-set on the recorded `model_version` in the transaction that writes the run, so two ticks
never submit one new version twice. The first version seen is only recorded.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..config import Settings
from ..db import session_scope
from ..enums import AuditAction, AuditTarget, EvaluationStatus, ModelVersionChange, ScheduleTrigger, UserRole
from ..models import Dataset, Evaluation, Model, Schedule, User
from ..schemas.api import EvaluationCreate
from ..schemas.schedules import CronPreview, ScheduleCreate, ScheduleRead, ScheduleUpdate
from ..storage import Storage, get_storage
from . import access, audit, model_versions
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
            trigger=schedule.trigger, cron=schedule.cron, timezone=schedule.timezone, enabled=schedule.enabled,
            next_run_at=schedule.next_run_at,
            next_runs=next_runs(schedule.cron, schedule.timezone, now, NEXT_RUNS_SHOWN)
            if schedule.enabled and schedule.cron else [],
            model_version=schedule.model_version, version_checked_at=schedule.version_checked_at,
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


def _check_trigger(session: Session, trigger: str, cron: str | None, model_ids: list[int]) -> None:
    """A cron schedule needs its cron; a new_model_version one an OpenAI-compatible endpoint model to watch."""
    if trigger == ScheduleTrigger.cron and cron is None:
        raise Invalid("a schedule with the cron trigger needs a cron expression", [f"cron: {CRON_HELP}"])
    if trigger == ScheduleTrigger.new_model_version and not model_versions.endpoint_models(session, model_ids):
        raise Invalid("the new_model_version trigger watches OpenAI-compatible endpoint models, and the request has "
                      "none", ["request.model_ids: add an endpoint model (kind openai), or use the cron trigger"])


def _next_run(schedule: Schedule) -> datetime | None:
    return next_runs(schedule.cron, schedule.timezone, utcnow())[0] if schedule.enabled and schedule.cron else None


def create(session: Session, settings: Settings, body: ScheduleCreate, caller: Caller) -> Schedule:
    access.require_member(caller)
    cron = check_cron(body.cron) if body.cron is not None else None
    zone(body.timezone)
    _check_request(session, body.request, caller)
    _check_trigger(session, body.trigger, cron, body.request.model_ids)
    schedule = Schedule(
        name=body.name, request=body.request.model_dump(mode="json"), trigger=body.trigger.value, cron=cron,
        timezone=body.timezone, enabled=body.enabled, gate_rules=_rules(body.gate_rules),
        **access.ownership(caller, body.visibility, settings.default_visibility))
    schedule.next_run_at = _next_run(schedule)
    session.add(schedule)
    session.flush()
    audit.record(session, caller, AuditAction.created, AuditTarget.schedule, schedule.id, schedule.name,
                 {"trigger": body.trigger.value, "cron": cron, "timezone": body.timezone})
    return schedule


def edit(session: Session, schedule_id: int, body: ScheduleUpdate, caller: Caller) -> Schedule:
    schedule = changeable(session, schedule_id, caller)
    if body.name is not None:
        schedule.name = body.name
    if body.request is not None:
        _check_request(session, body.request, caller)
        schedule.request = body.request.model_dump(mode="json")
    if "cron" in body.model_fields_set:  # null given: no cron any more
        schedule.cron = check_cron(body.cron) if body.cron is not None else None
    if body.trigger is not None:
        schedule.trigger = body.trigger.value
    if {"request", "trigger", "cron"} & body.model_fields_set:
        _check_trigger(session, schedule.trigger, schedule.cron, schedule.request.get("model_ids") or [])
    if {"request", "trigger"} & body.model_fields_set:
        # Other models (or watching anew): the next look records their versions, it does not run on them.
        schedule.model_version = schedule.version_checked_at = None
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
        schedule.next_run_at = _next_run(schedule)
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
    following = next_runs(schedule.cron, schedule.timezone, max(now, due_at))[0] if schedule.cron else None
    taken = session.execute(
        update(Schedule).where(Schedule.id == schedule_id, Schedule.enabled.is_(True),
                               Schedule.next_run_at == due_at)
        .values(next_run_at=following).execution_options(synchronize_session=False)).rowcount
    if not taken:
        return None
    session.refresh(schedule)
    return schedule


def _submit_run(session: Session, settings: Settings, storage: Storage, schedule: Schedule, now: datetime,
                why: str) -> int | None:
    """Write and send one run of a schedule just claimed in `session`; the evaluation's id, or None when the server
    refused it (recorded as the schedule's last_error; the claim stays: this occasion is over)."""
    from .submission import submit  # submission imports the Celery app; imported when a tick runs

    try:
        with session.begin_nested():
            evaluation = new_run(session, settings, storage, schedule, now)
    except ServiceError as exc:
        schedule.last_run_at, schedule.last_error = now, _error_text(exc)
        log.warning("schedule %s (%s): its run was refused: %s", schedule.id, schedule.name, schedule.last_error)
        return None
    submit(settings, evaluation.id, evaluation.queue, session=session)
    log.info("schedule %s (%s): submitted evaluation %s (%s)", schedule.id, schedule.name, evaluation.id, why)
    return evaluation.id


def tick(settings: Settings, *, now: datetime | None = None, storage: Storage | None = None) -> list[int]:
    """Submit a run of every due schedule, each claimed and written in a transaction of its own, then of every
    new_model_version schedule whose endpoints serve a new version (check_model_versions). Returns the ids of the
    evaluations submitted. A run the server refuses (quota, a deleted model) is recorded as the schedule's
    last_error and the schedule waits for its next time."""
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
            if schedule is not None:
                submitted.append(_submit_run(session, settings, storage, schedule, now, "cron"))
    submitted.extend(check_model_versions(settings, now=now, storage=storage))
    return [evaluation_id for evaluation_id in submitted if evaluation_id is not None]


# ---- new model versions -----------------------------------------------------------------------------------------
def claim_version_check(session: Session, schedule_id: int, checked_at: datetime | None,
                        now: datetime) -> Schedule | None:
    """Take the look at a schedule's endpoints: move version_checked_at to now, only if it still is `checked_at`
    (and the schedule enabled, on this trigger). None when another tick took it."""
    still = Schedule.version_checked_at.is_(None) if checked_at is None else Schedule.version_checked_at == checked_at
    taken = session.execute(
        update(Schedule).where(Schedule.id == schedule_id, Schedule.enabled.is_(True),
                               Schedule.trigger == ScheduleTrigger.new_model_version.value, still)
        .values(version_checked_at=now).execution_options(synchronize_session=False)).rowcount
    return session.get(Schedule, schedule_id) if taken else None


def observe_versions(settings: Settings, endpoints: list[tuple[int, str, str, str | None]]) -> str:
    """The schedule's fingerprint now: each endpoint model (id, base URL, served name, encrypted key) asked in turn.
    model_versions.VersionCheckError when one cannot be read (nothing is decided on part of them)."""
    versions = {}
    for model_id, base_url, served_name, api_key_encrypted in endpoints:
        versions[model_id] = model_versions.served_version(settings, base_url, served_name, api_key_encrypted)
    return model_versions.version_text(versions)


def check_model_versions(settings: Settings, *, now: datetime | None = None,
                         storage: Storage | None = None) -> list[int]:
    """Ask the endpoints of each new_model_version schedule not asked for `schedule_version_check_s` which versions
    they serve; submit a run of each whose versions changed since recorded. Returns the ids submitted."""
    now = now or utcnow()
    storage = storage or get_storage(settings)
    before = now - timedelta(seconds=settings.schedule_version_check_s)
    with session_scope(settings.database_url) as session:
        due = session.execute(
            select(Schedule.id, Schedule.version_checked_at)
            .where(Schedule.enabled.is_(True), Schedule.trigger == ScheduleTrigger.new_model_version.value,
                   or_(Schedule.version_checked_at.is_(None), Schedule.version_checked_at <= before))
            .order_by(Schedule.version_checked_at.is_not(None), Schedule.version_checked_at)
            .limit(DUE_PER_TICK)).all()
    submitted = []
    for schedule_id, checked_at in due:
        with session_scope(settings.database_url) as session:  # the claim, committed before the endpoints are asked
            schedule = claim_version_check(session, schedule_id, checked_at, now)
            if schedule is None:
                continue
            recorded, name = schedule.model_version, schedule.name
            endpoints = [(model.id, model.settings.get("base_url") or "", model.settings.get("model") or "",
                          model.api_key_encrypted)
                         for model in model_versions.endpoint_models(session, schedule.request.get("model_ids") or [])]
        try:
            observed = observe_versions(settings, endpoints)
        except model_versions.VersionCheckError as exc:
            with session_scope(settings.database_url) as session:
                session.execute(update(Schedule).where(Schedule.id == schedule_id)
                                .values(last_error=f"new model version check: {exc}"[:2000])
                                .execution_options(synchronize_session=False))
            log.warning("schedule %s (%s): its endpoints' versions could not be read: %s", schedule_id, name, exc)
            continue
        change = model_versions.decide(recorded, observed)
        if change == ModelVersionChange.unchanged:
            continue
        with session_scope(settings.database_url) as session:
            still = Schedule.model_version.is_(None) if recorded is None else Schedule.model_version == recorded
            taken = session.execute(
                update(Schedule).where(Schedule.id == schedule_id, Schedule.enabled.is_(True), still)
                .values(model_version=observed, last_error=None)
                .execution_options(synchronize_session=False)).rowcount
            if not taken or change == ModelVersionChange.first_seen:
                continue
            schedule = session.get(Schedule, schedule_id)
            submitted.append(_submit_run(session, settings, storage, schedule, now, "a new model version"))
    return [evaluation_id for evaluation_id in submitted if evaluation_id is not None]
