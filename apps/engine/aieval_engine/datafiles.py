"""Users' own dataset files: the one reader of their rows, and row-by-row validation before OpenCompass sees them.

OpenCompass' custom-dataset loader reads the first row to decide the columns and then trusts every other
row; a bad line deep in a file would otherwise fail minutes into a run with a bare traceback.

Every consumer of an uploaded file reads it through `read_rows`: validation, the canonical copy OpenCompass
evaluates (`write_canonical_jsonl`) and the server's preview. A file is therefore split into rows, decoded and
parsed exactly one way; a row one of them accepts cannot break another.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

MAX_ROW_BYTES = 256 * 1024
MAX_ROWS = 200_000
MAX_REPORTED_PROBLEMS = 20
# Python refuses integers above 4,300 digits with a ValueError; no answer or question needs a tenth of that.
MAX_NUMBER_DIGITS = 100
OPTION_LETTERS = string.ascii_uppercase
FILE_FORMATS = ("jsonl", "csv")
UTF8_BOM = b"\xef\xbb\xbf"


class DataFileError(ValueError):
    """A dataset file that cannot be used, with one readable line per problem.

    `columns` and `data_type` are set when the first row was read, so a caller can still say what the file
    looked like (e.g. "multiple choice: line 4: 'answer' is 'Paris' but must be one of the options")."""

    def __init__(self, problems: list[str], columns: tuple[str, ...] = (), data_type: str | None = None):
        self.problems = problems
        self.columns = columns
        self.data_type = data_type
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


# ---- the one reader ----------------------------------------------------------------------------
class _RowRefused(ValueError):
    """A row breaks one of the reading rules; the message says which, the reader adds the line number."""


def _text_problem(text: str) -> str | None:
    if "\x00" in text:  # PostgreSQL cannot store it in text or JSON, where results and samples go
        return "contains a NUL character (\\u0000); remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Only a JSON escape such as \ud800 can produce this: a lone surrogate is no character and cannot be
        # written out as UTF-8 (not in the canonical copy OpenCompass reads, not in an HTTP response).
        return "contains an unpaired surrogate escape such as \\ud800, which is no character; remove it"
    return None


def _check_value(key: str, value: Any) -> None:
    """Keys are text; values are text or numbers; all text is something UTF-8 and PostgreSQL can hold."""
    if problem := _text_problem(key):
        raise _RowRefused(f"the column name {key!r} {problem}")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise _RowRefused(f"{key!r} must be text or a number")
    if isinstance(value, str) and (problem := _text_problem(value)):
        raise _RowRefused(f"{key!r} {problem}")


def _flat_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a later duplicate key would silently replace the earlier value."""
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise _RowRefused(f"the key {key!r} appears twice")
        _check_value(key, value)
        row[key] = value
    return row


def _refuse_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity, which JSON does not; they would reach OpenCompass as null gold.
    raise _RowRefused(f"{name} is not a JSON number; write the value as text (in quotes) or remove it")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _RowRefused(f"a number has more than {MAX_NUMBER_DIGITS} digits; write it as text (in quotes)")
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to infinity
        raise _RowRefused(f"the number {text[:30]} is too large; write it as text (in quotes)")
    return value


_ROW_DECODER = json.JSONDecoder(
    object_pairs_hook=_flat_object, parse_constant=_refuse_constant, parse_int=_bounded_int,
    parse_float=_finite_float,
)


