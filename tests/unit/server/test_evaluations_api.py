from __future__ import annotations

import json


def _setup(client, tiny_model):
    model = client.post("/api/v1/models", json={"name": "tiny", "kind": "huggingface", "path": str(tiny_model)}).json()
    content = b'{"question": "q?", "A": "a", "B": "b", "answer": "A"}\n'
    dataset = client.post("/api/v1/datasets", files={"file": ("mcq.jsonl", content)}).json()["dataset"]
    return model, dataset


def test_create_queues_one_message_and_lists_newest_first(client, tiny_model, queued_messages):
    model, dataset = _setup(client, tiny_model)
    ids = []
    for name in ("first", "second 100%", "Third_run"):
        response = client.post("/api/v1/evaluations", json={
            "name": name, "model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": {"limit": 2}})
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "queued" and response.json()["queue"] == "local"
        ids.append(response.json()["id"])
    assert len(queued_messages()) == 3 and all(m.endswith(".local.msg") for m in queued_messages())
    page = client.get("/api/v1/evaluations", params={"page_size": 2}).json()
    assert page["total"] == 3 and [e["name"] for e in page["items"]] == ["Third_run", "second 100%"]
    assert client.get("/api/v1/evaluations", params={"page": 2, "page_size": 2}).json()["items"][0]["name"] == "first"
    assert client.get("/api/v1/evaluations", params={"q": "seco"}).json()["total"] == 1
    # Case does not matter; % and _ are literal characters, not wildcards.
    assert [e["name"] for e in client.get("/api/v1/evaluations", params={"q": "THIRD"}).json()["items"]] == ["Third_run"]
    assert [e["name"] for e in client.get("/api/v1/evaluations", params={"q": "0%"}).json()["items"]] == ["second 100%"]
    assert client.get("/api/v1/evaluations", params={"q": "d_r"}).json()["total"] == 1
    assert client.get("/api/v1/evaluations", params={"q": "%"}).json()["total"] == 1
    assert client.get("/api/v1/evaluations", params={"q": "_"}).json()["total"] == 1
    by_number = client.get("/api/v1/evaluations", params={"q": str(ids[0])}).json()["items"]
    assert ids[0] in [e["id"] for e in by_number]  # a number finds the evaluation with that id (and names with it)
    assert client.get("/api/v1/evaluations", params={"q": "tiny"}).json()["total"] == 3
    assert client.get("/api/v1/evaluations", params={"status": "running"}).json()["total"] == 0
    assert client.get("/api/v1/evaluations", params={"model_id": model["id"]}).json()["total"] == 3
    assert client.get("/api/v1/evaluations", params={"dataset_id": 999}).json()["total"] == 0
    bad_status = client.get("/api/v1/evaluations", params={"status": "exploded"})
    assert bad_status.status_code == 422 and "'timeout'" in bad_status.json()["detail"]  # names the known ones


def test_endpoint_only_jobs_go_to_the_api_queue(client, queued_messages):
    endpoint = client.post("/api/v1/models", json={"name": "ep", "kind": "openai", "base_url": "http://h/v1", "model": "m"}).json()
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]
    created = client.post("/api/v1/evaluations", json={"model_ids": [endpoint["id"]], "dataset_ids": [dataset["id"]]})
    assert created.status_code == 201 and created.json()["queue"] == "api"
    assert [m.rsplit(".", 2)[1] for m in queued_messages()] == ["api"]  # a worker started with --queues local skips it


def test_dify_apps_are_evaluated_on_the_api_queue(client, queued_messages):
    dify = client.post("/api/v1/models", json={"name": "my app", "kind": "dify", "base_url": "http://h/v1",
                                               "api_key": "app-secret-1234"}).json()
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]
    created = client.post("/api/v1/evaluations", json={"model_ids": [dify["id"]], "dataset_ids": [dataset["id"]]})
    assert created.status_code == 201, created.text
    assert created.json()["queue"] == "api" and created.json()["models"][0]["kind"] == "dify"
    assert [m.rsplit(".", 2)[1] for m in queued_messages()] == ["api"]


