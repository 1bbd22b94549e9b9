from __future__ import annotations

from fastapi import APIRouter, Response

from ..schemas.api import ModelCreate, ModelRead, ModelTestResult, ModelUpdate
from ..schemas.ids import DatabaseId
from ..services import models as service
from .deps import SessionDep, SettingsDep

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelRead])
def list_models(*, kind: str | None = None, q: str | None = None, session: SessionDep):
    return [service.to_read(m) for m in service.list_models(session, kind, q)]


@router.post("", response_model=ModelRead, status_code=201)
def create_model(*, body: ModelCreate, session: SessionDep, settings: SettingsDep):
    return service.to_read(service.create(session, settings, body))


@router.get("/{model_id}", response_model=ModelRead)
def show_model(*, model_id: DatabaseId, session: SessionDep):
    return service.to_read(service.get(session, model_id))


@router.patch("/{model_id}", response_model=ModelRead)
def update_model(*, model_id: DatabaseId, body: ModelUpdate, session: SessionDep,
                 settings: SettingsDep):
    return service.to_read(service.update(session, settings, model_id, body))


@router.delete("/{model_id}", status_code=204)
def delete_model(*, model_id: DatabaseId, session: SessionDep):
    service.delete(session, model_id)
    return Response(status_code=204)


@router.post("/{model_id}/test", response_model=ModelTestResult)
def test_model(*, model_id: DatabaseId, session: SessionDep, settings: SettingsDep):
    model = service.get(session, model_id)
    session.close()  # do not hold a connection while waiting for a remote endpoint
    return service.test_model(model, settings)
