"""Importing OpenCompass data packages through the API, and the built-in catalogue grouped by benchmark."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

A = "/api/v1"
ROWS = [{"question": "Tom has 2 pens and finds 3. How many?", "answer": "2 + 3 = 5\n#### 5"}]


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


GSM8K_PACKAGE = zipped({"data/gsm8k/test.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
                        "data/gsm8k/train.jsonl": b""})


def finished(client: TestClient, import_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = client.get(f"{A}/datasets/packages/{import_id}").json()
        if record["state"] in ("succeeded", "failed"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"import {import_id} did not finish: {record}")


def gsm8k(client: TestClient) -> dict:
    page = client.get(f"{A}/datasets/builtin/benchmarks", params={"q": "gsm8k"}).json()
    return next(b for b in page["items"] if b["name"] == "gsm8k")


def test_an_uploaded_package_makes_gsm8k_ready_and_registrable(client, settings):
    before = gsm8k(client)
    assert before["status"] == "missing" and before["ready_configs"] == 0
    assert "gsm8k.zip" in [p["archive_name"] for p in before["packages"]]
    assert before["fetch_command"] == "aieval datasets fetch gsm8k" and "gsm8k.zip" in before["how_to_get"]
    refused = client.post(f"{A}/datasets/builtin/gsm8k_gen")
    assert refused.status_code == 422 and any("gsm8k.zip" in p for p in refused.json()["problems"])

    started = client.post(f"{A}/datasets/packages",
                          files={"file": ("OpenCompassData-core-test.zip", GSM8K_PACKAGE)})
    assert started.status_code == 202, started.text
    record = finished(client, started.json()["id"])
    assert record["state"] == "succeeded", record
    assert record["report"]["installed"] == ["gsm8k"] and "gsm8k" in record["report"]["benchmarks_ready"]
    assert "gsm8k_gen" in record["report"]["became_ready"]
    assert (settings.compass_data_cache / "data" / "gsm8k" / "test.jsonl").is_file()
    assert not [p for p in settings.compass_data_cache.iterdir() if p.name.startswith(".aieval")]  # upload removed

    after = gsm8k(client)
    assert after["status"] == "ready" and after["how_to_get"] == "" and after["fetch_command"] is None
    assert client.post(f"{A}/datasets/builtin/gsm8k_gen").status_code == 201
    flat = client.get(f"{A}/datasets/builtin", params={"q": "gsm8k_gen", "available": True}).json()
    assert "gsm8k_gen" in [i["name"] for i in flat["items"]]  # the older flat list sees the import too
    status = client.get(f"{A}/datasets/packages").json()
    assert status["imports"][0]["id"] == record["id"] and status["import_roots"] == []
    events = client.get(f"{A}/audit", params={"target_type": "data_package"}).json()["items"]
    assert events and events[0]["target_name"] == "OpenCompassData-core-test.zip"


def test_a_package_with_a_traversal_entry_fails_and_installs_nothing(client, settings, tmp_path):
    bad = zipped({"gsm8k/test.jsonl": b"{}", "../../escaped.txt": b"owned"})
    started = client.post(f"{A}/datasets/packages", files={"file": ("evil.zip", bad)})
    assert started.status_code == 202
    record = finished(client, started.json()["id"])
    assert record["state"] == "failed" and "outside the data folder" in record["error"]
    assert not (settings.compass_data_cache / "data" / "gsm8k").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_only_archives_are_accepted_and_unknown_imports_are_404(client):
    response = client.post(f"{A}/datasets/packages", files={"file": ("notes.txt", b"hello")})
    assert response.status_code == 422 and "archive" in response.json()["detail"]
    missing = client.get(f"{A}/datasets/packages/{'0' * 32}")
    assert missing.status_code == 404
    assert client.get(f"{A}/datasets/packages/..%2F..%2Fsecret").status_code == 404


def test_a_package_over_the_limit_is_refused_with_413(settings):
    from aieval_server.main import create_app

    small = settings.model_copy(update={"max_data_package_bytes": 1024})
    with TestClient(create_app(small)) as client:
        response = client.post(f"{A}/datasets/packages", files={"file": ("big.zip", b"\0" * 200_000)})
    assert response.status_code == 413 and "limit of" in response.json()["detail"]


def test_import_by_path_only_under_the_import_roots(settings, tmp_path):
    from aieval_server.main import create_app

    root = tmp_path / "packages"
    root.mkdir()
    (root / "pack.zip").write_bytes(GSM8K_PACKAGE)
    with TestClient(create_app(settings)) as client:
        off = client.post(f"{A}/datasets/packages/from-path", json={"path": str(root / "pack.zip")})
        assert off.status_code == 422 and "AIEVAL_DATA_IMPORT_ROOTS" in off.json()["detail"]
    with TestClient(create_app(settings.model_copy(update={"data_import_roots": [root]}))) as client:
        outside = client.post(f"{A}/datasets/packages/from-path", json={"path": "/etc/passwd"})
        assert outside.status_code == 422 and "under the import roots" in outside.json()["detail"]
        escaping = client.post(f"{A}/datasets/packages/from-path", json={"path": f"{root}/../packages/../.."})
        assert escaping.status_code == 422
        started = client.post(f"{A}/datasets/packages/from-path", json={"path": str(root / "pack.zip")})
        assert started.status_code == 202, started.text
        assert finished(client, started.json()["id"])["state"] == "succeeded"
        assert gsm8k(client)["status"] == "ready"
        assert (root / "pack.zip").exists()  # the server's own file stays


@pytest.mark.parametrize("status", ["ready", "partial", "missing"])
def test_the_benchmark_catalogue_filters_by_status(client, status):
    page = client.get(f"{A}/datasets/builtin/benchmarks", params={"status": status, "page_size": 200}).json()
    assert all(b["status"] == status for b in page["items"])
    if status == "missing":
        assert page["total"] > 100  # nothing imported: almost every benchmark lacks data
