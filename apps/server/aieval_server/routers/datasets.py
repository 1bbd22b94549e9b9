from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from ..enums import BenchmarkDataStatus, Visibility
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
from ..schemas.data_packages import BenchmarkRead, DataImportFromPath, DataImportRead, DataPackagesStatus
from ..schemas.ids import DatabaseId, DataImportId, PageNumber
from ..services import access, data_packages
from ..services import datasets as service
from .deps import AdminUser, CurrentUser, SessionDep, SettingsDep, StorageDep

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


@router.get("/builtin/benchmarks", response_model=Page[BenchmarkRead])
def builtin_benchmarks(*, q: str | None = None, status: BenchmarkDataStatus | None = None, page: PageNumber = 1,
                       page_size: Annotated[int, Query(ge=1, le=200)] = 20, session: SessionDep, settings: SettingsDep,
                       caller: CurrentUser):
    """The built-in configs grouped by benchmark (config folder), each with whether its data is on this server and,
    when it is not, which package to import or which command fetches it. `q` matches benchmark or config names."""
    items, total = service.benchmark_catalogue(session, settings, q, status, page, page_size)
    return Page(items=items, total=total, page=page, page_size=page_size)


# ---- OpenCompass data packages (administrators; services/data_packages.py) --------------------------------
@router.get("/packages", response_model=DataPackagesStatus, responses={403: {"description": "administrators only"}})
def data_packages_status(*, settings: SettingsDep, _admin: AdminUser):
    """Limits, where data goes, and the latest imports."""
    return data_packages.status(settings)


@router.post("/packages", response_model=DataImportRead, status_code=202,
             responses={403: {"description": "administrators only"},
                        413: {"description": "the file is larger than max_data_package_bytes"}})
def import_data_package(*, file: Annotated[UploadFile, File()], session: SessionDep, settings: SettingsDep,
                        admin: AdminUser):
    """Upload an OpenCompass data package (.zip, .tar, .tar.gz: OpenCompassData-core-*.zip, gsm8k.zip...) and import
    it in the background: follow it at GET /datasets/packages/{import_id}."""
    return data_packages.start_upload(settings, session, admin, file.file, file.filename)


@router.post("/packages/from-path", response_model=DataImportRead, status_code=202,
             responses={403: {"description": "administrators only"}})
def import_data_package_from_path(*, body: DataImportFromPath, session: SessionDep, settings: SettingsDep,
                                  admin: AdminUser):
    """Import an archive or folder already on the server, under one of AIEVAL_DATA_IMPORT_ROOTS."""
    return data_packages.start_from_path(settings, session, admin, body.path)


@router.get("/packages/{import_id}", response_model=DataImportRead,
            responses={403: {"description": "administrators only"}})
def data_import_progress(*, import_id: DataImportId, settings: SettingsDep, _admin: AdminUser):
    return data_packages.get(settings, import_id)


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
