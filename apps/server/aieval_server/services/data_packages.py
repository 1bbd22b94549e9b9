"""Imports of OpenCompass data packages into this server's data root (COMPASS_DATA_CACHE), for administrators.

The engine does the work (aieval_engine.datapackages: safe unpacking, checksums, readiness before and after). An
import runs in a thread of the API process that received it, since an upload is on this machine's disk; one at a
time per process (the others wait as "queued"). Its record is a JSON file under <data_dir>/data-imports/, replaced
atomically as it progresses, so any API process on this machine can answer for it; a record still queued or running
whose updates stopped (its process ended) is reported failed.

Workers read the same data root: on several machines it must be shared storage (docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from aieval_engine.datapackages import (
    ARCHIVE_SUFFIXES,
    STAGING_PREFIX,
    PackageError,
    import_package,
    is_archive_name,
)
from aieval_engine.spec import CONTROL_CHARS

from ..config import Settings
from ..enums import AuditAction, AuditTarget, DataImportState
from ..private_paths import private_dir
from ..schemas.data_packages import DataImportRead, DataImportReport, DataPackagesStatus
from ..schemas.ids import DATA_IMPORT_ID_PATTERN
from . import audit
from . import datasets as datasets_service
from .accounts import Caller
from .errors import Invalid, NotFound
from .models import under_model_roots

log = logging.getLogger(__name__)
RECORDS_FOLDER = "data-imports"
RECORD_ID = re.compile(DATA_IMPORT_ID_PATTERN)
PROGRESS_EVERY_S = 0.5
# Progress is written at least this often while an import runs; a record older than STALE_AFTER_S was left by a
# process that stopped.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
LISTED_IMPORTS = 20
_one_at_a_time = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _records(settings: Settings) -> Path:
    return private_dir(settings.data_dir / RECORDS_FOLDER)


def _save(settings: Settings, record: dict) -> None:
    record["updated"] = time.time()
    folder = _records(settings)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".record-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(record, out)
    os.replace(temporary, folder / f"{record['id']}.json")


def _to_read(record: dict) -> DataImportRead:
    state, error = record["state"], record.get("error")
    if state in (DataImportState.queued, DataImportState.running) and time.time() - record["updated"] > STALE_AFTER_S:
        state, error = DataImportState.failed, "the import stopped: the server process running it ended; import again"
    report = record.get("report")
    return DataImportRead(
        id=record["id"], state=state, source=record["source"], requested_by=record["requested_by"],
        stage=record.get("stage"), done_bytes=record.get("done", 0), total_bytes=record.get("total", 0),
        started_at=record["started_at"], finished_at=record.get("finished_at"), error=error,
        report=DataImportReport(**{k: v for k, v in report.items() if k != "source"}) if report else None)


def get(settings: Settings, import_id: str) -> DataImportRead:
    path = _records(settings) / f"{import_id}.json"
    if not RECORD_ID.fullmatch(import_id) or not path.is_file():
        raise NotFound(f"data import {import_id} does not exist")
    return _to_read(json.loads(path.read_text(encoding="utf-8")))


def status(settings: Settings) -> DataPackagesStatus:
    records = []
    for path in _records(settings).glob("*.json"):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # replaced while read; the next call shows it
    records.sort(key=lambda r: r["started_at"], reverse=True)
    return DataPackagesStatus(
        max_bytes=settings.max_data_package_bytes, extensions=list(ARCHIVE_SUFFIXES),
        data_root=str(settings.compass_data_cache), import_roots=[str(r) for r in settings.data_import_roots],
        imports=[_to_read(r) for r in records[:LISTED_IMPORTS]])


def _start(settings: Settings, session: Session, caller: Caller, source: Path, name: str,
           cleanup: Path | None) -> DataImportRead:
    record = {"id": uuid.uuid4().hex, "state": DataImportState.queued.value, "source": name,
              "requested_by": caller.username, "started_at": _now(), "stage": None, "done": 0, "total": 0}
    _save(settings, record)
    audit.record(session, caller, AuditAction.created, AuditTarget.data_package, None, name,
                 {"import_id": record["id"]})
    session.commit()
    threading.Thread(target=_run, args=(settings, record, source, name, cleanup), name=f"data-import-{record['id'][:8]}",
                     daemon=True).start()
    return _to_read(record)


def _run(settings: Settings, record: dict, source: Path, name: str, cleanup: Path | None) -> None:
    last = [0.0]

    def on_progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != record["stage"] or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            record.update(stage=stage, done=done, total=total)
            _save(settings, record)

    def heartbeat(stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            _save(settings, record)

    stop = threading.Event()
    threading.Thread(target=heartbeat, args=(stop,), daemon=True).start()
    try:
        with _one_at_a_time:
            record["state"] = DataImportState.running.value
            _save(settings, record)
            report = import_package(source, settings.compass_data_cache, archive_name=name, on_progress=on_progress)
        record.update(state=DataImportState.succeeded.value, report=report.to_dict(), stage=None)
    except PackageError as exc:
        record.update(state=DataImportState.failed.value, error=str(exc))
    except Exception as exc:  # the record must end; the details go to the log
        log.exception("data import %s failed", record["id"])
        record.update(state=DataImportState.failed.value, error=f"the import failed unexpectedly ({type(exc).__name__}); "
                                                                 "see the server log")
    finally:
        stop.set()
        record["finished_at"] = _now()
        _save(settings, record)
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        datasets_service.forget_readiness()


def start_upload(settings: Settings, session: Session, caller: Caller, stream: BinaryIO,
                 filename: str | None) -> DataImportRead:
    """Receive an uploaded package next to the data root (so nothing is copied twice) and import it."""
    name = Path((filename or "").replace("\\", "/")).name.strip()
    if CONTROL_CHARS.search(name):
        raise Invalid("the file name must not contain control characters such as newlines")
    if not is_archive_name(name):
        raise Invalid(f"{name or 'the file'}: a data package is a {', '.join(ARCHIVE_SUFFIXES)} archive "
                      "(OpenCompassData-core-*.zip, gsm8k.zip...)")
    data_root = settings.compass_data_cache
    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_root))
    try:
        staged = staging / "package"
        datasets_service.receive_file(stream, staged, settings.max_data_package_bytes)
        return _start(settings, session, caller, staged, name, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def start_from_path(settings: Settings, session: Session, caller: Caller, path: str) -> DataImportRead:
    """Import an archive or folder already on this server, from under the import roots an administrator set."""
    roots = settings.data_import_roots
    if not roots:
        raise Invalid("importing by path is off on this server: list the folders it may import from in "
                      "AIEVAL_DATA_IMPORT_ROOTS, or upload the package")
    resolved = under_model_roots(path.strip(), roots)
    if resolved is None:  # the same answer whether or not it exists: nothing is revealed about other folders
        raise Invalid(f"{path!r} is not an absolute path under the import roots ({', '.join(map(str, roots))})")
    if not resolved.exists():
        raise Invalid(f"{resolved} does not exist")
    if not resolved.is_dir() and not is_archive_name(resolved.name):
        raise Invalid(f"{resolved.name}: only folders and {', '.join(ARCHIVE_SUFFIXES)} archives can be imported")
    return _start(settings, session, caller, resolved, resolved.name, None)
