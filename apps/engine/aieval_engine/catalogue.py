"""OpenCompass' built-in dataset configs and the data files they need, read without importing OpenCompass.

Importing `opencompass.datasets` takes ~8 s, so everything here reads the shipped config files as
source (ast) instead: listing the catalogue or checking data presence stays instant.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path


class UnknownDatasetError(ValueError):
    pass


@functools.cache
def opencompass_root() -> Path:
    spec = importlib.util.find_spec("opencompass")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("opencompass is not installed: run `make install`")
    return Path(list(spec.submodule_search_locations)[0])


def opencompass_version() -> str:
    from importlib.metadata import version

    return version("opencompass")


@dataclass(frozen=True)
class BuiltinDataset:
    name: str  # e.g. gsm8k_gen
    folder: str  # e.g. gsm8k (path below configs/datasets, '/'-separated)
    file: Path
    module: str  # e.g. opencompass.configs.datasets.gsm8k.gsm8k_gen
    dataset_vars: tuple[str, ...]  # names in the module holding lists of dataset dicts
    data_paths: tuple[str, ...] = field(default=())  # paths as written in the configs (`path=`)
    abbrs: tuple[str, ...] = field(default=())  # dataset abbreviations written as constants (`abbr=`)

    @property
    def qualified_name(self) -> str:
        return f"{self.folder}/{self.name}"


def _is_identifier_path(parts: list[str]) -> bool:
    return all(part.isidentifier() for part in parts)


@functools.cache
def _config_index() -> dict[str, list[Path]]:
    root = opencompass_root() / "configs" / "datasets"
    index: dict[str, list[Path]] = {}
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root)
        if file.name == "__init__.py" or not _is_identifier_path([*rel.parts[:-1], file.stem]):
            continue
        index.setdefault(file.stem, []).append(file)
    return index


def _module_of(file: Path) -> str:
    rel = file.relative_to(opencompass_root().parent).with_suffix("")
    return ".".join(rel.parts)


def _imported_module(node: ast.ImportFrom, current: Path) -> Path | None:
    """The config file a `read_base()` import refers to, if it is one of OpenCompass' configs."""
    if node.level:
        base = current.parent
        for _ in range(node.level - 1):
            base = base.parent
        target = base.joinpath(*(node.module or "").split("."))
    elif node.module and node.module.startswith("opencompass.configs."):
        target = opencompass_root().parent.joinpath(*node.module.split("."))
    else:
        return None
    file = target.with_suffix(".py")
    return file if file.is_file() else None


def _constant_keyword_values(tree: ast.AST, key: str) -> list:
    """Constant values given to `key` in the file, as `key=...` arguments or `'key': ...` dict entries."""
    values = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == key and isinstance(node.value, ast.Constant):
            values.append(node.value.value)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == key and isinstance(v, ast.Constant):
                    values.append(v.value)
    return [v for v in values if isinstance(v, str)]


