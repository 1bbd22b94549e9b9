"""OpenCompass' built-in dataset configs and the data files they need, read without importing OpenCompass.

Importing `opencompass.datasets` takes ~8 s, so everything here reads the shipped config files as
source (ast) instead: listing the catalogue or checking data presence stays instant.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
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
def _datasets_mapping() -> dict[str, dict]:
    source = (opencompass_root() / "utils" / "datasets_info.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DATASETS_MAPPING" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return {}


def local_data_path(config_path: str) -> str | None:
    """Where OpenCompass will look, relative to COMPASS_DATA_CACHE, for a config's `path=`; None when absolute."""
    if os.path.isabs(config_path):
        return None
    entry = _datasets_mapping().get(config_path)
    local = entry["local"] if entry and entry.get("local") else config_path
    return os.path.normpath(local)


def missing_data(dataset: BuiltinDataset, data_cache: Path) -> list[Path]:
    """The data files or folders a built-in dataset needs that are not under `data_cache`."""
    missing = []
    for config_path in dataset.data_paths:
        local = local_data_path(config_path)
        target = Path(config_path) if local is None else data_cache / local
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            missing.append(target)
    return missing


def data_hint(dataset: BuiltinDataset, missing: list[Path], data_cache: Path) -> str:
    paths = ", ".join(str(p) for p in missing)
    return (
        f"the data of built-in dataset {dataset.name!r} is not present: missing {paths}. "
        f"This machine cannot download it; copy the dataset's files there "
        f"(OpenCompass reads its data from COMPASS_DATA_CACHE={data_cache}/data/...)."
    )
