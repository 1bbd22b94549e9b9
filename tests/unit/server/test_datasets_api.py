from __future__ import annotations

import hashlib
import json

MCQ = "".join(
    json.dumps({"question": f"q{i}?", "A": "yes", "B": "no", "answer": "A" if i % 2 else "B"}) + "\n" for i in range(5)
).encode()


def upload(client, filename, content, **form):
    return client.post("/api/v1/datasets", files={"file": (filename, content)}, data=form)


def test_upload_is_validated_stored_by_sha256_and_recognised_again(client, stored_files):
    first = upload(client, "quiz.jsonl", MCQ)
    assert first.status_code == 201, first.text
    dataset = first.json()["dataset"]
    digest = hashlib.sha256(MCQ).hexdigest()
    assert dataset["sha256"] == digest and dataset["data_type"] == "mcq" and dataset["rows"] == 5
    assert stored_files() == [f"datasets/{digest}.jsonl"]
    again = upload(client, "renamed.jsonl", MCQ, name="other name")
    assert again.status_code == 200 and again.json() == {"dataset": dataset, "existing": True}
    assert len(client.get("/api/v1/datasets").json()) == 1 and len(stored_files()) == 1
    preview = client.get(f"/api/v1/datasets/{dataset['id']}/preview", params={"limit": 2}).json()
    assert preview["total_rows"] == 5 and [r["question"] for r in preview["rows"]] == ["q0?", "q1?"]


def test_csv_upload_with_explicit_settings(client):
    content = b"question,answer\nCapital of France?,Paris\n2+2?,4\n"
    response = upload(client, "qa.csv", content, name="Capitals", scorer="contains")
    assert response.status_code == 201, response.text
    dataset = response.json()["dataset"]
    assert (dataset["name"], dataset["file_format"], dataset["data_type"], dataset["scorer"]) == ("Capitals", "csv", "qa", "contains")


def test_bad_files_are_refused_with_line_numbers_and_leave_nothing(client, settings, stored_files):
    huge_row = json.dumps({"question": "x" * (300 * 1024), "answer": "a"}).encode()
    corpus = [
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n{not json}\n', {}, 422, "line 2: not valid JSON"),
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "c"}\n', {}, 422, "line 2"),
        ("bad.jsonl", b'{"prompt": "a", "answer": "b"}\n', {}, 422, "'question' column is required"),
        ("bad.jsonl", b'{"question": "a", "A": "1", "B": "2", "answer": "E"}\n', {}, 422, "must be one of the options"),
        ("bad.jsonl", b'{"question": "a", "answer": "b"}\n\n', {}, 422, "line 2: empty line"),
        ("bad.jsonl", b"\xff\xfe\x00q", {}, 422, "not UTF-8"),
        ("bad.jsonl", b"", {}, 422, "no data rows"),
        ("bad.jsonl", huge_row, {}, 422, "larger than 256 KiB"),
        ("bad.csv", b"question,answer\nq,a,extra\n", {}, 422, "line 2: has 3 fields"),
        ("bad.txt", b"question,answer\nq,a\n", {}, 422, "only .jsonl and .csv"),
        ("noext", b"question,answer\nq,a\n", {}, 422, "only .jsonl and .csv"),
        ("../../etc/passwd.csv", b"question,answer\nq,a\n", {"name": "\x00evil"}, 422, "control characters"),
        ("ok.csv", b"question,answer\nq,a\n", {"scorer": "vibes"}, 422, "scorer"),
        ("ok.csv", b"question,answer\nq,a\n", {"data_type": "essay"}, 422, "data_type"),
    ]
    for name, content, form, status, expected in corpus:
        response = upload(client, name, content, **form)
        assert response.status_code == status, (name, response.text)
        assert expected in response.text, (name, response.text)
    assert client.get("/api/v1/datasets").json() == []
    assert stored_files() == []


def test_size_limit_gives_413(client, settings, stored_files):
    settings.max_upload_bytes = 1024
    response = upload(client, "big.jsonl", json.dumps({"question": "q" * 2000, "answer": "a"}).encode() + b"\n")
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]
    assert stored_files() == [] and client.get("/api/v1/datasets").json() == []


