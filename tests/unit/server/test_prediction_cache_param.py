"""The per-evaluation switch of the prediction cache through the API (params.prediction_cache): on unless turned off,
stored with the evaluation, refused with a readable 422 when it is not a yes/no, and it reaches the engine spec the
worker builds."""

from __future__ import annotations

from aieval_server.services import evaluations as evaluation_service


def _body(client) -> dict:
    endpoint = client.post("/api/v1/models", json={"name": "ep", "kind": "openai", "base_url": "http://h/v1",
                                                   "model": "m"}).json()
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]
    return {"model_ids": [endpoint["id"]], "dataset_ids": [dataset["id"]]}


def test_the_cache_is_on_unless_an_evaluation_turns_it_off(client, settings):
    body = _body(client)
    default = client.post("/api/v1/evaluations", json=body)
    off = client.post("/api/v1/evaluations", json={**body, "params": {"prediction_cache": False}})
    assert default.status_code == off.status_code == 201, (default.text, off.text)
    assert default.json()["params"]["prediction_cache"] is True
    assert client.get(f"/api/v1/evaluations/{off.json()['id']}").json()["params"]["prediction_cache"] is False

    # what the worker runs: the stored params become the engine spec's (an evaluation stored before the switch
    # existed has none, and gets the default)
    from aieval_server.db import session_scope

    with session_scope(settings.database_url) as session:
        for evaluation_id, expected in ((default.json()["id"], True), (off.json()["id"], False)):
            evaluation = evaluation_service.get(session, evaluation_id)
            spec = evaluation_service.build_spec(settings, None, evaluation.name,
                                                 [link.model for link in evaluation.models],
                                                 [link.dataset for link in evaluation.datasets], evaluation.params)
            assert spec.params.prediction_cache is expected
        params_before = {k: v for k, v in evaluation.params.items() if k != "prediction_cache"}
        spec = evaluation_service.build_spec(settings, None, evaluation.name, [link.model for link in evaluation.models],
                                             [link.dataset for link in evaluation.datasets], params_before)
        assert spec.params.prediction_cache is True


def test_a_switch_that_is_not_yes_or_no_is_a_readable_422(client):
    response = client.post("/api/v1/evaluations", json={**_body(client), "params": {"prediction_cache": "sometimes"}})
    assert response.status_code == 422
    assert "prediction_cache" in response.text
