from __future__ import annotations

from fastapi import APIRouter, Response

from ..schemas.api import ModelCreate, ModelRead, ModelTestResult, ModelUpdate
from ..schemas.ids import DatabaseId
from ..services import access
from ..services import models as service
from .deps import CurrentUser, SessionDep, SettingsDep

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelRead])
def list_models(*, kind: str | None = None, q: str | None = None, scope: access.ListScope = "all",
                session: SessionDep, caller: CurrentUser):
    """The models the caller may read ("all") or owns ("mine")."""
    return [service.to_read(m, caller) for m in service.list_models(session, caller, kind, q, scope)]


@router.post("", response_model=ModelRead, status_code=201)
def create_model(*, body: ModelCreate, session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    return service.to_read(service.create(session, settings, body, caller), caller)


@router.post("/test", response_model=ModelTestResult)
def test_unsaved_model(*, body: ModelCreate, settings: SettingsDep, caller: CurrentUser):
    """The connection test before saving: the same checks and request as for a saved model; nothing is stored."""
    access.require_member(caller)
    return service.test_model(service.unsaved(settings, body), settings)


@router.get("/{model_id}", response_model=ModelRead)
def show_model(*, model_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    return service.to_read(service.get(session, model_id, caller), caller)


@router.patch("/{model_id}", response_model=ModelRead)
def update_model(*, model_id: DatabaseId, body: ModelUpdate, session: SessionDep,
                 settings: SettingsDep, caller: CurrentUser):
    return service.to_read(service.update(session, settings, model_id, body, caller), caller)


@router.delete("/{model_id}", status_code=204)
def delete_model(*, model_id: DatabaseId, session: SessionDep, caller: CurrentUser):
    service.delete(session, model_id, caller)
    return Response(status_code=204)


@router.post("/{model_id}/test", response_model=ModelTestResult)
def test_model(*, model_id: DatabaseId, session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    """Members who may read the model may test it (the request goes to the model's server, not to its owner's
    data); viewers may not make the server send requests."""
    access.require_member(caller)
    model = service.get(session, model_id, caller)
    session.close()  # do not hold a connection while waiting for a remote endpoint
    return service.test_model(model, settings)
