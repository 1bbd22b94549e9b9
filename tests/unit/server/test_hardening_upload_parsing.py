"""Uploaded files are parsed one way by the upload, the preview and the evaluation (issue 8, finding 7).

Each bad input below was accepted by the upload and broke later (preview 500, null gold, encoding failure in
the evaluation) or ended the upload itself in a bare 500; now the upload refuses it with a 4xx naming the line,
and the preview of whatever is stored never answers 500."""

from __future__ import annotations

import json

import pytest

from aieval_engine.datafiles import write_canonical_jsonl

GOOD = b'{"question": "Capital of Japan?", "answer": "Tokyo"}\n'

BAD_SECOND_LINES = {
    "raw CR inside a text": (b'{"question": "a\rb", "answer": "x"}', "line 2: not valid JSON (a raw control character"),
    "lone surrogate": (b'{"question": "\\ud800", "answer": "x"}', "line 2: 'question' contains an unpaired surrogate"),
    "NaN": (b'{"question": "q", "answer": NaN}', "line 2: NaN is not a JSON number"),
    "Infinity": (b'{"question": "q", "answer": Infinity}', "line 2: Infinity is not a JSON number"),
    "duplicate keys": (b'{"question": "q", "answer": "a", "answer": "b"}', "line 2: the key 'answer' appears twice"),
    "5000-digit integer": (b'{"question": "q", "answer": ' + b"1" * 5000 + b"}", "line 2: a number has more than 100"),
    "arrays nested 50,000 deep": (b'{"question": ' + b"[" * 50_000 + b"]" * 50_000 + b', "answer": "a"}',
                                  "line 2: nested too deeply"),
    "objects nested 20,000 deep": (b'{"question": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b', "answer": "a"}',
                                   "line 2: nested too deeply"),
    "NUL": (b'{"question": "q\\u0000", "answer": "a"}', "line 2: 'question' contains a NUL character"),
}


def upload(client, filename, content, **form):
    return client.post("/api/v1/datasets", files={"file": (filename, content)}, data=form)


@pytest.mark.parametrize("case", list(BAD_SECOND_LINES))
def test_each_bad_input_is_a_4xx_naming_its_line_and_nothing_is_stored(client, stored_files, case):
    line, expected = BAD_SECOND_LINES[case]
    response = upload(client, f"{case}.jsonl", GOOD + line + b"\n" + GOOD)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"] == f"{case}.jsonl cannot be used as a dataset"
    assert len(body["problems"]) == 1 and body["problems"][0].startswith(expected), body
    assert stored_files() == [] and client.get("/api/v1/datasets").json() == []


def test_csv_nul_bytes_are_a_4xx_naming_the_line(client, stored_files):
    response = upload(client, "nul.csv", b"question,answer\nq,a\nq\x00,a\n")
    assert response.status_code == 422, response.text
    assert response.json()["problems"][0].startswith("line 3: 'question' contains a NUL character")
    assert stored_files() == []


def _stored_path(settings, dataset) -> str:
    return settings.local_storage_dir / f"datasets/{dataset['sha256']}.{dataset['file_format']}"


def test_a_cr_between_tokens_previews_as_validated_and_as_evaluated(client, settings, tmp_path):
    # CRLF line ends and a CR between tokens are JSON whitespace. The preview used to split the line there (500).
    raw = b'{"question": "q1",\r"answer": "a1"}\r\n{"question": "q2",\r"answer": 2}\r\n'
    uploaded = upload(client, "cr.jsonl", raw)
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["dataset"]
    preview = client.get(f"/api/v1/datasets/{dataset['id']}/preview")
    assert preview.status_code == 200, preview.text
    canonical = tmp_path / "canonical.jsonl"
    write_canonical_jsonl(_stored_path(settings, dataset), canonical)  # what OpenCompass is given
    assert preview.json()["rows"] == [json.loads(line) for line in canonical.read_text().splitlines()] == [
        {"question": "q1", "answer": "a1"}, {"question": "q2", "answer": 2}]


def test_a_quoted_cr_in_csv_previews_as_it_is_evaluated(client, settings, tmp_path):
    uploaded = upload(client, "cr.csv", b'question,answer\r\n"two\rlines",a\r\n')
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["dataset"]
    preview = client.get(f"/api/v1/datasets/{dataset['id']}/preview").json()
    canonical = tmp_path / "canonical.jsonl"
    write_canonical_jsonl(_stored_path(settings, dataset), canonical)
    assert preview["rows"] == [json.loads(canonical.read_text())] == [{"question": "two\rlines", "answer": "a"}]


@pytest.mark.parametrize("case", ["lone surrogate", "NaN", "duplicate keys", "5000-digit integer",
                                  "arrays nested 50,000 deep"])
def test_a_stored_file_that_breaks_todays_rules_previews_as_a_4xx_not_a_500(client, settings, case):
    # A file stored under the older, looser rules: the upload accepted it, the bytes are still in storage.
    uploaded = upload(client, "old.jsonl", GOOD + GOOD).json()["dataset"]
    line, expected = BAD_SECOND_LINES[case]
    _stored_path(settings, uploaded).write_bytes(GOOD + line + b"\n")
    response = client.get(f"/api/v1/datasets/{uploaded['id']}/preview")
    assert response.status_code == 422, response.text
    assert "cannot be read by today's rules" in response.json()["detail"]
    assert response.json()["problems"][0].startswith(expected)
