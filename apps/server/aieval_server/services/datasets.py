"""Datasets: OpenCompass' built-in catalogue (with data availability) and uploaded files.

Uploads are validated row by row by the engine, then stored content-addressed (`datasets/<sha256>.<ext>`),
so a re-upload of the same bytes is recognised and nothing is stored twice.
"""

from __future__ import annotations

import functools
import io
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from aieval_engine import config_builder
from aieval_engine.catalogue import (
    BenchmarkReadiness,
    UnknownDatasetError,
    benchmarks,
    how_to_get,
    list_builtin_names,
    missing_data,
    packages_for,
    resolve_builtin,
)
from aieval_engine.datafiles import (
    FILE_FORMATS,
    MAX_ROWS,
    DataFileError,
    DataFileInfo,
    first_rows,
    validate_data_file,
)
from aieval_engine.spec import CONTROL_CHARS, DEFAULT_MAX_OUT_LEN, clean_display_name

from ..config import Settings
from ..enums import AuditAction, AuditTarget, BenchmarkDataStatus, Visibility
from ..models import Dataset, EvaluationDataset
from ..schemas.api import (
    BuiltinDatasetRead,
    BuiltinGenerationSettings,
    DatasetPreview,
    DatasetRead,
    DatasetUpdate,
    DatasetUploadRules,
    DatasetValidation,
)
from ..schemas.data_packages import BenchmarkRead, BuiltinConfigReadiness, DataPackageRead
from ..storage import Storage
from . import access, audit, quotas
from .accounts import Caller
from .errors import Conflict, Invalid, NotFound, TooLarge

SCORERS = ("exact", "contains", "judge")  # how an uploaded file's answers are scored (engine CustomDatasetSpec)
QA_ONLY_SCORERS = ("contains", "judge")  # a multiple-choice answer is one letter: compared exactly

ACCEPTED_EXTENSIONS = tuple(f".{file_format}" for file_format in FILE_FORMATS)
PREVIEW_MAX_ROWS = 100
VALIDATION_PREVIEW_ROWS = 20
NAME_MAX_LENGTH = 200


def storage_key(sha256: str, file_format: str) -> str:
    return f"datasets/{sha256}.{file_format}"


def builtin_missing(settings: Settings, config: str) -> list[str]:
    return [str(p) for p in missing_data(resolve_builtin(config), settings.compass_data_cache)]


def to_read(dataset: Dataset, settings: Settings, caller: Caller) -> DatasetRead:
    available = True
    if dataset.kind == "builtin":
        try:
            available = not builtin_missing(settings, dataset.builtin_config)
        except UnknownDatasetError:
            available = False
    return DatasetRead(
        **access.owned_fields(caller, dataset),
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


def forget_readiness() -> None:
    """Data was imported: the catalogue's remembered availability is stale."""
    with _catalogue_lock:
        _catalogue_entry.cache_clear()


def _benchmark_read(benchmark: BenchmarkReadiness, registered: dict[str, int]) -> BenchmarkRead:
    total = len(benchmark.configs)
    status = (BenchmarkDataStatus.ready if benchmark.ready else
              BenchmarkDataStatus.partial if benchmark.ready_configs else BenchmarkDataStatus.missing)
    return BenchmarkRead(
        name=benchmark.name, status=status, ready_configs=benchmark.ready_configs, total_configs=total,
        configs=[BuiltinConfigReadiness(name=c.config.name, ready=c.ready, missing=[str(p) for p in c.missing],
                                        registered_id=registered.get(c.config.name)) for c in benchmark.configs],
        packages=[DataPackageRead(archive_name=p.archive_name, url=p.url, md5=p.md5) for p in benchmark.packages],
        fetch_command=None if benchmark.ready or not benchmark.packages else f"aieval datasets fetch {benchmark.name}",
        how_to_get=benchmark.how_to_get())


def benchmark_catalogue(session: Session, settings: Settings, q: str | None, status: BenchmarkDataStatus | None,
                        page: int, page_size: int) -> tuple[list[BenchmarkRead], int]:
    """Built-in configs grouped by benchmark (their folder), with readiness read from the data root now: imports
    and copies made by hand show at once."""
    registered = dict(session.execute(select(Dataset.builtin_config, Dataset.id).where(Dataset.kind == "builtin")).all())
    needle = (q or "").strip().lower()
    found = []
    for benchmark in benchmarks(settings.compass_data_cache):
        if needle and needle not in benchmark.name.lower() and not any(
                needle in c.config.name.lower() for c in benchmark.configs):
            continue
        read = _benchmark_read(benchmark, registered)
        if status is None or read.status == status:
            found.append(read)
    return found[(page - 1) * page_size : page * page_size], len(found)


def get_or_register_builtin(session: Session, settings: Settings, config: str, caller: Caller) -> Dataset:
    """The dataset row of a built-in config; refuses unknown names and absent data. Built-in configs belong to the
    installation and are shared: anyone who may run evaluations may register one."""
    access.require_member(caller)
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
            [*(f"missing {p}" for p in missing), how_to_get(packages_for(builtin), builtin.folder)],
        )
    if existing is not None:
        return existing
    dataset = Dataset(name=config, kind="builtin", builtin_config=config, columns=[], owner_id=None,
                      visibility=Visibility.shared.value)
    session.add(dataset)
    session.flush()
    audit.record(session, caller, AuditAction.created, AuditTarget.dataset, dataset.id, dataset.name,
                 {"kind": "builtin"})
    return dataset


