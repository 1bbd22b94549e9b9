"""What a finished (or running) evaluation left behind: logs, per-sample rows, exports."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from aieval_engine import workdir
from aieval_engine.results import iter_samples
from aieval_engine.spec import SpecError, parse_spec

from ..config import Settings
from ..models import Evaluation
from ..schemas.api import SampleRead
from ..storage import Storage, StorageError
from . import provenance, speed
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


@dataclass(frozen=True)
class _RunFiles:
    """Where an evaluation's outputs are stored: plain values, usable after the request's session has closed
    (a streamed export reads them while the response is sent)."""

    evaluation_id: int
    run_dir_name: str


def _pair_files(settings: Settings, storage: Storage, run: _RunFiles, model_abbr: str, dataset_abbr: str) -> Path:
    """A local run dir holding the predictions and results of one pair (downloaded from S3 if needed)."""
    root = PurePosixPath(artifacts_prefix(run.evaluation_id)) / "outputs" / run.run_dir_name
    local_root = Path("/")
    for file_of in (workdir.predictions_file, workdir.results_file):
        relative = file_of(Path("."), model_abbr, dataset_abbr).as_posix()
        key = f"{root}/{relative}"
        if not storage.exists(key):
            continue
        local = storage.local_copy(key, settings.cache_dir)
        local_root = Path(str(local)[: -len(relative) - 1])
    # The model's latency and token records lie beside the run dirs (workdir.sample_metrics_file), where
    # iter_samples looks for them next to the local copy.
    beside = workdir.sample_metrics_file(PurePosixPath(run.run_dir_name), model_abbr).as_posix()
    if storage.exists(f"{root.parent}/{beside}"):
        storage.local_copy(f"{root.parent}/{beside}", settings.cache_dir)
    return local_root


def _chosen_pairs(evaluation: Evaluation, model: str | None, dataset: str | None) -> list[tuple[dict, str | None]]:
    """The evaluation's (model, dataset) pairs a samples request names (by display name or abbr), each with its
    scorer."""
    if not evaluation.artifacts_stored or not evaluation.run_dir_name:
        raise NotFound(f"evaluation {evaluation.id} has no samples yet ({evaluation.status})")
    pairs = evaluation.pairs or []
    chosen = [p for p in pairs if (model is None or model in (p["model"], p["model_abbr"]))
              and (dataset is None or dataset in (p["dataset"], p["dataset_abbr"]))]
    if not chosen:
        options = "; ".join(f"{p['model']} × {p['dataset']}" for p in pairs)
        raise Invalid(f"no model × dataset pair matches (available: {options or 'none'})")
    return [(pair, _scorer_of(evaluation, pair)) for pair in chosen]


def _scorer_of(evaluation: Evaluation, pair: dict) -> str | None:
    """What judged the pair's samples: the scorer its scores name (services/provenance.py decides it when a run's
    scores are written); for scores stored before that, the scorer the run's manifest gave an uploaded file."""
    for score in evaluation.scores:
        if (score.model_abbr, score.dataset_abbr) == (pair["model_abbr"], pair["dataset_abbr"]) and score.scorer:
            return score.scorer
    try:
        spec = parse_spec((evaluation.manifest or {}).get("spec"))
    except SpecError:
        return None
    return provenance.scorer_of(spec, pair.get("dataset_index"), None)


def _pair_samples(settings: Settings, storage: Storage, run: _RunFiles, pair: dict,
                  scorer: str | None) -> Iterator[SampleRead]:
    """The samples of one pair in dataset order, numbered from 1."""
    run_dir = _pair_files(settings, storage, run, pair["model_abbr"], pair["dataset_abbr"])
    for row in iter_samples(run_dir, pair["model_abbr"], pair["dataset_abbr"]):
        yield SampleRead(model=pair["model"], dataset=pair["dataset"], **{**asdict(row), "index": row.index + 1},
                         scorer=scorer)


_SEARCHED = {"prompt", "prediction", "gold", "extracted"}  # what a sample search looks in


def samples(settings: Settings, storage: Storage, evaluation: Evaluation, *, model: str | None, dataset: str | None,
            correct: bool | None, q: str | None, page: int, page_size: int) -> tuple[list[SampleRead], int]:
    chosen = _chosen_pairs(evaluation, model, dataset)
    run = _RunFiles(evaluation.id, evaluation.run_dir_name)
    needle = q.lower() if q else None
    first, end = (page - 1) * page_size, page * page_size
    rows: list[SampleRead] = []
    total = 0
    for pair, scorer in chosen:
        for row in _pair_samples(settings, storage, run, pair, scorer):
            if correct is not None and row.correct is not correct:
                continue
            if needle and needle not in json.dumps(row.model_dump(include=_SEARCHED), ensure_ascii=False).lower():
                continue
            if first <= total < end:  # only the page is kept, however many samples match
                rows.append(row)
            total += 1
    return rows, total


