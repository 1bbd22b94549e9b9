"""Schedules: saved evaluation requests run on a cron expression, their baselines and gate rules
(services/schedules.py, services/gates.py). Each run is an ordinary evaluation of the schedule's owner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ..schemas.api import EvaluationDetail
from ..schemas.ids import DatabaseId
from ..schemas.schedules import CronPreview, ScheduleBaseline, ScheduleCreate, ScheduleRead, ScheduleUpdate
from ..services import access
from ..services import evaluations as evaluation_service
from ..services import schedules as service
from ..services.submission import submit
from .deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/schedules", tags=["schedules"])


@router.get("", response_model=list[ScheduleRead])
def list_schedules(*, scope: access.ListScope = "all", session: SessionDep, caller: CurrentUser):
    """The schedules the caller may read ("all") or owns ("mine"), by name."""
    return service.list_schedules(session, caller, scope)


@router.post("", response_model=ScheduleRead, status_code=201)
def create_schedule(*, body: ScheduleCreate, session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    schedule = service.create(session, settings, body, caller)
    session.commit()
    return service.show(session, schedule.id, caller)


@router.get("/preview", response_model=CronPreview)
def preview_cron(*, cron: Annotated[str, Query(min_length=1, max_length=120)],
                 timezone: Annotated[str, Query(min_length=1, max_length=64)] = "UTC", caller: CurrentUser):
    """The next times a cron expression runs in a time zone (what the schedule form shows while one is typed);
    422 with the rule when it is not one the schedules accept."""
    return service.preview(cron, timezone)


@router.get("/{schedule_id}", response_model=ScheduleRead)
def show_schedule(*, schedule_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    return service.show(session, schedule_id, caller)


@router.patch("/{schedule_id}", response_model=ScheduleRead)
def update_schedule(*, schedule_id: DatabaseId, body: ScheduleUpdate, session: SessionDep, caller: CurrentUser):
    """Change anything of it (its owner and administrators); the next tick uses the new settings."""
    service.edit(session, schedule_id, body, caller)
    session.commit()
    return service.show(session, schedule_id, caller)


@router.delete("/{schedule_id}", status_code=204)
def delete_schedule(*, schedule_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    """Its runs stay, as ordinary evaluations."""
    service.delete(session, schedule_id, caller)
    session.commit()
    return Response(status_code=204)


@router.post("/{schedule_id}/run-now", response_model=EvaluationDetail, status_code=201)
def run_schedule_now(*, schedule_id: DatabaseId, session: SessionDep, settings: SettingsDep, storage: StorageDep,
                     caller: CurrentUser):
    """One run now, owned by the schedule's owner, outside its cron (its next time stays)."""
    evaluation = service.run_now(session, settings, storage, schedule_id, caller)
    submit(settings, evaluation.id, evaluation.queue, session=session)
    return evaluation_service.show(session, evaluation.id, caller)


@router.put("/{schedule_id}/baseline", response_model=ScheduleRead)
def set_schedule_baseline(*, schedule_id: DatabaseId, body: ScheduleBaseline, session: SessionDep,
                          caller: CurrentUser):
    """The evaluation each run is compared with (no_significant_drop); null removes it."""
    service.set_baseline(session, schedule_id, body.evaluation_id, caller)
    session.commit()
    return service.show(session, schedule_id, caller)
