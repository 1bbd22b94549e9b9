"""Schedules run on a new model version (services/model_versions.py, services/schedules.check_model_versions): the
served model's fingerprint, the decision, the API's rules for the trigger, and the check on SQLite against a loopback
endpoint (tests/fake_openai.py serves GET /v1/models). Two beats on PostgreSQL with a real worker:
tests/integration/server/test_schedule_new_version.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fake_openai import FakeChatEndpoint

UTC = timezone.utc
KEY = "sk-version-check-key-93c1"
VLLM_ENTRY = {"id": "qwen", "object": "model", "created": 1700000000, "owned_by": "vllm", "root": "/ckpt/qwen-v1",
              "parent": None, "max_model_len": 8192, "permission": [{"id": "modelperm-1", "created": 1700000001}]}


# ---- the fingerprint and the decision -----------------------------------------------------------------------------
def test_the_fingerprint_is_the_served_entry_reduced_to_what_a_redeployment_changes():
    from aieval_server.services.model_versions import fingerprint

    listing = {"object": "list", "data": [{"id": "other", "created": 1}, VLLM_ENTRY]}
    assert fingerprint(listing, "qwen") == {"id": "qwen", "created": 1700000000, "owned_by": "vllm",
                                            "root": "/ckpt/qwen-v1", "max_model_len": 8192}
    # a plain OpenAI-style entry: only what is there
    assert fingerprint({"data": [{"id": "gpt", "object": "model", "created": 5}]}, "gpt") == {"id": "gpt",
                                                                                              "created": 5}


@pytest.mark.parametrize("listing, says", [
    ({"data": [{"id": "other"}]}, "does not serve model 'qwen' (it lists other)"),
    ({"data": []}, "(it lists none)"),
    ({"models": []}, "did not answer an OpenAI list of models"),
    (["qwen"], "did not answer an OpenAI list of models"),
])
def test_a_listing_without_the_model_says_why(listing, says):
    from aieval_server.services.model_versions import VersionCheckError, fingerprint

    with pytest.raises(VersionCheckError) as refused:
        fingerprint(listing, "qwen", "http://h/v1/models")
    assert says in str(refused.value)


def test_the_decision_records_the_first_version_and_runs_on_a_change_only():
    from aieval_server.enums import ModelVersionChange
    from aieval_server.services.model_versions import decide, version_text

    v1 = version_text({3: {"id": "qwen", "created": 1}, 1: {"id": "llama", "created": 9}})
    assert v1 == version_text({1: {"created": 9, "id": "llama"}, 3: {"created": 1, "id": "qwen"}})  # canonical
    v2 = version_text({3: {"id": "qwen", "created": 2}, 1: {"id": "llama", "created": 9}})
    assert decide(None, v1) == ModelVersionChange.first_seen
    assert decide(v1, v1) == ModelVersionChange.unchanged
    assert decide(v1, v2) == ModelVersionChange.changed


# ---- the API ------------------------------------------------------------------------------------------------------
@pytest.fixture
def endpoint():
    endpoint = FakeChatEndpoint(answer="A")
    endpoint.served_models = [dict(VLLM_ENTRY)]
    yield endpoint
    endpoint.close()


def _request(client, endpoint_url: str, kind: str = "openai") -> dict:
    model = client.post("/api/v1/models", json={"name": f"served {kind}", "kind": kind, "base_url": endpoint_url,
                                                "model": "qwen", "api_key": KEY})
    assert model.status_code == 201, model.text
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]
    return {"model_ids": [model.json()["id"]], "dataset_ids": [dataset["id"]], "params": {"limit": 1}}


def test_the_trigger_rules_of_the_api(client, endpoint):
    request = _request(client, endpoint.url)
    no_cron = client.post("/api/v1/schedules", json={"name": "cron without cron", "request": request})
    assert no_cron.status_code == 422 and "needs a cron expression" in no_cron.json()["detail"]

    watched = client.post("/api/v1/schedules", json={"name": "on new versions", "trigger": "new_model_version",
                                                     "request": request})
    assert watched.status_code == 201, watched.text
    body = watched.json()
    assert body["trigger"] == "new_model_version" and body["cron"] is None
    assert body["next_run_at"] is None and body["next_runs"] == [] and body["model_version"] is None

    both = client.patch(f"/api/v1/schedules/{body['id']}", json={"cron": "@daily"}).json()
    assert both["cron"] == "@daily" and len(both["next_runs"]) == 5  # a cron runs it too
    back = client.patch(f"/api/v1/schedules/{body['id']}", json={"cron": None}).json()
    assert back["cron"] is None and back["next_run_at"] is None
    to_cron = client.patch(f"/api/v1/schedules/{body['id']}", json={"trigger": "cron"})
    assert to_cron.status_code == 422 and "needs a cron expression" in to_cron.json()["detail"]

    checkpoint_only = {**request, "model_ids": []}
    checkpoint_only["model_ids"] = [client.post("/api/v1/models", json={
        "name": "dify app", "kind": "dify", "base_url": endpoint.url, "api_key": KEY}).json()["id"]]
    nothing_to_watch = client.post("/api/v1/schedules", json={"name": "x", "trigger": "new_model_version",
                                                              "request": checkpoint_only})
    assert nothing_to_watch.status_code == 422
    assert "OpenAI-compatible endpoint models" in nothing_to_watch.json()["detail"]


# ---- the check ----------------------------------------------------------------------------------------------------
def test_a_changed_version_submits_one_run_the_first_and_the_same_none(client, settings, endpoint, queued_messages,
                                                                       caplog):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Schedule
    from aieval_server.services.schedules import check_model_versions, tick

    schedule = client.post("/api/v1/schedules", json={"name": "on new versions", "trigger": "new_model_version",
                                                      "request": _request(client, endpoint.url)}).json()
    now = datetime.now(UTC)
    before = len(queued_messages())
    assert tick(settings, now=now) == []  # the first look only records the version
    seen = client.get(f"/api/v1/schedules/{schedule['id']}").json()
    assert '"created":1700000000' in seen["model_version"] and '"root":"/ckpt/qwen-v1"' in seen["model_version"]
    assert endpoint.listing_authorizations == [f"Bearer {KEY}"]  # the model's key, decrypted
    assert check_model_versions(settings, now=now) == []  # asked again only after schedule_version_check_s
    assert len(endpoint.listing_authorizations) == 1

    later = now + timedelta(seconds=settings.schedule_version_check_s + 1)
    assert check_model_versions(settings, now=later) == []  # asked, the same version: no run
    assert len(endpoint.listing_authorizations) == 2

    endpoint.served_models = [{**VLLM_ENTRY, "created": 1700009999, "root": "/ckpt/qwen-v2"}]  # redeployed
    much_later = later + timedelta(seconds=settings.schedule_version_check_s + 1)
    submitted = check_model_versions(settings, now=much_later)
    assert len(submitted) == 1 and len(queued_messages()) == before + 1
    assert check_model_versions(settings, now=much_later) == []  # claimed: the same look never runs twice
    even_later = much_later + timedelta(seconds=settings.schedule_version_check_s + 1)
    assert check_model_versions(settings, now=even_later) == []  # the new version is the recorded one now
    with session_scope(settings.database_url) as session:
        row = session.get(Schedule, schedule["id"])
        assert '"root":"/ckpt/qwen-v2"' in row.model_version and row.last_evaluation_id == submitted[0]
        run = session.get(Evaluation, submitted[0])
        assert run.schedule_id == schedule["id"] and run.status == "queued"

    endpoint.served_models = [{"id": "renamed"}]  # the endpoint no longer serves it: said on the schedule, no run
    gone = even_later + timedelta(seconds=settings.schedule_version_check_s + 1)
    assert check_model_versions(settings, now=gone) == []
    error = client.get(f"/api/v1/schedules/{schedule['id']}").json()["last_error"]
    assert "does not serve model 'qwen' (it lists renamed)" in error
    assert KEY not in caplog.text and KEY not in error


def test_two_checks_that_read_the_same_state_submit_once(client, settings, endpoint, queued_messages):
    """The claim on version_checked_at is a compare-and-set on the value read (as two beats would read it)."""
    from aieval_server.db import session_scope
    from aieval_server.models import Schedule
    from aieval_server.services.schedules import claim_version_check

    schedule = client.post("/api/v1/schedules", json={"name": "on new versions", "trigger": "new_model_version",
                                                      "request": _request(client, endpoint.url)}).json()
    now = datetime.now(UTC)
    with session_scope(settings.database_url) as first, session_scope(settings.database_url) as second:
        assert claim_version_check(first, schedule["id"], None, now) is not None
        first.commit()
        assert claim_version_check(second, schedule["id"], None, now) is None
    with session_scope(settings.database_url) as session:
        assert session.get(Schedule, schedule["id"]).version_checked_at is not None
