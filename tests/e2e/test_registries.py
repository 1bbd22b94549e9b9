"""Models registry in the browser: register an OpenAI-compatible endpoint with an API key, see it masked,
test the connection (success and a readable failure), edit, delete."""

from __future__ import annotations

import json
import urllib.request

import pytest
from fake_openai import FakeChatEndpoint
from harness import free_port
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.timeout(120)
SECRET = "sk-e2e-secret-98765"


@pytest.fixture
def chat_endpoint():
    """An OpenAI-compatible /chat/completions that records the Authorization headers it receives."""
    endpoint = FakeChatEndpoint(answer="OK")
    yield endpoint.url, endpoint.authorizations
    endpoint.close()


def test_register_mask_test_edit_and_delete_an_api_model(page: Page, chat_endpoint):
    base_url, seen = chat_endpoint
    page.goto("/models")
    page.click("[data-test=add-model]")
    page.fill("[data-test=model-name] input", "e2e endpoint")
    page.fill("[data-test=model-base-url] input", base_url)
    page.fill("[data-test=model-model] input", "stub-model")
    page.fill("[data-test=model-api-key] input", SECRET)
    page.click("[data-test=model-save]")

    row = page.locator("[data-model-id]", has_text="e2e endpoint")
    # Saving is a create plus a list reload; on a loaded 2-core CI box that has taken over 5 s.
    expect(row).to_have_count(1, timeout=20_000)
    hint = row.locator("[data-test=key-hint]").inner_text()
    assert hint.endswith("8765") and SECRET not in hint
    assert SECRET not in page.content(), "the key never comes back to the browser"

    row.locator("[data-test=test-model]").click()
    expect(page.locator(".n-message", has_text="Connection OK")).to_be_visible()
    assert seen == [f"Bearer {SECRET}"], "the server sent the stored key to the endpoint"

    # Edit: rename and point at a port where nothing listens; the key is kept.
    row.locator("[data-test=edit-model]").click()
    page.fill("[data-test=model-name] input", "e2e endpoint renamed")
    page.fill("[data-test=model-base-url] input", f"http://127.0.0.1:{free_port(18700, 18999)}/v1")
    page.click("[data-test=model-save]")
    row = page.locator("[data-model-id]", has_text="e2e endpoint renamed")
    expect(row).to_have_count(1)
    expect(row.locator("[data-test=key-hint]")).to_have_text(hint)
    row.locator("[data-test=test-model]").click()
    failure = page.locator(".n-message", has_text="Connection failed")
    expect(failure).to_be_visible(timeout=40_000)
    assert SECRET not in failure.inner_text()

    row.locator("[data-test=delete-model]").click()
    page.click(".n-popconfirm__action button.n-button--primary-type")
    expect(page.locator("[data-model-id]", has_text="e2e endpoint")).to_have_count(0)


def test_invalid_model_input_is_refused_with_the_servers_reason(page: Page):
    page.goto("/models")
    page.click("[data-test=add-model]")
    page.fill("[data-test=model-name] input", "bad url model")
    page.fill("[data-test=model-base-url] input", "not a url")
    page.fill("[data-test=model-model] input", "x")
    page.click("[data-test=model-save]")
    alert = page.locator(".n-drawer [role=alert]")
    expect(alert).to_be_visible()
    assert "url" in alert.inner_text().lower()
    expect(page.locator("[data-model-id]", has_text="bad url model")).to_have_count(0)


def test_rename_and_rescore_an_uploaded_dataset(page: Page, server, tmp_path):
    data = tmp_path / "capitals-e2e.csv"
    data.write_text("question,answer\nCapital of Italy?,Rome\nCapital of Spain?,Madrid\n", encoding="utf-8")
    page.goto("/datasets")
    page.set_input_files("[data-test=dataset-file]", str(data))
    page.click("[data-test=dataset-upload]")
    row = page.locator("[data-test=datasets-table] tbody tr", has_text="capitals-e2e")
    expect(row).to_have_count(1)
    row.locator("[data-test=dataset-edit]").click()
    dialog = page.locator("[data-test=dataset-edit-dialog]")
    dialog.locator("[data-test=dataset-edit-name] input").fill("Capitals (e2e)")
    dialog.locator("[data-test=dataset-edit-contains]").click()
    dialog.locator("[data-test=dataset-edit-save]").click()
    expect(dialog).to_have_count(0)
    edited = page.locator("[data-test=datasets-table] tbody tr", has_text="Capitals (e2e)")
    expect(edited).to_contain_text("contains")

    with urllib.request.urlopen(server.url + "/api/v1/datasets", timeout=10) as response:
        stored = [d for d in json.loads(response.read()) if d["name"] == "Capitals (e2e)"]
    assert [(d["scorer"], d["rows"]) for d in stored] == [("contains", 2)]
