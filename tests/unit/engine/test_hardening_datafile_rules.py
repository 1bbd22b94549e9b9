"""One set of parsing rules for users' dataset files (issue 8, finding 7).

Validation, the canonical copy OpenCompass evaluates and the server's preview all read rows through
`datafiles.read_rows`. Each input here was once accepted by validation and then broke a later reader (preview
500, evaluation failing on encoding, null gold) or crashed validation itself (ValueError, RecursionError)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aieval_engine.datafiles import (
    MAX_NUMBER_DIGITS,
    DataFileError,
    first_rows,
    validate_data_file,
    write_canonical_jsonl,
)

GOOD = b'{"question": "Capital of Japan?", "answer": "Tokyo"}\n'

# (what, second line of a JSONL file, the problem reported for it)
BAD_JSONL_LINES = [
    ("raw CR inside a text", b'{"question": "a\rb", "answer": "x"}',
     "line 2: not valid JSON (a raw control character such as a tab or carriage return inside a text at column 16"),
    ("lone surrogate escape", b'{"question": "\\ud800", "answer": "x"}',
     "line 2: 'question' contains an unpaired surrogate escape such as \\ud800"),
    ("lone surrogate in a key", b'{"question": "q", "answer": "x", "\\udfff": "y"}',
     "line 2: the column name '\\udfff' contains an unpaired surrogate escape"),
    ("NaN", b'{"question": "q", "answer": NaN}', "line 2: NaN is not a JSON number"),
    ("Infinity", b'{"question": "q", "answer": Infinity}', "line 2: Infinity is not a JSON number"),
    ("-Infinity", b'{"question": "q", "answer": -Infinity}', "line 2: -Infinity is not a JSON number"),
    ("number overflowing to infinity", b'{"question": "q", "answer": 1e999}', "line 2: the number 1e999 is too large"),
    ("duplicate key", b'{"question": "q", "answer": "a", "answer": "b"}', "line 2: the key 'answer' appears twice"),
    ("5000-digit integer", b'{"question": "q", "answer": ' + b"7" * 5000 + b"}",
     f"line 2: a number has more than {MAX_NUMBER_DIGITS} digits"),
    ("arrays nested 50,000 deep", b'{"question": ' + b"[" * 50_000 + b"]" * 50_000 + b', "answer": "a"}',
     "line 2: nested too deeply"),
    ("objects nested 20,000 deep", b'{"question": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b', "answer": "a"}',
     "line 2: nested too deeply"),
    ("nested object", b'{"question": {"text": "q"}, "answer": "a"}', "line 2: 'question' must be text or a number"),
    ("NUL character", b'{"question": "q\\u0000", "answer": "a"}', "line 2: 'question' contains a NUL character"),
]


def _problems(path: Path) -> list[str]:
    with pytest.raises(DataFileError) as info:
        validate_data_file(path)
    return info.value.problems


@pytest.mark.parametrize("what, line, expected", BAD_JSONL_LINES, ids=[case[0] for case in BAD_JSONL_LINES])
def test_each_bad_jsonl_line_is_refused_by_its_line_number_everywhere(tmp_path, what, line, expected):
    path = tmp_path / "data.jsonl"
    path.write_bytes(GOOD + line + b"\n" + GOOD)
    (problem,) = _problems(path)
    assert problem.startswith(expected), problem
    json.dumps(problem).encode("utf-8")  # the message itself can be sent in a JSON response

    target = tmp_path / "canonical.jsonl"
    with pytest.raises(DataFileError):
        write_canonical_jsonl(path, target)
    assert not target.exists()

    # The preview's reader stops at the same line with the same message.
    rows, problems = first_rows(io.BytesIO(path.read_bytes()), "jsonl", 20)
    assert (len(rows), problems) == (1, [problem])


def test_a_cr_between_json_tokens_is_whitespace_for_every_reader(tmp_path):
    # CRLF endings and a CR between tokens are JSON whitespace; Python's text files would split the line there.
    raw = b'{"question": "q1",\r"answer": "a1"}\r\n{"question": "q2", "answer":\r"a2"}\r\n'
    path = tmp_path / "cr.jsonl"
    path.write_bytes(raw)
    info = write_canonical_jsonl(path, tmp_path / "canonical.jsonl")
    assert info.rows == 2
    canonical = [json.loads(line) for line in (tmp_path / "canonical.jsonl").read_text().splitlines()]
    rows, problems = first_rows(io.BytesIO(raw), "jsonl", 20)
    assert problems == [] and rows == canonical == [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]


def test_escaped_control_characters_and_long_numbers_as_text_are_fine(tmp_path):
    row = {"question": "tab\there\r\nand a CR", "answer": "9" * 5000, "note": 10 ** (MAX_NUMBER_DIGITS - 1)}
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(row) + "\n")
    write_canonical_jsonl(path, tmp_path / "canonical.jsonl")
    assert json.loads((tmp_path / "canonical.jsonl").read_text()) == row
    assert first_rows(io.BytesIO(path.read_bytes()), "jsonl", 1) == ([row], [])


def test_csv_cells_keep_a_quoted_cr_and_lone_cr_ends_a_row_for_every_reader(tmp_path):
    raw = b'question,answer\r"two\rlines",a\rq2,"b\r\nc"\r'
    path = tmp_path / "mac.csv"
    path.write_bytes(raw)
    write_canonical_jsonl(path, tmp_path / "canonical.jsonl")
    canonical = [json.loads(line) for line in (tmp_path / "canonical.jsonl").read_text().split("\n") if line]
    rows, problems = first_rows(io.BytesIO(raw), "csv", 20)
    assert problems == [] and rows == canonical == [{"question": "two\rlines", "answer": "a"},
                                                     {"question": "q2", "answer": "b\r\nc"}]


@pytest.mark.parametrize("raw, expected", [
    (b"question,answer\nq,a\nq\x00,a\n", "line 3: 'question' contains a NUL character"),
    (b"question,ans\x00wer\nq,a\n", "line 1: the column name 'ans\\x00wer' contains a NUL character"),
])
def test_csv_nul_bytes_are_refused_by_line(tmp_path, raw, expected):
    path = tmp_path / "nul.csv"
    path.write_bytes(raw)
    (problem,) = _problems(path)
    assert problem.startswith(expected), problem
    assert first_rows(io.BytesIO(raw), "csv", 20)[1] == [problem]


def test_first_rows_stops_at_the_limit_without_reading_further_problems():
    raw = GOOD * 3 + b"{broken\n"
    assert first_rows(io.BytesIO(raw), "jsonl", 3) == ([json.loads(GOOD)] * 3, [])
    rows, problems = first_rows(io.BytesIO(raw), "jsonl", 4)
    assert len(rows) == 3 and problems[0].startswith("line 4: not valid JSON")
    rows, problems = first_rows(io.BytesIO(GOOD + b"\xff\n"), "jsonl", 4)
    assert len(rows) == 1 and problems[0].startswith("line 2: the file is not UTF-8 text")
