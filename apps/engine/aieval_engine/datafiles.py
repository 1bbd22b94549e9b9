"""Validation of users' own dataset files, row by row, before OpenCompass ever sees them.

OpenCompass' custom-dataset loader reads the first row to decide the columns and then trusts every other
row; a bad line deep in a file would otherwise fail minutes into a run with a bare traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

MAX_ROW_BYTES = 256 * 1024
MAX_ROWS = 200_000
MAX_REPORTED_PROBLEMS = 20
OPTION_LETTERS = string.ascii_uppercase


class DataFileError(ValueError):
    """A dataset file that cannot be used, with one readable line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class DataFileInfo:
    format: Literal["jsonl", "csv"]
    data_type: Literal["mcq", "qa"]
    columns: tuple[str, ...]
    options: tuple[str, ...]
    rows: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFileError(
            [f"line {line}: the file is not UTF-8 text (byte {exc.start}); save it as UTF-8 and upload again"]
        ) from None


def _jsonl_rows(text: str, problems: list[str]):
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if len(line.encode("utf-8")) > MAX_ROW_BYTES:
            problems.append(f"line {number}: the row is larger than {MAX_ROW_BYTES // 1024} KiB")
            continue
        if not line.strip():
            problems.append(f"line {number}: empty line; remove it (every line must be one JSON object)")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: must be a JSON object like {{\"question\": ..., \"answer\": ...}}")
            continue
        yield number, row


def _csv_rows(text: str, problems: list[str]):
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        problems.append(f"line 1: unreadable CSV header ({exc})")
        return
    header = [h.strip() for h in header]
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                problems.append(f"line {number}: empty row; remove it")
                continue
            if len(row) != len(header):
                problems.append(f"line {number}: has {len(row)} fields but the header has {len(header)}")
                continue
            if sum(len(cell.encode("utf-8")) for cell in row) > MAX_ROW_BYTES:
                problems.append(f"line {number}: the row is larger than {MAX_ROW_BYTES // 1024} KiB")
                continue
            yield number, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: unreadable CSV ({exc})")


def _options_of(columns: list[str]) -> tuple[str, ...]:
    options = []
    for letter in OPTION_LETTERS:
        if letter not in columns:
            break
        options.append(letter)
    return tuple(options)


def _check_columns(columns: list[str], declared: str | None, first_line: int) -> tuple[str, tuple[str, ...]]:
    problems = []
    for column in columns:
        if not column or "{" in column or "}" in column or len(column) > 100:
            problems.append(f"line {first_line}: column name {column!r} is not allowed")
    if "question" not in columns:
        problems.append(f"line {first_line}: a 'question' column is required")
    if "answer" not in columns:
        problems.append(f"line {first_line}: an 'answer' column is required (the reference answer)")
    options = _options_of(columns)
    data_type = declared or ("mcq" if len(options) >= 2 else "qa")
    if data_type == "mcq" and len(options) < 2:
        problems.append(
            f"line {first_line}: a multiple-choice file needs option columns A and B (and C, D, ... in order)"
        )
    if problems:
        raise DataFileError(problems)
    return data_type, options if data_type == "mcq" else ()


def _row_problem(number: int, row: dict, columns: list[str], options: tuple[str, ...]) -> str | None:
    if set(row) != set(columns):
        return f"line {number}: columns {sorted(row)} differ from the first row's {sorted(columns)}"
    for key, value in row.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return f"line {number}: '{key}' must be text or a number"
    answer = str(row["answer"]).strip()
    if not answer:
        return f"line {number}: 'answer' is empty"
    if options and answer not in options:
        return f"line {number}: 'answer' is {answer!r} but must be one of the options {', '.join(options)}"
    if not str(row["question"]).strip():
        return f"line {number}: 'question' is empty"
    return None


def _scan(path: Path, data_type: str | None, max_rows: int, sink: TextIO | None) -> DataFileInfo:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataFileError([f"{path.name}: only .jsonl and .csv files are supported"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFileError([f"cannot read {path}: {exc.strerror}"]) from None
    text = _decode(raw)
    problems: list[str] = []
    rows = _jsonl_rows(text, problems) if suffix == ".jsonl" else _csv_rows(text, problems)

    columns: list[str] | None = None
    options: tuple[str, ...] = ()
    count = 0
    for number, row in rows:
        if columns is None:
            columns = list(row)
            data_type, options = _check_columns(columns, data_type, number)
        count += 1
        if count > max_rows:
            raise DataFileError([f"the file has more than {max_rows} rows; split it into smaller files"])
        problem = _row_problem(number, row, columns, options)
        if problem:
            problems.append(problem)
        elif sink is not None and not problems:
            sink.write(json.dumps({key: row[key] for key in columns}, ensure_ascii=False) + "\n")
        if len(problems) >= MAX_REPORTED_PROBLEMS:
            break
    if problems:
        raise DataFileError(problems[:MAX_REPORTED_PROBLEMS])
    if columns is None or count == 0:
        raise DataFileError([f"{path.name}: the file has no data rows"])
    return DataFileInfo(
        format="jsonl" if suffix == ".jsonl" else "csv",
        data_type=data_type,
        columns=tuple(columns),
        options=options,
        rows=count,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def validate_data_file(
    path: str | Path, data_type: Literal["mcq", "qa"] | None = None, max_rows: int = MAX_ROWS
) -> DataFileInfo:
    """Check every row of a jsonl/csv dataset; raise DataFileError listing the first problems by line."""
    return _scan(Path(path), data_type, max_rows, sink=None)


def write_canonical_jsonl(
    path: str | Path, target: str | Path, data_type: Literal["mcq", "qa"] | None = None, max_rows: int = MAX_ROWS
) -> DataFileInfo:
    """Validate `path` and write it to `target` as the plain JSON lines OpenCompass' loader reads safely.

    OpenCompass reads a custom file's first row itself, without tolerance for a UTF-8 byte-order mark,
    padded CSV headers or keys in varying order, all of which validation accepts. Evaluating the
    canonical copy keeps what OpenCompass sees equal to what was validated. The DataFileInfo (and its
    sha256) describes the original file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "w", encoding="utf-8", newline="\n") as sink:
            return _scan(Path(path), data_type, max_rows, sink=sink)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
