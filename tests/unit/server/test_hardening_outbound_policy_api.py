"""Issue 8 finding 5 on the server: model URLs under the outbound policy (SSRF).

Only loopback is ever connected to: refused addresses are refused before any connection is made."""

from __future__ import annotations

import json

import pytest
from fake_dify import FakeDify
from fake_openai import FakeChatEndpoint
from fastapi.testclient import TestClient

from aieval_engine.netpolicy import OutboundPolicy

SECRET = "sk-outbound-policy-test-0123456789"
REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost@169.254.169.254/",
    "http://user:pass@127.0.0.1:8000/v1",
    "http://[fe80::1]:8000/v1",
    "http://[fd00:ec2::254]/v1",
    "http://2852039166/v1",  # 169.254.169.254 written as one number
    "http://100.100.100.200/latest/meta-data/",
    "http://0.0.0.0:8000/v1",
]


def app_client(settings) -> TestClient:
    from aieval_server.main import create_app

    return TestClient(create_app(settings), base_url="http://127.0.0.1")


@pytest.fixture
def strict_settings(settings):
    """The production policy (no loopback, no private networks) on the embedded test server."""
    return settings.model_copy(update={"outbound_allow_loopback": False, "outbound_allow_private": False})


@pytest.fixture
def endpoint():
    server = FakeChatEndpoint(answer="OK")
    yield server
    server.close()


def test_model_urls_that_no_policy_allows_are_422(settings):
    with app_client(settings) as client:
        existing = client.post("/api/v1/models", json={"name": "ok", "kind": "openai",
                                                       "base_url": "http://127.0.0.1:18999/v1", "model": "m"})
        assert existing.status_code == 201, existing.text
        for url in REFUSED_URLS:
            for body in ({"name": "x", "kind": "openai", "base_url": url, "model": "m"},
                         {"name": "x", "kind": "dify", "base_url": url}):
                response = client.post("/api/v1/models", json=body)
                assert response.status_code == 422, (url, response.text)
                assert "refused by the outbound policy" in response.text, response.text
            patched = client.patch(f"/api/v1/models/{existing.json()['id']}", json={"base_url": url})
            assert patched.status_code == 422 and "refused by the outbound policy" in patched.text, patched.text
        refused = client.post("/api/v1/models", json={"name": "x", "kind": "openai", "model": "m",
                                                      "base_url": "http://localhost@169.254.169.254/"})
        assert "user name or password" in refused.json()["problems"][0]
        assert [m["name"] for m in client.get("/api/v1/models").json()] == ["ok"]


def test_connection_test_refuses_a_name_resolving_to_a_refused_address(strict_settings, endpoint):
    with app_client(strict_settings) as client, FakeDify({"Reply with OK.": "OK"}) as dify:
        port = endpoint.url.split(":")[2].split("/")[0]
        bodies = [
            {"name": "vllm", "kind": "openai", "base_url": f"http://localhost:{port}/v1", "model": "m", "api_key": SECRET},
            {"name": "dify", "kind": "dify", "base_url": dify.base_url.replace("127.0.0.1", "localhost"),
             "api_key": SECRET},
            {"name": "literal", "kind": "openai", "base_url": endpoint.url, "model": "m"},
        ]
        for body in bodies:
            created = client.post("/api/v1/models", json=body)
            assert created.status_code == 201, created.text  # names are resolved when connecting, not when saved
            result = client.post(f"/api/v1/models/{created.json()['id']}/test").json()
            assert result["ok"] is False, result
            assert result["error"].startswith("refused by the outbound policy: "), result
            assert "loopback" in result["error"] and SECRET not in json.dumps(result)
        assert endpoint.authorizations == [] and dify.requests == []  # nothing was connected to


def test_listed_networks_are_reached(strict_settings, endpoint):
    settings = strict_settings.model_copy(update={"outbound_allow_networks": ["127.0.0.0/8", "::1"]})
    with app_client(settings) as client:
        port = endpoint.url.split(":")[2].split("/")[0]
        created = client.post("/api/v1/models", json={"name": "vllm", "kind": "openai", "model": "m",
                                                      "base_url": f"http://localhost:{port}/v1"}).json()
        result = client.post(f"/api/v1/models/{created['id']}/test").json()
        assert result["ok"] is True and result["reply"] == "OK", result
    assert len(endpoint.authorizations) == 1