@functools.cache
def _scan_config(file: Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(names ending in `_datasets` the file defines, data paths and constant abbrs of it and its bases)."""
    with warnings.catch_warnings():  # OpenCompass' prompts hold escapes like "\d": its warnings, not ours
        warnings.simplefilter("ignore")
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    names: list[str] = []
    paths: list[str] = []
    abbrs: list[str] = []

    def top_level(body):
        for node in body:
            if isinstance(node, ast.With):
                yield from top_level(node.body)
            else:
                yield node

    for node in top_level(tree.body):
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.ImportFrom):
            names += [alias.asname or alias.name for alias in node.names]
            base = _imported_module(node, file)
            if base is not None:
                _, base_paths, base_abbrs = _scan_config(base)
                paths += base_paths
                abbrs += base_abbrs
    paths += _constant_keyword_values(tree, "path")
    abbrs += _constant_keyword_values(tree, "abbr")
    dataset_vars = tuple(dict.fromkeys(n for n in names if n.endswith("_datasets")))
    return dataset_vars, tuple(dict.fromkeys(paths)), tuple(dict.fromkeys(abbrs))


def _describe(file: Path) -> BuiltinDataset:
    root = opencompass_root() / "configs" / "datasets"
    dataset_vars, data_paths, abbrs = _scan_config(file)
    return BuiltinDataset(
        name=file.stem,
        folder=file.parent.relative_to(root).as_posix(),
        file=file,
        module=_module_of(file),
        dataset_vars=dataset_vars,
        data_paths=data_paths,
        abbrs=abbrs,
    )


def list_builtin_names() -> list[str]:
    return sorted(_config_index())


def resolve_builtin(config: str) -> BuiltinDataset:
    """Find the one shipped config a name refers to, or say clearly why not."""
    folder, _, name = config.rpartition("/")
    candidates = _config_index().get(name, [])
    if folder:
        candidates = [f for f in candidates if f.parent.as_posix().endswith("/" + folder)]
    if not candidates:
        raise UnknownDatasetError(
            f"no OpenCompass dataset config is named {config!r}; "
            "see `aieval datasets` for the names this installation ships"
        )
    if len(candidates) > 1:
        options = ", ".join(sorted(_describe(f).qualified_name for f in candidates))
        raise UnknownDatasetError(f"{config!r} is ambiguous; use one of: {options}")
    described = _describe(candidates[0])
    if not described.dataset_vars:
        raise UnknownDatasetError(f"the config {config!r} defines no '*_datasets' list to evaluate")
    return described


@functools.cache
def _datasets_info_table(name: str) -> dict[str, dict]:
    """A table of OpenCompass' `utils/datasets_info.py` (DATASETS_MAPPING, DATASETS_URL), read as source: the
    dependency's own data, never copied into this project, without importing OpenCompass (~8 s)."""
    source = (opencompass_root() / "utils" / "datasets_info.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _datasets_mapping() -> dict[str, dict]:
    return _datasets_info_table("DATASETS_MAPPING")


def local_data_path(config_path: str) -> str | None:
    """Where OpenCompass will look, relative to COMPASS_DATA_CACHE, for a config's `path=`; None when absolute."""
    if os.path.isabs(config_path):
        return None
    entry = _datasets_mapping().get(config_path)
    local = entry["local"] if entry and entry.get("local") else config_path
    return os.path.normpath(local)


def _target(config_path: str, data_cache: Path) -> Path:
    local = local_data_path(config_path)
    return Path(config_path) if local is None else data_cache / local


def missing_data(dataset: BuiltinDataset, data_cache: Path) -> list[Path]:
    """The data files or folders a built-in dataset needs that are not under `data_cache`."""
    missing = []
    for config_path in dataset.data_paths:
        target = _target(config_path, data_cache)
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            missing.append(target)
    return missing


def data_hint(dataset: BuiltinDataset, missing: list[Path], data_cache: Path) -> str:
    paths = ", ".join(str(p) for p in missing)
    return (
        f"the data of built-in dataset {dataset.name!r} is not present: missing {paths}. "
        f"{how_to_get(packages_for(dataset), dataset.folder)} "
        f"(OpenCompass reads its data from COMPASS_DATA_CACHE={data_cache}/data/...)."
    )


# ---- data packages and readiness ------------------------------------------------------------------
# OpenCompass downloads a missing dataset as one archive per dataset (DATASETS_URL: url + md5), unpacked into
# `<COMPASS_DATA_CACHE>/data/`; its release page also offers bundles (OpenCompassData-core-*.zip) holding
# `data/<name>/...` for many datasets at once. Both are imported by datapackages.import_package.
INTERNAL_URLS_FILE = ".OPENCOMPASS_INTERNAL_DATA_URL.json"


@dataclass(frozen=True)
class DataPackage:
    """One archive of OpenCompass' download table: where it is published and its published md5."""

    key: str  # the DATASETS_URL key, e.g. "/gsm8k/"
    url: str
    md5: str | None

    @property
    def archive_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def data_packages() -> dict[str, DataPackage]:
    """OpenCompass' DATASETS_URL, updated as its `download_dataset` does by `~/.OPENCOMPASS_INTERNAL_DATA_URL.json`
    (a site's own archives: same keys, its own url and md5)."""
    internal = Path.home() / INTERNAL_URLS_FILE
    try:
        stamp = internal.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _data_packages(internal, stamp)


@functools.lru_cache(maxsize=8)
def _data_packages(internal: Path, stamp: int | None) -> dict[str, DataPackage]:
    table = dict(_datasets_info_table("DATASETS_URL"))
    if stamp is not None:
        import json

        try:
            table.update(json.loads(internal.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass  # as OpenCompass does: a broken file is ignored
    return {key: DataPackage(key, str(entry["url"]), entry.get("md5"))
            for key, entry in table.items() if isinstance(entry, dict) and entry.get("url")}


def package_for_path(config_path: str, table: dict[str, DataPackage] | None = None) -> DataPackage | None:
    """The archive OpenCompass would download for a config's `path=`, by its own rule (download_dataset): the last
    key of DATASETS_URL that occurs in the joined local path. None: OpenCompass publishes no archive for it."""
    if os.path.isabs(config_path):
        return None
    entry = _datasets_mapping().get(config_path)
    local = entry["local"] if entry and entry.get("local") else config_path
    joined = os.path.join(os.sep, local)  # OpenCompass joins the cache dir; a neutral root matches the same keys
    found = None
    for key, package in (table if table is not None else data_packages()).items():
        if key in joined:
            found = package
    return found


def packages_for(dataset: BuiltinDataset, paths: list[str] | None = None,
                 table: dict[str, DataPackage] | None = None) -> list[DataPackage]:
    """The archives that bring a config's data (or the given config paths of it), in order, each once."""
    table = table if table is not None else data_packages()
    found = {}
    for config_path in dataset.data_paths if paths is None else paths:
        package = package_for_path(config_path, table)
        if package is not None:
            found.setdefault(package.url, package)
    return list(found.values())


def package_by_archive_name(filename: str) -> DataPackage | None:
    """The published archive a file is a copy of, judged by its name (gsm8k.zip), for checking its md5."""
    name = Path(filename).name
    for package in data_packages().values():
        if package.archive_name == name:
            return package
    return None


def how_to_get(packages: list[DataPackage], benchmark: str) -> str:
    """The sentence a person needs: which archive to import, or which command downloads it."""
    if not packages:
        return ("OpenCompass publishes no archive for this data: copy its files under COMPASS_DATA_CACHE/data/ "
                "(`aieval datasets import FOLDER`).")
    names = ", ".join(p.archive_name for p in packages)
    return (f"Import the data package {names} (or an OpenCompassData-core-*.zip holding data/...) with "
            f"`aieval datasets import ARCHIVE` or the Datasets page, or, where this machine may download, run "
            f"`aieval datasets fetch {benchmark}`.")


def builtin_configs() -> list[BuiltinDataset]:
    """Every shipped config that defines datasets, named as `resolve_builtin` accepts it: the file name, or
    `folder/name` when several folders have a file of that name."""
    return list(_builtin_configs())


@functools.cache  # the shipped files do not change while a process runs
def _builtin_configs() -> tuple[BuiltinDataset, ...]:
    configs = []
    for files in _config_index().values():
        for file in files:
            described = _describe(file)
            if not described.dataset_vars:
                continue
            if len(files) > 1:
                described = dataclasses.replace(described, name=described.qualified_name)
            configs.append(described)
    return tuple(sorted(configs, key=lambda c: (c.folder, c.name)))


@dataclass(frozen=True)
class ConfigReadiness:
    config: BuiltinDataset
    missing: tuple[Path, ...]
    packages: tuple[DataPackage, ...]  # the archives that bring the missing data
    unpublished: tuple[str, ...]  # missing config paths OpenCompass publishes no archive for

    @property
    def ready(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class BenchmarkReadiness:
    """A benchmark: the configs of one folder of OpenCompass' configs/datasets (gsm8k: gsm8k_gen, gsm8k_0shot...)."""

    name: str
    configs: tuple[ConfigReadiness, ...]

    @property
    def ready_configs(self) -> int:
        return sum(c.ready for c in self.configs)

    @property
    def ready(self) -> bool:
        return self.ready_configs == len(self.configs)

    @property
    def packages(self) -> list[DataPackage]:
        found: dict[str, DataPackage] = {}
        for config in self.configs:
            for package in config.packages:
                found.setdefault(package.url, package)
        return list(found.values())

    def how_to_get(self) -> str:
        return "" if self.ready else how_to_get(self.packages, self.name)


def config_readiness(config: BuiltinDataset, data_cache: Path,
                     table: dict[str, DataPackage] | None = None) -> ConfigReadiness:
    table = table if table is not None else data_packages()
    missing = missing_data(config, data_cache)
    missing_paths = [p for p in config.data_paths if _target(p, data_cache) in missing]
    packages = packages_for(config, missing_paths, table)
    unpublished = tuple(p for p in missing_paths if package_for_path(p, table) is None)
    return ConfigReadiness(config, tuple(missing), tuple(packages), unpublished)


def benchmarks(data_cache: Path) -> list[BenchmarkReadiness]:
    """Every benchmark with the readiness of each of its configs under `data_cache`, by name."""
    grouped: dict[str, list[ConfigReadiness]] = {}
    table = data_packages()
    for config in builtin_configs():
        grouped.setdefault(config.folder, []).append(config_readiness(config, data_cache, table))
    return [BenchmarkReadiness(name, tuple(configs)) for name, configs in sorted(grouped.items())]


def configs_named(name: str) -> list[BuiltinDataset]:
    """The configs a name means: a benchmark (a config folder: all its configs) or one config."""
    name = name.strip().strip("/").removesuffix(".py")
    in_folder = [c for c in builtin_configs() if c.folder == name]
    return in_folder or [resolve_builtin(name)]
