"""What a finished (or running) evaluation left behind: logs, per-sample rows, exports."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from aieval_engine import workdir
from aieval_engine.results import iter_samples

from ..config import Settings
from ..models import Evaluation
from ..schemas.api import SampleRead
from ..storage import Storage, StorageError
from .accounts import Caller
from .errors import Invalid, NotFound
from .evaluations import artifacts_prefix, detail, score_rows

RUN_LOG = "run.log"


def log_text(evaluation: Evaluation, storage: Storage, tail_lines: int | None) -> str:
    """The run log: from storage once the run ended, else the recent lines the worker keeps in the DB."""
    text = None
    if evaluation.artifacts_stored:
        try:
            with storage.open(f"{artifacts_prefix(evaluation.id)}/{RUN_LOG}") as handle:
                text = handle.read().decode("utf-8", errors="replace")
        except StorageError:
            text = None
    if text is None:
        text = evaluation.log_tail or ""
    if tail_lines is not None:
        text = "\n".join(text.splitlines()[-tail_lines:])
    return text


def _pair_files(settings: Settings, storage: Storage, evaluation: Evaluation, model_abbr: str, dataset_abbr: str) -> Path:
    """A local run dir holding the predictions and results of one pair (downloaded from S3 if needed)."""
    root = PurePosixPath(artifacts_prefix(evaluation.id)) / "outputs" / evaluation.run_dir_name
    local_root = Path("/")
    for file_of in (workdir.predictions_file, workdir.results_file):
        relative = file_of(Path("."), model_abbr, dataset_abbr).as_posix()
        key = f"{root}/{relative}"
        if not storage.exists(key):
            continue
        local = storage.local_copy(key, settings.cache_dir)
        local_root = Path(str(local)[: -len(relative) - 1])
    return local_root


def samples(settings: Settings, storage: Storage, evaluation: Evaluation, *, model: str | None, dataset: str | None,
            correct: bool | None, q: str | None, page: int, page_size: int) -> tuple[list[SampleRead], int]:
    if not evaluation.artifacts_stored or not evaluation.run_dir_name:
        raise NotFound(f"evaluation {evaluation.id} has no samples yet ({evaluation.status})")
    pairs = evaluation.pairs or []
    chosen = [p for p in pairs if (model is None or model in (p["model"], p["model_abbr"]))
              and (dataset is None or dataset in (p["dataset"], p["dataset_abbr"]))]
    if not chosen:
        options = "; ".join(f"{p['model']} × {p['dataset']}" for p in pairs)
        raise Invalid(f"no model × dataset pair matches (available: {options or 'none'})")
    needle = q.lower() if q else None
    rows: list[SampleRead] = []
    for pair in chosen:
        run_dir = _pair_files(settings, storage, evaluation, pair["model_abbr"], pair["dataset_abbr"])
        for row in iter_samples(run_dir, pair["model_abbr"], pair["dataset_abbr"]):
            if correct is not None and row.correct is not correct:
                continue
            if needle and needle not in json.dumps(asdict(row), ensure_ascii=False).lower():
                continue
            rows.append(SampleRead(model=pair["model"], dataset=pair["dataset"], **asdict(row)))
    return rows[(page - 1) * page_size : page * page_size], len(rows)


# ---- exports ------------------------------------------------------------------------------------
# A spreadsheet reads a cell starting with one of these as a formula (or, tab and CR, as the start of one after
# import); OWASP's advice is to make such text cells literal with a leading single quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula, made literal. Numbers stay numbers (-1.5 is no formula)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def export_csv(evaluation: Evaluation, caller: Caller) -> str:  # noqa: ARG001 (one signature for every format)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["evaluation_id", "model", "dataset", "metric", "value"])
    for score in score_rows(evaluation):
        row = [evaluation.id, score["model"], score["dataset"], score["metric"], score["value"]]
        writer.writerow([_csv_cell(cell) for cell in row])
    return out.getvalue()


def export_json(evaluation: Evaluation, caller: Caller) -> str:
    return detail(evaluation, caller).model_dump_json(indent=2)


# Characters that would make a name a link, an image (fetched from anywhere when the report is rendered),
# emphasis, code or a new table cell.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]|])")


def _md(value: object) -> str:
    """User text (names, errors) as literal text on one line of a Markdown report: HTML escaped, Markdown
    syntax backslash-escaped."""
    text = _MARKDOWN_SYNTAX.sub(r"\\\1", html.escape(str(value), quote=False))
    return " ".join(text.splitlines())


def _backticks_for(text: str, at_least: int) -> str:
    """A run of backticks longer than any in `text`: as the fence of a code block or span, `text` cannot end it."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(at_least, longest + 1)