def test_a_stored_row_with_a_refused_url_is_not_connected_to(settings, connect_targets):
    """Rows saved before the rule (the API refuses them now) are refused when connecting."""
    from aieval_server.db import session_scope
    from aieval_server.models import Model

    with app_client(settings) as client:
        with session_scope(settings.database_url) as session:
            for i, url in enumerate(["http://localhost@169.254.169.254/v1", "http://169.254.169.254/v1"]):
                session.add(Model(name=f"legacy {i}", kind="openai", settings={"base_url": url, "model": "m"}))
        for model in client.get("/api/v1/models").json():
            result = client.post(f"/api/v1/models/{model['id']}/test").json()
            assert result["ok"] is False and result["error"].startswith("refused by the outbound policy: "), result
    assert not [t for t in connect_targets if t[0] != "127.0.0.1" and t[0] != "::1"]


@pytest.fixture
def connect_targets():
    """Every socket.connect made by this process while the test runs (an audit hook: nothing is replaced)."""
    import sys

    targets: list[tuple] = []
    active = [True]

    def hook(event, args):
        if active[0] and event == "socket.connect" and isinstance(args[1], tuple):
            targets.append(args[1][:2])

    sys.addaudithook(hook)
    yield targets
    active[0] = False


def test_production_defaults_refuse_loopback_and_private_networks(monkeypatch):
    from aieval_server.config import Settings

    monkeypatch.setenv("AIEVAL_ENV", "prod")
    production = Settings().outbound_policy
    assert production == OutboundPolicy.build(allow_loopback=False, allow_private=False)
    monkeypatch.setenv("AIEVAL_OUTBOUND_ALLOW_NETWORKS", '["10.0.5.0/24", "192.168.1.20"]')
    listed = Settings().outbound_policy
    assert [str(n) for n in listed.allow_networks] == ["10.0.5.0/24", "192.168.1.20/32"]
    monkeypatch.setenv("AIEVAL_ENV", "dev")
    monkeypatch.delenv("AIEVAL_OUTBOUND_ALLOW_NETWORKS")
    assert Settings().outbound_policy == OutboundPolicy()  # embedded: loopback (local vLLM, the demo) allowed
    monkeypatch.setenv("AIEVAL_OUTBOUND_ALLOW_NETWORKS", '["intranet"]')
    with pytest.raises(ValueError, match="'intranet' is not an IP network"):
        Settings()


@pytest.mark.slow
def test_the_workers_opencompass_process_obeys_the_servers_policy(strict_settings, endpoint, tmp_path):
    """An evaluation of a loopback endpoint under a policy refusing loopback fails with the reason, and the
    endpoint never hears from OpenCompass."""
    from aieval_engine.demo import DEMO_DATA
    from aieval_engine.launchers import ColdLauncher
    from aieval_server.services.runs import run_evaluation
    from aieval_server.storage import get_storage

    with app_client(strict_settings) as client:
        model = client.post("/api/v1/models", json={"name": "vllm", "kind": "openai", "model": "m",
                                                    "base_url": endpoint.url, "options": {"retries": 1}}).json()
        content = (DEMO_DATA / "demo_qa.jsonl").read_bytes()
        dataset = client.post("/api/v1/datasets", files={"file": ("qa.jsonl", content)}).json()["dataset"]
        evaluation = client.post("/api/v1/evaluations", json={
            "name": "refused", "model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": {"limit": 2},
        })
        assert evaluation.status_code == 201, evaluation.text
        evaluation_id = evaluation.json()["id"]
        run_evaluation(strict_settings, get_storage(strict_settings), evaluation_id, ColdLauncher())
        finished = client.get(f"/api/v1/evaluations/{evaluation_id}").json()
    assert finished["status"] == "failed", finished
    assert "refused by the outbound policy: 127.0.0.1 is a loopback" in finished["error"], finished["error"]
    assert endpoint.authorizations == []
