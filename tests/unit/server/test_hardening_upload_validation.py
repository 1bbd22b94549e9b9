"""The upload's dry run and the server's upload rules (issue 8, finding 17, server part).

The UI used to preview files with its own copy of the rules and disagreed with the server (a `.txt` previewed,
"Detected: QA" for a file the server refused as multiple choice). POST /datasets/validate answers what the
upload would do, by the upload's own code, storing nothing; GET /datasets/upload-rules gives what is accepted."""

from __future__ import annotations

import json

VALIDATE = "/api/v1/datasets/validate"
MCQ = "".join(
    json.dumps({"question": f"q{i}?", "A": "yes", "B": "no", "answer": "A" if i % 2 else "B"}) + "\n" for i in range(25)
).encode()


def post(client, url, filename, content, **form):
    return client.post(url, files={"file": (filename, content)}, data=form)


def validate(client, filename, content, **form) -> dict:
    response = post(client, VALIDATE, filename, content, **form)
    assert response.status_code == 200, response.text
    return response.json()


def upload(client, filename, content, **form):
    return post(client, "/api/v1/datasets", filename, content, **form)


def test_a_valid_file_is_described_and_nothing_is_stored(client, stored_files):
    answer = validate(client, "quiz.jsonl", MCQ)
    assert answer == {
        "ok": True, "file_format": "jsonl", "data_type": "mcq", "columns": ["question", "A", "B", "answer"],
        "rows": 25, "name": "quiz", "problems": [], "preview": [json.loads(line) for line in MCQ.splitlines()[:20]],
        "existing_dataset_id": None, "name_taken": False,
    }
    assert stored_files() == [] and client.get("/api/v1/datasets").json() == []

    stored = upload(client, "quiz.jsonl", MCQ).json()["dataset"]
    again = validate(client, "renamed.jsonl", MCQ, name="quiz")
    # The same bytes exist: the upload would answer that dataset (200), whatever the name.
    assert (again["ok"], again["existing_dataset_id"], again["name_taken"], again["problems"]) == (True, stored["id"], True, [])


def test_refusals_are_the_uploads_own_problems(client, stored_files):
    corpus = [
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n{not json}\n', {}),
        ("bad.jsonl", b'{"question": "q", "answer": NaN}\n', {}),
        ("bad.csv", b"question,answer\nq,a,extra\n", {}),
        ("notes.txt", b"question,answer\nq,a\n", {}),
        ("ok.csv", b"question,answer\nq,a\n", {"scorer": "vibes", "data_type": "essay"}),
        ("ok.csv", b"question,answer\nq,a\n", {"name": "\x00evil"}),
    ]
    for filename, content, form in corpus:
        answer = validate(client, filename, content, **form)
        refused = upload(client, filename, content, **form)
        assert refused.status_code == 422, refused.text
        assert answer["ok"] is False and answer["problems"] == refused.json()["problems"] != [], (filename, answer)
    assert validate(client, "notes.txt", b"question,answer\nq,a\n")["problems"] == [
        "notes.txt: only .jsonl and .csv files are accepted"]
    assert stored_files() == [] and client.get("/api/v1/datasets").json() == []


def test_the_detected_type_is_the_servers(client):
    # Option columns make the server read a file as multiple choice, and then the free-text answers are wrong.
    content = b'{"question": "q", "A": "x", "B": "y", "answer": "free text"}\n'
    detected = validate(client, "mixed.jsonl", content)
    assert (detected["ok"], detected["data_type"], detected["columns"]) == (False, "mcq", ["question", "A", "B", "answer"])
    assert detected["problems"] == ["line 1: 'answer' is 'free text' but must be one of the options A, B"]
    declared = validate(client, "mixed.jsonl", content, data_type="qa")
    assert (declared["ok"], declared["data_type"], declared["rows"]) == (True, "qa", 1)


def test_the_empty_file_message_names_the_users_file(client):
    assert validate(client, "my questions.jsonl", b"")["problems"] == ["my questions.jsonl: the file has no data rows"]
    response = upload(client, "my questions.jsonl", b"")
    assert response.status_code == 422 and response.json()["problems"] == ["my questions.jsonl: the file has no data rows"]


def test_a_csv_and_a_jsonl_of_the_same_stem_do_not_clash_on_the_default_name(client):
    csv_upload = upload(client, "quiz.csv", b"question,answer\nq,a\n")
    assert csv_upload.status_code == 201 and csv_upload.json()["dataset"]["name"] == "quiz"
    planned = validate(client, "quiz.jsonl", MCQ)
    assert (planned["ok"], planned["name"], planned["name_taken"]) == (True, "quiz (jsonl)", False)
    jsonl_upload = upload(client, "quiz.jsonl", MCQ)
    assert jsonl_upload.status_code == 201, jsonl_upload.text
    assert jsonl_upload.json()["dataset"]["name"] == "quiz (jsonl)"

    # A third, different quiz.jsonl: both names are taken, so the user is asked for one.
    third = b'{"question": "another", "answer": "file"}\n'
    answer = validate(client, "quiz.jsonl", third)
    assert (answer["ok"], answer["name"], answer["name_taken"]) == (False, "quiz", True)
    assert answer["problems"] == ["a dataset named 'quiz' already exists; choose another name"]
    assert upload(client, "quiz.jsonl", third).status_code == 409
    # A name given explicitly is never changed.
    assert validate(client, "x.jsonl", third, name="QUIZ")["problems"] == [
        "a dataset named 'QUIZ' already exists; choose another name"]
    assert upload(client, "x.jsonl", third, name="quiz (2)").json()["dataset"]["name"] == "quiz (2)"


def test_upload_rules_come_from_the_server(client, settings):
    settings.max_upload_bytes = 3 * 1024 * 1024
    assert client.get("/api/v1/datasets/upload-rules").json() == {
        "extensions": [".jsonl", ".csv"], "max_bytes": 3 * 1024 * 1024, "max_rows": 200_000}


def test_an_oversized_dry_run_is_413_like_the_upload(client, settings, stored_files):
    settings.max_upload_bytes = 1024
    response = post(client, VALIDATE, "big.jsonl", json.dumps({"question": "q" * 2000, "answer": "a"}).encode() + b"\n")
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]
    assert stored_files() == []


def test_the_generated_schema_names_the_validation_model(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/v1/datasets/validate"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DatasetValidation")
    assert set(schema["components"]["schemas"]["DatasetValidation"]["properties"]) == {
        "ok", "file_format", "data_type", "columns", "rows", "name", "problems", "preview", "existing_dataset_id",
        "name_taken"}


def test_a_file_name_with_control_characters_is_refused_not_stored(client, stored_files):
    # It would be kept as the dataset's original file name, and PostgreSQL cannot store a NUL. Written by hand:
    # httpx percent-encodes control characters in file names, a hostile client does not.
    def raw_post(url, filename: bytes):
        body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\n'
                b"question,answer\nq,a\n\r\n--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nfine\r\n--B--\r\n")
        return client.post(url, content=body, headers={"content-type": "multipart/form-data; boundary=B"})

    for filename in (b"quiz\x00.csv", b"quiz\x1b.csv"):
        answer = raw_post(VALIDATE, filename)
        assert answer.status_code == 200, answer.text
        assert answer.json()["problems"] == ["the file name must not contain control characters such as newlines"]
        refused = raw_post("/api/v1/datasets", filename)
        assert refused.status_code == 422, refused.text
    assert stored_files() == []
