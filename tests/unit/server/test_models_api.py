from __future__ import annotations

import json

SECRET = "sk-test-very-secret-key-0123456789"


def test_api_key_is_encrypted_at_rest_masked_and_never_returned(client, settings):
    created = client.post("/api/v1/models", json={
        "name": "endpoint", "kind": "openai", "base_url": "http://127.0.0.1:18999/v1", "model": "m", "api_key": SECRET,
    })
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["has_api_key"] is True and body["api_key_hint"] == "…6789"
    for response in (created, client.get(f"/api/v1/models/{body['id']}"), client.get("/api/v1/models")):
        assert SECRET not in response.text
    raw = (settings.data_dir / "aieval.db").read_bytes() + (settings.data_dir / "aieval.db-wal").read_bytes()
    assert SECRET.encode() not in raw  # encrypted in the database file


def test_model_test_reports_the_exact_connection_error_without_the_key(client):
    model = client.post("/api/v1/models", json={
        "name": "down", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": SECRET,
    }).json()
    result = client.post(f"/api/v1/models/{model['id']}/test").json()
    assert result["ok"] is False
    assert "Connection refused" in result["error"] and SECRET not in json.dumps(result)
    assert "(tried http://127.0.0.1:1/v1/chat/completions)" in result["error"]  # a typo in the URL shows


def test_a_model_is_tested_before_it_is_saved_and_nothing_is_stored(client):
    body = {"name": "draft", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": SECRET}
    result = client.post("/api/v1/models/test", json=body).json()
    assert result["ok"] is False and "(tried http://127.0.0.1:1/v1/chat/completions)" in result["error"]
    assert SECRET not in json.dumps(result)
    assert client.get("/api/v1/models").json() == []
    refused = client.post("/api/v1/models/test", json={**body, "base_url": "ftp://127.0.0.1/v1"})
    assert refused.status_code == 422  # the same rules as saving


def test_huggingface_model_test_loads_the_checkpoint(client, tiny_model):
    model = client.post("/api/v1/models", json={"name": "tiny", "kind": "huggingface", "path": str(tiny_model)}).json()
    result = client.post(f"/api/v1/models/{model['id']}/test").json()
    assert result["ok"] is True and "LlamaForCausalLM" in result["reply"]


def test_bad_models_get_readable_422_and_leave_no_row(client):
    bad_bodies = [
        ({"name": "x", "kind": "openai", "base_url": "ftp://host/v1", "model": "m"}, "base_url"),
        ({"name": "x", "kind": "openai", "base_url": "http://h/v1"}, "model: required"),
        ({"name": "x", "kind": "openai", "base_url": "http://h/ v1", "model": "m"}, "base_url"),
        ({"name": "line\nbreak", "kind": "openai", "base_url": "http://h/v1", "model": "m"}, "control characters"),
        ({"name": "x" * 201, "kind": "openai", "base_url": "http://h/v1", "model": "m"}, "name"),
        ({"name": "x", "kind": "telepathy"}, "kind"),
        ({"name": "x", "kind": "huggingface"}, "path: required"),
        ({"name": "x", "kind": "huggingface", "path": "/m", "api_key": "k"}, "no API key"),
        ({"name": "x", "kind": "openai", "base_url": "http://h/v1", "model": "m", "options": {"concurrency": 0}}, "concurrency"),
        ({"name": "x", "kind": "openai", "base_url": "http://h/v1", "model": "m", "options": {"rm -rf": 1}}, "rm -rf"),
        ({"name": "x", "kind": "dify"}, "base_url: required"),
    ]
    for body, expected in bad_bodies:
        response = client.post("/api/v1/models", json=body)
        assert response.status_code == 422, (body, response.text)
        assert expected in response.text, (body, response.text)
    assert client.get("/api/v1/models").json() == []


def test_duplicate_names_conflict_and_unknown_ids_are_404(client):
    body = {"name": "Same", "kind": "dify", "base_url": "https://dify.example/v1"}
    assert client.post("/api/v1/models", json=body).status_code == 201
    duplicate = client.post("/api/v1/models", json={**body, "name": "same"})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["detail"]
    assert client.get("/api/v1/models/999").status_code == 404
    assert client.patch("/api/v1/models/999", json={"name": "n"}).status_code == 404
    assert client.delete("/api/v1/models/999").status_code == 404
    assert client.get("/api/v1/models/abc").status_code == 422


def test_edit_keeps_the_key_unless_replaced_or_cleared(client):
    model = client.post("/api/v1/models", json={
        "name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "api_key": SECRET}).json()
    edited = client.patch(f"/api/v1/models/{model['id']}", json={"model": "m2"}).json()
    assert edited["settings"]["model"] == "m2" and edited["has_api_key"] is True
    cleared = client.patch(f"/api/v1/models/{model['id']}", json={"clear_api_key": True}).json()
    assert cleared["has_api_key"] is False and cleared["api_key_hint"] is None
    assert client.delete(f"/api/v1/models/{model['id']}").status_code == 204


def test_dify_connection_test_sends_the_engines_request(client):
    from fake_dify import FakeDify

    from aieval_engine.dify import TEST_USER

    with FakeDify({"Reply with OK.": "OK"}, api_key=SECRET) as dify:
        model = client.post("/api/v1/models", json={
            "name": "app", "kind": "dify", "base_url": dify.base_url, "api_key": SECRET,
            "options": {"inputs": {"lang": "en"}, "timeout": 30}}).json()
        assert model["settings"] == {"base_url": dify.base_url + "/", "inputs": {"lang": "en"}, "timeout": 30}
        result = client.post(f"/api/v1/models/{model['id']}/test").json()
        assert result["ok"] is True and result["reply"] == "OK" and result["latency_ms"] > 0
        assert dify.requests[-1]["authorization"] == f"Bearer {SECRET}"
        assert dify.requests[-1]["body"] == {"inputs": {"lang": "en"}, "query": "Reply with OK.",
                                             "response_mode": "blocking", "user": TEST_USER}
        dify.fail_next.append((400, {"code": "invalid_param", "message": f"{SECRET} rejected", "status": 400}))
        failed = client.post(f"/api/v1/models/{model['id']}/test").json()
    assert failed["ok"] is False and "HTTP 400" in failed["error"] and "invalid_param: **** rejected" in failed["error"]
    assert SECRET not in json.dumps(failed)
    bad = client.post("/api/v1/models", json={"name": "b", "kind": "dify", "base_url": "http://h/v1", "options": {"model": "x"}})
    assert bad.status_code == 422 and "model: Extra inputs are not permitted" in bad.text
