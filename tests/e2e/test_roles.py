"""Roles in real Chromium against a real `aieval serve` with sign-in on (issue 9): people sign in through the
sign-in page; a member does not see another member's private evaluation (not in the list, not by its URL); a
viewer cannot start an evaluation; an administrator sees it all and starts one through the wizard."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from harness import running_server
from playwright.sync_api import Page, expect

ADMIN = "admin"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # one for every account of this throw-away server


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The server (no worker: what is checked here is who may see and start what, not the run), three accounts
    made by the administrator, and two evaluations of alice's: one private, one shared."""
    env = {"AIEVAL_AUTH_ENABLED": "true", "AIEVAL_INITIAL_ADMIN_USERNAME": ADMIN,
           "AIEVAL_INITIAL_ADMIN_PASSWORD": PASSWORD}
    with running_server(worker=False, env=env) as server:
        api = f"{server.url}/api/v1"
        with httpx.Client(base_url=api, timeout=30) as admin:
            admin.headers["X-CSRF-Token"] = sign_in_api(admin, ADMIN)
            for username, role in (("alice", "member"), ("bob", "member"), ("vera", "viewer")):
                response = admin.post("/users", json={"username": username, "password": PASSWORD, "role": role})
                assert response.status_code == 201, response.text
        with httpx.Client(base_url=api, timeout=30) as alice:
            alice.headers["X-CSRF-Token"] = sign_in_api(alice, "alice")
            model = next(m["id"] for m in alice.get("/models").json() if m["is_demo"])
            dataset = next(d["id"] for d in alice.get("/datasets").json() if d["is_demo"])
            runs = {}
            for visibility in ("private", "shared"):
                response = alice.post("/evaluations", json={
                    "name": f"alice {visibility} run", "model_ids": [model], "dataset_ids": [dataset],
                    "params": {"limit": 2, "max_out_len": 8}, "visibility": visibility})
                assert response.status_code == 201, response.text
                runs[visibility] = response.json()["id"]
        yield server, runs


def sign_in_api(client: httpx.Client, username: str) -> str:
    response = client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["csrf_token"]


@pytest.fixture
def person(browser, team):
    """person(username) -> a page signed in as that user through the sign-in page."""
    server, _ = team
    contexts = []
    errors: list[str] = []

    def open_as(username: str) -> Page:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US", base_url=server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/evaluations")
        page.wait_for_url(re.compile(r"/sign-in\?next="))  # nobody is let in without signing in
        page.fill("[data-test=sign-in-username] input", username)
        page.fill("[data-test=sign-in-password] input", PASSWORD)
        page.click("[data-test=sign-in-submit]")
        page.wait_for_url(re.compile(r"/evaluations$"))
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_a_member_does_not_see_another_members_private_evaluation(team, person):
    _, runs = team
    page = person("bob")
    expect(page.get_by_text("alice shared run")).to_be_visible()
    expect(page.get_by_text("alice private run")).to_have_count(0)
    page.goto(f"/evaluations/{runs['private']}")  # by its URL: answered as if it did not exist
    expect(page.get_by_text(f"evaluation {runs['private']} does not exist")).to_be_visible()
    expect(page.get_by_text("alice private run")).to_have_count(0)


def test_a_viewer_cannot_start_an_evaluation(team, person):
    page = person("vera")
    expect(page.get_by_text("alice shared run")).to_be_visible()
    expect(page.locator("[data-test=new-evaluation]")).to_have_count(0)
    page.goto("/evaluations/new")  # typed in: the router sends a viewer back to the list
    page.wait_for_url(re.compile(r"/evaluations$"))
    expect(page.locator("[data-test=wizard-submit]")).to_have_count(0)


def test_an_administrator_sees_private_work_and_starts_an_evaluation(team, person):
    page = person(ADMIN)
    expect(page.get_by_text("alice private run")).to_be_visible()
    page.click("[data-test=new-evaluation]")
    page.wait_for_url(re.compile(r"/evaluations/new$"))
    page.click("[data-test=wizard-next]")  # the demo model is chosen already
    expect(page.locator("[data-test=step-datasets]")).to_be_visible()
    page.click("[data-test=wizard-next]")  # and the demo datasets
    page.fill("[data-test=evaluation-name] input", "admin e2e run")
    page.fill("[data-test=param-limit] input", "2")
    page.click("[data-test=step-params] .n-card-header")  # blur: NInputNumber commits on blur
    page.click("[data-test=wizard-next]")
    page.click("[data-test=wizard-submit]")
    page.wait_for_url(re.compile(r"/evaluations/\d+$"), timeout=30_000)
    expect(page.locator("[data-test=evaluation-detail] h1")).to_contain_text("admin e2e run")