# ---- per-sample export ----------------------------------------------------------------------------
# One row per sample. The judge's verdict and rationale are empty unless an LLM judge scored the sample; latency and
# tokens unless an endpoint model answered it (not recorded for local models).
SAMPLE_COLUMNS = ("model", "dataset", "index", "prompt", "prediction", "extracted", "gold", "correct", "scorer",
                  "judge_verdict", "judge_rationale", *speed.SAMPLE_SPEED_COLUMNS)
SampleFormat = Literal["csv", "jsonl"]
SAMPLE_MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def _as_text(value: Any) -> str:
    """A sample value as one spreadsheet cell: chat turns as "ROLE: text" lines (as the sample browser shows them),
    other structures as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(turn, dict) and "prompt" in turn for turn in value):
        return "\n".join(f"{turn.get('role', '')}: {turn['prompt']}" for turn in value)
    return json.dumps(value, ensure_ascii=False)


_NUMBER_COLUMNS = frozenset({"index", *speed.SAMPLE_SPEED_COLUMNS})


def _csv_value(column: str, value: Any) -> object:
    """One cell; `column` may carry a side's prefix (a_correct, b_latency_s in a comparison's export)."""
    column = column.removeprefix("a_").removeprefix("b_")
    if column in _NUMBER_COLUMNS:
        return "" if value is None else value  # numbers stay numbers; empty: not recorded
    if column == "correct":  # as in the JSON lines: true, false, or empty when the scorer gave no verdict
        return "" if value is None else str(value).lower()
    return _as_text(value)


def _csv_line(cells: list[object]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow([_csv_cell(cell) for cell in cells])
    return out.getvalue().encode("utf-8")


def sample_export(settings: Settings, storage: Storage, evaluation: Evaluation, export_format: SampleFormat, *,
                  model: str | None, dataset: str | None, correct: bool | None) -> Iterator[bytes]:
    """The chosen samples as CSV or JSON lines, produced row by row while the response is sent (only one pair's
    files are read at a time). Nothing is known to be wrong once this returns: it checks before streaming."""
    chosen = _chosen_pairs(evaluation, model, dataset)
    run = _RunFiles(evaluation.id, evaluation.run_dir_name)

    def rows() -> Iterator[SampleRead]:
        for pair, scorer in chosen:
            for row in _pair_samples(settings, storage, run, pair, scorer):
                if correct is None or row.correct is correct:
                    yield row

    return export_rows((row.model_dump(include=set(SAMPLE_COLUMNS)) for row in rows()), SAMPLE_COLUMNS, export_format)


def export_rows(rows: Iterator[dict[str, Any]], columns: Sequence[str], export_format: SampleFormat) -> Iterator[bytes]:
    """Rows of samples as CSV (spreadsheet-safe cells) or JSON lines, in `columns`' order, produced while sent."""

    def as_csv() -> Iterator[bytes]:
        # A byte order mark: spreadsheet programs then read the UTF-8 (Chinese text) as UTF-8.
        yield "\ufeff".encode() + _csv_line(list(columns))
        for values in rows:
            yield _csv_line([_csv_value(column, values[column]) for column in columns])

    def as_jsonl() -> Iterator[bytes]:
        for values in rows:
            yield (json.dumps({column: values[column] for column in columns}, ensure_ascii=False) + "\n").encode()

    return _in_chunks(as_csv() if export_format == "csv" else as_jsonl())


