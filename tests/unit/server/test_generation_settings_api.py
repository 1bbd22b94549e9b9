"""Generation settings through the API: no max_out_len means each dataset's own settings; a built-in config's own
settings can be looked up before a run."""

from __future__ import annotations

import pytest


def test_a_builtin_configs_own_settings_are_shown(client):
    gsm8k = client.get("/api/v1/datasets/builtin/gsm8k_gen/settings")
    assert gsm8k.status_code == 200, gsm8k.text
    assert gsm8k.json() == {"config": "gsm8k_gen", "generates": True, "inferencers": ["GenInferencer"],
                            "max_out_len": [512], "model_decides": False, "model_default_max_out_len": 256,
                            "stopping_criteria": [], "readable": True, "needs_judge": False}
    qualified = client.get("/api/v1/datasets/builtin/gsm8k/gsm8k_gen/settings").json()
    assert qualified["max_out_len"] == [512] and qualified["config"] == "gsm8k/gsm8k_gen"
    math = client.get("/api/v1/datasets/builtin/math_4shot_base_gen_43d5b6/settings").json()
    assert math["max_out_len"] == [2048] and math["stopping_criteria"] == ["Problem", "问题:"]
    bbh = client.get("/api/v1/datasets/builtin/bbh_gen/settings").json()
    assert bbh["max_out_len"] == [] and bbh["model_decides"] is True  # the model's max_out_len applies
    ppl = client.get("/api/v1/datasets/builtin/mmlu_ppl/settings").json()
    assert ppl["generates"] is False and ppl["inferencers"] == ["PPLInferencer"]


@pytest.mark.parametrize("config", ["no_such_config_gen", "nowhere/gsm8k_gen", "..%2F..%2Fetc%2Fpasswd"])
def test_an_unknown_config_is_a_404_with_a_sentence(client, config):
    response = client.get(f"/api/v1/datasets/builtin/{config}/settings")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown built-in dataset")


def _evaluation(client, tiny_model, params: dict | None):
    models = client.get("/api/v1/models").json() or [
        client.post("/api/v1/models", json={"name": "tiny", "kind": "huggingface", "path": str(tiny_model)}).json()]
    datasets = client.get("/api/v1/datasets").json() or [
        client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]]
    body = {"model_ids": [models[0]["id"]], "dataset_ids": [datasets[0]["id"]]}
    return client.post("/api/v1/evaluations", json=body if params is None else {**body, "params": params})


@pytest.mark.parametrize("params", [None, {}, {"limit": 2}, {"limit": 2, "max_out_len": None}])
def test_no_max_out_len_reaches_the_engine_as_unset(client, settings, tiny_model, params):
    from aieval_server.db import session_scope
    from aieval_server.services import evaluations as evaluation_service

    created = _evaluation(client, tiny_model, params)
    assert created.status_code == 201, created.text
    detail = client.get(f"/api/v1/evaluations/{created.json()['id']}").json()
    assert "max_out_len" not in detail["params"]  # nothing chosen for the user
    with session_scope(settings.database_url) as session:  # the spec a worker builds from the stored row
        evaluation = evaluation_service.get(session, created.json()["id"])
        spec = evaluation_service.build_spec(settings, None, evaluation.name, [link.model for link in evaluation.models],
                                             [link.dataset for link in evaluation.datasets], evaluation.params)
    assert spec.params.max_out_len is None


def test_an_explicit_max_out_len_is_kept_and_checked(client, tiny_model):
    created = _evaluation(client, tiny_model, {"max_out_len": 64})
    assert created.status_code == 201, created.text
    assert client.get(f"/api/v1/evaluations/{created.json()['id']}").json()["params"]["max_out_len"] == 64
    for bad in (0, 40_000, "long"):
        refused = _evaluation(client, tiny_model, {"max_out_len": bad})
        assert refused.status_code == 422 and "max_out_len" in refused.text
