"""Built-in benchmarks grouped with their data readiness, and imports of OpenCompass data packages."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ..enums import BenchmarkDataStatus, DataImportState
from .api import Strict


class DataPackageRead(BaseModel):
    """An archive of OpenCompass' download table (its utils/datasets_info.py DATASETS_URL)."""

    archive_name: str = Field(description="e.g. gsm8k.zip: the file to import")
    url: str = Field(description="where OpenCompass publishes it")
    md5: str | None = None


class BuiltinConfigReadiness(BaseModel):
    name: str = Field(description="the name to use in an evaluation (folder/name when the file name is ambiguous)")
    ready: bool
    missing: list[str] = Field(description="data files or folders this server lacks")
    registered_id: int | None = None


class BenchmarkRead(BaseModel):
    """A built-in benchmark: the configs of one folder of OpenCompass' configs/datasets."""

    name: str
    status: BenchmarkDataStatus
    ready_configs: int
    total_configs: int
    configs: list[BuiltinConfigReadiness]
    packages: list[DataPackageRead] = Field(description="the archives that bring the missing data")
    fetch_command: str | None = Field(description="the command that downloads them where the server may download")
    how_to_get: str = Field(description="what to import or run, in words; empty when ready")


class DataImportReport(BaseModel):
    files: int
    bytes: int
    installed: list[str] = Field(description="dataset folders now under the data root's data/")
    replaced: list[str]
    md5: str | None
    checksum: str = Field(description="what was checked, in words")
    became_ready: list[str] = Field(description="configs whose data is now complete")
    benchmarks_ready: list[str] = Field(description="benchmarks with a config that became ready")


class DataImportRead(BaseModel):
    id: str
    state: DataImportState
    source: str = Field(description="the archive's or folder's name")
    requested_by: str
    stage: str | None = Field(description="verifying, unpacking or installing while running")
    done_bytes: int
    total_bytes: int = Field(description="0 while unknown (a tar's size is known at its end)")
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    report: DataImportReport | None


class DataPackagesStatus(BaseModel):
    """What administrators need for importing: the limits, where data goes, and the latest imports."""

    max_bytes: int = Field(description="the largest package upload accepted (413 above it)")
    extensions: list[str]
    data_root: str = Field(description="COMPASS_DATA_CACHE: packages land in its data/ folder")
    import_roots: list[str] = Field(description="server folders importable by path; empty: importing by path is off")
    imports: list[DataImportRead]


class DataImportFromPath(Strict):
    path: str = Field(min_length=1, max_length=4096, description="an archive or folder under one of the import roots")