def _in_chunks(lines: Iterator[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """Lines gathered into pieces of about `size` bytes: the server sends each piece from a worker thread, and one
    thread hop per sample would cost more than writing the sample."""
    piece: list[bytes] = []
    length = 0
    for line in lines:
        piece.append(line)
        length += len(line)
        if length >= size:
            yield b"".join(piece)
            piece, length = [], 0
    if piece:
        yield b"".join(piece)


def sample_export_filename(evaluation_id: int, export_format: SampleFormat) -> str:
    return f"evaluation-{evaluation_id}-samples.{export_format}"


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
    scores = score_rows(evaluation)
    parts = fingerprint_columns(scores)
    writer.writerow(["evaluation_id", "model", "dataset", "metric", "value", *SCORE_PROVENANCE, "fingerprint",
                     *parts, *speed.SPEED_COLUMNS])
    for score in scores:
        row = [evaluation.id, score["model"], score["dataset"], score["metric"], score["value"],
               *(score[field] for field in SCORE_PROVENANCE),  # None (not known) is an empty cell
               score.get("fingerprint"), *(_part_text((score.get("fingerprint_parts") or {}).get(p)) for p in parts),
               *speed.speed_cells(score.get("speed"))]
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


# The columns that say what a score rests on (ScoreRead), after the value in the CSV export.
SCORE_PROVENANCE = ("n", "correct", "scorer", "ci_low", "ci_high")
# Then the fingerprint and its parts (services/provenance.py): what the score's comparability rests on. The scorer
# has its column above; parts recorded later (a judge) follow these, named as in the API's fingerprint_parts.
FINGERPRINT_PARTS = ("data", "config", "prompt", "limit", "max_out_len", "opencompass")


def fingerprint_columns(scores: list[dict[str, Any]]) -> list[str]:
    """The fingerprint parts an export lists: the known ones always, any other part a score records after them."""
    recorded = {key for score in scores for key in (score.get("fingerprint_parts") or {})}
    return [*FINGERPRINT_PARTS, *sorted(recorded - set(FINGERPRINT_PARTS) - {"scorer"})]


def _part_text(value: Any) -> object:
    """A fingerprint part as one cell: None (not set or not known) empty, structures as JSON."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else value


def score_text(score: dict[str, Any]) -> str:
    """A score as a person reads it in a report: `62.5 % ± 27.9, n = 8, contains` (± is half the interval; the
    unit is "%" only when the value is known to be the share right), as much of it as is known."""
    value, n, correct = score["value"], score.get("n"), score.get("correct")
    share = correct is not None and bool(n) and math.isclose(value, 100 * correct / n, rel_tol=1e-6, abs_tol=1e-6)
    text = f"{value:.4g}" + (" %" if share else "")
    if score.get("ci_low") is not None and score.get("ci_high") is not None:
        text += f" ± {(score['ci_high'] - score['ci_low']) / 2:.1f}"
    details = ([f"n = {n}"] if n is not None else []) + ([_md(score["scorer"])] if score.get("scorer") else [])
    return ", ".join([text, *details])


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
    by_cell = {(s["model"], s["dataset"], s["metric"]): s for s in info.scores}
    if rows:
        lines.append("| dataset | metric | " + " | ".join(_md(m) for m in models) + " |")
        lines.append("|---|---|" + "---:|" * len(models))
        for dataset, metric in rows:
            cells = [by_cell.get((m, dataset, metric)) for m in models]
            lines.append(f"| {_md(dataset)} | {_md(metric)} | "
                         + " | ".join("-" if s is None else score_text(s) for s in cells) + " |")
        if any(s.get("ci_low") is not None for s in info.scores):
            lines += ["", "± is half the width of the 95 % confidence interval (Wilson for accuracy, bootstrap "
                          "otherwise; the CSV and JSON exports give both ends); n is the number of samples scored."]
        lines += ["", "## Comparability", "",
                  "Two scores are put side by side only when their fingerprints match: the hash of the settings "
                  "below (data: content hash; prompt: hash of the dataset config OpenCompass resolved; limit and "
                  "max_out_len empty: every sample, the dataset's own output length).", ""]
        parts = fingerprint_columns(info.scores)
        lines.append("| model | dataset | fingerprint | " + " | ".join(_md(p) for p in parts) + " |")
        lines.append("|---|---|---|" + "---|" * len(parts))
        for score in dict.fromkeys((s["model"], s["dataset"]) for s in info.scores):
            first = next(s for s in info.scores if (s["model"], s["dataset"]) == score)
            recorded = first.get("fingerprint_parts") or {}
            # _md: a part may carry user text (a judge model's name); the rest are hashes, numbers, config names.
            cells = ["" if recorded.get(p) is None else _md(_part_text(recorded[p])) for p in parts]
            fingerprint = _md(first["fingerprint"]) if first.get("fingerprint") else "not recorded"
            lines.append(f"| {_md(score[0])} | {_md(score[1])} | {fingerprint} | " + " | ".join(cells) + " |")
        lines += speed.markdown_lines(info.scores, _md)
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
