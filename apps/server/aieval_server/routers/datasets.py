from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from ..enums import Visibility
from ..schemas.api import (
    BuiltinDatasetRead,
    BuiltinGenerationSettings,
    DatasetPreview,
    DatasetRead,
    DatasetUpdate,
    DatasetUploadResult,
    DatasetUploadRules,
    DatasetValidation,
    Page,
)
from ..schemas.ids import DatabaseId, PageNumber
from ..services import access
from ..services import datasets as service
from .deps import CurrentUser, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=list[DatasetRead])
def list_datasets(*, kind: str | None = None, q: str | None = None, scope: access.ListScope = "all",
                  session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    """The datasets the caller may read ("all") or owns ("mine")."""
    return [service.to_read(d, settings, caller) for d in service.list_datasets(session, caller, kind, q, scope)]


@router.get("/builtin", response_model=Page[BuiltinDatasetRead])
def builtin_catalogue(*, q: str | None = None, available: bool | None = None, page: PageNumber = 1,
                      page_size: Annotated[int, Query(ge=1, le=500)] = 50, session: SessionDep,
                      settings: SettingsDep):
    items, total = service.builtin_catalogue(session, settings, q, available, page, page_size)
    return Page(items=items, total=total, page=page, page_size=page_size)


@router.post("/builtin/{config:path}", response_model=DatasetRead, status_code=201)
def register_builtin(*, config: str, session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    return service.to_read(service.get_or_register_builtin(session, settings, config, caller), settings, caller)


@router.post("", response_model=DatasetUploadResult, status_code=201,
             responses={200: {"model": DatasetUploadResult, "description": "the same file was uploaded before"}})
def upload_dataset(*, response: Response, file: Annotated[UploadFile, File()], name: Annotated[str | None, Form()] = None,
                   data_type: Annotated[str | None, Form()] = None, scorer: Annotated[str, Form()] = "exact",
                   infer_method: Annotated[str, Form()] = "gen", visibility: Annotated[Visibility | None, Form()] = None,
                   session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    dataset, existing = service.upload(session, settings, storage, caller, file.file, file.filename, name,
                                       data_type or None, scorer, infer_method, visibility)
    if existing:
        response.status_code = 200
    return DatasetUploadResult(dataset=service.to_read(dataset, settings, caller), existing=existing)


@router.post("/validate", response_model=DatasetValidation,
             responses={413: {"description": "the file is larger than the upload limit"}})
def validate_dataset(*, file: Annotated[UploadFile, File()], name: Annotated[str | None, Form()] = None,
                     data_type: Annotated[str | None, Form()] = None, scorer: Annotated[str, Form()] = "exact",
                     infer_method: Annotated[str, Form()] = "gen",
                     visibility: Annotated[Visibility | None, Form()] = None,  # accepted like the upload's, unused
                     session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    """Dry run of the upload (same fields): what it would answer, by the same rules, storing nothing."""
    return service.validate_upload(session, settings, caller, file.file, file.filename, name, data_type or None, scorer,
                                   infer_method)


@router.get("/upload-rules", response_model=DatasetUploadRules)
def upload_rules(*, settings: SettingsDep):
    return service.upload_rules(settings)


@router.get("/{dataset_id}", response_model=DatasetRead)
def show_dataset(*, dataset_id: DatabaseId, session: SessionDep, settings: SettingsDep, caller: CurrentUser):
    return service.to_read(service.get(session, dataset_id, caller), settings, caller)


@router.patch("/{dataset_id}", response_model=DatasetRead)
def update_dataset(*, dataset_id: DatabaseId, body: DatasetUpdate, session: SessionDep, settings: SettingsDep,
                   caller: CurrentUser):
    return service.to_read(service.update(session, dataset_id, body, caller), settings, caller)


@router.get("/{dataset_id}/preview", response_model=DatasetPreview)
def preview_dataset(*, dataset_id: DatabaseId, limit: Annotated[int, Query(ge=1, le=service.PREVIEW_MAX_ROWS)] = 20,
                    session: SessionDep, settings: SettingsDep, storage: StorageDep, caller: CurrentUser):
    return service.preview(settings, storage, service.get(session, dataset_id, caller), limit)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(*, dataset_id: DatabaseId, session: SessionDep, storage: StorageDep, caller: CurrentUser):
    service.delete(session, storage, dataset_id, caller)
    return Response(status_code=204)


@router.get("/builtin/{config:path}/settings", response_model=BuiltinGenerationSettings)
def builtin_generation_settings(*, config: str, caller: CurrentUser):
    """The generation settings a built-in config sets itself (output length, stop words): what an evaluation that
    sets no max_out_len uses for it, as the opencompass CLI would."""
    return service.builtin_generation_settings(config)