def _code_span(text: str) -> str:
    fence = _backticks_for(text, 1)
    return f"{fence} {text} {fence}" if text.startswith("`") or text.endswith("`") else f"{fence}{text}{fence}"


def export_markdown(evaluation: Evaluation, caller: Caller) -> str:
    info = detail(evaluation, caller)
    lines = [f"# Evaluation {evaluation.id}: {_md(evaluation.name)}", ""]
    lines += [f"- Status: **{info.status}**", f"- Created: {info.created_at.isoformat()}"]
    if info.duration_s is not None:
        lines.append(f"- Duration: {info.duration_s:.1f} s")
    lines.append(f"- Models: {', '.join(_md(m['name']) for m in info.models)}")
    lines.append(f"- Datasets: {', '.join(_md(d['name']) for d in info.datasets)}")
    lines.append(f"- Parameters: {_code_span(json.dumps(info.params, sort_keys=True))}")
    if info.manifest:
        lines.append(f"- OpenCompass {_md(info.manifest.get('opencompass'))}, "
                     f"config sha256 {_code_span(str(info.manifest.get('config_sha256')))}")
    lines += ["", "## Scores", ""]
    models = list(dict.fromkeys(s["model"] for s in info.scores))
    rows = list(dict.fromkeys((s["dataset"], s["metric"]) for s in info.scores))
    values = {(s["model"], s["dataset"], s["metric"]): s["value"] for s in info.scores}
    if rows:
        lines.append("| dataset | metric | " + " | ".join(_md(m) for m in models) + " |")
        lines.append("|---|---|" + "---:|" * len(models))
        for dataset, metric in rows:
            cells = [values.get((m, dataset, metric)) for m in models]
            lines.append(f"| {_md(dataset)} | {_md(metric)} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    else:
        lines.append("No scores.")
    if info.error:
        lines += ["", "## Error", "", _md(info.error)]
        if info.log_excerpt:
            fence = _backticks_for(info.log_excerpt, 3)
            lines += ["", fence, info.log_excerpt, fence]
    return "\n".join(lines) + "\n"


def export_zip(settings: Settings, storage: Storage, evaluation: Evaluation, caller: Caller) -> Path:
    """A zip of every stored artifact plus the JSON/CSV/Markdown exports, in a temporary file."""
    prefix = artifacts_prefix(evaluation.id)
    keys = storage.list(prefix) if evaluation.artifacts_stored else []
    handle = tempfile.NamedTemporaryFile(prefix=f"evaluation-{evaluation.id}-", suffix=".zip", delete=False)
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("evaluation.json", export_json(evaluation, caller))
        archive.writestr("scores.csv", export_csv(evaluation, caller))
        archive.writestr("report.md", export_markdown(evaluation, caller))
        for key in keys:
            with storage.open(key) as source, archive.open(f"artifacts/{key[len(prefix) + 1:]}", "w") as target:
                for chunk in _chunks(source):
                    target.write(chunk)
    handle.close()
    return Path(handle.name)


def _chunks(source) -> Iterator[bytes]:
    while chunk := source.read(1 << 20):
        yield chunk
