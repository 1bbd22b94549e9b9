"""Datasets: OpenCompass' built-in catalogue (with data availability) and uploaded files.

Uploads are validated row by row by the engine, then stored content-addressed (`datasets/<sha256>.<ext>`),
so a re-upload of the same bytes is recognised and nothing is stored twice.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aieval_engine.catalogue import UnknownDatasetError, list_builtin_names, missing_data, resolve_builtin
from aieval_engine.datafiles import DataFileError, validate_data_file
from aieval_engine.spec import clean_display_name

from ..config import Settings
from ..models import Dataset, EvaluationDataset
from ..schemas.api import BuiltinDatasetRead, DatasetPreview, DatasetRead
from ..storage import Storage
from .errors import Conflict, Invalid, NotFound, TooLarge

ALLOWED_FORMATS = ("jsonl", "csv")
PREVIEW_MAX_ROWS = 100


def storage_key(sha256: str, file_format: str) -> str:
    return f"datasets/{sha256}.{file_format}"


def builtin_missing(settings: Settings, config: str) -> list[str]:
    return [str(p) for p in missing_data(resolve_builtin(config), settings.compass_data_cache)]


def to_read(dataset: Dataset, settings: Settings) -> DatasetRead:
    available = True
    if dataset.kind == "builtin":
        try:
            available = not builtin_missing(settings, dataset.builtin_config)
        except UnknownDatasetError:
            available = False
    return DatasetRead(
        id=dataset.id, name=dataset.name, kind=dataset.kind, builtin_config=dataset.builtin_config,
        sha256=dataset.sha256, file_format=dataset.file_format, data_type=dataset.data_type,
        scorer=dataset.scorer, infer_method=dataset.infer_method, columns=list(dataset.columns or []),
        rows=dataset.rows, size_bytes=dataset.size_bytes, original_filename=dataset.original_filename,
        is_demo=dataset.is_demo, available=available, created_at=dataset.created_at,
    )


# ---- built-in catalogue -----------------------------------------------------------------------
_catalogue_lock = threading.Lock()


@functools.cache
def _catalogue_entry(name: str, data_cache: str) -> BuiltinDatasetRead:
    try:
        builtin = resolve_builtin(name)
    except UnknownDatasetError as exc:
        # Ambiguous names (same file name in several folders) are listed but must be qualified to use.
        return BuiltinDatasetRead(name=name, available=None, missing=[str(exc)])
    missing = [str(p) for p in missing_data(builtin, Path(data_cache))]
    return BuiltinDatasetRead(name=name, folder=builtin.folder, available=not missing, missing=missing)


def builtin_catalogue(session: Session, settings: Settings, q: str | None, available: bool | None,
                      page: int, page_size: int) -> tuple[list[BuiltinDatasetRead], int]:
    names = list_builtin_names()
    if q:
        names = [n for n in names if q.lower() in n.lower()]
    registered = dict(session.execute(select(Dataset.builtin_config, Dataset.id).where(Dataset.kind == "builtin")).all())
    cache = str(settings.compass_data_cache)
    if available is not None:
        with _catalogue_lock:
            names = [n for n in names if bool(_catalogue_entry(n, cache).available) == available]
    total = len(names)
    items = []
    for name in names[(page - 1) * page_size : page * page_size]:
        entry = _catalogue_entry(name, cache).model_copy()
        entry.registered_id = registered.get(name)
        items.append(entry)
    return items, total


def get_or_register_builtin(session: Session, settings: Settings, config: str) -> Dataset:
    """The dataset row of a built-in config; refuses unknown names and absent data."""
    config = config.strip().removesuffix(".py")
    existing = session.scalar(select(Dataset).where(Dataset.builtin_config == config))
    try:
        builtin = resolve_builtin(config)
    except UnknownDatasetError as exc:
        raise Invalid(f"unknown built-in dataset {config!r}", [str(exc)]) from None
    missing = missing_data(builtin, settings.compass_data_cache)
    if missing:
        raise Invalid(
            f"the data of built-in dataset {config!r} is not on this server",
            [f"missing {p}; copy the dataset's files there (OpenCompass cannot download on this machine)" for p in missing],
        )
    if existing is not None:
        return existing
    dataset = Dataset(name=config, kind="builtin", builtin_config=config, columns=[])
    session.add(dataset)
    session.flush()
    return dataset


# ---- uploads ----------------------------------------------------------------------------------
def _receive(stream: BinaryIO, target: Path, limit: int) -> int:
    size = 0
    with open(target, "wb") as handle:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the file is larger than the limit of {limit // (1024 * 1024)} MiB")
            handle.write(chunk)
    return size


def upload(session: Session, settings: Settings, storage: Storage, stream: BinaryIO, filename: str | None,
           name: str | None, data_type: str | None, scorer: str, infer_method: str,
           is_demo: bool = False) -> tuple[Dataset, bool]:
    """Validate and store an uploaded file; returns (dataset, existing)."""
    filename = (filename or "").strip()
    file_format = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if file_format not in ALLOWED_FORMATS:
        raise Invalid(f"{filename or 'the file'}: only .jsonl and .csv files are accepted")
    if data_type not in (None, "mcq", "qa"):
        raise Invalid("data_type must be 'mcq' or 'qa' (or omitted to detect it from the columns)")
    if scorer not in ("exact", "contains"):
        raise Invalid("scorer must be 'exact' or 'contains'")
    if infer_method not in ("gen", "ppl"):
        raise Invalid("infer_method must be 'gen' or 'ppl'")
    display = name if name is not None else filename.rsplit(".", 1)[0]
    try:
        display = clean_display_name(display)
    except ValueError as exc:
        raise Invalid(f"name {exc}") from None
    if len(display) > 200:
        raise Invalid("name must be at most 200 characters")

    with tempfile.TemporaryDirectory(prefix="aieval-upload-") as staging:
        # The server picks the local file name: the client's name is only used for its extension.
        path = Path(staging) / f"upload.{file_format}"
        size = _receive(stream, path, settings.max_upload_bytes)
        try:
            info = validate_data_file(path, data_type)  # type: ignore[arg-type]
        except DataFileError as exc:
            raise Invalid(f"{filename} cannot be used as a dataset", exc.problems) from None
        existing = session.scalar(select(Dataset).where(Dataset.sha256 == info.sha256))
        if existing is not None:
            return existing, True
        if session.scalar(select(Dataset.id).where(func.lower(Dataset.name) == display.lower())) is not None:
            raise Conflict(f"a dataset named {display!r} already exists; choose another name")
        key = storage_key(info.sha256, info.format)
        dataset = Dataset(
            name=display, kind="custom", sha256=info.sha256, storage_key=key, file_format=info.format,
            data_type=info.data_type, scorer=scorer, infer_method=infer_method, columns=list(info.columns),
            rows=info.rows, size_bytes=size, original_filename=filename[:300], is_demo=is_demo,
        )
        session.add(dataset)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            raise Conflict("the same dataset was uploaded concurrently; upload again to see it") from None
        stored_before = storage.exists(key)
        storage.put_file(key, path)
        try:
            session.commit()
        except BaseException:
            if not stored_before:
                storage.delete(key)
            raise
    return dataset, False


def get(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


def update(session: Session, dataset_id: int, name: str | None, scorer: str | None, infer_method: str | None) -> Dataset:
    """Rename an uploaded dataset or change how it is scored. Evaluations run later (and retries) use the
    new settings; finished results keep the scores they had."""
    dataset = get(session, dataset_id)
    if dataset.kind == "builtin":
        raise Invalid(f"{dataset.name!r} is an OpenCompass built-in dataset: its settings come from OpenCompass")
    scorer = scorer or dataset.scorer
    infer_method = infer_method or dataset.infer_method
    if scorer == "contains" and dataset.data_type != "qa":
        raise Invalid("the 'contains' scorer is for question-answer datasets, not multiple choice")
    if infer_method == "ppl" and dataset.data_type != "mcq":
        raise Invalid("ppl (likelihood) scoring needs a multiple-choice dataset")
    if name is not None and name.lower() != dataset.name.lower():
        taken = session.scalar(select(Dataset.id).where(func.lower(Dataset.name) == name.lower()))
        if taken is not None:
            raise Conflict(f"a dataset named {name!r} already exists; choose another name")
    if name is not None:
        dataset.name = name
    dataset.scorer, dataset.infer_method = scorer, infer_method
    session.commit()
    return dataset


def list_datasets(session: Session, kind: str | None, q: str | None) -> list[Dataset]:
    query = select(Dataset).order_by(Dataset.name)
    if kind:
        query = query.where(Dataset.kind == kind)
    if q:
        query = query.where(Dataset.name.ilike(f"%{q}%"))
    return list(session.scalars(query))


def delete(session: Session, storage: Storage, dataset_id: int) -> None:
    dataset = get(session, dataset_id)
    used = session.scalar(select(func.count()).select_from(EvaluationDataset).where(EvaluationDataset.dataset_id == dataset_id))
    if used:
        raise Conflict(f"dataset {dataset.name!r} is used by {used} evaluation(s); delete those evaluations first")
    key = dataset.storage_key
    session.delete(dataset)
    session.commit()
    if key:
        storage.delete(key)


def local_file(settings: Settings, storage: Storage, dataset: Dataset) -> Path:
    """The uploaded file on this machine (downloaded once from S3 into the cache)."""
    assert dataset.storage_key
    return storage.local_copy(dataset.storage_key, settings.cache_dir)


def preview(settings: Settings, storage: Storage, dataset: Dataset, limit: int) -> DatasetPreview:
    if dataset.kind != "custom":
        raise Invalid("only uploaded datasets can be previewed; built-in data is read by OpenCompass")
    limit = max(1, min(limit, PREVIEW_MAX_ROWS))
    rows: list[dict[str, Any]] = []
    with storage.open(dataset.storage_key) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig")
        if dataset.file_format == "jsonl":
            for line in text:
                if len(rows) >= limit:
                    break
                rows.append(json.loads(line))
        else:
            for row in csv.DictReader(text):
                if len(rows) >= limit:
                    break
                rows.append(dict(row))
    return DatasetPreview(columns=list(dataset.columns or []), rows=rows, total_rows=dataset.rows)


def demo_files() -> list[tuple[Path, str, str]]:
    """(file, name, scorer) of the engine's demo datasets."""
    from aieval_engine.demo import demo_datasets

    return [(Path(d.path), d.name, d.scorer) for d in demo_datasets()]


