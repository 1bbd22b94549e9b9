"""Everything that knows OpenCompass' output layout, in one place.

<job>/outputs/<YYYYMMDD_HHMMSS>/
    configs/<ts>_<pid>.py          the full config OpenCompass resolved (all dataset abbrs)
    predictions/<model>/<ds>.json  finished inference; tmp_<ds>.jsonl grows before that (batch by batch;
                                   with the continuous pool, chunk by chunk in index order).
                                   With several workers a dataset is split into shards <ds>_0.json,
                                   <ds>_1.json, ... (and tmp_<ds>_<i>.jsonl), in dataset order.
    results/<model>/<ds>.json      scores, with per-sample `details`
    logs/{infer,eval}/<model>/<ds>.out   per-task logs (only when tasks run in separate processes)
    summary/summary_<ts>.csv
<job>/outputs/sample_metrics/<model>.jsonl   latency and tokens per answered prompt (sample_metrics.py)
<job>/outputs/prediction_cache_hits/<model>.jsonl   which predictions came from the cache (prediction_cache.py)
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

OUTPUTS = "outputs"
_RUN_DIR = re.compile(r"^\d{8}_\d{6}$")


def outputs_dir(job_dir: Path) -> Path:
    return job_dir / OUTPUTS


def latest_run_dir(job_dir: Path) -> Path | None:
    root = outputs_dir(job_dir)
    if not root.is_dir():
        return None
    runs = sorted(p for p in root.iterdir() if p.is_dir() and _RUN_DIR.match(p.name))
    return runs[-1] if runs else None


@dataclass(frozen=True)
class ResolvedDataset:
    abbr: str
    test_range: str | None
    builtin_index: int | None = None  # the spec's dataset index, for datasets of a built-in config


_BUILTIN_ALIAS = re.compile(r"^builtin_(\d+)_")  # how config_builder names imported built-in lists


def resolved_datasets(run_dir: Path) -> list[ResolvedDataset] | None:
    """Dataset abbrs from the config OpenCompass dumped at start, or None before it exists."""
    configs = sorted((run_dir / "configs").glob("*.py"))
    if not configs:
        return None
    try:
        tree = ast.parse(configs[0].read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    lists: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    lists[target.id] = node.value
    if "datasets" not in lists:
        return None
    builtin_of: dict[str, int] = {}
    for name, value in lists.items():
        match = _BUILTIN_ALIAS.match(name)
        if match:
            for element in getattr(value, "elts", []):
                abbr = _call_or_dict_fields(element).get("abbr")
                if isinstance(abbr, ast.Constant):
                    builtin_of[abbr.value] = int(match.group(1))
    found = []
    for element in getattr(lists["datasets"], "elts", []):
        fields = _call_or_dict_fields(element)
        abbr = fields.get("abbr")
        test_range = _call_or_dict_fields(fields.get("reader_cfg")).get("test_range")
        if isinstance(abbr, ast.Constant):
            found.append(
                ResolvedDataset(
                    abbr.value,
                    test_range.value if isinstance(test_range, ast.Constant) else None,
                    builtin_of.get(abbr.value),
                )
            )
    return found


def _call_or_dict_fields(node) -> dict:
    if isinstance(node, ast.Call):
        return {kw.arg: kw.value for kw in node.keywords if kw.arg}
    if isinstance(node, ast.Dict):
        return {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
    return {}


def range_limit(test_range: str | None) -> int | None:
    match = re.fullmatch(r"\[\s*0?\s*:\s*(\d+)\s*\]", test_range or "")
    return int(match.group(1)) if match else None


def predictions_file(run_dir: Path, model: str, dataset: str) -> Path:
    return run_dir / "predictions" / model / f"{dataset}.json"


def prediction_shards(run_dir: Path, model: str, dataset: str) -> list[Path]:
    """The finished prediction file(s) of a dataset: one file, or its shards in order."""
    single = predictions_file(run_dir, model, dataset)
    if single.exists():
        return [single]
    shards = []
    while (shard := run_dir / "predictions" / model / f"{dataset}_{len(shards)}.json").exists():
        shards.append(shard)
    return shards


def _partial_files(run_dir: Path, model: str, dataset: str) -> list[Path]:
    folder = run_dir / "predictions" / model
    single = folder / f"tmp_{dataset}.jsonl"
    if single.exists():
        return [single]
    shard = re.compile(rf"tmp_{re.escape(dataset)}_\d+\.jsonl")
    return sorted(p for p in folder.glob(f"tmp_{dataset}_*.jsonl") if shard.fullmatch(p.name))


def results_file(run_dir: Path, model: str, dataset: str) -> Path:
    return run_dir / "results" / model / f"{dataset}.json"


SAMPLE_METRICS = "sample_metrics"


def sample_metrics_dir(job_dir: Path) -> Path:
    """Where the models' per-prompt latency and token records go (sample_metrics.py): beside the run dirs in the
    OpenCompass work dir, since a model writes them without knowing which run dir OpenCompass chose (a resumed run
    appends)."""
    return outputs_dir(job_dir) / SAMPLE_METRICS


PREDICTION_CACHE_HITS = "prediction_cache_hits"


def prediction_cache_hits_dir(job_dir: Path) -> Path:
    """Where the models record which predictions came from the prediction cache (prediction_cache.py): beside the
    run dirs, as the sample metrics (a resumed run appends)."""
    return outputs_dir(job_dir) / PREDICTION_CACHE_HITS


def sample_metrics_file(run_dir: Path, model: str) -> Path:
    return run_dir.parent / SAMPLE_METRICS / f"{model}.jsonl"


def task_logs(run_dir: Path, model: str, dataset: str) -> list[Path]:
    return [run_dir / "logs" / stage / model / f"{dataset}.out" for stage in ("infer", "eval")]


def read_predictions(run_dir: Path, model: str, dataset: str) -> list[dict]:
    """Every finished prediction of a dataset in dataset order, shards concatenated."""
    rows: list[dict] = []
    for shard in prediction_shards(run_dir, model, dataset):
        data = read_json(shard)
        if isinstance(data, dict):
            rows += [data[k] for k in sorted(data, key=lambda k: int(k) if str(k).isdigit() else 0)]
    return rows


def predictions_done(run_dir: Path, model: str, dataset: str) -> int | None:
    """How many samples have a prediction (None if inference has not started)."""
    finished = prediction_shards(run_dir, model, dataset)
    partial = _partial_files(run_dir, model, dataset)
    if not finished and not partial:
        return None
    done = 0
    for shard in finished:
        data = read_json(shard)
        done += len(data) if isinstance(data, dict) else 0
    finished_names = {shard.stem for shard in finished}
    for tmp in partial:
        if tmp.stem.removeprefix("tmp_") in finished_names:
            continue  # OpenCompass removes the tmp file right after writing the final one
        try:
            with open(tmp, "rb") as handle:
                done += sum(1 for line in handle if line.strip())
        except OSError:
            continue
    return done


def inference_finished(run_dir: Path, model: str, dataset: str) -> bool:
    return bool(prediction_shards(run_dir, model, dataset)) and not _partial_files(run_dir, model, dataset)


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def summary_exists(run_dir: Path) -> bool:
    return any((run_dir / "summary").glob("summary_*.csv"))