def _lines(handle: BinaryIO, max_bytes: int | None) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line, split at b"\\n" only and decoded strictly as UTF-8 (a byte-order mark
    at the start dropped). A line longer than `max_bytes` is skipped unread and given as None.

    Splitting bytes at the newline byte, never text at "every kind of line break", is the point: Python's text
    files also split at a lone \\r, which JSON counts as whitespace between tokens."""
    offset = 0
    number = 0
    while True:
        number += 1
        raw = handle.readline(-1 if max_bytes is None else max_bytes + 2)  # + "\r\n"
        if not raw:
            return
        start, offset = offset, offset + len(raw)
        if max_bytes is not None and len(raw.removesuffix(b"\n")) > max_bytes:
            while not raw.endswith(b"\n"):
                raw = handle.readline(1 << 16)
                if not raw:
                    break
                offset += len(raw)
            yield number, None
            continue
        skip = len(UTF8_BOM) if number == 1 and raw.startswith(UTF8_BOM) else 0
        try:
            text = raw[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFileError([f"line {number}: the file is not UTF-8 text (byte {start + skip + exc.start}); "
                                 "save it as UTF-8 and upload again"]) from None
        yield number, text


def _jsonl_rows(handle: BinaryIO, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _lines(handle, MAX_ROW_BYTES):
        if line is None:
            problems.append(f"line {number}: the row is larger than {MAX_ROW_BYTES // 1024} KiB")
            continue
        line = line.removesuffix("\n")
        if not line.strip():
            problems.append(f"line {number}: empty line; remove it (every line must be one JSON object)")
            continue
        try:
            row = _ROW_DECODER.decode(line)
        except json.JSONDecodeError as exc:
            if exc.msg.startswith("Invalid control character"):
                # JSON allows a raw tab or carriage return between values, never inside a text.
                problems.append(f"line {number}: not valid JSON (a raw control character such as a tab or carriage "
                                f"return inside a text at column {exc.colno}; write it as \\t or \\r)")
            else:
                problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except _RowRefused as exc:
            problems.append(f"line {number}: {exc}")
            continue
        except RecursionError:
            problems.append(f"line {number}: nested too deeply; values must be text or numbers")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: must be a JSON object like {{\"question\": ..., \"answer\": ...}}")
            continue
        yield number, row


_AFTER_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _csv_lines(handle: BinaryIO) -> Iterator[str]:
    """Text lines for the csv module, which ends a row at \\n, \\r\\n or a lone \\r (old Mac files) outside quotes."""
    for _number, line in _lines(handle, None):
        yield from (piece for piece in _AFTER_LONE_CR.split(line) if piece)


def _csv_rows(handle: BinaryIO, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(_csv_lines(handle))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        problems.append(f"line 1: unreadable CSV header ({exc})")
        return
    header = [h.strip() for h in header]
    try:
        for name in header:
            _check_value(name, "")
    except _RowRefused as exc:
        problems.append(f"line {reader.line_num}: {exc}")
        return
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
            try:
                for name, cell in zip(header, row, strict=True):
                    _check_value(name, cell)
            except _RowRefused as exc:
                problems.append(f"line {number}: {exc}")
                continue
            yield number, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: unreadable CSV ({exc})")


def read_rows(handle: BinaryIO, file_format: Literal["jsonl", "csv"],
              problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every readable row of a binary file; every unreadable row adds a line-numbered
    message to `problems` instead. Raises DataFileError at the first bytes that are not UTF-8.

    The rules: JSON lines are split at "\\n" only (a CR between tokens is JSON whitespace; inside a string it
    must be escaped), each line one object without duplicate keys, NaN/Infinity or numbers over
    MAX_NUMBER_DIGITS digits; CSV as the csv module reads it, with a header row. In both, values are text or
    numbers and text holds no NUL and no unpaired surrogate."""
    return _jsonl_rows(handle, problems) if file_format == "jsonl" else _csv_rows(handle, problems)


def first_rows(handle: BinaryIO, file_format: Literal["jsonl", "csv"],
               limit: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Up to `limit` rows from the start of a file, and the first problem met before them (if any)."""
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        for _number, row in read_rows(handle, file_format, problems):
            if problems:
                break
            rows.append(row)
            if len(rows) >= limit:
                break
    except DataFileError as exc:
        problems = exc.problems
    return rows, problems[:1]


# ---- validation --------------------------------------------------------------------------------
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
    answer = str(row["answer"]).strip()
    if not answer:
        return f"line {number}: 'answer' is empty"
    if options and answer not in options:
        return f"line {number}: 'answer' is {answer!r} but must be one of the options {', '.join(options)}"
    if not str(row["question"]).strip():
        return f"line {number}: 'question' is empty"
    return None


def _scan(path: Path, data_type: str | None, max_rows: int, sink: TextIO | None, label: str | None) -> DataFileInfo:
    label = label or path.name
    file_format = path.suffix.lower().removeprefix(".")
    if file_format not in FILE_FORMATS:
        raise DataFileError([f"{label}: only .jsonl and .csv files are supported"])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFileError([f"cannot read {path}: {exc.strerror}"]) from None
    problems: list[str] = []
    rows = read_rows(io.BytesIO(raw), file_format, problems)  # type: ignore[arg-type]

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
        raise DataFileError(problems[:MAX_REPORTED_PROBLEMS], tuple(columns or ()), data_type if columns else None)
    if columns is None or count == 0:
        raise DataFileError([f"{label}: the file has no data rows"])
    return DataFileInfo(
        format=file_format,  # type: ignore[arg-type]
        data_type=data_type,  # type: ignore[arg-type]
        columns=tuple(columns),
        options=options,
        rows=count,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def validate_data_file(
    path: str | Path, data_type: Literal["mcq", "qa"] | None = None, max_rows: int = MAX_ROWS, label: str | None = None
) -> DataFileInfo:
    """Check every row of a jsonl/csv dataset; raise DataFileError listing the first problems by line.

    `label` is how messages name the file (default: its file name), e.g. the name a user uploaded it as."""
    return _scan(Path(path), data_type, max_rows, sink=None, label=label)


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
            return _scan(Path(path), data_type, max_rows, sink=sink, label=None)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
