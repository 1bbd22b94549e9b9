"""Data packages for OpenCompass' built-in benchmarks: import an archive or a folder into the data root, or fetch
the archives a benchmark needs from OpenCompass' download table (through a mirror and the outbound policy).

The data root is COMPASS_DATA_CACHE: OpenCompass reads `<root>/data/<name>/...`. Two archive layouts exist:
OpenCompass' per-dataset archives (gsm8k.zip: `gsm8k/...`, what its own downloader unpacks into `<root>/data/`)
and its bundles (OpenCompassData-core-*.zip: `data/<name>/...`). Both, and folders laid out either way, import.

Nothing is half-written: an archive is unpacked into a staging folder inside the data root (same file system),
checked, and each dataset folder is then moved into place with one rename. Refused before anything lands:
absolute member paths, `..`, links (zip) or links leading outside the archive (tar), device files, more than
`max_entries` members or `max_bytes` unpacked (archive bombs), and an md5 other than the published one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx

from .catalogue import (
    DataPackage,
    benchmarks,
    config_readiness,
    configs_named,
    package_by_archive_name,
)
from .netpolicy import OutboundPolicy, OutboundPolicyError, guarded_client

MAX_UNPACKED_BYTES = 64 * 1024**3  # well above the data packages OpenCompass publishes; a bomb is far beyond
MAX_ENTRIES = 500_000
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MIRROR_ENV = "AIEVAL_DATA_MIRROR"
STAGING_PREFIX = ".aieval-import-"  # inside the data root, so the final moves are renames on one file system
IGNORED_TOP_LEVEL = ("__MACOSX",)  # macOS zip metadata, never data
CHUNK = 1 << 20

# (stage, done, total): stages "verifying", "downloading", "unpacking", "installing"; done/total in bytes
# (total 0 when unknown).
ProgressCallback = Callable[[str, int, int], None]


class PackageError(ValueError):
    """A package that cannot be imported or fetched; the message says why in words a person can act on."""


@dataclass(frozen=True)
class ImportReport:
    source: str
    files: int
    bytes: int
    installed: tuple[str, ...]  # dataset folders (or files) now under <root>/data/
    replaced: tuple[str, ...]  # those of them that replaced an earlier copy
    md5: str | None  # of the archive (None for a folder)
    checksum: str  # what was checked, in words
    became_ready: tuple[str, ...]  # configs whose data was missing before and is complete now
    benchmarks_ready: tuple[str, ...]  # benchmarks with at least one config newly ready

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class FetchReport:
    imported: list[ImportReport] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)  # configs that needed nothing
    unpublished: list[str] = field(default_factory=list)  # missing paths OpenCompass publishes no archive for


def _quiet(_stage: str, _done: int, _total: int) -> None:
    pass


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def human_size(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.1f} MiB"


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


# ---- readiness before/after ------------------------------------------------------------------------
def _ready_configs(data_cache: Path) -> set[str]:
    return {c.config.name for b in benchmarks(data_cache) for c in b.configs if c.ready}


def _config_folders(data_cache: Path) -> dict[str, str]:
    return {c.config.name: b.name for b in benchmarks(data_cache) for c in b.configs}


# ---- safe unpacking --------------------------------------------------------------------------------
def _member_parts(name: str) -> tuple[str, ...]:
    """An archive member's path as safe relative parts; PackageError for absolute paths and `..`."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise PackageError(f"the archive holds an absolute path ({name!r}); refused: it would write outside the data folder")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if ".." in parts:
        raise PackageError(f"the archive holds a path with '..' ({name!r}); refused: it would write outside the data folder")
    return parts


def _check_totals(entries: int, size: int, max_entries: int, max_bytes: int, root: Path) -> None:
    if entries > max_entries:
        raise PackageError(f"the archive holds more than {max_entries:,} entries; refused (an archive bomb?)")
    if size > max_bytes:
        raise PackageError(f"the archive unpacks to more than {human_size(max_bytes)}; refused (an archive bomb?)")
    free = shutil.disk_usage(root).free
    if size > free:
        raise PackageError(f"the archive unpacks to {human_size(size)} but the data folder's disk has only "
                           f"{human_size(free)} free")