# ---- uploads ----------------------------------------------------------------------------------
def upload_rules(settings: Settings) -> DatasetUploadRules:
    return DatasetUploadRules(extensions=list(ACCEPTED_EXTENSIONS), max_bytes=settings.max_upload_bytes,
                              max_rows=MAX_ROWS)


def receive_file(stream: BinaryIO, target: Path, limit: int) -> int:
    """Write an upload to target, refusing it (413) as soon as it is over `limit` bytes."""
    size = 0
    with open(target, "wb") as handle:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the file is larger than the limit of {limit // (1024 * 1024)} MiB")
            handle.write(chunk)
    return size


def _name_is_taken(session: Session, name: str) -> bool:
    return session.scalar(select(Dataset.id).where(func.lower(Dataset.name) == name.lower())) is not None


def _name_taken_message(name: str) -> str:
    return f"a dataset named {name!r} already exists; choose another name"


def _default_name(session: Session, filename: str, file_format: str | None) -> tuple[str, bool]:
    """(name, taken) for an upload without a name: the file's stem, or `stem (csv)` when the stem is taken, so
    quiz.csv and quiz.jsonl can both be uploaded without naming them. When both are taken the upload is refused
    (409) rather than numbered: a third file of the same name is more likely a mistake than a wish."""
    stem = clean_display_name(filename.rsplit(".", 1)[0] if "." in filename else filename)
    if not _name_is_taken(session, stem):
        return stem, False
    alternative = f"{stem} ({file_format})"
    if file_format is None or len(alternative) > NAME_MAX_LENGTH or _name_is_taken(session, alternative):
        return stem, True
    return alternative, False


@dataclass
class UploadCheck:
    """What an upload would do: the one set of rules behind both the upload and its dry run."""

    filename: str
    file_format: str | None = None
    name: str | None = None
    problems: list[str] = field(default_factory=list)  # each would make the upload a 422
    headline: str = ""  # the 422's detail
    info: DataFileInfo | None = None
    columns: tuple[str, ...] = ()
    data_type: str | None = None
    staged: Path | None = None
    size: int = 0
    existing: Dataset | None = None
    name_taken: bool = False  # would be a 409 (unless the same file exists: then the upload returns that)


def check_upload(session: Session, settings: Settings, caller: Caller, stream: BinaryIO, staging: Path,
                 filename: str | None, name: str | None, data_type: str | None, scorer: str,
                 infer_method: str) -> UploadCheck:
    """Receive the file into `staging` and decide everything an upload decides, storing nothing.

    Raises TooLarge (413) when the file is over the limit; every other refusal is in the returned problems."""
    check = UploadCheck(filename=(filename or "").strip())
    filename = check.filename
    if CONTROL_CHARS.search(filename):  # it is kept as the dataset's original file name (PostgreSQL refuses NUL)
        check.problems.append("the file name must not contain control characters such as newlines")
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension in FILE_FORMATS:
        check.file_format = extension
    else:
        check.problems.append(f"{filename or 'the file'}: only {' and '.join(ACCEPTED_EXTENSIONS)} files are accepted")
    if data_type not in (None, "mcq", "qa"):
        check.problems.append("data_type must be 'mcq' or 'qa' (or omitted to detect it from the columns)")
        data_type = None
    if scorer not in SCORERS:
        check.problems.append("scorer must be 'exact', 'contains' or 'judge'")
    if infer_method not in ("gen", "ppl"):
        check.problems.append("infer_method must be 'gen' or 'ppl'")
    try:
        if name is None:
            check.name, check.name_taken = _default_name(session, filename, check.file_format)
        else:
            check.name = clean_display_name(name)
            check.name_taken = _name_is_taken(session, check.name)
    except ValueError as exc:
        check.problems.append(f"name {exc}")
    if check.name is not None and len(check.name) > NAME_MAX_LENGTH:
        check.problems.append(f"name must be at most {NAME_MAX_LENGTH} characters")
    check.headline = check.problems[0] if check.problems else ""
    if check.file_format is None:
        return check

    # The server picks the local file name: the client's name is only used for its extension and in messages.
    check.staged = staging / f"upload.{check.file_format}"
    check.size = receive_file(stream, check.staged, settings.max_upload_bytes)
    try:
        check.info = validate_data_file(check.staged, data_type, label=filename or None)  # type: ignore[arg-type]
    except DataFileError as exc:
        check.problems.extend(exc.problems)
        check.headline = check.headline or f"{filename} cannot be used as a dataset"
        check.columns, check.data_type = exc.columns, exc.data_type
    else:
        check.columns, check.data_type = check.info.columns, check.info.data_type
        if scorer in QA_ONLY_SCORERS and check.data_type != "qa":
            check.problems.append(f"the {scorer!r} scorer is for question-answer datasets, not multiple choice")
        # The same file already uploaded and readable by this caller (their own first) is returned instead of
        # stored twice; another user's private copy is not revealed: this caller gets a row of their own.
        check.existing = session.scalar(
            select(Dataset).where(Dataset.sha256 == check.info.sha256, access.readable_clause(caller, Dataset))
            .order_by((Dataset.owner_id == caller.user_id).desc(), Dataset.id).limit(1))
    return check


def validate_upload(session: Session, settings: Settings, caller: Caller, stream: BinaryIO, filename: str | None,
                    name: str | None, data_type: str | None, scorer: str, infer_method: str) -> DatasetValidation:
    """The upload's dry run: what `upload` with the same arguments would answer, without storing anything."""
    access.require_member(caller)
    with tempfile.TemporaryDirectory(prefix="aieval-validate-") as staging:
        check = check_upload(session, settings, caller, stream, Path(staging), filename, name, data_type, scorer, infer_method)
        preview: list[dict] = []
        if check.staged is not None:
            with open(check.staged, "rb") as handle:
                preview, _ = first_rows(handle, check.file_format, VALIDATION_PREVIEW_ROWS)  # type: ignore[arg-type]
    problems = list(check.problems)
    if check.name_taken and check.existing is None:
        problems.append(_name_taken_message(check.name or ""))
    return DatasetValidation(
        ok=not problems, file_format=check.file_format, data_type=check.data_type, columns=list(check.columns),
        rows=check.info.rows if check.info else None, name=check.name, problems=problems, preview=preview,
        existing_dataset_id=check.existing.id if check.existing else None, name_taken=check.name_taken,
    )


def upload(session: Session, settings: Settings, storage: Storage, caller: Caller, stream: BinaryIO,
           filename: str | None, name: str | None, data_type: str | None, scorer: str, infer_method: str,
           visibility: Visibility | None = None, is_demo: bool = False) -> tuple[Dataset, bool]:
    """Validate and store an uploaded file; returns (dataset, existing)."""
    access.require_member(caller)
    with tempfile.TemporaryDirectory(prefix="aieval-upload-") as staging:
        check = check_upload(session, settings, caller, stream, Path(staging), filename, name, data_type, scorer, infer_method)
        if check.problems:
            raise Invalid(check.headline, check.problems)
        assert check.info is not None and check.staged is not None and check.name is not None
        if check.existing is not None:
            return check.existing, True
        if check.name_taken:
            raise Conflict(_name_taken_message(check.name))
        quotas.check_storage(session, settings, caller, check.size)
        info = check.info
        key = storage_key(info.sha256, info.format)
        dataset = Dataset(
            name=check.name, kind="custom", sha256=info.sha256, storage_key=key, file_format=info.format,
            data_type=info.data_type, scorer=scorer, infer_method=infer_method, columns=list(info.columns),
            rows=info.rows, size_bytes=check.size, original_filename=check.filename[:300], is_demo=is_demo,
            **({"owner_id": None, "visibility": Visibility.shared.value} if is_demo
               else access.ownership(caller, visibility, settings.default_visibility)),
        )
        session.add(dataset)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            raise Conflict("the same dataset was uploaded concurrently; upload again to see it") from None
        audit.record(session, caller, AuditAction.created, AuditTarget.dataset, dataset.id, dataset.name,
                     {"kind": "custom", "rows": dataset.rows, "size_bytes": dataset.size_bytes,
                      "visibility": dataset.visibility})
        stored_before = storage.exists(key)
        storage.put_file(key, check.staged)
        try:
            session.commit()
        except BaseException:
            if not stored_before:
                storage.delete(key)
            raise
    return dataset, False


def get(session: Session, dataset_id: int, caller: Caller) -> Dataset:
    """The dataset if the caller may read it (NotFound otherwise, as if there were none)."""
    return access.readable(caller, session.get(Dataset, dataset_id), "dataset", dataset_id)


def update(session: Session, dataset_id: int, body: DatasetUpdate, caller: Caller) -> Dataset:
    """Rename an uploaded dataset, change how it is scored or who may read it. Evaluations run later (and
    retries) use the new settings; finished results keep the scores they had."""
    dataset = access.changeable(caller, session.get(Dataset, dataset_id), "dataset", dataset_id)
    name, scorer, infer_method = body.name, body.scorer, body.infer_method
    if dataset.kind == "builtin":
        raise Invalid(f"{dataset.name!r} is an OpenCompass built-in dataset: its settings come from OpenCompass")
    scorer = scorer or dataset.scorer
    infer_method = infer_method or dataset.infer_method
    if scorer in QA_ONLY_SCORERS and dataset.data_type != "qa":
        raise Invalid(f"the {scorer!r} scorer is for question-answer datasets, not multiple choice")
    if infer_method == "ppl" and dataset.data_type != "mcq":
        raise Invalid("ppl (likelihood) scoring needs a multiple-choice dataset")
    if name is not None and name.lower() != dataset.name.lower() and _name_is_taken(session, name):
        raise Conflict(_name_taken_message(name))
    if name is not None:
        dataset.name = name
    dataset.scorer, dataset.infer_method = scorer, infer_method
    if body.visibility is not None:
        dataset.visibility = body.visibility.value
    audit.record(session, caller, AuditAction.updated, AuditTarget.dataset, dataset.id, dataset.name,
                 {"fields": sorted(body.model_fields_set)})
    session.commit()
    return dataset


def list_datasets(session: Session, caller: Caller, kind: str | None, q: str | None,
                  scope: access.ListScope = "all") -> list[Dataset]:
    query = (select(Dataset).where(access.readable_clause(caller, Dataset, scope)).order_by(Dataset.name)
             .options(selectinload(Dataset.owner)))
    if kind:
        query = query.where(Dataset.kind == kind)
    if q:
        query = query.where(Dataset.name.ilike(f"%{q}%"))
    return list(session.scalars(query))


def delete(session: Session, storage: Storage, dataset_id: int, caller: Caller) -> None:
    dataset = access.changeable(caller, session.get(Dataset, dataset_id), "dataset", dataset_id)
    used = session.scalar(select(func.count()).select_from(EvaluationDataset).where(EvaluationDataset.dataset_id == dataset_id))
    if used:
        raise Conflict(f"dataset {dataset.name!r} is used by {used} evaluation(s); delete those evaluations first")
    key = dataset.storage_key
    audit.record(session, caller, AuditAction.deleted, AuditTarget.dataset, dataset.id, dataset.name)
    session.delete(dataset)
    session.commit()
    # Content-addressed: another user's row may hold the same file.
    if key and session.scalar(select(Dataset.id).where(Dataset.storage_key == key).limit(1)) is None:
        storage.delete(key)


def local_file(settings: Settings, storage: Storage, dataset: Dataset) -> Path:
    """The uploaded file on this machine (downloaded once from S3 into the cache)."""
    assert dataset.storage_key
    return storage.local_copy(dataset.storage_key, settings.cache_dir)


def preview(settings: Settings, storage: Storage, dataset: Dataset, limit: int) -> DatasetPreview:
    if dataset.kind != "custom":
        raise Invalid("only uploaded datasets can be previewed; built-in data is read by OpenCompass")
    limit = max(1, min(limit, PREVIEW_MAX_ROWS))
    with storage.open(dataset.storage_key) as handle:
        # Buffered, so reading line by line does not become a read per byte (S3 bodies are not buffered).
        buffered = handle if isinstance(handle, io.BufferedIOBase) else io.BufferedReader(handle)  # type: ignore[arg-type]
        rows, problems = first_rows(buffered, dataset.file_format, limit)  # type: ignore[arg-type]
    if problems:
        # Only a file stored under older, looser rules gets here: say so rather than fail.
        raise Invalid(f"dataset {dataset.name!r} cannot be read by today's rules; upload a corrected file", problems)
    return DatasetPreview(columns=list(dataset.columns or []), rows=rows, total_rows=dataset.rows)


def demo_files() -> list[tuple[Path, str, str]]:
    """(file, name, scorer) of the engine's demo datasets."""
    from aieval_engine.demo import demo_datasets

    return [(Path(d.path), d.name, d.scorer) for d in demo_datasets()]


def builtin_needs_judge(config: str | None) -> bool:
    """Whether OpenCompass scores this built-in config with an LLM judge (an evaluation of it names a judge model).
    An unknown config needs none: it is refused for being unknown."""
    try:
        builtin = resolve_builtin(config or "")
    except UnknownDatasetError:
        return False
    return config_builder.builtin_needs_judge(builtin)


def builtin_generation_settings(config: str) -> BuiltinGenerationSettings:
    """The generation settings a built-in config sets itself, read from OpenCompass' shipped file as source (the
    config is found by name in the catalogue and never executed): what a run that overrides nothing uses."""
    config = config.strip().removesuffix(".py")
    try:
        builtin = resolve_builtin(config)
    except UnknownDatasetError as exc:
        raise NotFound(f"unknown built-in dataset {config!r}", [str(exc)]) from None
    found = config_builder.builtin_generation_settings(builtin)
    return BuiltinGenerationSettings(
        config=config, generates=found.generates, inferencers=list(dict.fromkeys(i.inferencer for i in found.inferencers)),
        max_out_len=found.max_out_len, model_decides=found.model_decides, model_default_max_out_len=DEFAULT_MAX_OUT_LEN,
        stopping_criteria=found.stopping_criteria, readable=found.readable,
        needs_judge=config_builder.builtin_needs_judge(builtin))
