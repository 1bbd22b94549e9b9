"""datafiles: users' jsonl/csv files are checked row by row, and each problem names its line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aieval_engine.datafiles import (
    MAX_REPORTED_PROBLEMS,
    MAX_ROW_BYTES,
    DataFileError,
    sha256_of,
    validate_data_file,
    write_canonical_jsonl,
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(DataFileError) as info:
        validate_data_file(path, **kwargs)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


MCQ = {"question": "Capital of France?", "A": "Berlin", "B": "Paris", "C": "Rome", "D": "Madrid", "answer": "B"}
QA = {"question": "Capital of Japan?", "answer": "Tokyo"}


# ---- valid files -------------------------------------------------------------------------------


def test_valid_jsonl_mcq(tmp_path):
    content = jsonl(MCQ, {**MCQ, "answer": "D"}, {**MCQ, "answer": "A"})
    path = write(tmp_path, "mcq.jsonl", content)
    info = validate_data_file(path)
    assert (info.format, info.data_type, info.rows) == ("jsonl", "mcq", 3)
    assert info.columns == ("question", "A", "B", "C", "D", "answer")
    assert info.options == ("A", "B", "C", "D")
    assert info.sha256 == hashlib.sha256(content.encode()).hexdigest() == sha256_of(path)


def test_valid_jsonl_qa_with_numbers_and_chinese(tmp_path):
    content = jsonl(QA, {"question": "法国的首都是哪里？", "answer": "巴黎"}, {"question": "Legs of a spider?", "answer": 8})
    path = write(tmp_path, "qa.jsonl", content)
    info = validate_data_file(path)
    assert (info.format, info.data_type, info.rows, info.options) == ("jsonl", "qa", 3, ())
    assert info.columns == ("question", "answer")
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_valid_csv_mcq_and_qa(tmp_path):
    mcq = write(tmp_path, "mcq.csv", "question,A,B,answer\n\"Pick, one\",x,y,A\nq2,\"multi\nline\",z,B\n")
    info = validate_data_file(mcq)
    assert (info.format, info.data_type, info.rows, info.options) == ("csv", "mcq", 2, ("A", "B"))
    qa = write(tmp_path, "qa.CSV", "question,answer\n问题,答案\n")
    info = validate_data_file(qa)
    assert (info.format, info.data_type, info.rows, info.columns) == ("csv", "qa", 1, ("question", "answer"))


def test_utf8_bom_crlf_and_missing_final_newline(tmp_path):
    raw = b"\xef\xbb\xbf" + jsonl(QA, {"question": "首都？", "answer": "北京"}).replace("\n", "\r\n").encode()
    path = write(tmp_path, "bom.jsonl", raw.rstrip(b"\r\n"))
    info = validate_data_file(path)
    assert (info.rows, info.columns) == (2, ("question", "answer"))
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    csv_path = write(tmp_path, "bom.csv", b"\xef\xbb\xbfquestion,A,B,answer\r\n\xe9\x97\xae,x,y,B\r\n")
    info = validate_data_file(csv_path)
    assert (info.data_type, info.columns, info.rows) == ("mcq", ("question", "A", "B", "answer"), 1)


def test_declared_type_overrides_detection(tmp_path):
    # Option-like columns in a QA file: declared 'qa' keeps any answer text.
    path = write(tmp_path, "qa.jsonl", jsonl({"question": "q", "A": "x", "B": "y", "answer": "free text"}))
    assert validate_data_file(path, "qa").data_type == "qa"
    assert validate_data_file(path, "qa").options == ()
    (problem,) = problems(path)  # detected as mcq, the answer is not an option
    assert problem.startswith("line 1: 'answer' is 'free text' but must be one of the options A, B")


def test_options_stop_at_the_first_missing_letter(tmp_path):
    path = write(tmp_path, "mcq.jsonl", jsonl({"question": "q", "A": "1", "B": "2", "D": "4", "answer": "B"}))
    assert validate_data_file(path).options == ("A", "B")


# ---- problems with line numbers ----------------------------------------------------------------


def test_invalid_json_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, '{"question": "q", "answer": }', QA))
    assert problems(path) == ["line 2: not valid JSON (Expecting value at column 29)"]


def test_non_object_lines(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, "[1, 2]", '"text"', "42", QA))
    expected = 'must be a JSON object like {"question": ..., "answer": ...}'
    assert problems(path) == [f"line {n}: {expected}" for n in (2, 3, 4)]


def test_blank_lines(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA) + "\n   \n" + jsonl(QA))
    assert problems(path) == [
        "line 2: empty line; remove it (every line must be one JSON object)",
        "line 3: empty line; remove it (every line must be one JSON object)",
    ]


def test_inconsistent_columns(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, {"question": "q", "answer": "a", "extra": "x"}, {"question": "q"}))
    assert problems(path) == [
        "line 2: columns ['answer', 'extra', 'question'] differ from the first row's ['answer', 'question']",
        "line 3: columns ['question'] differ from the first row's ['answer', 'question']",
    ]


def test_same_columns_in_another_order_are_fine(tmp_path):
    path = write(tmp_path, "qa.jsonl", jsonl({"question": "q", "answer": "a"}, {"answer": "b", "question": "q2"}))
    assert validate_data_file(path).rows == 2
    # another column set is still refused, in any order
    path = write(tmp_path, "bad.jsonl", jsonl({"question": "q", "answer": "a"}, {"answer": "b", "question": "q2", "x": "y"}))
    assert problems(path) == ["line 2: columns ['answer', 'question', 'x'] differ from the first row's ['answer', 'question']"]


def test_missing_question_or_answer_columns(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"prompt": "q", "answer": "a"}))
    assert problems(path) == ["line 1: a 'question' column is required"]
    path = write(tmp_path, "bad2.jsonl", jsonl({"question": "q", "target": "a"}))
    assert problems(path) == ["line 1: an 'answer' column is required (the reference answer)"]
    path = write(tmp_path, "bad.csv", "q,a\nx,y\n")
    assert problems(path) == [
        "line 2: a 'question' column is required",
        "line 2: an 'answer' column is required (the reference answer)",
    ]


def test_column_check_uses_the_first_data_line_number(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"question": "q", "{evil}": "x", "answer": "a"}))
    assert problems(path) == ["line 1: column name '{evil}' is not allowed"]


def test_empty_answer_and_empty_question(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, {"question": "q", "answer": "  "}, {"question": " ", "answer": "a"}))
    assert problems(path) == ["line 2: 'answer' is empty", "line 3: 'question' is empty"]


def test_non_scalar_values(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, {"question": ["q"], "answer": "a"}, {"question": "q", "answer": True},
                                            {"question": "q", "answer": None}))
    assert problems(path) == [
        "line 2: 'question' must be text or a number",
        "line 3: 'answer' must be text or a number",
        "line 4: 'answer' must be text or a number",
    ]


def test_mcq_answer_not_an_option(tmp_path):
    path = write(tmp_path, "mcq.jsonl", jsonl(MCQ, {**MCQ, "answer": "E"}, {**MCQ, "answer": "b"}, {**MCQ, "answer": "Paris"}))
    assert problems(path) == [
        "line 2: 'answer' is 'E' but must be one of the options A, B, C, D",
        "line 3: 'answer' is 'b' but must be one of the options A, B, C, D",
        "line 4: 'answer' is 'Paris' but must be one of the options A, B, C, D",
    ]


def test_declared_mcq_without_options(tmp_path):
    path = write(tmp_path, "qa.jsonl", jsonl({"question": "q", "A": "only one", "answer": "A"}))
    assert problems(path, data_type="mcq") == [
        "line 1: a multiple-choice file needs option columns A and B (and C, D, ... in order)"
    ]


def test_non_utf8_bytes_name_their_line(tmp_path):
    path = write(tmp_path, "latin1.jsonl", jsonl(QA, QA).encode() + '{"question": "café", "answer": "x"}\n'.encode("latin-1"))
    (problem,) = problems(path)
    assert problem.startswith("line 3: the file is not UTF-8 text (byte ")
    assert "save it as UTF-8" in problem
    path = write(tmp_path, "utf16.csv", "question,answer\nq,a\n".encode("utf-16"))
    (problem,) = problems(path)
    assert problem.startswith("line 1: the file is not UTF-8 text")


def test_oversized_row(tmp_path):
    big = {"question": "x" * (MAX_ROW_BYTES + 10), "answer": "a"}
    path = write(tmp_path, "big.jsonl", jsonl(QA, big, QA))
    assert problems(path) == [f"line 2: the row is larger than {MAX_ROW_BYTES // 1024} KiB"]
    third = "z" * (MAX_ROW_BYTES // 3 + 10)  # each field below csv's own field limit, the row above ours
    path = write(tmp_path, "big.csv", f"question,A,B,answer\nq,x,y,A\n{third},{third},{third},A\nq,x,y,B\n")
    assert problems(path) == [f"line 3: the row is larger than {MAX_ROW_BYTES // 1024} KiB"]
    # One field beyond the csv module's limit (which OpenCompass' reader shares) is refused by csv itself.
    path = write(tmp_path, "huge.csv", f"question,answer\nq,a\n{'y' * (MAX_ROW_BYTES + 1)},a\n")
    (problem,) = problems(path)
    assert problem.startswith("line 3: unreadable CSV (field larger than field limit")


def test_too_many_rows(tmp_path):
    path = write(tmp_path, "many.jsonl", jsonl(*[QA] * 6))
    assert validate_data_file(path, max_rows=6).rows == 6
    assert problems(path, max_rows=5) == ["the file has more than 5 rows; split it into smaller files"]


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("empty.csv", ""), ("header.csv", "question,answer\n")])
def test_empty_files(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert problems(path) == [f"{name}: the file has no data rows"]


@pytest.mark.parametrize("name", ["data.json", "data.txt", "data.parquet", "data.jsonl.gz", "data"])
def test_unsupported_extension(tmp_path, name):
    path = write(tmp_path, name, jsonl(QA))
    assert problems(path) == [f"{name}: only .jsonl and .csv files are supported"]


def test_missing_file(tmp_path):
    (problem,) = problems(tmp_path / "absent.csv")
    assert problem.startswith("cannot read ") and "absent.csv" in problem and "No such file" in problem


def test_csv_ragged_and_empty_rows(tmp_path):
    path = write(tmp_path, "ragged.csv", "question,answer\nq1,a1\nq2\nq3,a3,extra\n,\nq5,a5\n")
    assert problems(path) == [
        "line 3: has 1 fields but the header has 2",
        "line 4: has 3 fields but the header has 2",
        "line 5: empty row; remove it",
    ]


def test_csv_line_numbers_count_physical_lines(tmp_path):
    path = write(tmp_path, "multi.csv", 'question,answer\n"a\nmulti-line\nquestion",x\nq,\n')
    assert problems(path) == ["line 5: 'answer' is empty"]


def test_at_most_max_reported_problems(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, *(["not json"] * (MAX_REPORTED_PROBLEMS + 30))))
    reported = problems(path)
    assert len(reported) == MAX_REPORTED_PROBLEMS
    assert reported[0].startswith("line 2: not valid JSON")
    assert reported[-1].startswith(f"line {MAX_REPORTED_PROBLEMS + 1}: not valid JSON")


def test_sha256_of_streams_large_files(tmp_path):
    raw = bytes(range(256)) * 10_000  # > 1 MiB chunk
    path = write(tmp_path, "blob.bin", raw)
    assert sha256_of(path) == hashlib.sha256(raw).hexdigest()


# ---- canonical copies ----------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def test_canonical_copy_of_bom_crlf_jsonl_with_reordered_keys(tmp_path):
    raw = b"\xef\xbb\xbf" + jsonl(
        {"question": "q1", "answer": 1.5}, {"answer": "北京", "question": "首都？"}
    ).replace("\n", "\r\n").encode()
    path = write(tmp_path, "in.jsonl", raw)
    target = tmp_path / "out" / "sub" / "d.jsonl"  # folders are created
    info = write_canonical_jsonl(path, target)
    assert info == validate_data_file(path)  # same answer as validation, sha256 of the original bytes
    assert info.sha256 == hashlib.sha256(raw).hexdigest()
    data = target.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    lines = _lines(target)
    assert lines[-1] == "" and len(lines) == 3
    assert [list(json.loads(line)) for line in lines[:2]] == [["question", "answer"]] * 2  # first-row key order
    assert [json.loads(line) for line in lines[:2]] == [{"question": "q1", "answer": 1.5}, {"question": "首都？", "answer": "北京"}]
    assert "首都" in data.decode("utf-8")  # not escaped


def test_canonical_copy_of_padded_bom_csv(tmp_path):
    path = write(tmp_path, "in.csv", b"\xef\xbb\xbf question , A,B ,answer\r\nq,x,y,B\r\n")
    info = write_canonical_jsonl(path, tmp_path / "d.jsonl", "mcq")
    assert (info.data_type, info.columns, info.rows) == ("mcq", ("question", "A", "B", "answer"), 1)
    assert _lines(tmp_path / "d.jsonl") == [json.dumps({"question": "q", "A": "x", "B": "y", "answer": "B"}), ""]


def test_no_canonical_copy_is_left_for_an_invalid_file(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(QA, QA, {"question": "q", "answer": ""}))
    target = tmp_path / "d.jsonl"
    with pytest.raises(DataFileError) as info:
        write_canonical_jsonl(path, target)
    assert info.value.problems == ["line 3: 'answer' is empty"]
    assert not target.exists()
    with pytest.raises(DataFileError):
        write_canonical_jsonl(write(tmp_path, "many.jsonl", jsonl(QA, QA, QA)), target, max_rows=2)
    assert not target.exists()