def test_bad_submissions_are_refused_and_leave_nothing(client, tiny_model, settings, queued_messages):
    model, dataset = _setup(client, tiny_model)
    endpoint = client.post("/api/v1/models", json={"name": "ep", "kind": "openai", "base_url": "http://h/v1", "model": "m"}).json()
    dify = client.post("/api/v1/models", json={"name": "dify", "kind": "dify", "base_url": "http://h/v1"}).json()
    gone = settings.data_dir / "models" / "gone"  # under the model roots, but no checkpoint there
    missing = client.post("/api/v1/models", json={"name": "gone", "kind": "huggingface", "path": str(gone)}).json()
    ppl = client.post("/api/v1/datasets", files={"file": ("p.jsonl", b'{"question": "q", "A": "1", "B": "2", "answer": "B"}\n')},
                      data={"infer_method": "ppl"}).json()["dataset"]
    ok = {"model_ids": [model["id"]], "dataset_ids": [dataset["id"]]}
    corpus = [
        ({**ok, "model_ids": [999]}, "unknown model id(s): 999"),
        ({**ok, "dataset_ids": [998]}, "unknown dataset id(s): 998"),
        ({**ok, "model_ids": []}, "model_ids"),
        ({**ok, "dataset_ids": []}, "choose at least one dataset"),
        ({**ok, "model_ids": [model["id"], model["id"]]}, "listed twice"),
        ({**ok, "builtin_datasets": ["gsm8k_gen"]}, "not on this server"),
        ({**ok, "builtin_datasets": ["../../etc/passwd"]}, "unknown built-in dataset"),
        ({**ok, "model_ids": [dify["id"]], "dataset_ids": [ppl["id"]]}, "perplexity"),
        ({**ok, "model_ids": [missing["id"]]}, f"no Hugging Face checkpoint at {gone}"),
        ({**ok, "model_ids": [endpoint["id"]], "dataset_ids": [ppl["id"]]}, "perplexity"),
        ({**ok, "params": {"limit": 0}}, "params.limit"),
        ({**ok, "params": {"max_out_len": 10**9}}, "params.max_out_len"),
        ({**ok, "params": {"gpu": "yes"}}, "params.gpu"),
        ({**ok, "name": "a\nb"}, "control characters"),
        ({**ok, "model_ids": "1"}, "model_ids"),
    ]
    for body, expected in corpus:
        response = client.post("/api/v1/evaluations", json=body)
        assert response.status_code == 422, (body, response.text)
        assert expected in response.text, (body, response.text)
    assert client.post("/api/v1/evaluations", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/api/v1/evaluations").json()["total"] == 0
    assert queued_messages() == []
    assert [d["kind"] for d in client.get("/api/v1/datasets").json()] == ["custom", "custom"]  # no builtin row
    assert not settings.jobs_dir.exists() or not any(settings.jobs_dir.iterdir())


def test_unknown_evaluation_ids_are_404(client):
    for method, path in [("get", "/api/v1/evaluations/42"), ("post", "/api/v1/evaluations/42/cancel"),
                         ("post", "/api/v1/evaluations/42/retry"), ("delete", "/api/v1/evaluations/42"),
                         ("get", "/api/v1/evaluations/42/logs"), ("get", "/api/v1/evaluations/42/samples"),
                         ("get", "/api/v1/evaluations/42/export?format=csv")]:
        response = getattr(client, method)(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["detail"] == "evaluation 42 does not exist"


def test_cancel_of_a_queued_job_is_immediate_and_retry_requeues(client, tiny_model, queued_messages):
    model, dataset = _setup(client, tiny_model)
    created = client.post("/api/v1/evaluations", json={"model_ids": [model["id"]], "dataset_ids": [dataset["id"]]}).json()
    cancelled = client.post(f"/api/v1/evaluations/{created['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled by request"
    again = client.post(f"/api/v1/evaluations/{created['id']}/cancel")
    assert again.status_code == 409 and "already finished" in again.json()["detail"]
    retried = client.post(f"/api/v1/evaluations/{created['id']}/retry").json()
    assert retried["status"] == "queued" and retried["cancel_requested"] is False
    assert len(queued_messages()) == 2
    assert client.delete(f"/api/v1/models/{model['id']}").status_code == 409  # still used
    assert client.delete(f"/api/v1/evaluations/{created['id']}").status_code == 204
    assert client.delete(f"/api/v1/models/{model['id']}").status_code == 204


def test_openapi_and_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/evaluations/{evaluation_id}/samples" in spec["paths"]
    assert json.dumps(spec).count("api_key") >= 1