def test_declared_oversized_upload_is_refused_before_reading(client, settings, stored_files):
    settings.max_upload_bytes = 1024
    body = b"x" * (200 * 1024)
    response = client.post("/api/v1/datasets", content=body,
                           headers={"content-type": "multipart/form-data; boundary=b", "content-length": str(len(body))})
    assert response.status_code == 413 and stored_files() == []


def test_hostile_file_names_are_never_used_as_paths(client, stored_files):
    response = upload(client, "../../../../tmp/owned.csv", b"question,answer\nq,a\n")
    assert response.status_code == 201
    assert response.json()["dataset"]["name"] == "../../../../tmp/owned"  # kept as text only
    assert all(f.startswith("datasets/") for f in stored_files())


def test_builtin_catalogue_marks_missing_data(client, settings):
    page = client.get("/api/v1/datasets/builtin", params={"q": "gsm8k_gen", "page_size": 500}).json()
    entry = next(e for e in page["items"] if e["name"] == "gsm8k_gen")
    assert entry["available"] is False and str(settings.compass_data_cache) in entry["missing"][0]
    refused = client.post("/api/v1/datasets/builtin/gsm8k_gen")
    assert refused.status_code == 422 and "not on this server" in refused.json()["detail"]
    unknown = client.post("/api/v1/datasets/builtin/no_such_dataset_gen")
    assert unknown.status_code == 422 and "no OpenCompass dataset config" in unknown.text
    assert client.get("/api/v1/datasets").json() == []


def test_builtin_with_data_present_is_available(client, settings):
    target = settings.compass_data_cache / "data" / "gsm8k"
    target.mkdir(parents=True)
    (target / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    registered = client.post("/api/v1/datasets/builtin/gsm8k_gen")
    assert registered.status_code == 201 and registered.json()["available"] is True


def test_an_uploaded_dataset_can_be_renamed_and_rescored_within_its_type(client):
    qa = upload(client, "qa.csv", b"question,answer\nCapital of France?,Paris\n").json()["dataset"]
    mcq = upload(client, "quiz.jsonl", MCQ).json()["dataset"]
    changed = client.patch(f"/api/v1/datasets/{qa['id']}", json={"name": "Capitals", "scorer": "contains"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["scorer"], changed.json()["sha256"]) == ("Capitals", "contains", qa["sha256"])
    assert client.get(f"/api/v1/datasets/{qa['id']}").json()["scorer"] == "contains"
    # A re-upload of the same file finds the dataset with its new settings.
    again = upload(client, "qa.csv", b"question,answer\nCapital of France?,Paris\n")
    assert again.json()["existing"] is True and again.json()["dataset"]["scorer"] == "contains"

    refused = {
        "contains on mcq": (mcq["id"], {"scorer": "contains"}, 422, "question-answer"),
        "ppl on qa": (qa["id"], {"infer_method": "ppl"}, 422, "multiple-choice"),
        "name taken": (mcq["id"], {"name": "capitals"}, 409, "already exists"),
        "empty name": (mcq["id"], {"name": "  "}, 422, ""),
        "unknown field": (mcq["id"], {"rows": 1}, 422, ""),
        "unknown dataset": (999, {"name": "x"}, 404, "does not exist"),
    }
    for case, (dataset_id, body, status, message) in refused.items():
        response = client.patch(f"/api/v1/datasets/{dataset_id}", json=body)
        assert response.status_code == status, (case, response.text)
        assert message in response.text, case
    assert client.get(f"/api/v1/datasets/{mcq['id']}").json() == mcq  # refused edits change nothing


def test_builtin_datasets_cannot_be_edited(client, settings):
    target = settings.compass_data_cache / "data" / "gsm8k"
    target.mkdir(parents=True)
    (target / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    registered = client.post("/api/v1/datasets/builtin/gsm8k_gen").json()
    response = client.patch(f"/api/v1/datasets/{registered['id']}", json={"name": "mine"})
    assert response.status_code == 422 and "built-in" in response.json()["detail"]