def _copy_limited(source, target: Path, budget: list[int], on_progress: ProgressCallback, total: int) -> None:
    """Copy a member's bytes, counting every byte against the budget [written, limit]: a member whose header
    under-states its size cannot unpack beyond the limit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            budget[0] += len(chunk)
            if budget[0] > budget[1]:
                raise PackageError(f"the archive unpacks to more than {human_size(budget[1])}; refused (an archive "
                                   "bomb?)")
            out.write(chunk)
            on_progress("unpacking", budget[0], total)


def _unpack_zip(archive: Path, staging: Path, max_entries: int, max_bytes: int,
                on_progress: ProgressCallback) -> tuple[int, int]:
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{archive.name} is not a readable zip archive ({exc})") from None
    with bundle:
        members = bundle.infolist()
        declared = sum(m.file_size for m in members)
        _check_totals(len(members), declared, max_entries, max_bytes, staging)
        planned = []
        for member in members:  # every path is judged before a byte is written
            parts = _member_parts(member.filename)
            if ((member.external_attr >> 16) & 0o170000) == 0o120000:
                raise PackageError(f"the archive holds a symbolic link ({member.filename!r}); refused")
            if parts and parts[0] not in IGNORED_TOP_LEVEL:
                planned.append((member, parts))
        budget, files = [0, max_bytes], 0
        for member, parts in planned:
            target = staging.joinpath(*parts)
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            try:
                with bundle.open(member) as source:
                    _copy_limited(source, target, budget, on_progress, declared)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a CRC error is a BadZipFile
                raise PackageError(f"{archive.name} is damaged at {member.filename!r} ({exc})") from None
            files += 1
    return files, budget[0]


def _unpack_tar(archive: Path, staging: Path, max_entries: int, max_bytes: int,
                on_progress: ProgressCallback) -> tuple[int, int]:
    try:
        bundle = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise PackageError(f"{archive.name} is not a readable tar archive ({exc})") from None
    entries, size, files = 0, 0, 0  # a tar's unpacked size is known only at its end: progress has no total
    with bundle:
        try:
            for member in bundle:  # streamed: a compressed tar is read once
                entries += 1
                size += max(member.size, 0)
                _check_totals(entries, size, max_entries, max_bytes, staging)
                parts = _member_parts(member.name)
                if not parts or parts[0] in IGNORED_TOP_LEVEL:
                    continue
                if member.issym() or member.islnk():
                    _member_parts(member.linkname)  # absolute or `..` link targets, refused by name first
                # The 'data' filter refuses links leading outside the staging folder, device files and unsafe
                # modes; members are extracted one by one, after the checks above.
                bundle.extract(member, staging, filter="data")
                files += member.isfile()
                on_progress("unpacking", size, 0)
        except tarfile.FilterError as exc:
            raise PackageError(f"the archive holds an entry that would reach outside the data folder or is not a "
                               f"plain file ({exc}); refused") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{archive.name} is damaged ({exc})") from None
    return files, size


def _copy_folder(source: Path, staging: Path, max_entries: int, max_bytes: int,
                 on_progress: ProgressCallback) -> tuple[int, int]:
    root = source.resolve()
    plan: list[tuple[Path, Path]] = []
    size = 0
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        for name in list(dirs):
            if (here / name).is_symlink():
                raise PackageError(f"{here / name} is a link to a folder; refused (copy the real folder)")
        for name in names:
            path = here / name
            real = path.resolve()
            if not real.is_relative_to(root):
                raise PackageError(f"{path} links to {real}, outside the folder being imported; refused")
            if not real.is_file():
                raise PackageError(f"{path} is not a regular file; refused")
            plan.append((real, staging / path.relative_to(root)))
            size += real.stat().st_size
        _check_totals(len(plan), size, max_entries, max_bytes, staging)
    budget = [0, max_bytes]
    for real, target in plan:
        with open(real, "rb") as handle:
            _copy_limited(handle, target, budget, on_progress, size)
    return len(plan), budget[0]


def _content_root(staging: Path) -> Path:
    """Where the dataset folders are: `data/` of a bundle (at the top or in its one top folder), else the top."""
    if (staging / "data").is_dir():
        return staging / "data"
    top = [p for p in staging.iterdir()]
    if len(top) == 1 and top[0].is_dir() and (top[0] / "data").is_dir():
        return top[0] / "data"
    return staging


def _install(content: Path, data_folder: Path, staging: Path) -> tuple[list[str], list[str]]:
    """Move each dataset folder into place with one rename; an earlier copy is moved aside first, then removed."""
    data_folder.mkdir(parents=True, exist_ok=True)
    installed, replaced = [], []
    for entry in sorted(content.iterdir()):
        target = data_folder / entry.name
        if target.exists() or target.is_symlink():
            aside = staging / ".replaced" / entry.name
            aside.parent.mkdir(exist_ok=True)
            os.replace(target, aside)
            replaced.append(entry.name)
        os.replace(entry, target)
        installed.append(entry.name)
    return installed, replaced


def import_package(source: Path, data_cache: Path, *, archive_name: str | None = None,
                   expected_md5: str | None = None, max_bytes: int = MAX_UNPACKED_BYTES,
                   max_entries: int = MAX_ENTRIES, on_progress: ProgressCallback = _quiet) -> ImportReport:
    """Import an archive (.zip, .tar, .tar.gz...) or a folder into `data_cache`; `archive_name` is the archive's
    real name when `source` is a temporary copy (an upload). The md5 is checked against `expected_md5`, else
    against OpenCompass' table when the name is one of its archives (gsm8k.zip)."""
    source = Path(source)
    name = archive_name or source.name
    if not source.exists():
        raise PackageError(f"{source} does not exist")
    is_folder = source.is_dir()
    if not is_folder and not is_archive_name(name):
        raise PackageError(f"{name}: only folders and {', '.join(ARCHIVE_SUFFIXES)} archives can be imported")
    md5, checksum = None, "a folder: no checksum"
    if not is_folder:
        on_progress("verifying", 0, source.stat().st_size)
        md5 = file_md5(source)
        published = package_by_archive_name(name)
        expected = expected_md5 or (published.md5 if published else None)
        if expected and md5 != expected.lower():
            raise PackageError(f"{name} has md5 {md5}, but the published checksum is {expected}: the file is damaged "
                               "or another file of the same name; nothing was imported")
        checksum = (f"md5 {md5} matches the published checksum" if expected
                    else f"md5 {md5}; OpenCompass publishes no checksum for {name}")

    data_cache.mkdir(parents=True, exist_ok=True)
    before = _ready_configs(data_cache)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_cache))
    try:
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        if is_folder:
            files, size = _copy_folder(source, unpacked, max_entries, max_bytes, on_progress)
        elif name.lower().endswith(".zip"):
            files, size = _unpack_zip(source, unpacked, max_entries, max_bytes, on_progress)
        else:
            files, size = _unpack_tar(source, unpacked, max_entries, max_bytes, on_progress)
        content = _content_root(unpacked)
        if not any(content.iterdir()):
            raise PackageError(f"{name} holds no data")
        on_progress("installing", size, size)
        installed, replaced = _install(content, data_cache / "data", staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    after = _ready_configs(data_cache)
    became = sorted(after - before)
    folders = _config_folders(data_cache)
    return ImportReport(source=name, files=files, bytes=size, installed=tuple(installed), replaced=tuple(replaced),
                        md5=md5, checksum=checksum, became_ready=tuple(became),
                        benchmarks_ready=tuple(sorted({folders[c] for c in became if c in folders})))


# ---- fetching ---------------------------------------------------------------------------------------
def mirror_url(url: str, mirror: str | None) -> str:
    """OpenCompass' URL with its scheme and host replaced by the mirror's (its path prefixed by the mirror's path):
    a mirror is a copy of OpenCompass' download tree. Rewritten before any connection is made."""
    if not mirror:
        return url
    base = httpx.URL(mirror)
    if base.scheme not in ("http", "https") or not base.host:
        raise PackageError(f"the data mirror {mirror!r} must be an http:// or https:// URL")
    original = httpx.URL(url)
    return str(base.copy_with(path=base.path.rstrip("/") + original.path, query=original.query or None))


def download(url: str, target: Path, policy: OutboundPolicy, *, max_bytes: int = MAX_UNPACKED_BYTES,
             on_progress: ProgressCallback = _quiet, timeout_s: float = 60.0) -> str:
    """Download url into target through the outbound policy; returns the md5 of what arrived."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with guarded_client(policy, timeout=httpx.Timeout(timeout_s, connect=15.0), follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise PackageError(f"{url} answered HTTP {response.status_code}")
            total = int(response.headers.get("content-length") or 0)
            if total > max_bytes:
                raise PackageError(f"{url} is {human_size(total)}, more than the limit of {human_size(max_bytes)}")
            done = 0
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    done += len(chunk)
                    if done > max_bytes:
                        raise PackageError(f"{url} is larger than the limit of {human_size(max_bytes)}")
                    digest.update(chunk)
                    out.write(chunk)
                    on_progress("downloading", done, total)
    except OutboundPolicyError as exc:
        raise PackageError(f"cannot download {url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise PackageError(f"cannot download {url}: {exc}. Without internet, import the archive instead "
                           f"(`aieval datasets import ARCHIVE`), or set {MIRROR_ENV} to a mirror") from None
    return digest.hexdigest()


def plan_fetch(name: str, data_cache: Path) -> tuple[list[DataPackage], FetchReport]:
    """The archives a benchmark or config still needs, and what needs none or has none published."""
    report = FetchReport()
    packages: dict[str, DataPackage] = {}
    for config in configs_named(name):
        readiness = config_readiness(config, data_cache)
        if readiness.ready:
            report.already_present.append(config.name)
        for package in readiness.packages:
            packages.setdefault(package.url, package)
        report.unpublished += [p for p in readiness.unpublished if p not in report.unpublished]
    return list(packages.values()), report


def fetch(name: str, data_cache: Path, *, mirror: str | None = None, policy: OutboundPolicy | None = None,
          max_bytes: int = MAX_UNPACKED_BYTES,
          on_progress: Callable[[DataPackage, str, int, int], None] | None = None) -> FetchReport:
    """Download and import the archives a benchmark or config needs (its missing data only)."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    policy = policy or OutboundPolicy.from_env(os.environ)
    packages, report = plan_fetch(name, data_cache)
    data_cache.mkdir(parents=True, exist_ok=True)
    for package in packages:
        url = mirror_url(package.url, mirror)

        def progress(stage: str, done: int, total: int, package: DataPackage = package) -> None:
            if on_progress:
                on_progress(package, stage, done, total)

        download_dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_cache))
        try:
            archive = download_dir / f"{uuid.uuid4().hex}-{package.archive_name}"
            md5 = download(url, archive, policy, max_bytes=max_bytes, on_progress=progress)
            if package.md5 and md5 != package.md5.lower():
                raise PackageError(f"{package.archive_name} from {url} has md5 {md5}, but OpenCompass publishes "
                                   f"{package.md5}: the download is damaged or the mirror holds another file; "
                                   "nothing was imported")
            report.imported.append(import_package(archive, data_cache, archive_name=package.archive_name,
                                                  expected_md5=package.md5, max_bytes=max_bytes,
                                                  on_progress=progress))
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)
    return report
